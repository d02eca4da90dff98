"""Prometheus exposition of what the relay is doing, read from the engine at scrape time.

Every scrape builds its own `CollectorRegistry` (never prometheus_client's global one): the relay's
series for one client, the process figures of this process, and the ffmpeg processes it runs.
Labels carry ids and names, never tokens, keys or destination URIs.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from api.bodies import restream_view, stream_view
from api.limits import ConnectionGuard
from api.routes.common import Node
from relay import malloc
from relay.cluster.ownership import PostgresOwnership
from relay.doors import DoorCounts, DoorRefusal
from relay.ingest.gate import StreamInput
from relay.limits import LIMIT_NAMES
from relay.pull.runner import PullState
from relay.store.base import Store
from relay.store.models import RestreamRecord, StreamRecord
from relay.supervisor.states import PushState

RESTREAM_STATES = tuple(state.value for state in PushState)
"""Every state a push can be in (the `state` label of relay_restream_state)."""

MAX_OBJECTS_PER_KIND = 2000
"""A bound on how many streams (and restreams) of one client a scrape or a stats event covers."""
_PAGE = 500


@dataclass(frozen=True, slots=True)
class ClientDefinitions:
    """One client's streams and restreams as the store holds them (newest first)."""

    client_id: int
    streams: list[StreamRecord]
    restreams: list[RestreamRecord]


async def load_definitions(store: Store, client_id: int) -> ClientDefinitions:
    """All streams and restreams of a client, up to MAX_OBJECTS_PER_KIND of each."""
    streams: list[StreamRecord] = []
    while len(streams) < MAX_OBJECTS_PER_KIND:
        page = await store.list_streams(client_id, len(streams), _PAGE)
        streams += page.items
        if len(page.items) < _PAGE:
            break
    restreams: list[RestreamRecord] = []
    while len(restreams) < MAX_OBJECTS_PER_KIND:
        rpage = await store.list_restreams(client_id, len(restreams), _PAGE)
        restreams += rpage.items
        if len(rpage.items) < _PAGE:
            break
    return ClientDefinitions(client_id, streams, restreams)


