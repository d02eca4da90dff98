"""The engine and its parts: admission, the live registry, typed status and events (see engine.py)."""

from relay.engine.engine import Engine

__all__ = ["Engine"]
