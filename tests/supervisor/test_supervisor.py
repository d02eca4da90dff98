"""The push state machine through the Supervisor, on fake processes and the fake clock (no subprocess, no
sleeping). The real process is tested in tests/push/test_process.py, the two together in
test_fake_ffmpeg.py and test_integration.py."""

from __future__ import annotations

import gc

import pytest

from relay.hub.subscriber import EndCause
from relay.ingest.gate import EndReason
from relay.supervisor import PushState, SupervisorSettings
from relay.supervisor.attempt import Attempt
from tests.supervisor.conftest import Rig, settle
from tests.supervisor.fake_process import FakeProcess, missing_binary

S = PushState
TRAILER = "[out#0/mpegts @ 0x1] [error] Error writing trailer: Input/output error"


async def running(rig: Rig, restream_id: int = 1, key: str = "sekrit-key") -> FakeProcess:
    """Start the push (the stream is live) and let it show output progress."""
    rig.supervisor.reconcile([rig.spec(restream_id, key=key)])
    await settle()
    ffmpeg = rig.processes.last(key)
    ffmpeg.progress()
    assert rig.supervisor.status(restream_id).state is S.RUNNING
    return ffmpeg


async def test_runs_then_ends_cleanly_on_unpublish(rig: Rig) -> None:
    sink = rig.go_live()
    rig.supervisor.reconcile([rig.spec(1)])
    assert rig.supervisor.status(1).state is S.STARTING
    await settle()
    ffmpeg = rig.processes.last()
    assert ffmpeg.started and ffmpeg.bytes_in > 0  # header and GOP at once
    ffmpeg.progress()
    status = rig.supervisor.status(1)
    assert status.state is S.RUNNING and status.bytes_out > 0 and status.frames == 30
    assert "sekrit" not in status.uri and "sekrit" in ffmpeg.uri
    sink.close(EndReason.UNPUBLISH)
    status = await rig.wait_state(1, S.IDLE)
    assert status.last_error is None and status.restarts == 0
    assert not ffmpeg.alive and not ffmpeg.stopped  # it ended on EOF by itself
    assert status.bytes_out > 0  # the last run's figures stay in the status
    assert rig.states(1) == [S.STARTING, S.RUNNING, S.IDLE]


async def test_not_live_waits_idle_then_starts(rig: Rig) -> None:
    rig.supervisor.reconcile([rig.spec(1)])
    assert rig.supervisor.status(1).state is S.IDLE and not rig.processes.made
    rig.go_live()
    rig.supervisor.reconcile([rig.spec(1)])
    await settle()
    rig.processes.last().progress()
    assert rig.supervisor.status(1).state is S.RUNNING


async def test_refused_key_fails_and_retries_only_at_cap(rig: Rig) -> None:
    rig.go_live()
    rig.processes.script = FakeProcess.refuse
    rig.supervisor.reconcile([rig.spec(1)])
    status = await rig.wait_state(1, S.FAILED)
    assert status.last_error is not None and "BadName" in status.last_error
    assert status.next_retry_seconds == pytest.approx(30.0)
    assert any("BadName" in line for line in status.log_tail)
    await rig.advance(29)
    assert rig.supervisor.status(1).state is S.FAILED and len(rig.processes.made) == 1
    # The user toggles the restream: retried at once.
    rig.supervisor.retry_now(1)
    assert rig.supervisor.status(1).state is S.STARTING
    status = await rig.wait_state(1, S.FAILED)
    assert status.restarts == 1 and len(rig.processes.made) == 2
    await rig.advance(30)
    assert rig.supervisor.status(1).restarts == 2  # the cap is the slow retry period


