"""Logging set-up: one line per event, text or JSON, with a last-resort filter for secrets (relay/secrets.py)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from relay.secrets import SecretRegistry

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
"""Attributes every record has; the others are a call's `extra` fields."""


class SecretFilter(logging.Filter):
    """Masks what the relay knows to be secret in every record: a safety net, not the first line of defence.

    Code masks secrets where it formats them; this catches what slips through (an exception text that
    quotes a URL, say): every secret of the `SecretRegistry` (tokens, passphrases, destination keys,
    API keys) where it stands as a word, and the secret parts of every URL, in the message, the
    traceback, the stack and any `extra` text field (JSON lines carry those too).
    """

    def __init__(self, secrets: SecretRegistry) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        mask = self.secrets.mask
        message = record.getMessage()
        masked = mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask(record.exc_text)
        if record.stack_info:
            record.stack_info = mask(record.stack_info)
        for name, value in vars(record).items():
            if name not in _STANDARD and isinstance(value, str):
                setattr(record, name, mask(value))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line; `extra` fields such as stream_id and restream_id are kept."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value if isinstance(value, (int, float, str, bool, type(None))) else str(value)
        if record.exc_text or record.exc_info:
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
        return json.dumps(entry)


def configure(level: str = "INFO", fmt: str = "text", secrets: SecretRegistry | None = None) -> SecretFilter:
    """Route the relay's loggers to stderr through a filter that masks `secrets` (and every URL's)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    secret_filter = SecretFilter(secrets if secrets is not None else SecretRegistry())
    handler.addFilter(secret_filter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return secret_filter
