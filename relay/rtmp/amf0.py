"""AMF0 encoding and decoding with limits, so that a hostile payload cannot exhaust memory or stack.

Python mapping (decode, and what `encode` accepts):

========================  =====================================================
AMF0 type                 Python value
========================  =====================================================
number                    float (encode also takes int)
boolean                   bool
string / long string      str (encode picks long string above 65535 UTF-8 bytes)
object                    dict[str, Any]
null                      None
undefined, unsupported    AmfSpecial.UNDEFINED, AmfSpecial.UNSUPPORTED
reference                 AmfReference (kept as is: resolving would alias objects)
ECMA array                EcmaArray (a dict subclass)
strict array              list
date                      AmfDate
XML document              XmlDocument
typed object              TypedObject
========================  =====================================================

AVM+ (AMF3) switch, movieclip and recordset are refused with ProtocolError: no publisher we serve
sends them in commands, and skipping AMF3 would need a second decoder.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from relay.rtmp.errors import ProtocolError

NUMBER = 0x00
BOOLEAN = 0x01
STRING = 0x02
OBJECT = 0x03
MOVIECLIP = 0x04
NULL = 0x05
UNDEFINED = 0x06
REFERENCE = 0x07
ECMA_ARRAY = 0x08
OBJECT_END = 0x09
STRICT_ARRAY = 0x0A
DATE = 0x0B
LONG_STRING = 0x0C
UNSUPPORTED = 0x0D
RECORDSET = 0x0E
XML_DOCUMENT = 0x0F
TYPED_OBJECT = 0x10
AVMPLUS = 0x11

_DOUBLE = struct.Struct(">d")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_DATE_TZ = struct.Struct(">h")


class AmfSpecial(Enum):
    """AMF0 markers that carry no value and are not null."""

    UNDEFINED = "undefined"
    UNSUPPORTED = "unsupported"


@dataclass(frozen=True, slots=True)
class AmfReference:
    """A back reference to the `index`-th complex value (object, array) of the same message."""

    index: int
    """Zero-based index in decode order of objects, typed objects, ECMA and strict arrays."""


@dataclass(frozen=True, slots=True)
class AmfDate:
    """An AMF0 date."""

    milliseconds: float
    """Milliseconds since the Unix epoch, UTC."""
    timezone_minutes: int = 0
    """Reserved by the spec; kept so that a round trip is exact."""


@dataclass(frozen=True, slots=True)
class XmlDocument:
    """An AMF0 XML document (a long string with its own marker)."""

    text: str
    """The XML source text."""


@dataclass(frozen=True, slots=True)
class TypedObject:
    """An AMF0 typed object: an object with an ActionScript class name."""

    class_name: str
    """The registered class alias."""
    properties: dict[str, Any] = field(default_factory=dict)
    """The object's members in wire order."""


class EcmaArray(dict[str, Any]):
    """An AMF0 ECMA array (associative array); `onMetaData` is usually one."""


@dataclass(frozen=True, slots=True)
class AmfLimits:
    """Bounds on what one decode may build; exceeding any raises ProtocolError."""

    max_depth: int = 32
    """Nesting of objects/arrays inside each other."""
    max_elements: int = 10_000
    """Total values (including nested members) in one decode call."""
    max_string_bytes: int = 1 << 20
    """Longest string, long string, XML document or property name."""


DEFAULT_LIMITS = AmfLimits()