async def test_backoff_grows_to_cap(rig: Rig, settings: SupervisorSettings) -> None:
    rig.go_live()
    rig.processes.script = lambda p: p.exit(1)
    rig.supervisor.reconcile([rig.spec(1)])
    delays = []
    for _ in range(8):
        status = await rig.wait_state(1, S.RETRYING)
        assert status.next_retry_seconds is not None
        delays.append(round(status.next_retry_seconds, 2))  # the last reading comes 1 ms after the retry
        await rig.advance(status.next_retry_seconds + 0.001)
    assert delays[0] <= 1.0
    assert delays == sorted(delays)
    assert delays[-1] == pytest.approx(settings.restart_max_delay_seconds)
    status = rig.supervisor.status(1)
    assert status.last_error == "ffmpeg exited with code 1" and status.restarts >= 7


async def test_the_status_reported_on_entering_retrying_or_failed_says_when_the_next_try_is(rig: Rig) -> None:
    # What the event feed's `restream.status` carries: the status reported at the transition itself.
    rig.go_live()
    rig.processes.script = lambda p: p.exit(1)
    rig.supervisor.reconcile([rig.spec(1)])
    await rig.wait_state(1, S.RETRYING)
    retrying = next(status for rid, status in rig.statuses if rid == 1 and status.state is S.RETRYING)
    assert retrying.next_retry_seconds is not None and 0 < retrying.next_retry_seconds <= 1.0
    rig.processes.script = FakeProcess.refuse
    await rig.advance(retrying.next_retry_seconds + 0.001)
    await rig.wait_state(1, S.FAILED)
    failed = next(status for rid, status in rig.statuses if rid == 1 and status.state is S.FAILED)
    assert failed.next_retry_seconds == pytest.approx(30.0)
    assert [s for s in rig.states(1) if s in (S.RETRYING, S.FAILED)] == [S.RETRYING, S.FAILED]


async def test_connects_when_destination_appears(rig: Rig) -> None:
    rig.go_live()
    rig.processes.script = lambda p: p.fail_to_connect() if len(rig.processes.made) <= 2 else None
    rig.supervisor.reconcile([rig.spec(1)])
    for _ in range(2):
        status = await rig.wait_state(1, S.RETRYING)
        assert "Connection refused" in (status.last_error or "")
        await rig.advance(status.next_retry_seconds or 0)
    rig.processes.last().progress()
    status = rig.supervisor.status(1)
    assert status.state is S.RUNNING and status.restarts == 2


async def test_a_push_that_ran_then_broke_retries_fast(rig: Rig) -> None:
    rig.go_live()
    rig.processes.script = lambda p: p.fail_to_connect() if len(rig.processes.made) <= 3 else None
    rig.supervisor.reconcile([rig.spec(1)])
    for _ in range(3):  # 0.6, 1.2, 2.4 s: the backoff grows while the destination is down
        status = await rig.wait_state(1, S.RETRYING)
        await rig.advance(status.next_retry_seconds or 0)
    ffmpeg = rig.processes.last()
    await rig.advance(6, feeding=True, each_second=ffmpeg.progress)
    ffmpeg.exit(1)
    status = await rig.wait_state(1, S.RETRYING)
    assert status.next_retry_seconds == pytest.approx(0.6)  # not 4.8: it had run for 6 s


async def test_stall_kills_and_restarts(rig: Rig) -> None:
    rig.go_live()
    ffmpeg = await running(rig)
    await rig.advance(10, feeding=True, each_second=ffmpeg.progress)  # progress keeps it alive
    assert rig.supervisor.status(1).state is S.RUNNING and ffmpeg.alive
    await rig.advance(3.5, feeding=True)  # input flows, output does not move
    assert ffmpeg.alive
    await rig.advance(1, feeding=True)
    status = await rig.wait_state(1, S.RETRYING)
    assert status.last_error == "stalled: no output progress for 4s"
    assert ffmpeg.killed and not ffmpeg.alive
    await rig.advance(status.next_retry_seconds or 0, feeding=True)
    assert rig.processes.last() is not ffmpeg and rig.supervisor.status(1).state is S.STARTING


