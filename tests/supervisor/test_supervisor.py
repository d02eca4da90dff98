from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from relay.ingest.gate import EndReason
from relay.supervisor import PushState, SupervisorSettings
from tests.supervisor.conftest import Rig


def children_alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def runner_pid(rig: Rig, restream_id: int) -> int | None:
    runner = rig.supervisor._runners[restream_id]
    return runner._attempt.process.pid if runner._attempt else None  # type: ignore[attr-defined]


async def test_runs_then_ends_cleanly_on_unpublish(rig: Rig) -> None:
    sink = rig.go_live()
    rig.supervisor.reconcile([rig.spec(1)])
    status = await rig.wait_state(1, PushState.RUNNING)
    assert status.bytes_out > 0 and "sekrit" not in status.uri
    pid = runner_pid(rig, 1)
    rig.stop_feeding()
    sink.close(EndReason.UNPUBLISH)
    status = await rig.wait_state(1, PushState.IDLE)
    assert status.last_error is None and status.restarts == 0
    assert not children_alive(pid)
    assert rig.states(1) == [PushState.STARTING, PushState.RUNNING, PushState.IDLE]


async def test_not_live_waits_idle_then_starts(rig: Rig) -> None:
    rig.supervisor.reconcile([rig.spec(1)])
    assert rig.supervisor.status(1).state is PushState.IDLE
    rig.go_live()
    rig.supervisor.reconcile([rig.spec(1)])
    await rig.wait_state(1, PushState.RUNNING)


async def test_refused_key_fails_and_retries_only_at_cap(rig: Rig) -> None:
    rig.go_live()
    rig.supervisor.reconcile([rig.spec(1, mode="refuse")])
    status = await rig.wait_state(1, PushState.FAILED)
    assert status.last_error is not None and "BadName" in status.last_error
    assert status.next_retry_seconds == pytest.approx(30.0)
    assert "sekrit" not in repr(rig.statuses)
    rig.clock.advance(29)
    assert rig.supervisor.status(1).state is PushState.FAILED
    # The user toggles the restream: retried at once.
    rig.supervisor.retry_now(1)
    assert rig.supervisor.status(1).state is PushState.STARTING
    status = await rig.wait_state(1, PushState.FAILED)
    assert status.restarts == 1


async def test_backoff_grows_to_cap(rig: Rig, settings: SupervisorSettings) -> None:
    rig.go_live()
    rig.supervisor.reconcile([rig.spec(1, mode="exit")])
    delays = []
    for _ in range(8):
        status = await rig.wait_state(1, PushState.RETRYING)
        assert status.next_retry_seconds is not None
        delays.append(status.next_retry_seconds)
        rig.clock.advance(status.next_retry_seconds + 0.001)
        await rig.wait_state(1, PushState.STARTING, PushState.RETRYING)
    assert delays[0] <= 1.0
    assert delays == sorted(delays)
    assert delays[-1] == pytest.approx(settings.restart_max_delay_seconds)
    assert "sekrit" not in (rig.supervisor.status(1).last_error or "x")
    assert rig.supervisor.status(1).restarts >= 7