class RelayCollector(Collector):
    """The relay's own series for one client's definitions, with live figures read on `collect()`."""

    def __init__(self, node: Node, definitions: ClientDefinitions) -> None:
        self._node = node
        self._definitions = definitions

    def collect(self) -> Iterator[Metric]:
        engine, defs = self._node.engine, self._definitions
        stream_labels = ["stream_id", "name", "client_id"]
        live = GaugeMetricFamily(
            "relay_stream_live", "1 while a publisher is connected to the stream", labels=stream_labels
        )
        active = GaugeMetricFamily(
            "relay_stream_active", "1 when the stream accepts publishers (its `active` field)", labels=stream_labels
        )
        ingest_bytes = CounterMetricFamily(
            "relay_stream_ingest_bytes",
            "Media bytes received since the relay started, all sessions",
            labels=stream_labels,
        )
        ingest_rate = GaugeMetricFamily(
            "relay_stream_ingest_bitrate_bits_per_second", "Ingest bitrate over the last seconds", labels=stream_labels
        )
        ingest_uptime = GaugeMetricFamily(
            "relay_stream_uptime_seconds", "Seconds since the current publishing session started", labels=stream_labels
        )
        feeding = GaugeMetricFamily(
            "relay_stream_input",
            "1 for the input (main, backup) feeding the destinations, 0 for the other",
            labels=[*stream_labels, "input"],
        )
        backup_live = GaugeMetricFamily(
            "relay_stream_backup_live", "1 while a publisher is connected on the backup input", labels=stream_labels
        )
        switches = CounterMetricFamily(
            "relay_stream_input_switches",
            "Times another input took over feeding the destinations since the relay started",
            labels=stream_labels,
        )
        owner = GaugeMetricFamily(
            "relay_stream_owner",
            "1 for the node running the live stream (several nodes: the holder of its lease)",
            labels=[*stream_labels, "node_id"],
        )
        pull_state = GaugeMetricFamily(
            "relay_stream_pull_state",
            "A pulled stream (`pull: true`) run here: 1 for its pull's current state, 0 for the others",
            labels=[*stream_labels, "state"],
        )
        pull_attempts = CounterMetricFamily(
            "relay_stream_pull_attempts",
            "Attempts to read the pulled source since the pull started (the first one included)",
            labels=stream_labels,
        )
        for stream in defs.streams:
            labels = [str(stream.id), stream.name, str(stream.client_id)]
            snapshot = engine.stream_snapshot(stream.id)
            if snapshot.pull is not None:
                for pulling in PullState:
                    pull_state.add_metric([*labels, pulling.value], 1.0 if snapshot.pull.state is pulling else 0.0)
                pull_attempts.add_metric(labels, snapshot.pull.attempts)
            view = stream_view(engine, stream.id)  # another node's stream: live as its owner published it
            live.add_metric(labels, 1.0 if view["live"] else 0.0)
            if view["node_id"] is not None:
                owner.add_metric([*labels, view["node_id"]], 1.0)
            active.add_metric(labels, 1.0 if stream.active else 0.0)
            ingest_bytes.add_metric(labels, snapshot.status.bytes_in_total)
            ingest_rate.add_metric(labels, snapshot.status.bitrate_kbps * 1000)
            ingest_uptime.add_metric(labels, snapshot.status.uptime_seconds)
            for stream_input in StreamInput:
                feeding.add_metric([*labels, stream_input.value], 1.0 if snapshot.input is stream_input else 0.0)
            backup_live.add_metric(labels, 1.0 if snapshot.backup_live else 0.0)
            switches.add_metric(labels, snapshot.input_switches)
        yield from (live, active, ingest_bytes, ingest_rate, ingest_uptime, feeding, backup_live, switches, owner)
        yield from (pull_state, pull_attempts)

        restream_labels = ["restream_id", "stream_id", "name", "client_id"]
        state = GaugeMetricFamily(
            "relay_restream_state",
            "1 for the push's current state, 0 for the others",
            labels=[*restream_labels, "state"],
        )
        r_active = GaugeMetricFamily(
            "relay_restream_active", "1 when the destination is enabled (`active`)", labels=restream_labels
        )
        r_bytes = CounterMetricFamily("relay_restream_bytes", "Bytes pushed to the destination", labels=restream_labels)
        r_rate = GaugeMetricFamily(
            "relay_restream_bitrate_bits_per_second", "Push bitrate over the last seconds", labels=restream_labels
        )
        r_restarts = CounterMetricFamily(
            "relay_restream_restarts", "Times the push was restarted after a failure", labels=restream_labels
        )
        r_uptime = GaugeMetricFamily(
            "relay_restream_uptime_seconds", "Seconds the push has been running", labels=restream_labels
        )
        r_acked = GaugeMetricFamily(
            "relay_restream_acked_bits_per_second",
            "What the destination acknowledged (TCP) over the last 5 s; RTMP(S) pushes while running",
            labels=restream_labels,
        )
        r_rtt = GaugeMetricFamily(
            "relay_restream_rtt_seconds", "Round-trip time of the push's TCP connection", labels=restream_labels
        )
        r_retrans = GaugeMetricFamily(
            "relay_restream_retransmits",
            "Segments retransmitted on the push's current TCP connection",
            labels=restream_labels,
        )
        r_unacked = GaugeMetricFamily(
            "relay_restream_unacked_bytes",
            "Bytes the destination has not acknowledged yet (in flight or in the send buffer)",
            labels=restream_labels,
        )
        r_behind = GaugeMetricFamily(
            "relay_restream_behind_live_seconds",
            "How far behind live the destination is: our queue plus its unacknowledged bytes",
            labels=restream_labels,
        )
        srt_families = _srt_link_families(restream_labels)
        for restream in defs.restreams:
            labels = [str(restream.id), str(restream.stream_id), restream.name, str(restream.client_id)]
            _, status, _ = restream_view(engine, restream)  # this node's push, or the owner's published status
            for name in RESTREAM_STATES:
                state.add_metric([*labels, name], 1.0 if status["state"] == name else 0.0)
            r_active.add_metric(labels, 1.0 if restream.active else 0.0)
            r_bytes.add_metric(labels, status["bytes"])
            r_rate.add_metric(labels, status["bitrate_kbps"] * 1000)
            r_restarts.add_metric(labels, status["restarts"])
            r_uptime.add_metric(labels, status["uptime_seconds"])
            acked_kbps, rtt_ms = status.get("acked_bitrate_kbps"), status.get("rtt_ms")
            for family, value in (
                (r_acked, None if acked_kbps is None else acked_kbps * 1000),
                (r_rtt, None if rtt_ms is None else rtt_ms / 1000),
                (r_retrans, status.get("retransmits")),
                (r_unacked, status.get("unacked_bytes")),
                (r_behind, status.get("behind_live_seconds")),
            ):
                if value is not None:
                    family.add_metric(labels, float(value))
            link = status.get("srt")
            if link:  # an SRT destination the relay's own caller sends to, connected
                for field, (family, scale) in srt_families.items():
                    if link.get(field) is not None:  # another node's published status may predate a field
                        family.add_metric(labels, float(link[field]) * scale)
        yield from (state, r_active, r_bytes, r_rate, r_restarts, r_uptime)
        yield from (r_acked, r_rtt, r_retrans, r_unacked, r_behind)
        yield from (family for family, _ in srt_families.values())

        yield from self._limits()

        refusals = CounterMetricFamily(
            "relay_ingest_refusals",
            "Publish attempts refused by the relay (whole node), by transport and reason",
            labels=["transport", "reason"],
        )
        for (transport, reason), count in sorted(engine.admission.refusals.items()):
            refusals.add_metric([transport, reason], float(count))
        yield refusals

        ownership = engine.ownership
        if isinstance(ownership, PostgresOwnership):  # several nodes: this node's leases
            node = [ownership.node_id]
            held = GaugeMetricFamily("relay_cluster_leases", "Stream leases this node holds", labels=["node_id"])
            held.add_metric(node, len(ownership.owned()))
            renewals = CounterMetricFamily(
                "relay_cluster_lease_renewals", "Lease renewals the database answered", labels=["node_id"]
            )
            renewals.add_metric(node, ownership.renewals)
            failures = CounterMetricFamily(
                "relay_cluster_lease_renewal_failures",
                "Lease renewals that failed (database unreachable or slow)",
                labels=["node_id"],
            )
            failures.add_metric(node, ownership.renewal_failures)
            lost = CounterMetricFamily(
                "relay_cluster_leases_lost",
                "Leases this node lost (taken over, expired, not provable in time)",
                labels=["node_id"],
            )
            lost.add_metric(node, ownership.leases_lost)
            yield from (held, renewals, failures, lost)

    def _limits(self) -> Iterator[Metric]:
        """The client's use against its limits, and the node's running pushes against its cap."""
        engine, defs = self._node.engine, self._definitions
        client = str(defs.client_id)
        limits = engine.limits.of(defs.client_id)
        per_stream = Counter(restream.stream_id for restream in defs.restreams)
        usage = {
            "streams": len(defs.streams),
            "restreams_per_stream": max(per_stream.values(), default=0),
            "pushes": engine.pushes.slots.running(defs.client_id),
        }
        limit = GaugeMetricFamily("relay_client_limit", "The client's limit", labels=["client_id", "limit"])
        use = GaugeMetricFamily(
            "relay_client_usage",
            "The client's use of each limit (restreams_per_stream: its fullest stream)",
            labels=["client_id", "limit"],
        )
        for name in LIMIT_NAMES:
            limit.add_metric([client, name], getattr(limits, name))
            use.add_metric([client, name], usage[name])
        slots = engine.pushes.slots
        yield limit
        yield use
        yield GaugeMetricFamily("relay_pushes_running", "Pushes holding a slot on this node", value=slots.running())
        yield GaugeMetricFamily("relay_pushes_limit", "The node's cap on running pushes", value=slots.node_cap)
        yield GaugeMetricFamily(
            "relay_pushes_waiting", "Pushes of live streams waiting for a slot", value=slots.waiting_count()
        )


