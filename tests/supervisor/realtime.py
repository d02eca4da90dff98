"""Real-ffmpeg helpers: sample media, receivers on 127.0.0.1, TLS and throttling proxies, a paced feeder."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

from relay.ingest.gate import IngestSink
from relay.media.flv import iter_tags
from relay.media.packets import MediaPacket


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def make_samples(ffmpeg: str, directory: Path, seconds: int = 3) -> tuple[Path, Path]:
    flv = directory / "sample.flv"
    ts = directory / "sample.ts"
    subprocess.run(
        [
            ffmpeg,
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440",
            "-t",
            str(seconds),
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "30",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-b:a",
            "64k",
            "-f",
            "flv",
            str(flv),
        ],
        check=True,
        timeout=60,
    )
    subprocess.run(
        [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-i", str(flv), "-c", "copy", "-f", "mpegts", str(ts)],
        check=True,
        timeout=60,
    )
    return flv, ts


def video_md5s(ffmpeg: str, path: Path) -> list[str]:
    out = subprocess.run(
        [
            ffmpeg,
            "-hide_banner",
            "-loglevel",
            "error",
            "-i",
            str(path),
            "-map",
            "0:v",
            "-c",
            "copy",
            "-f",
            "framemd5",
            "-",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return [line.rsplit(",", 1)[1].strip() for line in out.splitlines() if line and not line.startswith("#")]


def is_contiguous_run(part: list[str], whole: list[str]) -> bool:
    """`part` appears in `whole` as one unbroken run (a late joiner starts on some keyframe)."""
    if not part:
        return False
    for start in range(len(whole) - len(part) + 1):
        if whole[start : start + len(part)] == part:
            return True
    return False


def flv_packets(path: Path, loops: int = 1) -> list[MediaPacket]:
    """The sample's tags; with loops > 1 the media repeats with continuing timestamps (configs once)."""
    tags = list(iter_tags(path.read_bytes()))
    config = [t for t in tags if t.config]
    media = [t for t in tags if not t.config]
    span = media[-1].timestamp_ms + 33
    out = list(config)
    for n in range(loops):
        out += [MediaPacket(t.kind, t.timestamp_ms + n * span, t.payload, t.keyframe, t.config) for t in media]
    return out


async def feed_realtime(sink: IngestSink, packets: list[MediaPacket], *, speed: float = 1.0) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    base = next((p.timestamp_ms for p in packets if not p.config), 0)
    for packet in packets:
        due = start + max(0, packet.timestamp_ms - base) / 1000.0 / speed
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        sink.write(packet)


class Receiver:
    """An ffmpeg listener writing what it receives to a file; always reaped by `close`."""

    def __init__(self, ffmpeg: str, url: str, out: Path, fmt: str) -> None:
        self.url, self.out = url, out
        self._argv = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y"]
        if url.startswith("rtmp"):
            self._argv += ["-listen", "1", "-timeout", "60"]
        self._argv += ["-i", url, "-c", "copy", "-f", fmt, str(out)]
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, port: int, udp: bool = False) -> Receiver:
        self.proc = await asyncio.create_subprocess_exec(
            *self._argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        await wait_listening(port, udp)
        return self

    async def finished(self, within: float) -> bool:
        assert self.proc is not None
        try:
            await asyncio.wait_for(self.proc.wait(), within)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(2)
        if not await self.finished(3):
            self.proc.kill()
            await self.proc.wait()


async def wait_listening(port: int, udp: bool, within: float = 10.0) -> None:
    """Poll /proc/net for the listener's socket (a probe connection would use up `-listen 1`)."""
    table = ["/proc/net/udp", "/proc/net/udp6"] if udp else ["/proc/net/tcp", "/proc/net/tcp6"]
    needle = f":{port:04X} "
    async with asyncio.timeout(within):
        while True:
            for path in table:
                with contextlib.suppress(OSError):
                    for line in Path(path).read_text().splitlines()[1:]:  # noqa: ASYNC240 (procfs, instant)
                        fields = line.split()
                        if needle in fields[1] + " " and (udp or fields[3] == "0A"):
                            return
            await asyncio.sleep(0.05)


def self_signed_context(directory: Path) -> ssl.SSLContext:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_path, key_path)
    return ctx


@contextlib.asynccontextmanager
async def tcp_proxy(
    listen_port: int,
    target_port: int,
    *,
    tls: ssl.SSLContext | None = None,
    upstream_bytes_per_second: float | None = None,
) -> AsyncIterator[None]:
    """Forward 127.0.0.1:listen_port to target_port; optionally TLS-terminating or throttled upstream."""
    tasks: set[asyncio.Task[None]] = set()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rate: float | None) -> None:
        try:
            while data := await reader.read(2048 if rate else 65536):
                writer.write(data)
                await writer.drain()
                if rate:
                    await asyncio.sleep(len(data) / rate)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            writer.close()
            return
        for t in (
            asyncio.create_task(pipe(reader, up_writer, upstream_bytes_per_second)),
            asyncio.create_task(pipe(up_reader, writer, None)),
        ):
            tasks.add(t)
            t.add_done_callback(tasks.discard)

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if upstream_bytes_per_second:
        # A small window (inherited by accepted sockets) so the kernel does not absorb the backlog.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    sock.bind(("127.0.0.1", listen_port))
    server = await asyncio.start_server(handle, sock=sock, ssl=tls, limit=4096 if upstream_bytes_per_second else 65536)
    try:
        yield
    finally:
        server.close()
        for t in list(tasks):
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        server.close_clients() if hasattr(server, "close_clients") else None
