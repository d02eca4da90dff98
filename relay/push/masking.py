"""Keep destination secrets out of everything we log or expose.

A destination URI carries its credentials in several places: every RTMP path segment after the
application (the stream key, `live2/KEY/` with a trailing slash, `app/inst/KEY`, a query such as
Facebook's `?s_bl=1&s_ps=1&...`), userinfo, SRT `streamid` and `passphrase`, and query values named
like keys or tokens. `mask_uri` gives the form safe to show; `secrets_of` lists the raw strings so
that `mask_secrets` can scrub free text such as ffmpeg's stderr, which echoes URLs verbatim
(percent-decoded or not).

Secrets are masked where they stand, never inside words: free text is scrubbed in two passes, both
safe for any secret whatever its length.

1. Known secrets are replaced only as whole words (not preceded or followed by a letter, digit, `_`
   or `-`), and only from `MIN_SECRET_CHARS` on: a one-letter destination key must not turn
   "Broken pipe" into "Bro***en pipe", and a short key is masked by the second pass wherever it is
   in a URL.
2. Every URL in the text is replaced by its `mask_uri` form, known secrets or not.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection, Iterable
from urllib.parse import quote, unquote, urlsplit, urlunsplit

MASK = "***"
MIN_SECRET_CHARS = 4
"""Shorter secrets are masked only where they stand in a URL: as free-text words they would hide
ordinary words ("in", "live") and protect nothing worth guessing."""

_SECRET_NAME = re.compile(r"key|token|secret|pass|pwd|auth|sig|streamid|session|credential", re.IGNORECASE)
_RTMP_SCHEMES = frozenset({"rtmp", "rtmps", "rtmpt", "rtmpts", "rtmpe", "rtmpte"})
# SRT options that never carry a secret (numbers, modes): every other SRT query value is masked.
_SRT_PUBLIC = frozenset(
    {
        "mode",
        "latency",
        "rcvlatency",
        "peerlatency",
        "pbkeylen",
        "payload_size",
        "pkt_size",
        "maxbw",
        "inputbw",
        "oheadbw",
        "connect_timeout",
        "timeout",
        "tlpktdrop",
        "nakreport",
        "lossmaxttl",
        "minversion",
        "enforced_encryption",
        "sndbuf",
        "rcvbuf",
        "send_buffer_size",
        "recv_buffer_size",
        "ipttl",
        "iptos",
        "transtype",
        "linger",
        "tsbpd",
        "smoother",
        "congestion",
        "kmrefreshrate",
        "kmpreannounce",
        "snddropdelay",
        "messageapi",
        "listen_timeout",
    }
)
# A URL in free text: a scheme, "://", then everything up to whitespace (a key may hold any other
# character). What closes a bracket or quote opened right before the URL, and punctuation that ends a
# sentence, are given back after masking: "(rtmp://h/app/KEY/): refused" keeps its "):".
_URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]{1,15}://\S+")
_CLOSERS = {"(": ")", "[": "]", "{": "}", "<": ">", "'": "'", '"': '"', "`": "`"}
_SENTENCE_END = ".,:;!"
# "Not inside a word": no letter, digit, '_' or '-' right before or after, unless the character
# before closes a percent escape (a secret inside an encoded URL, `%3Dsecret%26`).
_WORD_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_WORD_START = re.compile(r"(?:(?<![A-Za-z0-9_-])|(?<=%[0-9A-Fa-f]{2}))")


def _is_secret_param(scheme: str, name: str) -> bool:
    """Is the value of this query parameter a secret?"""
    if scheme in _RTMP_SCHEMES:
        return True  # an RTMP query is the key's (platform session parameters) or the key itself
    if scheme == "srt":
        return unquote(name).lower() not in _SRT_PUBLIC
    return bool(_SECRET_NAME.search(name))


def _is_secret_item(scheme: str, name: str) -> bool:
    """A query item without `=` in a destination URI: in RTMP and SRT, a secret unless a public option."""
    return (scheme in _RTMP_SCHEMES or scheme == "srt") and _is_secret_param(scheme, name)


def _query_items(query: str) -> list[tuple[str, str | None]]:
    """`a=1&b&c=` as written: (name, value), value None for an item without `=` (itself maybe a secret)."""
    items: list[tuple[str, str | None]] = []
    for item in query.split("&"):
        name, sep, value = item.partition("=")
        items.append((name, value if sep else None))
    return items


def _key_segments(scheme: str, path: str) -> list[int]:
    """Indexes of the path segments that are secret: for RTMP, every non-empty one after the application."""
    if scheme not in _RTMP_SCHEMES:
        return []
    segments = path.split("/")
    named = [i for i, segment in enumerate(segments) if segment]
    return named[1:]


def _split(uri: str) -> tuple[str, str, str, str, str] | None:
    try:
        # A raw "#" (an SRT "#!::" streamid, a key with '#') is not a fragment: keep it in what it belongs to.
        parts = urlsplit(uri, allow_fragments=False)
    except ValueError:
        return None
    return parts.scheme, parts.netloc, parts.path, parts.query, parts.fragment


def mask_uri(uri: str) -> str:
    """The URI with every secret part replaced by `***` (pure; idempotent; never raises)."""
    split = _split(uri)
    if split is None:
        return MASK
    scheme_text, netloc, path, query, fragment = split
    scheme = scheme_text.lower()
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rsplit('@', 1)[1]}"
    secret_segments = _key_segments(scheme, path)
    if secret_segments:
        segments = path.split("/")
        for index in secret_segments:
            segments[index] = MASK
        path = "/".join(segments)
    if query:
        masked: list[str] = []
        for name, value in _query_items(query):
            if value is None:
                masked.append(MASK if name and _is_secret_item(scheme, name) else name)
            else:
                masked.append(f"{name}={MASK}" if value and _is_secret_param(scheme, name) else f"{name}={value}")
        query = "&".join(masked)
    return urlunsplit((scheme_text, netloc, path, query, fragment))


def secrets_of(uri: str) -> list[str]:
    """The raw secret strings in `uri` (as written and percent-decoded), longest first."""
    split = _split(uri)
    if split is None:
        return [uri]
    scheme_text, netloc, path, query, _ = split
    scheme = scheme_text.lower()
    found: set[str] = set()
    if "@" in netloc:
        userinfo = netloc.rsplit("@", 1)[0]
        found.add(userinfo)
        found.update(userinfo.split(":"))
    segments = path.split("/")
    secret_segments = _key_segments(scheme, path)
    for index in secret_segments:
        found.add(segments[index])
    if secret_segments:
        # The key as a whole, as an RTMP server or ffmpeg may print it ("live2/KEY/extra", "KEY?query").
        key = "/".join(segments[secret_segments[0] :])
        found.add(key.strip("/"))  # without a trailing slash: masking it keeps the slash where it stands
        if query:
            found.add(f"{key}?{query}")
    for name, value in _query_items(query) if query else []:
        if value is None:
            if _is_secret_item(scheme, name):
                found.add(name)
        elif _is_secret_param(scheme, name):
            found.add(value)
    variants: set[str] = set()
    for secret in found:
        variants.update({secret, unquote(secret), quote(secret, safe=""), quote(unquote(secret), safe="")})
    return sorted((v for v in variants if v), key=len, reverse=True)


class SecretIndex:
    """Secrets ready to be found as whole words: by their first `MIN_SECRET_CHARS` characters, longest
    first. One pass over a text checks only the places where a word starts, whatever the number of
    secrets (a node-wide registry holds every token and key of every tenant)."""

    __slots__ = ("_by_prefix",)

    def __init__(self, secrets: Iterable[str]) -> None:
        by_prefix: dict[str, list[str]] = {}
        for secret in set(secrets):
            if len(secret) >= MIN_SECRET_CHARS:
                by_prefix.setdefault(secret[:MIN_SECRET_CHARS], []).append(secret)
        self._by_prefix = {prefix: tuple(sorted(group, key=len, reverse=True)) for prefix, group in by_prefix.items()}

    def __bool__(self) -> bool:
        return bool(self._by_prefix)

    def mask_words(self, text: str) -> str:
        """`text` with every whole-word occurrence of a secret replaced by `***`."""
        if not self._by_prefix or len(text) < MIN_SECRET_CHARS:
            return text
        pieces: list[str] = []
        done = 0
        for match in _WORD_START.finditer(text):
            at = match.start()
            if at < done:
                continue
            for secret in self._by_prefix.get(text[at : at + MIN_SECRET_CHARS], ()):
                end = at + len(secret)
                if text.startswith(secret, at) and (end == len(text) or text[end] not in _WORD_CHARS):
                    pieces += (text[done:at], MASK)
                    done = end
                    break
        return "".join(pieces) + text[done:] if pieces else text


@functools.lru_cache(maxsize=256)
def _index(secrets: frozenset[str]) -> SecretIndex:
    return SecretIndex(secrets)


def mask_text(text: str, secrets: SecretIndex) -> str:
    """`text` with the known `secrets` masked where they stand as words, and every URL's secrets."""
    text = secrets.mask_words(text)
    if "://" in text:
        text = _URL_IN_TEXT.sub(_mask_url_match, text)
    return text


def mask_secrets(text: str, secrets: Collection[str]) -> str:
    """`text` with each of `secrets` masked where it stands as a word, and every URL masked."""
    return mask_text(text, _index(frozenset(secrets)))


def _mask_url_match(match: re.Match[str]) -> str:
    url, start = match.group(0), match.start()
    closer = _CLOSERS.get(match.string[start - 1]) if start else None
    if closer is not None and closer in url:
        core = url[: url.rindex(closer)]
    else:
        core = url.rstrip(_SENTENCE_END)
        if not core or core[-1] in "/?&=#@":
            core = url  # the punctuation is all there is of the last part: it is the key, mask it
    return mask_uri(core) + url[len(core) :]