async def test_no_stall_when_input_stops(rig: Rig) -> None:
    sink = rig.go_live()
    rig.supervisor.reconcile([rig.spec(1)])
    await rig.advance(0.5, feeding=True)
    await rig.advance(20)  # input idle for longer than the stall timeout: not a stall
    assert rig.supervisor.status(1).state is S.STARTING and rig.processes.last().alive
    sink.close(EndReason.UNPUBLISH)
    await rig.wait_state(1, S.IDLE)


async def test_broken_output_is_retried_with_its_error(rig: Rig) -> None:
    rig.go_live()
    ffmpeg = await running(rig)
    ffmpeg.say(TRAILER)
    ffmpeg.kill()  # FfmpegProcess kills a push whose output broke at once (tests/push/test_process.py)
    status = await rig.wait_state(1, S.RETRYING)
    assert status.last_error == TRAILER


async def test_sigkilled_ffmpeg_is_restarted(rig: Rig) -> None:
    rig.go_live()
    ffmpeg = await running(rig)
    ffmpeg.exit(-9)  # the OOM killer, an operator
    status = await rig.wait_state(1, S.RETRYING)
    assert status.last_error == "ffmpeg exited with code -9"
    assert status.next_retry_seconds is not None and status.next_retry_seconds <= 1.0
    await rig.advance(1.0)
    assert rig.processes.last() is not ffmpeg
    rig.processes.last().progress()
    status = rig.supervisor.status(1)
    assert status.state is S.RUNNING and status.restarts == 1


async def test_cannot_start_ffmpeg_is_retried(rig: Rig) -> None:
    rig.go_live()
    rig.processes.script = lambda p: setattr(p, "start_error", missing_binary())
    rig.supervisor.reconcile([rig.spec(1)])
    status = await rig.wait_state(1, S.RETRYING)
    assert status.last_error == "cannot start ffmpeg: No such file or directory"


async def test_unsupported_destination_fails_at_cap_without_a_process(rig: Rig) -> None:
    rig.go_live()
    rig.supervisor.reconcile([rig.spec(1, scheme="http")])
    status = rig.supervisor.status(1)
    assert status.state is S.FAILED and status.next_retry_seconds == pytest.approx(30.0)
    assert status.last_error == "unsupported destination scheme 'http'" and not rig.processes.made


async def test_overflow_restarts_with_backoff(rig: Rig) -> None:
    rig.go_live()
    ffmpeg = await running(rig)
    ffmpeg.subscriber.end(EndCause.OVERFLOW, discard=True)  # what the hub does to a reader that keeps falling behind
    status = await rig.wait_state(1, S.RETRYING)
    assert status.last_error == "destination too slow: fell behind repeatedly"
    assert ffmpeg.stopped and not ffmpeg.killed
    assert rig.states(1)[-2:] == [S.STOPPING, S.RETRYING]


async def test_source_change_restarts_on_the_new_source(rig: Rig) -> None:
    rig.go_live()
    ffmpeg = await running(rig)
    # Another encoder takes over with other settings: its first keyframe ends our input (SOURCE_CHANGED).
    rig.go_live(video_config=b"\x17\x00\x00\x00\x00\x01\x4d\x00\x28\xff\xe1")
    await settle()
    assert ffmpeg.stopped and not ffmpeg.alive
    assert rig.processes.last() is not ffmpeg and rig.processes.last().subscriber is not ffmpeg.subscriber
    status = rig.supervisor.status(1)
    assert status.state is S.STARTING and status.restarts == 1 and status.last_error is None


async def test_reconcile_touches_only_what_changed(rig: Rig) -> None:
    rig.go_live()
    a, b = rig.spec(1), rig.spec(2, key="other")
    rig.supervisor.reconcile([a, b])
    await settle()
    first_a, first_b = rig.processes.last("sekrit"), rig.processes.last("other")
    first_a.progress()
    first_b.progress()
    rig.supervisor.reconcile([a, b])  # idempotent
    await settle()
    assert len(rig.processes.made) == 2
    b2 = rig.spec(2, key="changed")
    rig.supervisor.reconcile([a, b2])
    await settle()
    assert first_b.stopped and not first_b.alive and rig.processes.last("changed").alive
    assert rig.processes.of("sekrit") == [first_a] and first_a.alive
    rig.supervisor.reconcile([b2])
    status = await rig.wait_state(1, S.DISABLED)
    assert first_a.stopped and not first_a.alive and rig.processes.last("changed").alive
    assert status.restarts == 0
    rig.supervisor.reconcile([b2])
    assert 1 not in rig.supervisor.statuses()


