"""bench/failover.py's options and report (the run itself is `make bench-failover`; tests/cluster runs the
same cluster)."""

from __future__ import annotations

from bench.failover import Round, parse_args, table


def test_defaults_are_the_relay_s_and_the_table_has_a_median() -> None:
    args = parse_args([])
    assert (args.lease_seconds, args.renew_seconds, args.margin_seconds, args.takeover_idle_seconds) == (
        10.0,
        2.0,
        2.0,
        4.0,
    )
    rounds = [
        Round("node-a", "node-b", (1, 2), 3.9, 4.0, 0.3, 7),
        Round("node-b", "node-c", (1, 2), 2.8, 2.9, 0.4, 5),
        Round("node-c", "node-a", (1, 2), 4.3, 4.4, 0.3, 8),
    ]
    report = table(rounds, args)
    assert "| 1 | node-a | node-b | 1 -> 2 | 3.90 | 4.00 | 0.30 | 7 |" in report
    assert report.splitlines()[-1] == "| median | | | | 3.90 | 4.00 | 0.30 | |"