def _srt_link_families(labels: list[str]) -> dict[str, tuple[GaugeMetricFamily, float]]:
    """An SRT destination's link as libsrt measures it on the relay's caller (the restream's `status.srt`):
    the field of `status.srt` -> (its family, the factor to the family's unit).

    Gauges, as the TCP figures are: libsrt counts per connection, from zero again after a reconnect."""

    def gauge(name: str, documentation: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(f"relay_restream_srt_{name}", documentation, labels=labels)

    return {
        "rtt_ms": (gauge("rtt_seconds", "Round-trip time of the push's SRT connection (libsrt's estimate)"), 1e-3),
        "send_rate_kbps": (
            gauge("sent_bits_per_second", "Payload sent to the SRT destination over the last second, no retransmits"),
            1000.0,
        ),
        "bandwidth_mbps": (
            gauge("bandwidth_bits_per_second", "libsrt's estimate of the SRT link's capacity"),
            1e6,
        ),
        "send_buffer_ms": (
            gauge("send_buffer_seconds", "Media sent to the SRT destination and not acknowledged yet"),
            1e-3,
        ),
        "latency_ms": (gauge("latency_seconds", "The latency negotiated with the SRT destination"), 1e-3),
        "bytes_sent": (
            gauge("sent_bytes", "Payload bytes sent on the push's current SRT connection, no retransmits"),
            1.0,
        ),
        "packets_sent": (
            gauge("sent_packets", "Data packets sent on the push's current SRT connection, no retransmits"),
            1.0,
        ),
        "packets_lost": (
            gauge("lost_packets", "Packets the SRT destination reported missing (most are then retransmitted)"),
            1.0,
        ),
        "packets_retransmitted": (
            gauge("retransmitted_packets", "Packets retransmitted on the push's current SRT connection"),
            1.0,
        ),
        "packets_dropped": (
            gauge("dropped_packets", "Packets given up on (too late to play): holes the destination shows"),
            1.0,
        ),
    }


@dataclass(frozen=True, slots=True)
class ChildProcess:
    pid: int
    name: str
    resident_bytes: int


def child_processes(parent: int, proc: Path = Path("/proc")) -> list[ChildProcess]:
    """Direct children of `parent`, read from /proc (empty where there is no /proc)."""
    page_size = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
    children: list[ChildProcess] = []
    try:
        entries = [entry for entry in proc.iterdir() if entry.name.isdigit()]
    except OSError:
        return children
    for entry in entries:
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone since the listing
        # `pid (comm) state ppid ...`; comm may hold spaces and parentheses, so split at the last ')'.
        head, _, rest = stat.rpartition(")")
        fields = rest.split()
        if len(fields) < 22 or not fields[1].isdigit() or int(fields[1]) != parent:
            continue
        name = head.partition("(")[2]
        children.append(ChildProcess(int(entry.name), name, int(fields[21]) * page_size))
    return children


class FfmpegProcessCollector(Collector):
    """How many ffmpeg processes this relay runs (its pushes) and the memory they hold."""

    def __init__(self, proc: Path = Path("/proc"), pid: int | None = None) -> None:
        self._proc = proc
        self._pid = pid

    def collect(self) -> Iterator[Metric]:
        if not self._proc.is_dir():
            return
        ffmpegs = [child for child in child_processes(self._pid or os.getpid(), self._proc) if "ffmpeg" in child.name]
        yield GaugeMetricFamily("relay_ffmpeg_processes", "ffmpeg child processes of the relay", value=len(ffmpegs))
        yield GaugeMetricFamily(
            "relay_ffmpeg_resident_memory_bytes",
            "Resident memory of the ffmpeg child processes",
            value=sum(child.resident_bytes for child in ffmpegs),
        )


class TaskCollector(Collector):
    """How many asyncio tasks the relay's event loop holds: flat over a long run, or something leaks tasks
    (the soak samples it)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def collect(self) -> Iterator[Metric]:
        tasks = len(asyncio.all_tasks(self._loop))
        yield GaugeMetricFamily("relay_tasks", "asyncio tasks not yet done on the relay's event loop", value=tasks)


class HeapCollector(Collector):
    """Where this process's memory is, to tell a leak from an allocator keeping pages: what Python holds
    (its allocated blocks) and, from glibc's malloc over all its arenas, the bytes in use and the free bytes
    it keeps. RSS that grows while these stay flat is the allocator's, not ours (the soak samples them)."""

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "relay_python_allocated_blocks",
            "Memory blocks the Python interpreter holds",
            value=sys.getallocatedblocks(),
        )
        held = malloc.heap()
        if held is None:
            return
        yield GaugeMetricFamily(
            "relay_malloc_in_use_bytes",
            "Bytes malloc has handed out and not had back, over all arenas and mmapped blocks",
            value=held.in_use_bytes,
        )
        yield GaugeMetricFamily(
            "relay_malloc_free_bytes",
            "Free bytes malloc keeps in its arenas instead of returning them",
            value=held.free_bytes,
        )


