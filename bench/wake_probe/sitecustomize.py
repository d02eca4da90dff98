"""The wake-cost probe of `python -m bench.relay_cpu --wake-costs`, loaded into the relay process through
PYTHONPATH (Python imports the first `sitecustomize` on its path at start-up, so this one shadows any other
for that process): what each read of an RTMP publisher costs the
relay's main thread, and how many messages it brought.

A "wake" is one read of the publisher and all it sets off, up to the pushes' pipe writes: a merge's read
(`RtmpConnection._merge_due`, `RELAY_MERGE_INTERVAL_MS`) or a read the loop reports
(`RtmpConnection.buffer_updated`), whichever is outermost; with several publishers, a tick of the server's
read ticker (`ReadTicker._tick`: every merged read it makes in one wake-up). Each is timed in the main thread's CPU time
(`time.thread_time_ns`), and the messages are counted where they leave the connection
(`SessionSink.write`, `SessionSink.write_many`). The methods are wrapped at the process's start (uvloop's
transports keep the protocol's bound `buffer_updated` from the connection's start), timing starts on SIGUSR1
and the wakes are written to `RELAY_BENCH_WAKES` (JSON) on SIGUSR2. The wrappers cost ~1 µs a wake and ~0.3 µs
a message. Nothing happens without `RELAY_BENCH_WAKES`, or in any process but `python -m api`.

With `RELAY_BENCH_WAKE_STAGES=1` each wake also says where its CPU went, by the stages of `STAGES` (each
the sum of its methods' calls inside the wake; none calls another's). Those wrappers read the thread's
clock twice a call (~1.7 µs warm, each read a system call), ~12 calls a merged read of five messages:
~20 µs or more a wake.
"""

from __future__ import annotations

import os
import sys

STAGES: dict[str, tuple[str, ...]] = {
    "read": ("relay.ingest.rtmp_connection:RtmpConnection._read_direct",),
    "parse": ("relay.rtmp.session:ServerSession.receive_data", "relay.rtmp.session:ServerSession.take_media"),
    "fan-out": ("relay.engine.sink:SessionSink.write", "relay.engine.sink:SessionSink.write_many"),
    "writes": ("relay.hub.hub:Hub._end_batch",),
    "re-arm": ("relay.ingest.rtmp_connection:RtmpConnection._merge_reads",),
}
"""What each stage times: the socket read of a merged read or a read-on (the transport's own reads come
before the wake), the session's chunk reader and events, the hub's side of each message (meters,
framing, GOP cache, the subscribers' offers), the read's writes to the pushes, the next interval's pause
and timer. What is left of a wake is the connection's own code and the loop's callback."""


_OUT = os.environ.get("RELAY_BENCH_WAKES")

if _OUT and sys.orig_argv[1:3] == ["-m", "api"]:
    import json
    import signal
    import time
    from collections.abc import Callable
    from pathlib import Path
    from typing import Any

    # This runs while Python starts, before `-m` puts the working directory on the path: the relay imported
    # below (and kept for `-m api`) would be wherever the venv's install points, another checkout's code when
    # the bench runs from a second one. The probe's own checkout goes first.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

    _clock = time.thread_time_ns
    _wakes: list[tuple[int, int] | tuple[int, int, dict[str, int]]] = []
    """(CPU ns, messages) of each wake, and with stages (CPU ns by stage) too."""
    _state: dict[str, Any] = {"on": False, "inside": False, "messages": 0, "started": 0.0}
    _staged = os.environ.get("RELAY_BENCH_WAKE_STAGES") == "1"
    _stages: dict[str, int] = {}
    """CPU ns by stage in the wake under way."""

    def _timed(method: Callable[..., Any]) -> Callable[..., Any]:
        def wake(self: object, *args: object) -> Any:
            if not _state["on"] or _state["inside"]:
                return method(self, *args)
            _state["inside"] = True
            messages = _state["messages"]
            started = _clock()
            try:
                return method(self, *args)
            finally:
                spent = _clock() - started
                if _staged:
                    _wakes.append((spent, _state["messages"] - messages, dict(_stages)))
                    _stages.clear()
                else:
                    _wakes.append((spent, _state["messages"] - messages))
                _state["inside"] = False

        return wake

    def _stage(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def staged(self: object, *args: object) -> Any:
            if not _state["inside"]:
                return method(self, *args)
            started = _clock()
            try:
                return method(self, *args)
            finally:
                _stages[name] = _stages.get(name, 0) + _clock() - started

        return staged

    def _counted(method: Callable[..., Any], many: bool) -> Callable[..., Any]:
        def write(self: object, packets: Any) -> Any:
            _state["messages"] += len(packets) if many else 1
            return method(self, packets)

        return write

    def _install() -> None:
        from relay.engine.sink import SessionSink
        from relay.ingest.read_ticker import ReadTicker
        from relay.ingest.rtmp_connection import RtmpConnection

        ReadTicker._tick = _timed(ReadTicker._tick)  # type: ignore[method-assign]
        RtmpConnection._merge_due = _timed(RtmpConnection._merge_due)  # type: ignore[method-assign]
        RtmpConnection.buffer_updated = _timed(RtmpConnection.buffer_updated)  # type: ignore[method-assign]
        if _staged:  # before the count's wrapper: a message's count is not in its stage
            import importlib

            for name, targets in STAGES.items():
                for target in targets:
                    module, qualname = target.split(":")
                    owner_name, attr = qualname.split(".")
                    owner = getattr(importlib.import_module(module), owner_name)
                    setattr(owner, attr, _stage(name, getattr(owner, attr)))
        SessionSink.write = _counted(SessionSink.write, many=False)  # type: ignore[method-assign]
        SessionSink.write_many = _counted(SessionSink.write_many, many=True)  # type: ignore[method-assign]

    def _start(signum: int, frame: object) -> None:
        _wakes.clear()
        _state["started"] = time.monotonic()
        _state["on"] = True

    def _dump(signum: int, frame: object) -> None:
        _state["on"] = False
        window = time.monotonic() - float(_state["started"])
        import relay

        with open(str(_OUT) + ".tmp", "w") as out:
            json.dump({"window_s": window, "wakes": _wakes, "relay": str(Path(relay.__file__).resolve().parent)}, out)
        os.replace(str(_OUT) + ".tmp", str(_OUT))

    _install()
    signal.signal(signal.SIGUSR1, _start)
    signal.signal(signal.SIGUSR2, _dump)
