"""What the relay's media path could cost in Python: one pass a read, from the publisher's chunks to a push's pipe.

    .venv/bin/python -m bench.media_floor [--clip PATH] [--interval-ms 66] [--seconds 12] [--loop uvloop]

A child publishes the clip's tags (default: `make bench`'s 1080p30 4.5 Mbit/s clip) as RTMP messages in
60,000-byte chunks (the chunk size the relay announces) to a socket pair, at the clip's pace, what is due
every `--interval-ms` in one write: what a merged read of the relay finds (`RELAY_MERGE_INTERVAL_MS`). This
process reads it on an event loop and does, in one function a read, what the relay does to it for one
push: each chunk's header (the four formats, continuations), each message's FLV tag, the last keyframe's
group of pictures kept, byte and frame counts, and one `writev` of the read's tags to a pipe that a child
drains, as a push's ffmpeg does. No event objects, no packet objects, no layer between the socket and the
pipe. Its reading thread's CPU time is printed, per minute and per read, beside `bench.relay_cpu
--wake-costs`'s figure for the relay itself at N=1 (each read and all it sets off): the distance between
the two is what the relay's layering costs, not Python's floor. `--check` also verifies that the pipe got
the clip's FLV tags, byte for byte.

Not a relay: no handshake, no commands, no acknowledgements, no bounds on a hostile peer, no subscribers'
queues. It says how low a Python relay could go, not that ours can drop those.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path

from api.loops import loop_factory
from bench.chunk_reader import publisher_messages
from bench.media import encode_clip
from bench.relay_bench import RESULTS
from relay.media.flv import encode_tag

CHUNK_SIZE = 60_000


def clip_messages(clip: Path) -> list[tuple[int, bytes, bytes]]:
    """(timestamp ms, the message as a publisher writes it, its FLV tag as the relay frames it) of each of the
    clip's tags."""
    return [
        (tag.timestamp_ms, message, encode_tag(tag.kind, tag.timestamp_ms, tag.payload))
        for tag, message in publisher_messages(clip, CHUNK_SIZE)
    ]


def _publish(sock: socket.socket, messages: list[tuple[int, bytes, bytes]], interval: float, seconds: float) -> None:
    """In the child: the messages at the clip's pace, what is due each interval in one write, looped."""
    start = time.monotonic()
    end = start + seconds
    loop_ms = messages[-1][0] + 33
    index, laps = 0, 0
    while time.monotonic() < end:
        due_ms = (time.monotonic() - start) * 1000
        batch = []
        while laps * loop_ms + messages[index][0] <= due_ms:
            batch.append(messages[index][1])
            index += 1
            if index == len(messages):
                index, laps = 0, laps + 1
        if batch:
            try:
                sock.sendall(b"".join(batch))
            except OSError:
                return
        time.sleep(interval)


def _drain(fd: int, out: int) -> None:
    """In the child: read the pipe to its end; write its bytes' count and SHA-256 to `out`."""
    digest = hashlib.sha256()
    count = 0
    while data := os.read(fd, 1 << 16):
        digest.update(data)
        count += len(data)
    os.write(out, f"{count} {digest.hexdigest()}".encode())


class _Stream:
    __slots__ = ("length", "parts", "timestamp", "type_id", "wanted")

    def __init__(self) -> None:
        self.timestamp = 0
        self.length = 0
        self.type_id = 0
        self.parts: list[bytes] = []
        self.wanted = 0  # bytes of the message under way still to come; 0: none under way


class FusedReader(asyncio.BufferedProtocol):
    """The publisher's chunks to FLV tags on a pipe, in one pass a read."""

    def __init__(self, pipe: int) -> None:
        self._buffer = bytearray(1 << 18)
        self._view = memoryview(self._buffer)
        self._held = 0
        self._pipe = pipe
        self._streams: dict[int, _Stream] = {}
        self.gop: list[bytes] = []
        self.reads = 0
        self.messages = 0
        self.media_bytes = 0
        self.frames = 0

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view[self._held :]

    def buffer_updated(self, nbytes: int) -> None:
        self.reads += 1
        buf, end, pos = self._buffer, self._held + nbytes, 0
        streams, out, gop = self._streams, [], self.gop
        while pos < end:
            fmt, csid = buf[pos] >> 6, buf[pos] & 0x3F
            size = (12, 8, 4, 1)[fmt]
            if end - pos < size:
                break
            stream = streams.get(csid)
            if stream is None:
                stream = streams[csid] = _Stream()
            field = int.from_bytes(buf[pos + 1 : pos + 4], "big") if fmt < 3 else 0
            if fmt < 2:
                stream.length = int.from_bytes(buf[pos + 4 : pos + 7], "big")
                stream.type_id = buf[pos + 7]
            take = min(stream.wanted or stream.length, CHUNK_SIZE)
            if end - pos - size < take:
                break
            if fmt == 0:
                stream.timestamp = field
            elif fmt < 3:
                stream.timestamp += field
            pos += size
            stream.parts.append(bytes(buf[pos : pos + take]))
            pos += take
            stream.wanted = (stream.wanted or stream.length) - take
            if stream.wanted:
                continue
            payload = stream.parts[0] if len(stream.parts) == 1 else b"".join(stream.parts)
            stream.parts = []
            ts, length = stream.timestamp, len(payload)
            out.append(
                bytes((stream.type_id,))
                + length.to_bytes(3, "big")
                + (ts & 0xFFFFFF).to_bytes(3, "big")
                + bytes((ts >> 24 & 0xFF, 0, 0, 0))
            )
            out.append(payload)
            out.append((11 + length).to_bytes(4, "big"))
            self.messages += 1
            self.media_bytes += length
            if stream.type_id == 9:
                self.frames += 1
                if payload[0] >> 4 == 1:
                    gop.clear()
                gop.append(payload)
        held = end - pos
        if held:
            buf[:held] = buf[pos:end]
        self._held = held
        if out:
            os.writev(self._pipe, out)

    def eof_received(self) -> bool:
        return False


