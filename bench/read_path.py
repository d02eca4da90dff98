"""What the relay's own code costs a read of an RTMP publisher, in-process and warm, by subscribers.

    .venv/bin/python -m bench.read_path [--clip PATH] [--read-bytes 37000] [--subscribers 0,1,16] [--rounds 5]
                                        [--check]

The clip's tags (default: `make bench`'s 1080p30 4.5 Mbit/s clip) as one publisher's RTMP messages in the
chunk size the relay announces (`bench.chunk_reader`), cut into reads of `--read-bytes` (37,000: what a
66 ms merge reads of that stream), go through the relay's path from a read to the pushes' pipes: an
`RtmpConnection`'s `buffer_updated` (the session's parse and events, the read's batch), the `SessionSink`
and the registry's meters, the `Hub` (framing, GOP cache, the subscribers), each `Subscriber` written
through to a pipe that a `cat` child drains, as a push's ffmpeg drains its stdin. The median CPU time of a
read is printed for each subscriber count.

What it leaves out: the socket read, the loop's wake-up and the merge's timer, and the cache misses of a
process that sleeps 66 ms between reads while ffmpeg runs (`bench.relay_cpu --wake-costs` times a read in
place, with all of those, at ~2x these figures and a spread of ~50 µs between runs). These figures are warm
and steady to a few µs: for comparing two versions of this path, run from each checkout in turn. `--check`
verifies that the first subscriber's pipe got the clip's FLV tags (the relay's own framing), byte for byte.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from bench.chunk_reader import publisher_messages
from bench.media import encode_clip
from bench.relay_bench import RESULTS
from relay.engine.registry import LiveRegistry, LiveSession
from relay.engine.sink import SessionSink
from relay.hub import Hub, HubSettings
from relay.hub.clock import LoopClock
from relay.ingest.gate import SourceType, Transport
from relay.ingest.rtmp_connection import RtmpConnection
from relay.ingest.rtmp_settings import RtmpServerSettings
from relay.media.flv import encode_tag, flv_header
from relay.media.packets import ContainerFormat
from relay.rtmp.chunks import ChunkWriter, MessageType
from relay.rtmp.session import SessionConfig
from tests.rtmp.sessions import drain, handshake
from tests.rtmp.wire import publish_script

_STREAM_ID = 7


class _Pipe:
    """A push's stdin: a pipe that a `cat` child drains, written as the push's transport writes it."""

    def __init__(self, out: Path | None = None) -> None:
        with open(out or os.devnull, "wb") as sink:
            self.child = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=sink)
        assert self.child.stdin is not None
        self._fd = self.child.stdin.fileno()

    def write(self, data: bytes) -> bool:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        return True

    def close(self) -> None:
        assert self.child.stdin is not None
        self.child.stdin.close()
        self.child.wait()


def _publishing(loop_settings: RtmpServerSettings) -> RtmpConnection:
    """A connection whose session has published (handshake, connect, publish accepted), its read buffer the
    published size, serving media: what `RtmpConnection.run` leaves once the gate said yes."""
    conn = RtmpConnection(
        None,  # type: ignore[arg-type]  # the gate is never asked: the publish is accepted below
        loop_settings,
        Transport.RTMP,
        admit=lambda _: True,
    )
    session = conn._session
    out_chunk_size = SessionConfig().out_chunk_size
    setup = b"".join([handshake(), *publish_script(str(_STREAM_ID))])
    setup += ChunkWriter().write(2, MessageType.SET_CHUNK_SIZE, 0, 0, struct.pack(">I", out_chunk_size))
    session.receive_data(setup)
    drain(session)
    session.data_to_send()
    conn._read_buffer = memoryview(bytearray(loop_settings.read_chunk_bytes))
    conn._serving = True
    conn.published = True
    return conn


async def read_costs(
    data: bytes, read_bytes: int, subscribers: int, rounds: int, first_pipe: Path | None = None
) -> tuple[list[float], int]:
    """CPU µs of each read through the path with `subscribers` written-through subscribers, and the messages
    one round gave; `first_pipe`: where the first subscriber's pipe goes."""
    settings = RtmpServerSettings()
    conn = _publishing(settings)
    hub = Hub(_STREAM_ID, HubSettings(), LoopClock(), lambda _: None)
    registry = LiveRegistry(time.monotonic)
    live = LiveSession(_STREAM_ID, 1, SourceType.RTMP, datetime.now(UTC), conn)
    registry.open(live)
    messages = [0]
    hub_sink = hub.open_session(ContainerFormat.FLV, SourceType.RTMP, Transport.RTMP)
    sink = SessionSink(live, hub_sink, registry, lambda *_: None, lambda *_: None)
    conn._sink = _Counting(sink, messages)  # type: ignore[assignment]  # an IngestSink, counted
    pipes = [_Pipe(first_pipe if i == 0 else None) for i in range(subscribers)]
    subs = [hub.subscribe() for _ in pipes]
    try:
        reads = [data[pos : pos + read_bytes] for pos in range(0, len(data), read_bytes)]
        buffer = conn._read_buffer
        clock = time.thread_time_ns
        costs: list[float] = []
        for round_ in range(rounds):
            messages[0] = 0
            for index, read in enumerate(reads):
                buffer[: len(read)] = read
                start = clock()
                conn.buffer_updated(len(read))
                costs.append((clock() - start) / 1000)
                if round_ == 0 and index == 0:  # the late joiners' burst went by the queue: from now on, through
                    for sub, pipe in zip(subs, pipes, strict=True):
                        while sub.queued_bytes:
                            pipe.write(await sub.read())
                        sub.write_through(pipe.write)
        return costs, messages[0]
    finally:
        for sub in subs:
            sub.close()
        for pipe in pipes:
            pipe.close()


