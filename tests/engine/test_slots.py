"""Push slots alone: the node cap, each client's cap, and who gets a freed slot."""

from __future__ import annotations

from relay.engine.slots import PushSlots


def slots(node: int, per_client: dict[int, int] | None = None, default: int = 10) -> PushSlots:
    caps = per_client or {}
    return PushSlots(node, lambda client: caps.get(client, default), wall_clock=lambda: 1000.0)


def test_a_client_never_runs_more_than_its_cap() -> None:
    pool = slots(10, {1: 2})
    assert [pool.want(rid, 1) for rid in (1, 2, 3)] == [True, True, False]
    waiting = pool.waiting(3)
    assert waiting is not None and "client limit of 2 running pushes" in waiting.reason
    assert pool.running(1) == 2 and pool.running() == 2
    assert pool.release(1) == [3]  # its own slot freed: its waiter runs
    assert pool.holds(3) and pool.waiting(3) is None


def test_the_node_cap_holds_and_a_freed_slot_goes_to_the_client_running_fewest() -> None:
    pool = slots(3)
    assert all(pool.want(rid, 1) for rid in (1, 2, 3))  # client 1 took the node first
    assert not pool.want(4, 1)
    assert not pool.want(5, 2)
    assert not pool.want(6, 2)
    reason = pool.waiting(5)
    assert reason is not None and "node limit of 3 running pushes" in reason.reason
    assert pool.release(1) == [5]  # client 2 runs none, client 1 two: client 2 first, though 4 waited longer
    assert pool.release(2) == [4]  # one each now: the earliest waiter goes first
    assert pool.release(3) == [6]
    assert pool.running(1) == 1 and pool.running(2) == 2 and pool.waiting_count() == 0


def test_a_waiter_that_is_no_longer_wanted_leaves_the_line() -> None:
    pool = slots(1)
    assert pool.want(1, 1) and not pool.want(2, 2)
    assert pool.release(2) == []  # it only waited
    assert pool.waiting_count() == 0
    assert pool.release(1) == [] and pool.running() == 0


def test_asking_again_keeps_the_slot_or_the_place_in_line() -> None:
    pool = slots(1)
    assert pool.want(1, 1) and pool.want(1, 1)
    assert pool.running() == 1
    assert not pool.want(2, 1)
    first = pool.waiting(2)
    assert not pool.want(2, 1)
    assert pool.waiting(2) == first  # same place, same "since"
