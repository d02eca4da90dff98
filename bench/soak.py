"""`make soak`: hours of 8 streams x 4 destinations through the real relay process, with churn, sampled.

    .venv/bin/python -m bench.soak [--hours 2] [--streams 8] [--destinations 4] [--out bench-results/soak]

What runs (bench/fleet.py): `restream-relay serve`; one looping `ffmpeg -re -stream_loop -1 -c copy`
publisher per stream (the last two streams over SRT, the others RTMP); a receiver per destination (RTMP,
and one SRT destination on each of the first two streams). Churn, all the time:
- every `--kill-every` seconds one destination (in turn) is killed, left down `--down` seconds and
  restored; it must get media again within `--back-within` seconds;
- every `--drop-every` seconds one publisher (in turn) is SIGKILLed and comes back, alternately within
  the grace period (the pushes hold) and after it (the pushes end and start again);
- API writes in the background: a restream created, patched, read and deleted on a spare stream, the
  restreams and streams listed, /healthz, every `--api-every` seconds.
Sampled every `--sample` seconds: the relay process's RSS, PSS, open fds, threads, asyncio tasks
(/metrics `relay_tasks`), the heap (Python's allocated blocks, glibc malloc's bytes in use and free bytes kept),
its ffmpeg children, the pushes' restarts, each destination's bitrate.

Verdicts at the end (what "nothing leaks, nothing gets stuck" means here):
- RSS and open fds flat: the least-squares slope over the last hour (the last half of a shorter run)
  projects a growth over that window of at most 4 MB (RSS) and 4 fds per hour of window, and never less
  than 4 MB / 4 fds (a short window's noise);
- every killed destination received media again within `--back-within` seconds, every time;
- no orphan: no process the relay started is alive after it stopped;
- timestamps never went back at any destination, within one connection, over the whole run (video and
  audio for RTMP, video DTS for SRT);
- every destination was receiving at the last sample.
Report: JSON lines of the samples, soak.json (everything) and soak.md (the table and the verdicts) in --out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import signal
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.fleet import Destination, Fleet, Timings, relay_point, slope_per_hour, wait_until
from bench.media import encode_clip
from tests.support import ROOT, free_port

RESULTS = ROOT / "bench-results" / "soak"
RSS_GROWTH_BYTES_PER_HOUR = 4 << 20
FD_GROWTH_PER_HOUR = 4.0


@dataclass(frozen=True)
class SoakOptions:
    seconds: float = 2 * 3600.0
    streams: int = 8
    destinations: int = 4
    srt_publishers: int = 2
    """The last this many streams are published over SRT."""
    srt_destinations: int = 2
    """The last destination of the first this many streams is an SRT listener."""
    sample_seconds: float = 60.0
    kill_every_seconds: float = 180.0
    down_seconds: float = 10.0
    back_within_seconds: float = 30.0
    drop_every_seconds: float = 240.0
    short_drop_seconds: float = 3.0
    """Within the relay's grace period (10 s by default): the pushes hold, timestamps are rebased."""
    long_drop_seconds: float = 15.0
    """Beyond it: the pushes end and start again when the publisher returns."""
    api_every_seconds: float = 2.0
    clip_size: str = "854x480"
    clip_kbps: int = 1000
    clip_seconds: int = 20


@dataclass
class Sample:
    t: float
    elapsed_s: float
    rss_bytes: int
    pss_bytes: int
    fds: int
    threads: int
    tasks: int | None
    ffmpeg_children: int
    children_pss_bytes: int
    restarts: int | None
    dest_kbps: dict[str, float]
    api_p99_ms: float | None
    python_blocks: int | None = None
    """What the relay's Python holds (its allocated blocks), beside RSS: to tell a leak from the allocator."""
    malloc_in_use_bytes: int | None = None
    malloc_free_bytes: int | None = None
    """glibc malloc over all arenas: bytes handed out, and free bytes kept instead of returned."""


@dataclass
class Outage:
    """One destination killed and restored, or one publisher dropped and returned."""

    what: str
    name: str
    t: float
    down_s: float
    back_s: float | None = None
    note: str | None = None


@dataclass
class SoakReport:
    options: dict[str, Any]
    started: str
    elapsed_s: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    kills: list[Outage] = field(default_factory=list)
    drops: list[Outage] = field(default_factory=list)
    api: dict[str, Any] = field(default_factory=dict)
    api_errors: dict[str, int] = field(default_factory=dict)
    violations: list[dict[str, Any]] = field(default_factory=list)
    violation_count: int = 0
    stop: dict[str, Any] = field(default_factory=dict)
    destinations: dict[str, dict[str, Any]] = field(default_factory=dict)
    verdicts: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and all(v["ok"] for v in self.verdicts.values())