@dataclass(frozen=True, slots=True)
class Doors:
    """Where the node counts what it refuses or cuts at its doors (the app's `DOORS`)."""

    guard: ConnectionGuard | None = None
    """The API's, when its site listens through one."""
    ingest: Sequence[Callable[[], DoorCounts]] = ()
    """Each ingest listener's counts (RTMP, RTMPS, SRT), read on the engine's loop."""


DOORS = web.AppKey("doors", Doors)


class DoorCollector(Collector):
    """What the node refuses or cuts at its doors, before any request or publish is looked at: the API's
    connections (its `ConnectionGuard`, on the API's loop: plain reads of counts) and each ingest
    listener's (`DoorCounts`, read on the engine's loop where the scrape runs)."""

    def __init__(self, doors: Doors) -> None:
        self._guard = doors.guard
        self._ingest = doors.ingest

    def collect(self) -> Iterator[Metric]:
        guard = self._guard
        if guard is not None:
            refused = CounterMetricFamily(
                "relay_http_connections_refused",
                "API connections closed at accept: max_connections open and every one inside a request",
                labels=["reason"],
            )
            refused.add_metric([DoorRefusal.MAX_CONNECTIONS.value], guard.refused)
            cut = CounterMetricFamily(
                "relay_http_connections_cut",
                "API connections the node closed: evicted (the longest waiting, to make room), header_timeout "
                "(a request's headers not in time), body_timeout (a body not in time: answered 408)",
                labels=["reason"],
            )
            cut.add_metric(["evicted"], guard.evicted)
            cut.add_metric(["header_timeout"], guard.header_timeouts)
            cut.add_metric(["body_timeout"], guard.body_timeouts)
            yield refused
            yield cut
            yield GaugeMetricFamily(
                "relay_http_open_connections", "API connections open now", value=guard.open_connections
            )
        if not self._ingest:
            return
        transport = ["transport"]
        i_refused = CounterMetricFamily(
            "relay_ingest_connections_refused",
            "Ingest connections (RTMP, RTMPS) and SRT handshakes refused before the stream was looked up, "
            "by transport and reason: a connection limit full with no anonymous connection to evict, an SRT "
            "address over its handshake rate, a malformed SRT handshake or streamid",
            labels=[*transport, "reason"],
        )
        i_cut = CounterMetricFamily(
            "relay_ingest_connections_cut",
            "Ingest connections the node closed itself (kicks apart), by transport and reason: evicted (not "
            "publishing, to make room), handshake_timeout, publish_timeout (no publish accepted in time), "
            "idle_timeout (nothing received, publishing or not), protocol_error (RTMP or pre-auth limits broken)",
            labels=[*transport, "reason"],
        )
        i_open = GaugeMetricFamily("relay_ingest_open_connections", "Ingest connections open now", labels=transport)
        for door in (read() for read in self._ingest):
            for refusal, count in door.refused.items():
                i_refused.add_metric([door.transport, refusal.value], count)
            for cause, count in door.cut.items():
                i_cut.add_metric([door.transport, cause.value], count)
            i_open.add_metric([door.transport], door.open_connections)
        yield from (i_refused, i_cut, i_open)


def registry_for(node: Node, definitions: ClientDefinitions, extra: Sequence[Collector] = ()) -> CollectorRegistry:
    """A fresh registry holding everything one scrape reports (`extra`: node-wide collectors of the app's)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RelayCollector(node, definitions))
    registry.register(FfmpegProcessCollector())
    registry.register(TaskCollector(asyncio.get_running_loop()))
    registry.register(HeapCollector())
    for collector in extra:
        registry.register(collector)
    ProcessCollector(registry=registry)
    return registry


async def render(node: Node, client_id: int, accept: str | None, extra: Sequence[Collector] = ()) -> tuple[bytes, str]:
    """The exposition for one client's scrape, in the format the `Accept` header asks for."""
    definitions = await load_definitions(node.store, client_id)
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry_for(node, definitions, extra)), content_type
