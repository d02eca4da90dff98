"""The SRT `streamid` a publisher sends, turned into the stream's id and token.

Accepted forms (the id comes first, the secret token after a `#`):

- Gcore's plain form `<id>#<token>`;
- the same with the `#` percent-encoded, `<id>%23<token>` (a `#` cannot appear raw in a URL, and
  some callers such as srt-live-transmit pass the query value through undecoded);
- SRT's access-control syntax `#!::r=<id>#<token>,m=publish` (any `#` may be written `%23`),
  where keys other than `r` and `m` are ignored and a mode other than `publish` is refused.

Pure functions, no I/O; the error messages never contain the token.
"""

from __future__ import annotations

import re

_AC_PREFIX = "#!::"
_ENCODED_HASH = re.compile("%23", re.IGNORECASE)
_MAX_ID_CHARS = 64


class InvalidStreamId(ValueError):
    """The streamid is not one of the accepted forms; `bad_mode` when only the `m=` key is wrong."""

    def __init__(self, message: str, *, bad_mode: bool = False) -> None:
        super().__init__(message)
        self.bad_mode = bad_mode


def parse_streamid(streamid: str) -> tuple[str, str]:
    """Return `(stream id, token)` from a publisher's streamid, or raise `InvalidStreamId`."""
    # Decode %23 first: an undecoding caller sends the access-control prefix as "%23!::" too.
    resource = _ENCODED_HASH.sub("#", streamid)
    if resource.startswith(_AC_PREFIX):
        resource = _access_control_resource(resource[len(_AC_PREFIX) :])
    stream_id, sep, token = resource.partition("#")
    if not sep:
        raise InvalidStreamId("streamid has no '#' between stream id and token")
    if not stream_id or len(stream_id) > _MAX_ID_CHARS or not stream_id.isprintable() or " " in stream_id:
        raise InvalidStreamId("streamid has an empty or malformed stream id")
    if not token:
        raise InvalidStreamId("streamid has an empty token")
    return stream_id, token


def _access_control_resource(body: str) -> str:
    """The `r` value of `k=v,k=v` pairs; refuses a missing/duplicate `r` and any `m` but publish."""
    values: dict[str, str] = {}
    for item in body.split(","):
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidStreamId("access-control streamid has an item without '='")
        key = key.strip()
        if key in values:
            raise InvalidStreamId(f"access-control streamid repeats key {key!r}"[:80])
        values[key] = value
    mode = values.get("m", "publish")
    if mode != "publish":
        raise InvalidStreamId("access-control streamid asks for a mode other than publish", bad_mode=True)
    if "r" not in values:
        raise InvalidStreamId("access-control streamid has no 'r' (resource) key")
    return values["r"]