class Soak:
    def __init__(self, options: SoakOptions, out: Path) -> None:
        self.o = options
        self.out = out
        self.report = SoakReport(asdict(options), time.strftime("%Y-%m-%d %H:%M:%S"))
        self.timings = Timings()
        self.t0 = 0.0
        self.fleet: Fleet | None = None
        self._stop = asyncio.Event()
        self._last_bytes: dict[str, tuple[float, int]] = {}
        self._api_mark = 0

    async def run(self) -> SoakReport:
        o = self.o
        await asyncio.to_thread(self.out.mkdir, parents=True, exist_ok=True)
        clip = await asyncio.to_thread(encode_clip, self.out.parent / "clips", o.clip_seconds, o.clip_size, o.clip_kbps)
        srt_pub = range(o.streams - o.srt_publishers, o.streams)
        srt_dest = [(s, o.destinations - 1) for s in range(min(o.srt_destinations, o.streams))]
        fleet = self.fleet = Fleet(
            self.out / "run",
            clip,
            streams=o.streams,
            destinations=o.destinations,
            srt_publishers=srt_pub,
            srt_destinations=srt_dest,
        )
        samples_file = self.out / "samples.jsonl"
        samples_file.unlink(missing_ok=True)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            # Stopped early, the run still stops its relay and publishers and reports what it saw.
            loop.add_signal_handler(sig, self._stop_early, sig)
        try:
            await fleet.start()
            self.t0 = time.monotonic()
            for d in fleet.destinations:
                self._last_bytes[d.name] = (self.t0, d.watch.bytes)
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._sampler(samples_file))
                tasks.create_task(self._killer())
                tasks.create_task(self._dropper())
                tasks.create_task(self._api_churn())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), o.seconds)
                self._stop.set()
            await self._sample(samples_file)
        except Exception as exc:
            self.report.error = f"{type(exc).__name__}: {exc}"
        finally:
            self._stop.set()
            self.report.stop = await fleet.close()
        self.report.elapsed_s = round(time.monotonic() - self.t0, 1) if self.t0 else 0.0
        self._conclude()
        await asyncio.to_thread(self._write)
        return self.report

    def _stop_early(self, sig: signal.Signals) -> None:
        self.report.error = f"stopped early by {sig.name}"
        self._stop.set()

    async def _pause(self, seconds: float) -> bool:
        """Sleep unless the run ends first; True if it is still running."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)
        return not self._stop.is_set()

    # -- the background loops ------------------------------------------------------------------------

    async def _sampler(self, path: Path) -> None:
        while await self._pause(self.o.sample_seconds):
            await self._sample(path)

    async def _sample(self, path: Path) -> None:
        fleet = self.fleet
        assert fleet is not None and fleet.relay.process is not None
        now = time.monotonic()
        point = await asyncio.to_thread(relay_point, fleet.relay.process.pid)
        fleet.note_children()
        tasks: float | None = None
        restarts: int | None = None
        heap: dict[str, float | None] = {}
        try:
            heap = await fleet.metrics(*_HEAP_SERIES, "relay_tasks")
            tasks = heap.pop("relay_tasks")
            restarts = sum(int(r["status"]["restarts"]) for r in await fleet.restreams() if r.get("status"))
        except Exception as exc:
            self.timings.error(f"sample: {type(exc).__name__}")
        kbps: dict[str, float] = {}
        for d in fleet.destinations:
            t_prev, b_prev = self._last_bytes[d.name]
            kbps[d.name] = round((d.watch.bytes - b_prev) * 8 / 1000 / max(now - t_prev, 1e-6), 1)
            self._last_bytes[d.name] = (now, d.watch.bytes)
        recent = [v for values in self.timings.values.values() for v in values[-50:]]
        sample = Sample(
            now,
            round(now - self.t0, 1),
            point["rss_bytes"],
            point["pss_bytes"],
            point["fds"],
            point["threads"],
            None if tasks is None else int(tasks),
            point["ffmpeg_children"],
            point["children_pss_bytes"],
            restarts,
            kbps,
            _p99(recent),
            *(None if heap.get(name) is None else int(heap[name] or 0) for name in _HEAP_SERIES),
        )
        self.report.samples.append(sample)
        line = json.dumps(asdict(sample)) + "\n"
        await asyncio.to_thread(_append, path, line)

    async def _killer(self) -> None:
        fleet = self.fleet
        assert fleet is not None
        turn = 0
        while await self._pause(self.o.kill_every_seconds):
            d = fleet.destinations[turn % len(fleet.destinations)]
            turn += 1
            outage = Outage("kill", d.name, round(time.monotonic() - self.t0, 1), self.o.down_seconds)
            self.report.kills.append(outage)
            await d.receiver.kill()
            await asyncio.sleep(self.o.down_seconds)  # not cut short: a destination is never left down
            await d.receiver.start()
            listening = d.receiver.track.listening_since
            deadline = listening + self.o.back_within_seconds
            await wait_until(functools.partial(all_back, [d], listening), deadline)
            if d.watch.last_media_t > listening:
                outage.back_s = round(d.watch.last_media_t - listening, 2)
            else:
                outage.note = f"no media within {self.o.back_within_seconds:g} s of listening again"

    async def _dropper(self) -> None:
        fleet = self.fleet
        assert fleet is not None
        turn = 0
        while await self._pause(self.o.drop_every_seconds):
            p = fleet.publishers[turn % len(fleet.publishers)]
            down = self.o.short_drop_seconds if turn % 2 == 0 else self.o.long_drop_seconds
            turn += 1
            outage = Outage("drop", f"publisher{p.stream} ({p.protocol})", round(time.monotonic() - self.t0, 1), down)
            self.report.drops.append(outage)
            await fleet.kill_publisher(p)
            await asyncio.sleep(down)
            back_at = time.monotonic()
            reconnects = p.reconnects
            await fleet.start_publisher(p)
            dests = [d for d in fleet.destinations if d.stream == p.stream]
            deadline = back_at + self.o.back_within_seconds
            await wait_until(functools.partial(all_back, dests, back_at), deadline)
            if all(d.watch.last_media_t > back_at for d in dests):
                outage.back_s = round(max(d.watch.last_media_t for d in dests) - back_at, 2)
            else:
                late = [d.name for d in dests if d.watch.last_media_t <= back_at]
                outage.note = f"{', '.join(late)}: no media within {self.o.back_within_seconds:g} s"
            if p.reconnects > reconnects:
                tries = p.reconnects - reconnects + 1
                retried = f"the encoder connected {tries} times (refused until the relay let go of its predecessor)"
                outage.note = f"{outage.note}; {retried}" if outage.note else retried

    async def _api_churn(self) -> None:
        fleet = self.fleet
        assert fleet is not None
        spare = await fleet.call("POST", "/streaming/streams", {"name": "spare"}, timings=self.timings)
        spare_id = int(spare["id"])
        nowhere = f"rtmp://127.0.0.1:{free_port()}/live/spare"
        n = 0
        while await self._pause(self.o.api_every_seconds):
            n += 1
            try:
                t = self.timings
                made = await fleet.call(
                    "POST",
                    "/streaming/restreams",
                    {"restream": {"name": f"spare{n}", "stream_id": spare_id, "uri": nowhere}},
                    timings=t,
                )
                rid = int(made["id"])
                await fleet.call("PATCH", f"/streaming/restreams/{rid}", {"restream": {"name": f"r{n}"}}, timings=t)
                await fleet.call("GET", f"/streaming/restreams/{rid}", timings=t)
                await fleet.call("GET", "/streaming/restreams", timings=t)
                await fleet.call("GET", "/streaming/streams", timings=t)
                await fleet.call("GET", "/healthz", timings=t)
                await fleet.call("DELETE", f"/streaming/restreams/{rid}", timings=t)
            except Exception as exc:
                self.timings.error(f"{type(exc).__name__}: {str(exc)[:80]}")

    # -- verdicts ------------------------------------------------------------------------------------

    def _conclude(self) -> None:
        r = self.report
        fleet = self.fleet
        assert fleet is not None
        r.api = self.timings.summary()
        r.api_errors = dict(self.timings.errors)
        for d in fleet.destinations:
            r.violation_count += d.watch.violation_count
            r.violations += [asdict(v) for v in d.watch.violations]
            r.destinations[d.name] = {
                "protocol": d.protocol,
                "bytes": d.watch.bytes,
                "video_frames": d.watch.video_frames,
                "connections": d.watch.connections_seen,
                "timestamp_regressions": d.watch.violation_count,
            }
        samples = r.samples
        v = r.verdicts
        if len(samples) >= 3:
            end = samples[-1].elapsed_s
            window = 3600.0 if end >= 7200.0 else end / 2
            inside = [s for s in samples if s.elapsed_s >= end - window]
            hours = window / 3600.0
            rss = slope_per_hour([(s.elapsed_s, s.rss_bytes) for s in inside])
            fds = slope_per_hour([(s.elapsed_s, s.fds) for s in inside])
            rss_allowed = max(RSS_GROWTH_BYTES_PER_HOUR * hours, RSS_GROWTH_BYTES_PER_HOUR)
            fd_allowed = max(FD_GROWTH_PER_HOUR * hours, FD_GROWTH_PER_HOUR)
            rss_growth = None if rss is None else rss * hours
            fd_growth = None if fds is None else fds * hours
            v["rss_flat"] = {
                "ok": rss_growth is not None and rss_growth <= rss_allowed,
                "window_s": round(window),
                "slope_mb_per_hour": None if rss is None else round(rss / 1e6, 2),
                "growth_over_window_mb": None if rss_growth is None else round(rss_growth / 1e6, 2),
                "allowed_mb": round(rss_allowed / 1e6, 2),
                # Beside RSS, what the heap did over the same window (told, not judged): flat here while RSS
                # grows is the allocator keeping pages, growth here is something holding memory.
                "malloc_in_use_growth_mb": _growth_mb(inside, "malloc_in_use_bytes", hours),
                "malloc_free_growth_mb": _growth_mb(inside, "malloc_free_bytes", hours),
                "python_blocks_growth": _growth(inside, "python_blocks", hours),
            }
            v["fds_flat"] = {
                "ok": fd_growth is not None and fd_growth <= fd_allowed,
                "window_s": round(window),
                "slope_per_hour": None if fds is None else round(fds, 2),
                "growth_over_window": None if fd_growth is None else round(fd_growth, 2),
                "allowed": fd_allowed,
            }
        else:
            v["rss_flat"] = {"ok": False, "why": f"{len(samples)} samples: too few for a slope"}
            v["fds_flat"] = {"ok": False, "why": f"{len(samples)} samples: too few for a slope"}
        back = [k.back_s for k in r.kills if k.back_s is not None]
        v["killed_destinations_back"] = {
            "ok": bool(r.kills) and all(k.back_s is not None for k in r.kills),
            "kills": len(r.kills),
            "back": len(back),
            "back_s_median": round(statistics.median(back), 2) if back else None,
            "back_s_max": max(back, default=None),
        }
        back_drops = [k.back_s for k in r.drops if k.back_s is not None]
        v["publishers_back"] = {
            "ok": all(k.back_s is not None for k in r.drops),
            "drops": len(r.drops),
            "back": len(back_drops),
            "back_s_max": max(back_drops, default=None),
        }
        v["no_orphans"] = {"ok": not r.stop.get("orphans"), **r.stop}
        v["timestamps_monotonic"] = {"ok": r.violation_count == 0, "regressions": r.violation_count}
        last = samples[-1].dest_kbps if samples else {}
        stalled = sorted(name for name, kbps in last.items() if kbps <= 0)
        v["all_flowing_at_end"] = {"ok": bool(last) and not stalled, "stalled": stalled}

    def _write(self) -> None:
        (self.out / "soak.json").write_text(json.dumps(asdict(self.report), indent=2, default=str))
        (self.out / "soak.md").write_text(render(self.report))


_HEAP_SERIES = ("relay_python_allocated_blocks", "relay_malloc_in_use_bytes", "relay_malloc_free_bytes")
"""The relay's heap gauges, sampled beside RSS in the order of Sample's fields."""


def all_back(destinations: Sequence[Destination], since: float) -> bool:
    return all(d.watch.last_media_t > since for d in destinations)


def _append(path: Path, line: str) -> None:
    with path.open("a") as f:
        f.write(line)


def _p99(values: Sequence[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 1)


def _growth(samples: Sequence[Sample], field: str, hours: float) -> float | None:
    points = [(s.elapsed_s, getattr(s, field)) for s in samples if getattr(s, field) is not None]
    slope = slope_per_hour(points)
    return None if slope is None else round(slope * hours)


def _growth_mb(samples: Sequence[Sample], field: str, hours: float) -> float | None:
    growth = _growth(samples, field, hours)
    return None if growth is None else round(growth / 1e6, 2)


def _mb(value: int | None) -> str:
    return "-" if value is None else f"{value / 1e6:.1f}"


def _thousands(value: int | None) -> str:
    return "-" if value is None else f"{value / 1e3:.0f}"


def render(r: SoakReport) -> str:
    o = r.options
    lines = [
        "# restream-relay soak",
        "",
        f"{r.started}: {o['streams']} streams x {o['destinations']} destinations ({o['srt_publishers']} SRT "
        f"publishers, {o['srt_destinations']} SRT destinations), clip {o['clip_size']} {o['clip_kbps']} kbit/s, "
        f"{r.elapsed_s / 60:.1f} min; a destination killed every {o['kill_every_seconds']:g} s for "
        f"{o['down_seconds']:g} s, a publisher dropped every {o['drop_every_seconds']:g} s "
        f"({o['short_drop_seconds']:g} s / {o['long_drop_seconds']:g} s), "
        f"API writes every {o['api_every_seconds']:g} s.",
        "",
        "| min | relay RSS MB | PSS MB | fds | threads | tasks | ffmpeg | ffmpeg PSS MB | restarts "
        "| dest kbit/s min / median / max | API p99 ms | Python blocks k | malloc in use / free MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in r.samples:
        k = sorted(s.dest_kbps.values())
        lines.append(
            f"| {s.elapsed_s / 60:.1f} | {s.rss_bytes / 1e6:.1f} | {s.pss_bytes / 1e6:.1f} | {s.fds} | {s.threads} "
            f"| {s.tasks} | {s.ffmpeg_children} | {s.children_pss_bytes / 1e6:.1f} | {s.restarts} "
            f"| {k[0] if k else '-'} / {round(statistics.median(k), 1) if k else '-'} / {k[-1] if k else '-'} "
            f"| {s.api_p99_ms} | {_thousands(s.python_blocks)} "
            f"| {_mb(s.malloc_in_use_bytes)} / {_mb(s.malloc_free_bytes)} |"
        )
    lines += ["", "## Verdicts", ""]
    for name, verdict in r.verdicts.items():
        detail = ", ".join(f"{k} {v}" for k, v in verdict.items() if k != "ok")
        lines.append(f"- {'PASS' if verdict['ok'] else 'FAIL'} {name}: {detail}")
    if r.error:
        lines.append(f"- FAIL run: {r.error}")
    lines += ["", "## API latency (ms)", "", "| call | count | p50 | p99 | max |", "|---|---|---|---|---|"]
    for name, s in r.api.items():
        lines.append(f"| {name} | {s['count']} | {s['p50']} | {s['p99']} | {s['max']} |")
    if r.api_errors:
        lines.append(f"\nAPI errors: {r.api_errors}")
    failed = [k for k in [*r.kills, *r.drops] if k.back_s is None]
    if failed:
        lines += ["", "## Outages not recovered", ""]
        lines += [f"- {k.what} {k.name} at {k.t} s: {k.note}" for k in failed]
    if r.violations:
        lines += ["", "## Timestamp regressions (first ones)", ""]
        lines += [f"- {v}" for v in r.violations[:20]]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> tuple[SoakOptions, Path]:
    p = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    d = SoakOptions()
    p.add_argument("--hours", type=float, default=d.seconds / 3600)
    p.add_argument("--streams", type=int, default=d.streams)
    p.add_argument("--destinations", type=int, default=d.destinations)
    p.add_argument("--srt-publishers", type=int, default=d.srt_publishers)
    p.add_argument("--srt-destinations", type=int, default=d.srt_destinations)
    p.add_argument("--sample", type=float, default=d.sample_seconds, help="seconds between samples")
    p.add_argument("--kill-every", type=float, default=d.kill_every_seconds)
    p.add_argument("--down", type=float, default=d.down_seconds)
    p.add_argument("--back-within", type=float, default=d.back_within_seconds)
    p.add_argument("--drop-every", type=float, default=d.drop_every_seconds)
    p.add_argument("--api-every", type=float, default=d.api_every_seconds)
    p.add_argument("--clip-size", default=d.clip_size)
    p.add_argument("--clip-kbps", type=int, default=d.clip_kbps)
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    options = SoakOptions(
        seconds=a.hours * 3600,
        streams=a.streams,
        destinations=a.destinations,
        srt_publishers=a.srt_publishers,
        srt_destinations=a.srt_destinations,
        sample_seconds=a.sample,
        kill_every_seconds=a.kill_every,
        down_seconds=a.down,
        back_within_seconds=a.back_within,
        drop_every_seconds=a.drop_every,
        api_every_seconds=a.api_every,
        clip_size=a.clip_size,
        clip_kbps=a.clip_kbps,
    )
    return options, a.out


def main(argv: Sequence[str] | None = None) -> int:
    options, out = parse_args(argv)
    print(f"soak: {options.seconds / 60:.0f} min, {options.streams} x {options.destinations}, report in {out}")
    report = asyncio.run(Soak(options, out).run())
    print(render(report))
    print(f"written: {out / 'soak.md'}, {out / 'soak.json'} (pid {os.getpid()})")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