class _Counting:
    """The sink with the messages it took counted (outside the figures: a few µs a read)."""

    def __init__(self, sink: SessionSink, messages: list[int]) -> None:
        self._sink = sink
        self._messages = messages
        self.batch = sink.batch
        self.update_info = sink.update_info
        self.close = sink.close
        self._write_many: Callable[..., None] | None = getattr(sink, "write_many", None)

    def write(self, packet: object) -> None:
        self._messages[0] += 1
        self._sink.write(packet)  # type: ignore[arg-type]

    def write_many(self, packets: list[object]) -> None:
        self._messages[0] += len(packets)
        assert self._write_many is not None
        self._write_many(packets)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.read_path", description=__doc__.split("\n\n")[0])
    p.add_argument("--clip", type=Path, default=None, help="FLV clip (default: make bench's 1080p30 clip)")
    p.add_argument("--read-bytes", type=int, default=37_000, help="bytes a read brings")
    p.add_argument("--subscribers", default="0,1,16", help="subscriber counts (comma-separated)")
    p.add_argument("--rounds", type=int, default=5, help="times the whole clip goes through")
    p.add_argument("--check", action="store_true", help="verify the first subscriber's bytes")
    args = p.parse_args(argv)
    clip = args.clip or encode_clip(RESULTS / "clips", 20, "1920x1080", 4500)
    tags_and_messages = list(publisher_messages(clip, SessionConfig().out_chunk_size))
    data = b"".join(message for _, message in tags_and_messages)
    with tempfile.TemporaryDirectory(prefix="read-path-") as tmp:
        first_pipe = Path(tmp) / "pipe.flv" if args.check else None
        checked = False
        for count in (int(n) for n in args.subscribers.split(",")):
            out = first_pipe if count and not checked else None
            costs, messages = asyncio.run(read_costs(data, args.read_bytes, count, args.rounds, out))
            reads = len(costs) // args.rounds
            print(
                f"{count} subscribers: {statistics.median(costs):.0f} µs a read of {args.read_bytes} bytes"
                f" (median of {len(costs)}, mean {statistics.fmean(costs):.0f}; {messages / reads:.1f} messages a read)"
            )
            if out is not None:
                checked = True
                # The first round's tags as the relay frames them; later rounds' timestamps restart and are held.
                expected = flv_header() + b"".join(
                    encode_tag(t.kind, t.timestamp_ms, t.payload) for t, _ in tags_and_messages
                )
                got = out.read_bytes()[: len(expected)]
                if got != expected:
                    print(f"the pipe's first {len(expected)} bytes are not the clip's FLV tags")
                    return 1
                print(f"the pipe got {len(expected)} bytes a round: the clip's FLV tags, byte for byte")
        if args.check and not checked:
            print("--check needs a subscriber count above 0")
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
