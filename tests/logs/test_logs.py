"""The log line formats and their secret filter (relay.logs)."""

from __future__ import annotations

import io
import json
import logging

from relay.logs import JsonFormatter, SecretFilter


def _logger(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO, SecretFilter]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    secrets = SecretFilter()
    handler.addFilter(secrets)
    logger = logging.getLogger(f"test.logs.{id(stream)}")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return logger, stream, secrets


def test_secret_filter_scrubs_messages_arguments_and_tracebacks() -> None:
    logger, out, secrets = _logger(logging.Formatter("%(message)s"))
    secrets.add("s3cr3t-stream-key")
    logger.info("pushing to %s", "rtmp://h/app/s3cr3t-stream-key")
    try:
        raise RuntimeError("failed at rtmp://h/app/s3cr3t-stream-key")
    except RuntimeError:
        logger.exception("push failed")
    text = out.getvalue()
    assert "s3cr3t-stream-key" not in text and text.count("***") >= 2 and "push failed" in text


def test_json_lines_carry_extra_ids() -> None:
    logger, out, _ = _logger(JsonFormatter())
    logger.info("push running", extra={"stream_id": 3, "restream_id": 9})
    entry = json.loads(out.getvalue())
    assert entry["message"] == "push running" and entry["level"] == "info"
    assert entry["stream_id"] == 3 and entry["restream_id"] == 9 and entry["time"].endswith("+00:00")
