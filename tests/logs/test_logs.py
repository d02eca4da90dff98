"""The log line formats and their secret filter (relay.logs)."""

from __future__ import annotations

import io
import json
import logging

from relay.logs import JsonFormatter, SecretFilter
from relay.secrets import SecretRegistry


def _logger(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO, SecretRegistry]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    secrets = SecretRegistry()
    handler.addFilter(SecretFilter(secrets))
    logger = logging.getLogger(f"test.logs.{id(stream)}")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return logger, stream, secrets


def test_secret_filter_scrubs_messages_arguments_and_tracebacks() -> None:
    logger, out, secrets = _logger(logging.Formatter("%(message)s"))
    secrets.hold(("restream", 1, 1), ["s3cr3t-stream-key"])
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


def test_secrets_are_masked_as_words_and_urls_always() -> None:
    logger, out, secrets = _logger(JsonFormatter())
    secrets.hold(("stream", 1), ["k", "tok-0123456789"])  # "k": too short to be masked as a word
    logger.info(
        "Broken pipe for %s (token tok-0123456789, not tok-0123456789x)",
        "rtmp://h/app/k",
        extra={"uri": "srt://h:9000?passphrase=unregistered-pass&latency=200"},
    )
    entry = json.loads(out.getvalue())
    assert entry["message"] == "Broken pipe for rtmp://h/app/*** (token ***, not tok-0123456789x)"
    assert entry["uri"] == "srt://h:9000?passphrase=***&latency=200"