async def test_connects_when_destination_appears(rig: Rig, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_FFMPEG_DIR", str(tmp_path))
    rig.go_live()
    rig.supervisor.reconcile([rig.spec(1, mode="fail2")])
    for _ in range(2):
        status = await rig.wait_state(1, PushState.RETRYING)
        assert "Connection refused" in (status.last_error or "")
        rig.clock.advance(status.next_retry_seconds or 0)
    status = await rig.wait_state(1, PushState.RUNNING)
    assert status.restarts == 2


async def test_stall_kills_and_restarts(rig: Rig) -> None:
    rig.go_live()
    rig.supervisor.reconcile([rig.spec(1, mode="stall")])
    await rig.wait_state(1, PushState.RUNNING)
    pid = runner_pid(rig, 1)
    await asyncio.sleep(0.5)  # the fake stops reporting progress after 3 blocks
    for _ in range(10):
        rig.clock.advance(1.0)
        await asyncio.sleep(0.05)
        if rig.supervisor.status(1).state is PushState.RETRYING:
            break
    status = await rig.wait_state(1, PushState.RETRYING)
    assert status.last_error is not None and status.last_error.startswith("stalled")
    assert not children_alive(pid)


async def test_broken_output_is_killed_at_once_not_left_in_cleanup(rig: Rig) -> None:
    rig.go_live()
    rig.supervisor.reconcile([rig.spec(1, mode="trailer")])
    await rig.wait_state(1, PushState.RUNNING)
    pid = runner_pid(rig, 1)
    # The fake hangs 30 s after its trailer error; the push must not wait for it.
    status = await asyncio.wait_for(rig.wait_state(1, PushState.RETRYING), 5.0)
    assert "Error writing" in (status.last_error or "")  # the mode name is masked like any query value
    assert not children_alive(pid)


async def test_no_stall_when_input_stops(rig: Rig) -> None:
    sink = rig.go_live()
    rig.supervisor.reconcile([rig.spec(1, mode="noprogress")])
    await asyncio.sleep(0.3)
    rig.stop_feeding()
    rig.clock.advance(10)  # input idle for longer than the stall timeout: not a stall
    rig.clock.advance(10)
    assert rig.supervisor.status(1).state is PushState.STARTING
    sink.close(EndReason.UNPUBLISH)
    await rig.wait_state(1, PushState.IDLE)


async def test_sigkilled_ffmpeg_is_restarted(rig: Rig) -> None:
    rig.go_live()
    rig.supervisor.reconcile([rig.spec(1)])
    await rig.wait_state(1, PushState.RUNNING)
    pid = runner_pid(rig, 1)
    assert pid is not None
    os.killpg(pid, signal.SIGKILL)
    status = await rig.wait_state(1, PushState.RETRYING)
    assert status.next_retry_seconds is not None and status.next_retry_seconds <= 1.0
    rig.clock.advance(1.0)
    status = await rig.wait_state(1, PushState.RUNNING)
    assert status.restarts == 1 and runner_pid(rig, 1) != pid


async def test_reconcile_touches_only_what_changed(rig: Rig) -> None:
    rig.go_live()
    a, b = rig.spec(1), rig.spec(2, key="other")
    rig.supervisor.reconcile([a, b])
    await rig.wait_state(1, PushState.RUNNING)
    await rig.wait_state(2, PushState.RUNNING)
    pid_a, pid_b = runner_pid(rig, 1), runner_pid(rig, 2)
    rig.supervisor.reconcile([a, b])  # idempotent
    assert (runner_pid(rig, 1), runner_pid(rig, 2)) == (pid_a, pid_b)
    b2 = rig.spec(2, key="changed")
    rig.supervisor.reconcile([a, b2])
    await asyncio.sleep(0.1)
    await rig.wait_state(2, PushState.RUNNING)
    assert runner_pid(rig, 2) != pid_b and runner_pid(rig, 1) == pid_a
    rig.supervisor.reconcile([b2])
    status = await rig.wait_state(1, PushState.DISABLED)
    assert not children_alive(pid_a) and runner_pid(rig, 2) is not None
    assert status.restarts == 0
    rig.supervisor.reconcile([b2])
    assert 1 not in rig.supervisor.statuses()


async def test_close_kills_process_ignoring_sigint(rig: Rig) -> None:
    rig.go_live()
    rig.supervisor.reconcile([rig.spec(1, mode="ignoreint")])
    await rig.wait_state(1, PushState.RUNNING)
    pid = runner_pid(rig, 1)
    await asyncio.wait_for(rig.supervisor.close(), 10)
    assert not children_alive(pid)


async def test_drop_and_grace_expiry_ends_push(rig: Rig) -> None:
    sink = rig.go_live()
    rig.supervisor.reconcile([rig.spec(1)])
    await rig.wait_state(1, PushState.RUNNING)
    pid = runner_pid(rig, 1)
    rig.stop_feeding()
    sink.close(EndReason.DROP)
    await asyncio.sleep(0.2)
    assert runner_pid(rig, 1) == pid  # kept during the grace period
    rig.clock.advance(11)
    await rig.wait_state(1, PushState.IDLE)
    assert not children_alive(pid)


def test_backoff_retries_fast_after_a_running_push_breaks_then_grows() -> None:
    from relay.supervisor.backoff import Backoff
    from relay.supervisor.settings import SupervisorSettings

    settings = SupervisorSettings(restart_initial_delay_seconds=0.5, restart_jitter_ratio=0.0,
                                  fast_retry_min_run_seconds=5.0, fast_retry_window_seconds=15.0)
    backoff = Backoff(settings, rand=lambda: 0.5)
    # Never got running: plain exponential growth.
    assert [backoff.next_delay(0.0, now) for now in (0.0, 1.0, 2.0)] == [0.5, 1.0, 2.0]
    # It then ran for a minute and broke: every retry within the window comes at the initial delay.
    backoff.reset()
    now = 100.0
    delays = [backoff.next_delay(60.0, now)]
    while now < 114.0:
        now += delays[-1]
        delays.append(backoff.next_delay(0.0, now))
    assert len(delays) == 29 and set(delays) == {0.5}
    # Past the window the delay grows again (a long outage does not mean a retry storm).
    later = [backoff.next_delay(0.0, 116.0 + i) for i in range(4)]
    assert later == [0.5, 1.0, 2.0, 4.0]
    # A destination that drops us seconds after each connect gets no fast window.
    flapping = Backoff(settings, rand=lambda: 0.5)
    assert [flapping.next_delay(2.0, float(t)) for t in range(4)] == [0.5, 1.0, 2.0, 4.0]
