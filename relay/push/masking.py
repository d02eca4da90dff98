"""Keep destination secrets out of everything we log or expose.

A destination URI carries its credentials in several places: the RTMP stream key (the last path
segment, often with a query such as Facebook's `?s_bl=1&s_ps=1&...`), userinfo, SRT `streamid` and
`passphrase`, and query values named like keys or tokens. `mask_uri` gives the form safe to show;
`secrets_of` lists the raw strings so that `mask_secrets` can scrub free text such as ffmpeg's stderr,
which echoes URLs verbatim (percent-decoded or not).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

MASK = "***"

_SECRET_NAME = re.compile(r"key|token|secret|pass|pwd|auth|sig|streamid|session|credential", re.IGNORECASE)
_RTMP_SCHEMES = frozenset({"rtmp", "rtmps", "rtmpt", "rtmpts", "rtmpe", "rtmpte"})


_NOT_SECRET = frozenset({"pbkeylen"})


def _is_secret_param(name: str) -> bool:
    return name.lower() not in _NOT_SECRET and bool(_SECRET_NAME.search(name))


def _split_query(query: str) -> list[tuple[str, str]]:
    return parse_qsl(query, keep_blank_values=True)


def _netloc_without_userinfo(netloc: str) -> tuple[str, str]:
    """(userinfo, host[:port]) of a netloc."""
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        return userinfo, host
    return "", netloc


def mask_uri(uri: str) -> str:
    """The URI with every secret part replaced by `***` (pure; never raises)."""
    try:
        parts = urlsplit(uri, allow_fragments=False)  # a raw "#!::" streamid is not a fragment
    except ValueError:
        return MASK
    scheme = parts.scheme.lower()
    userinfo, host = _netloc_without_userinfo(parts.netloc)
    netloc = f"{MASK}@{host}" if userinfo else host
    path = parts.path
    key_masked = False
    if scheme in _RTMP_SCHEMES:
        segments = path.split("/")
        # "/app/key": the key is the last segment; "/app" alone has no key to hide.
        if len([s for s in segments if s]) >= 2 and segments[-1]:
            segments[-1] = MASK
            path = "/".join(segments)
            key_masked = True
    query = parts.query
    if query:
        # After an RTMP key, every query value belongs to it (platform session parameters).
        query = "&".join(
            f"{name}={MASK}" if key_masked or _is_secret_param(name) else f"{name}={value}"
            for name, value in _split_query(query)
        )
    return urlunsplit((parts.scheme, netloc, path, query, parts.fragment))


def secrets_of(uri: str) -> list[str]:
    """The raw secret strings in `uri` (as written and percent-decoded), longest first."""
    found: set[str] = set()
    try:
        parts = urlsplit(uri, allow_fragments=False)  # a raw "#!::" streamid is not a fragment
    except ValueError:
        return [uri]
    scheme = parts.scheme.lower()
    userinfo, _ = _netloc_without_userinfo(parts.netloc)
    if userinfo:
        found.add(userinfo)
        found.update(p for p in userinfo.split(":") if p)
    if scheme in _RTMP_SCHEMES:
        segments = [s for s in parts.path.split("/") if s]
        if len(segments) >= 2:
            found.add(segments[-1])
            if parts.query:
                found.add(f"{segments[-1]}?{parts.query}")
                found.update(value for _, value in _split_query(parts.query) if value)
    for name, value in _split_query(parts.query):
        if value and _is_secret_param(name):
            found.add(value)
    variants: set[str] = set()
    for secret in found:
        variants.update({secret, unquote(secret), quote(secret, safe=""), quote(unquote(secret), safe="")})
    return sorted((v for v in variants if v), key=len, reverse=True)


def mask_secrets(text: str, secrets: list[str] | tuple[str, ...] | frozenset[str]) -> str:
    """`text` with every occurrence of each secret replaced by `***` (longest secret first)."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text
