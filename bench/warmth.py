"""What one RTMP message costs the relay's Python when it runs hot, and when it runs after a sleep.

    .venv/bin/python -m bench.warmth [--rounds 300] [--gap-ms 15]

The relay's own CPU is mostly its wake-ups (docs/benchmarks.md): a 1080p30 publisher read as its data comes
wakes the event loop ~65 times a second. This times the sans-I/O session (`relay.rtmp.session`, the chunk
reader and its events) on a publish of 1080p30-sized messages (an 18 KB video frame in 4 KiB chunks and
two 370-byte audio packets a round), in CPU time (`time.thread_time`) per message: rounds back to back
("hot"), then each round after a sleep of `--gap-ms`, as the loop sleeps between a publisher's messages
("after a sleep"). Nothing else runs in the process; the ratio is the machine's (its caches, and on a
virtual machine what the host runs meanwhile), not the code's.
"""

from __future__ import annotations

import argparse
import struct
import time
from collections.abc import Sequence

from relay.media.packets import MediaKind
from relay.rtmp.chunks import ChunkWriter, MessageType
from relay.rtmp.events import NEED_DATA
from relay.rtmp.session import ServerSession
from tests.rtmp.sessions import AUDIO_FRAME, VIDEO_KEY, drain, handshake
from tests.rtmp.wire import publish_script

CHUNK_SIZE = 4096
"""ffmpeg's and OBS's outgoing chunk size."""


def publishing_session() -> ServerSession:
    """A session past connect and publish, at the publisher's chunk size."""
    session = ServerSession()
    session.receive_data(handshake() + b"".join(publish_script("1?bench")))
    drain(session)
    session.receive_data(ChunkWriter().write(2, MessageType.SET_CHUNK_SIZE, 0, 0, struct.pack(">I", CHUNK_SIZE)))
    drain(session)
    return session


def rounds_of_media(count: int = 30) -> list[list[bytes]]:
    """`count` rounds of one video frame and two audio packets, as the publisher's writes carry them."""
    writer = ChunkWriter(CHUNK_SIZE)
    video, audio = int(MediaKind.VIDEO), int(MediaKind.AUDIO)
    return [
        [
            writer.write(6, video, 1, 33 * i, VIDEO_KEY + bytes(18_000)),
            writer.write(4, audio, 1, 33 * i, AUDIO_FRAME + bytes(350)),
            writer.write(4, audio, 1, 33 * i + 21, AUDIO_FRAME + bytes(350)),
        ]
        for i in range(count)
    ]


def microseconds_per_message(session: ServerSession, media: list[list[bytes]], rounds: int, gap_s: float) -> float:
    """CPU time per message over `rounds` rounds, each fed and drained, then a sleep of `gap_s` (0: none)."""
    messages = 0
    started = time.thread_time()
    for index in range(rounds):
        for data in media[index % len(media)]:
            session.receive_data(data)
            while session.next_event() is not NEED_DATA:
                messages += 1
        if gap_s:
            time.sleep(gap_s)
    return (time.thread_time() - started) / messages * 1e6


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.warmth", description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=300, help="rounds after a sleep (hot: ten times as many)")
    p.add_argument("--gap-ms", type=float, default=15.0, help="the sleep before each round")
    args = p.parse_args(argv)
    session, media = publishing_session(), rounds_of_media()
    microseconds_per_message(session, media, 100, 0.0)  # imports, caches, the buffer's first growth
    hot = microseconds_per_message(session, media, 10 * args.rounds, 0.0)
    slept = microseconds_per_message(session, media, args.rounds, args.gap_ms / 1000)
    started = time.thread_time()
    for _ in range(args.rounds):
        time.sleep(args.gap_ms / 1000)
    sleeping = (time.thread_time() - started) / (3 * args.rounds) * 1e6  # the sleeps' own share of a message
    print(
        f"RTMP session, CPU per message: {hot:.1f} us hot, {slept - sleeping:.1f} us with {args.gap_ms:g} ms asleep "
        f"before each round of 3 ({(slept - sleeping) / hot:.1f}x; the sleeps' own {sleeping:.1f} us taken out)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
