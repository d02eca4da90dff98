"""Loopback networking for tests: free ports, waiting for a listener, TLS-terminating and throttling proxies."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

_GIVEN_REMEMBERED = 4096
_given: collections.OrderedDict[tuple[int, int], None] = collections.OrderedDict()


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port that was free a moment ago on 127.0.0.1 (TCP by default, UDP with SOCK_DGRAM), and not one
    this process was given lately: the kernel may hand the same free port to two binds in a row, and
    callers choose several ports before anything listens on them (seen: a relay's API and RTMP ports the
    same, and its start failed with "address already in use")."""
    while True:
        with socket.socket(socket.AF_INET, kind) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if (kind, port) not in _given:
            break
    _given[(kind, port)] = None
    if len(_given) > _GIVEN_REMEMBERED:
        _given.popitem(last=False)
    return port


TCP_ESTABLISHED, TCP_LISTEN = "01", "0A"
"""States in /proc/net/tcp."""


async def wait_listening(port: int, udp: bool, within: float = 10.0) -> None:
    """Poll /proc/net for the listener's socket (a probe connection would use up `-listen 1`).

    A TCP connection accepted on the port counts too: an ffmpeg `-listen 1` closes its listening socket as
    it accepts, and a push already retrying against the port connects within a poll's 50 ms (seen: the
    listener came and went between two polls, and the wait ran out)."""
    table = ["/proc/net/udp", "/proc/net/udp6"] if udp else ["/proc/net/tcp", "/proc/net/tcp6"]
    needle = f":{port:04X} "
    async with asyncio.timeout(within):
        while True:
            for path in table:
                with contextlib.suppress(OSError):
                    for line in Path(path).read_text().splitlines()[1:]:  # noqa: ASYNC240 (procfs, instant)
                        fields = line.split()
                        if needle in fields[1] + " " and (udp or fields[3] in (TCP_LISTEN, TCP_ESTABLISHED)):
                            return
            await asyncio.sleep(0.05)


def self_signed_context(directory: Path) -> ssl.SSLContext:
    """A server context with a fresh self-signed certificate for 127.0.0.1 (written into `directory`)."""
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
