"""What the RTMP chunk reader costs a read of a publisher, by the chunk size the publisher sends in.

    .venv/bin/python -m bench.chunk_reader [--clip PATH] [--read-bytes 37000] [--chunk-size 128 ...]

The clip's tags (default: `make bench`'s 1080p30 4.5 Mbit/s clip) are written as RTMP messages the way a
publisher writes them (audio on chunk stream 4, video on 6, each message in chunks of the chunk size) and
cut into reads of `--read-bytes` (37,000: what a 66 ms merge reads of that stream, `RELAY_MERGE_INTERVAL_MS`).
Every read is fed to a `ChunkReader` and parsed into its messages, over and over; the median CPU time of a
read is printed per chunk size. These are warm figures: in the relay, reads 66 ms apart with ffmpeg running
between them cost more (`bench.relay_cpu --wake-costs` times the whole read in place).

ffmpeg publishes in the chunk size the server announces (`SessionConfig.out_chunk_size`, 60000); GStreamer's
rtmp2sink sends 128-byte chunks whatever is announced, and a publisher that never sends Set Chunk Size does too.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from bench.media import encode_clip
from bench.relay_bench import RESULTS
from relay.media.flv import iter_tags
from relay.media.packets import MediaKind, MediaPacket
from relay.rtmp.buffer import ReceiveBuffer
from relay.rtmp.chunks import ChunkReader, ChunkWriter

CHUNK_SIZES = (128, 4096, 60000)
_CSIDS = {MediaKind.AUDIO: 4, MediaKind.VIDEO: 6, MediaKind.DATA: 5}


def publisher_messages(clip: Path, chunk_size: int) -> Iterator[tuple[MediaPacket, bytes]]:
    """Each of the clip's tags, and it as one publisher's RTMP message (stream 1), in chunks of `chunk_size`."""
    writer = ChunkWriter(chunk_size)
    kinds = {MediaKind.AUDIO: 8, MediaKind.VIDEO: 9, MediaKind.DATA: 18}
    for tag in iter_tags(clip.read_bytes()):
        yield tag, writer.write(_CSIDS[tag.kind], kinds[tag.kind], 1, tag.timestamp_ms, tag.payload)


def publisher_bytes(clip: Path, chunk_size: int) -> bytes:
    """The clip's tags as one publisher's RTMP messages (stream 1), in chunks of `chunk_size`."""
    return b"".join(message for _, message in publisher_messages(clip, chunk_size))


def read_costs(data: bytes, chunk_size: int, read_bytes: int, rounds: int) -> tuple[list[float], int]:
    """CPU µs of each read (every round), and the messages one round gave."""
    reads = [data[pos : pos + read_bytes] for pos in range(0, len(data), read_bytes)]
    costs: list[float] = []
    messages = 0
    clock = time.thread_time_ns
    for _ in range(rounds):
        reader = ChunkReader()
        reader.chunk_size = chunk_size
        buffer = ReceiveBuffer(1 << 24)
        messages = 0
        for read in reads:
            start = clock()
            buffer.append(read)
            while reader.next_message(buffer) is not None:
                messages += 1
            costs.append((clock() - start) / 1000)
    return costs, messages


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.chunk_reader", description=__doc__.split("\n\n")[0])
    p.add_argument("--clip", type=Path, default=None, help="FLV clip (default: make bench's 1080p30 clip)")
    p.add_argument("--read-bytes", type=int, default=37_000, help="bytes a read brings")
    p.add_argument("--chunk-size", type=int, action="append", help="the publisher's chunk size (repeatable)")
    p.add_argument("--rounds", type=int, default=5, help="times the whole clip is parsed")
    args = p.parse_args(argv)
    clip = args.clip or encode_clip(RESULTS / "clips", 20, "1920x1080", 4500)
    for chunk_size in args.chunk_size or CHUNK_SIZES:
        data = publisher_bytes(clip, chunk_size)
        costs, messages = read_costs(data, chunk_size, args.read_bytes, args.rounds)
        reads = len(costs) // args.rounds
        print(
            f"chunks of {chunk_size} bytes: {statistics.median(costs):.0f} µs a read of {args.read_bytes} bytes"
            f" (median of {len(costs)}; {messages / reads:.1f} messages a read)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
