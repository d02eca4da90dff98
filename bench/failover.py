"""`make bench-failover`: how long a stream is off the air when the node that owns it dies.

    .venv/bin/python -m bench.failover [--rounds 5] [--lease-seconds 10] [--renew-seconds 2]
                                      [--margin-seconds 2] [--takeover-idle-seconds 4] [--destinations 2]

Three relay nodes on one PostgreSQL behind HAProxy (tests/support/cluster.py, real processes). Each round:
a stream with `--destinations` RTMP destinations (our sinks, stamping each packet on arrival), an encoder
(ffmpeg replaying a clip in a loop, reconnecting 0.3 s after each failure, as encoders do) pushing through
the balancer; once media flows, `kill -9` of the owning node. Measured per round:

- kill -> claim: until the lease table names another node (a psql poll every 50 ms);
- kill -> first packet: until every destination has received video again (the slowest one) over a new
  connection (the killed node's orphaned ffmpeg flushes what it held when its stdin closes: not counted);
- reconnect -> first packet: from the start of the encoder's connection that was accepted to the first
  video packet at every destination (what the new owner adds: admission, claim, pushes started).

The killed node is started again before the next round. A markdown table goes to stdout and to
bench-results/failover.md.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support import ROOT, Clip, MediaCache
from tests.support.cluster import Cluster, Lease, why_no_cluster
from tests.support.publishers import ReconnectingPublisher
from tests.support.rtmp_sink import RtmpSink

RESULTS = ROOT / "bench-results"
CLIP = Clip(container="flv", seconds=2.0, gop=25, fixed_gop=True)


@dataclass(frozen=True)
class Round:
    killed: str
    new_owner: str
    epochs: tuple[int, int]
    kill_to_claim_s: float
    kill_to_media_s: float
    reconnect_to_media_s: float
    publisher_runs: int
    """Encoder connections between the kill and media flowing again (refused ones included)."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.failover", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    # The relay's defaults; tests/cluster runs 3 / 0.5 / 1 / 2.
    parser.add_argument("--lease-seconds", type=float, default=10.0)
    parser.add_argument("--renew-seconds", type=float, default=2.0)
    parser.add_argument("--margin-seconds", type=float, default=2.0)
    parser.add_argument("--takeover-idle-seconds", type=float, default=4.0)
    parser.add_argument("--destinations", type=int, default=2)
    return parser.parse_args(argv)


async def wait(probe: Callable[[], float | Awaitable[float | None] | None], within: float, what: str) -> float:
    """Poll `probe` (a time, or None) every 20 ms; the time, or AssertionError after `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = probe()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return float(value)
        await asyncio.sleep(0.02)
    raise AssertionError(f"not within {within} s: {what}")


def video_after(sink: RtmpSink, since: float) -> Callable[[], float | None]:
    """The first video after `since` from a connection opened since: the killed node's orphaned ffmpeg
    still flushes what it held when its stdin closes, and that is not the stream back on the air."""
    return lambda: sink.first_video_of_connections_since(since)


async def one_round(cluster: Cluster, clip: Path, number: int, destinations: int) -> Round:
    writer = cluster.nodes[number % len(cluster.nodes)]
    created = await asyncio.to_thread(writer.api, "POST", "/streaming/streams", {"name": f"failover {number}"})
    stream = created.body
    sinks = [await RtmpSink(f"d{number}-{i}").start() for i in range(destinations)]
    try:
        for sink in sinks:
            body = {"restream": {"stream_id": stream["id"], "uri": sink.url, "name": sink.name}}
            result = await asyncio.to_thread(writer.api, "POST", "/streaming/restreams", body)
            assert result.status == 200, result.body
        async with ReconnectingPublisher(clip, stream["push_url"]) as publisher:
            started = time.monotonic()
            for sink in sinks:
                await wait(video_after(sink, started), 20, f"first video at {sink.name}")
            await asyncio.sleep(1.0)
            before = await asyncio.to_thread(cluster.lease, stream["id"])
            assert before is not None and before.valid
            victim = cluster.node(before.node_id)

            killed = time.monotonic()
            await asyncio.to_thread(cluster.kill, victim)

            async def claimed() -> float | None:
                row: Lease | None = await asyncio.to_thread(cluster.lease, stream["id"])
                ok = row is not None and row.valid and row.node_id != before.node_id
                return time.monotonic() if ok else None

            claim_at = await wait(claimed, 30, "another node's lease")
            media_at = max([await wait(video_after(sink, killed), 30, f"video at {sink.name}") for sink in sinks])
            after = await asyncio.to_thread(cluster.lease, stream["id"])
            assert after is not None
            runs = [start for start, _, _ in publisher.attempts if killed <= start <= media_at]
            accepted = max(runs) if runs else killed
            return Round(
                killed=victim.node_id,
                new_owner=after.node_id,
                epochs=(before.epoch, after.epoch),
                kill_to_claim_s=claim_at - killed,
                kill_to_media_s=media_at - killed,
                reconnect_to_media_s=media_at - accepted,
                publisher_runs=len(runs),
            )
    finally:
        for sink in sinks:
            await sink.close()
        for node in cluster.nodes:
            if not node.up:
                await asyncio.to_thread(cluster.restart, node)


def table(rounds: Sequence[Round], args: argparse.Namespace) -> str:
    lines = [
        f"Failover, 3 nodes behind HAProxy, lease {args.lease_seconds} s, renewal {args.renew_seconds} s, "
        f"margin {args.margin_seconds} s, takeover after {args.takeover_idle_seconds} s of silence, "
        f"{args.destinations} RTMP destinations, kill -9 of the owner",
        "",
        "| round | killed | new owner | epoch | kill -> claim s | kill -> first packet s | reconnect -> first packet s"
        " | encoder connections |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for i, r in enumerate(rounds, 1):
        lines.append(
            f"| {i} | {r.killed} | {r.new_owner} | {r.epochs[0]} -> {r.epochs[1]} | {r.kill_to_claim_s:.2f} "
            f"| {r.kill_to_media_s:.2f} | {r.reconnect_to_media_s:.2f} | {r.publisher_runs} |"
        )
    if rounds:

        def median(values: list[float]) -> str:
            return f"{statistics.median(values):.2f}"

        lines.append(
            f"| median | | | | {median([r.kill_to_claim_s for r in rounds])} "
            f"| {median([r.kill_to_media_s for r in rounds])} | {median([r.reconnect_to_media_s for r in rounds])} | |"
        )
    return "\n".join(lines) + "\n"


async def run(args: argparse.Namespace) -> str:
    root = Path(tempfile.mkdtemp(prefix="relay-failover-"))
    clip = MediaCache(RESULTS / "media").clip(CLIP)
    env = {
        "RELAY_LEASE_MARGIN_SECONDS": str(args.margin_seconds),
        "RELAY_TAKEOVER_IDLE_SECONDS": str(args.takeover_idle_seconds),
    }
    cluster = Cluster(root, lease_seconds=args.lease_seconds, renew_seconds=args.renew_seconds, env_extra=env)
    await asyncio.to_thread(cluster.start)
    rounds: list[Round] = []
    try:
        for number in range(args.rounds):
            rounds.append(await one_round(cluster, clip, number, args.destinations))
            print(table(rounds[-1:], args).splitlines()[-2], flush=True)
    finally:
        await asyncio.to_thread(cluster.close)
        shutil.rmtree(root, ignore_errors=True)  # the nodes' data directories and the balancers' files
    return table(rounds, args)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if reason := why_no_cluster():
        print(f"bench.failover: cannot run here: {reason}", file=sys.stderr)
        return 2
    report = asyncio.run(run(args))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "failover.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
