"""A periodic job failing round after round (the reconcile while the database is away) logs the outage once,
a new line only when the reason changes, and one line when it works again."""

from __future__ import annotations

import logging

import pytest

from relay.engine.outage_log import OutageLog
from relay.store.base import StoreUnavailable

log = logging.getLogger("relay.test.outage")


def _fail(outage: OutageLog, exc: Exception) -> None:
    try:
        raise exc
    except Exception as raised:
        outage.failed(raised)


def test_an_outage_is_one_line_then_one_line_when_it_ends(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=log.name)
    outage = OutageLog(log, "periodic reconcile", 5.0)
    for _ in range(10):
        _fail(outage, StoreUnavailable("connection refused"))
    assert outage.failing
    outage.succeeded()
    outage.succeeded()
    lines = [(r.levelno, r.getMessage(), r.exc_info is not None) for r in caplog.records]
    assert lines[0] == (logging.WARNING, "periodic reconcile failed: connection refused; retrying every 5 s", False)
    assert lines[1][0] == logging.INFO and lines[1][1].startswith(
        "periodic reconcile works again after 10 failed rounds"
    )
    assert len(lines) == 2 and not outage.failing


def test_a_new_reason_is_a_new_line_and_an_unexpected_error_has_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=log.name)
    outage = OutageLog(log, "periodic reconcile", 5.0)
    _fail(outage, StoreUnavailable("connection refused"))
    _fail(outage, StoreUnavailable("the database did not answer in time"))
    _fail(outage, StoreUnavailable("the database did not answer in time"))
    _fail(outage, KeyError("restream 7"))
    _fail(outage, KeyError("restream 7"))
    failures = [r for r in caplog.records if "failed" in r.getMessage()]
    assert [r.exc_info is not None for r in failures] == [False, False, True]
    assert "did not answer in time" in failures[1].getMessage()