def measure(
    messages: list[tuple[int, bytes, bytes]], interval_ms: float, seconds: float, loop: str
) -> tuple[float, int, int, tuple[int, str], bytes]:
    """(the reading thread's CPU s over the window, the reads and the messages in it, (bytes, SHA-256) the
    pipe got, the FLV tags it should have got), after a second's warm-up."""
    ours, theirs = socket.socketpair()
    pipe_out, pipe_in = os.pipe()
    report_out, report_in = os.pipe()
    warmup = 1.0
    publisher = os.fork()
    if publisher == 0:  # nothing of the parent's runs here
        for fd in (ours.fileno(), pipe_out, pipe_in, report_out, report_in):
            os.close(fd)
        _publish(theirs, messages, interval_ms / 1000, warmup + seconds)
        os._exit(0)
    drainer = os.fork()
    if drainer == 0:
        for fd in (ours.fileno(), theirs.fileno(), pipe_in, report_out):
            os.close(fd)
        _drain(pipe_out, report_in)
        os._exit(0)
    theirs.close()
    for fd in (pipe_out, report_in):
        os.close(fd)
    reader = FusedReader(pipe_in)
    window = [0, 0]

    async def read() -> float:
        transport, _ = await asyncio.get_running_loop().connect_accepted_socket(lambda: reader, ours)
        await asyncio.sleep(warmup)
        started, reads, messages = time.thread_time(), reader.reads, reader.messages
        await asyncio.sleep(seconds)
        spent = time.thread_time() - started
        window[:] = [reader.reads - reads, reader.messages - messages]
        transport.close()
        return spent

    event_loop = loop_factory(loop)()
    try:
        cpu = event_loop.run_until_complete(read())
    finally:
        event_loop.close()
        ours.close()
    os.close(pipe_in)
    os.waitpid(publisher, 0)
    os.waitpid(drainer, 0)
    with os.fdopen(report_out, "rb") as report:
        count, digest = report.read().decode().split()
    sent = reader.messages
    expected = b"".join(message[2] for message in (messages * (sent // len(messages) + 1))[:sent])
    return cpu, window[0], window[1], (int(count), digest), expected


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.media_floor", description=__doc__.split("\n\n")[0])
    p.add_argument("--clip", type=Path, default=None, help="FLV clip (default: make bench's 1080p30 clip)")
    p.add_argument("--interval-ms", type=float, default=66.0, help="how often the publisher's bytes are read")
    p.add_argument("--seconds", type=float, default=12.0, help="measurement window")
    p.add_argument("--loop", choices=("asyncio", "uvloop"), default="uvloop")
    p.add_argument("--check", action="store_true", help="verify the pipe got the clip's FLV tags, byte for byte")
    args = p.parse_args(argv)
    clip = args.clip or encode_clip(RESULTS / "clips", 20, "1920x1080", 4500)
    cpu, reads, messages, (count, digest), expected = measure(
        clip_messages(clip), args.interval_ms, args.seconds, args.loop
    )
    print(
        f"{args.loop}, a read every {args.interval_ms:g} ms: {cpu / args.seconds * 60:.3f} CPU s/min, "
        f"{reads / args.seconds:.1f} reads a second, {cpu / max(1, reads) * 1e6:.0f} µs a read "
        f"({messages / max(1, reads):.1f} messages a read)"
    )
    if not args.check:
        return 0
    same = count == len(expected) and digest == hashlib.sha256(expected).hexdigest()
    print(f"the pipe got {count} bytes: " + ("the clip's FLV tags, byte for byte" if same else "NOT the clip's tags"))
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