class _Decoder:
    __slots__ = ("complex_count", "data", "elements", "limits", "pos")

    def __init__(self, data: bytes, limits: AmfLimits) -> None:
        self.data = data
        self.pos = 0
        self.limits = limits
        self.elements = 0
        self.complex_count = 0

    def _take(self, size: int) -> bytes:
        end = self.pos + size
        if end > len(self.data):
            raise ProtocolError("AMF0 value truncated")
        out = self.data[self.pos : end]
        self.pos = end
        return out

    def _u16(self) -> int:
        value: int = _U16.unpack(self._take(2))[0]
        return value

    def _u32(self) -> int:
        value: int = _U32.unpack(self._take(4))[0]
        return value

    def _utf8(self, size: int) -> str:
        if size > self.limits.max_string_bytes:
            raise ProtocolError(f"AMF0 string of {size} bytes over the limit")
        try:
            return self._take(size).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError("AMF0 string is not UTF-8") from exc

    def _count_element(self) -> None:
        self.elements += 1
        if self.elements > self.limits.max_elements:
            raise ProtocolError("AMF0 value has too many elements")

    def _check_count(self, count: int) -> None:
        # Each element needs at least one byte: refuse a count the payload cannot hold before
        # looping over it, so that a 4-byte "4 billion elements" costs nothing.
        if count > len(self.data) - self.pos or self.elements + count > self.limits.max_elements:
            raise ProtocolError("AMF0 array count exceeds the payload or the limit")

    def _properties(self, depth: int) -> dict[str, Any]:
        props: dict[str, Any] = {}
        while True:
            key = self._utf8(self._u16())
            if not key and self.pos < len(self.data) and self.data[self.pos] == OBJECT_END:
                self.pos += 1
                return props
            props[key] = self.value(depth)

    def value(self, depth: int = 0) -> Any:
        if depth > self.limits.max_depth:
            raise ProtocolError("AMF0 nesting too deep")
        self._count_element()
        marker = self._take(1)[0]
        if marker == NUMBER:
            return _DOUBLE.unpack(self._take(8))[0]
        if marker == BOOLEAN:
            return self._take(1) != b"\x00"
        if marker == STRING:
            return self._utf8(self._u16())
        if marker == OBJECT:
            self.complex_count += 1
            return self._properties(depth + 1)
        if marker == NULL:
            return None
        if marker == UNDEFINED:
            return AmfSpecial.UNDEFINED
        if marker == UNSUPPORTED:
            return AmfSpecial.UNSUPPORTED
        if marker == REFERENCE:
            index = self._u16()
            if index >= self.complex_count:
                raise ProtocolError("AMF0 reference to a value not yet seen")
            return AmfReference(index)
        if marker == ECMA_ARRAY:
            self.complex_count += 1
            self._check_count(self._u32())  # the count is a hint; the end marker is authoritative
            return EcmaArray(self._properties(depth + 1))
        if marker == STRICT_ARRAY:
            self.complex_count += 1
            count = self._u32()
            self._check_count(count)
            return [self.value(depth + 1) for _ in range(count)]
        if marker == DATE:
            millis = _DOUBLE.unpack(self._take(8))[0]
            return AmfDate(millis, _DATE_TZ.unpack(self._take(2))[0])
        if marker == LONG_STRING:
            return self._utf8(self._u32())
        if marker == XML_DOCUMENT:
            return XmlDocument(self._utf8(self._u32()))
        if marker == TYPED_OBJECT:
            self.complex_count += 1
            name = self._utf8(self._u16())
            return TypedObject(name, self._properties(depth + 1))
        if marker == OBJECT_END:
            raise ProtocolError("AMF0 object end outside an object")
        if marker == AVMPLUS:
            raise ProtocolError("AMF3 (AVM+) values are not supported")
        raise ProtocolError(f"AMF0 marker {marker:#x} not supported")


def decode_one(data: bytes, pos: int = 0, limits: AmfLimits = DEFAULT_LIMITS) -> tuple[Any, int]:
    """Decode the value at `pos`; returns it and the position after it."""
    decoder = _Decoder(data, limits)
    decoder.pos = pos
    return decoder.value(), decoder.pos


def decode_all(data: bytes, limits: AmfLimits = DEFAULT_LIMITS) -> list[Any]:
    """Decode consecutive values until the end of `data` (limits count over the whole payload)."""
    decoder = _Decoder(data, limits)
    values = []
    while decoder.pos < len(data):
        values.append(decoder.value())
    return values


def _encode_utf8(text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise ValueError("AMF0 property name longer than 65535 bytes")
    return _U16.pack(len(raw)) + raw


def _encode_properties(props: dict[str, Any], out: list[bytes]) -> None:
    for key, value in props.items():
        out.append(_encode_utf8(key))
        _encode_into(value, out)
    out.append(b"\x00\x00\x09")


def _encode_into(value: Any, out: list[bytes]) -> None:
    if value is None:
        out.append(b"\x05")
    elif isinstance(value, bool):
        out.append(b"\x01\x01" if value else b"\x01\x00")
    elif isinstance(value, int | float):
        out.append(b"\x00" + _DOUBLE.pack(float(value)))
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        if len(raw) > 0xFFFF:
            out.append(b"\x0c" + _U32.pack(len(raw)) + raw)
        else:
            out.append(b"\x02" + _U16.pack(len(raw)) + raw)
    elif isinstance(value, EcmaArray):
        out.append(b"\x08" + _U32.pack(len(value)))
        _encode_properties(value, out)
    elif isinstance(value, dict):
        out.append(b"\x03")
        _encode_properties(value, out)
    elif isinstance(value, list | tuple):
        out.append(b"\x0a" + _U32.pack(len(value)))
        for item in value:
            _encode_into(item, out)
    elif isinstance(value, AmfSpecial):
        out.append(b"\x06" if value is AmfSpecial.UNDEFINED else b"\x0d")
    elif isinstance(value, AmfReference):
        out.append(b"\x07" + _U16.pack(value.index))
    elif isinstance(value, AmfDate):
        out.append(b"\x0b" + _DOUBLE.pack(value.milliseconds) + _DATE_TZ.pack(value.timezone_minutes))
    elif isinstance(value, XmlDocument):
        raw = value.text.encode("utf-8")
        out.append(b"\x0f" + _U32.pack(len(raw)) + raw)
    elif isinstance(value, TypedObject):
        out.append(b"\x10" + _encode_utf8(value.class_name))
        _encode_properties(value.properties, out)
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as AMF0")


def encode(*values: Any) -> bytes:
    """Encode values one after another (a command: name, transaction id, object, arguments)."""
    out: list[bytes] = []
    for value in values:
        _encode_into(value, out)
    return b"".join(out)