async def test_a_restart_asked_ends_with_its_attempt(rig: Rig) -> None:
    # A definition change, then removal before the old process ended: the asked restart must not turn
    # the next attempt's failure into an immediate restart.
    rig.go_live()
    await running(rig)
    rig.supervisor.reconcile([rig.spec(1, key="changed")])
    rig.supervisor.reconcile([])
    await rig.wait_state(1, S.DISABLED)
    rig.processes.script = lambda p: p.exit(1)
    rig.supervisor.reconcile([rig.spec(1, key="changed")])
    status = await rig.wait_state(1, S.RETRYING, S.STARTING)
    await settle()
    status = rig.supervisor.status(1)
    assert status.state is S.RETRYING and status.restarts == 0


async def test_close_kills_a_process_that_ignores_the_stop(rig: Rig) -> None:
    rig.go_live()
    ffmpeg = await running(rig)
    ffmpeg.ignores_stop = True
    await rig.supervisor.close()
    assert ffmpeg.stopped and ffmpeg.killed and not ffmpeg.alive
    assert rig.supervisor.status(1).state is S.DISABLED


async def test_drop_and_grace_expiry_ends_push(rig: Rig) -> None:
    sink = rig.go_live()
    ffmpeg = await running(rig)
    sink.close(EndReason.DROP)
    await rig.advance(5)
    assert ffmpeg.alive and rig.processes.made == [ffmpeg]  # kept during the grace period
    await rig.advance(6)
    await rig.wait_state(1, S.IDLE)
    assert not ffmpeg.alive and not ffmpeg.stopped


async def test_retry_due_after_the_stream_ended_goes_idle(rig: Rig) -> None:
    sink = rig.go_live()
    ffmpeg = await running(rig)
    ffmpeg.exit(1)
    status = await rig.wait_state(1, S.RETRYING)
    sink.close(EndReason.UNPUBLISH)  # nobody reconciles in between
    await rig.advance(status.next_retry_seconds or 0)
    assert rig.supervisor.status(1).state is S.IDLE and rig.processes.made == [ffmpeg]


async def test_an_ended_attempt_is_let_go_and_its_log_tail_kept(rig: Rig) -> None:
    """A push keeps what its status shows of the attempt that ended (figures, log tail), not the attempt:
    that held its process, subscriber and command line until the push ended again, so the first restart
    of each destination grew the relay's heap (issue 13's soak, whose kills reached every destination
    only in its second hour: ~245 Python blocks per destination)."""
    rig.go_live()
    keys = [f"sekrit-key-{rid}" for rid in range(1, 5)]
    rig.supervisor.reconcile([rig.spec(rid, key=key) for rid, key in enumerate(keys, start=1)])
    await settle()
    first = [rig.processes.last(key) for key in keys]
    for ffmpeg in first:
        ffmpeg.progress()
        ffmpeg.say(TRAILER)
        ffmpeg.exit(-9)
    for rid in range(1, 5):
        status = await rig.wait_state(rid, S.RETRYING)
        assert status.log_tail[-1] == TRAILER and status.last_error == TRAILER
    assert live_attempts() == 0
    await rig.advance(1.0)
    for ffmpeg, key in zip(first, keys, strict=True):
        assert rig.processes.last(key) is not ffmpeg
        rig.processes.last(key).progress()
    assert [rig.supervisor.status(rid).state for rid in range(1, 5)] == [S.RUNNING] * 4
    assert live_attempts() == 4  # the running ones only


def live_attempts() -> int:
    gc.collect()
    return sum(isinstance(o, Attempt) for o in gc.get_objects())
