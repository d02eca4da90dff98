"""bench.host_wake: what a wake-up costs on the host, in this thread and in a process of its own."""

from __future__ import annotations

import asyncio

import pytest

from bench.host_wake import measure, wake_cost_us


def test_a_thread_that_only_waits_spends_some_cpu_a_wake_up_but_far_less_than_it_waits() -> None:
    cost = wake_cost_us(0.3, 0.02)
    assert 0 < cost < 20_000  # µs: a wake-up is not free, and it is far from the 20 ms it waited


@pytest.mark.integration
def test_measured_in_a_process_of_its_own() -> None:
    cost = asyncio.run(measure(0.3, 0.02))
    assert cost is not None and 0 < cost < 20_000
