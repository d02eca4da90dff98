"""A receive buffer that knows how much it may hold (like wsproto's and h11's)."""

from __future__ import annotations

from relay.rtmp.errors import ProtocolError


class ReceiveBuffer:
    """Owns the bytes received but not yet parsed, and refuses to hold more than `max_bytes`.

    Parsers peek at the front (`peek`, `__len__`) and only `consume` once a whole unit is there, so
    a partial header never changes any state.  Deleting from the front of a bytearray is amortised
    O(1) in CPython, so consuming costs no copy of the rest.
    """

    __slots__ = ("_data", "max_bytes")

    def __init__(self, max_bytes: int) -> None:
        self._data = bytearray()
        self.max_bytes = max_bytes

    def __len__(self) -> int:
        return len(self._data)

    def append(self, data: bytes | bytearray | memoryview) -> None:
        """Add received bytes; raises ProtocolError if unparsed bytes would exceed the cap."""
        if len(self._data) + len(data) > self.max_bytes:
            raise ProtocolError(f"receive buffer over {self.max_bytes} bytes")
        self._data += data

    def peek(self, size: int) -> bytes | None:
        """The first `size` bytes without consuming them, or None if fewer are buffered."""
        if len(self._data) < size:
            return None
        return bytes(self._data[:size])

    def view(self) -> bytearray:
        """The buffered bytes (read-only by convention: use `consume` to advance)."""
        return self._data

    def consume(self, size: int) -> bytes:
        """Remove and return exactly `size` bytes (the caller checked they are there)."""
        out = bytes(memoryview(self._data)[:size])  # one copy (a bytearray's slice is a copy of its own)
        del self._data[:size]
        return out

    def skip(self, size: int) -> None:
        """Remove `size` bytes already read through `view` (no copy made)."""
        del self._data[:size]

    consume_upto = consume
    """Remove and return at most `size` bytes: `consume` itself, whose slice past the end takes what there is
    (an alias, not a call through it: once per chunk body piece)."""
