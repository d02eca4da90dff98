from __future__ import annotations

import struct
from typing import Any

import pytest

from relay.rtmp import amf0
from relay.rtmp.amf0 import AmfDate, AmfLimits, AmfReference, AmfSpecial, EcmaArray, TypedObject, XmlDocument
from relay.rtmp.errors import ProtocolError

LITERALS: list[tuple[Any, bytes]] = [
    (1.5, b"\x00" + struct.pack(">d", 1.5)),
    (True, b"\x01\x01"),
    (False, b"\x01\x00"),
    ("hi", b"\x02\x00\x02hi"),
    ({"a": 1.0}, b"\x03\x00\x01a\x00" + struct.pack(">d", 1.0) + b"\x00\x00\x09"),
    (None, b"\x05"),
    (AmfSpecial.UNDEFINED, b"\x06"),
    (EcmaArray({"w": 2.0}), b"\x08\x00\x00\x00\x01\x00\x01w\x00" + struct.pack(">d", 2.0) + b"\x00\x00\x09"),
    (["x", None], b"\x0a\x00\x00\x00\x02\x02\x00\x01x\x05"),
    (AmfDate(1000.0, 60), b"\x0b" + struct.pack(">d", 1000.0) + b"\x00\x3c"),
    ("é" * 40000, b"\x0c" + struct.pack(">I", 80000) + "é".encode() * 40000),
    (XmlDocument("<a/>"), b"\x0f\x00\x00\x00\x04<a/>"),
    (TypedObject("Cls", {"k": "v"}), b"\x10\x00\x03Cls\x00\x01k\x02\x00\x01v\x00\x00\x09"),
    (AmfSpecial.UNSUPPORTED, b"\x0d"),
]


@pytest.mark.parametrize(("value", "wire"), LITERALS, ids=lambda v: type(v).__name__)
def test_every_type_encodes_to_the_literal_bytes_and_back(value: Any, wire: bytes) -> None:
    assert amf0.encode(value) == wire
    decoded, end = amf0.decode_one(wire)
    assert end == len(wire)
    assert decoded == value
    assert type(decoded) is type(value)


def test_reference_round_trip_inside_an_array() -> None:
    wire = amf0.encode([{"a": 1.0}, AmfReference(1)])
    assert amf0.decode_one(wire)[0] == [{"a": 1.0}, AmfReference(1)]


def test_reference_to_a_value_not_yet_seen_is_refused() -> None:
    with pytest.raises(ProtocolError):
        amf0.decode_one(b"\x07\x00\x00")


def test_int_encodes_as_number_and_command_round_trips() -> None:
    wire = amf0.encode("connect", 1, {"app": "live", "flag": True}, None)
    assert amf0.decode_all(wire) == ["connect", 1.0, {"app": "live", "flag": True}, None]


@pytest.mark.parametrize(
    "wire",
    [
        b"\x11\x01",  # AVM+ switch
        b"\x09",  # object end outside an object
        b"\x04",  # movieclip (reserved)
        b"\x0e",  # recordset (reserved)
        b"\x42",  # unknown marker
        b"\x00\x00",  # truncated number
        b"\x02\x00\x05ab",  # truncated string
        b"\x03\x00\x01a",  # object without its end
        b"\x02\x00\x02\xff\xfe",  # not UTF-8
    ],
)
def test_malformed_input_raises_the_protocol_error(wire: bytes) -> None:
    with pytest.raises(ProtocolError):
        amf0.decode_all(wire)


def test_depth_limit() -> None:
    limits = AmfLimits(max_depth=4)
    nested: Any = 1.0
    for _ in range(4):
        nested = {"a": nested}
    amf0.decode_one(amf0.encode(nested), limits=limits)
    with pytest.raises(ProtocolError, match="deep"):
        amf0.decode_one(amf0.encode({"a": nested}), limits=limits)
    with pytest.raises(ProtocolError, match="deep"):  # a bomb far deeper than the stack could take
        amf0.decode_one(b"\x0a\x00\x00\x00\x01" * 100_000)


def test_element_limit() -> None:
    limits = AmfLimits(max_elements=10)
    amf0.decode_one(amf0.encode([1.0] * 9), limits=limits)
    with pytest.raises(ProtocolError, match=r"elements|limit"):
        amf0.decode_one(amf0.encode([1.0] * 10), limits=limits)
    with pytest.raises(ProtocolError):
        amf0.decode_one(amf0.encode({str(i): None for i in range(20)}), limits=limits)


def test_a_count_the_payload_cannot_hold_is_refused_at_once() -> None:
    with pytest.raises(ProtocolError, match="count"):
        amf0.decode_one(b"\x0a\xff\xff\xff\xff\x05\x05")
    with pytest.raises(ProtocolError, match="count"):
        amf0.decode_one(b"\x08\xff\xff\xff\xff\x00\x00\x09")


def test_string_limit() -> None:
    limits = AmfLimits(max_string_bytes=8)
    assert amf0.decode_one(amf0.encode("x" * 8), limits=limits)[0] == "x" * 8
    with pytest.raises(ProtocolError, match="limit"):
        amf0.decode_one(amf0.encode("x" * 9), limits=limits)
    with pytest.raises(ProtocolError, match="limit"):  # a long string claims 4 GiB
        amf0.decode_one(b"\x0c\xff\xff\xff\xff", limits=limits)


def test_ecma_array_count_is_only_a_hint() -> None:
    # Encoders write a wrong count (often 0); the end marker decides, as in ffmpeg's reader.
    wire = b"\x08\x00\x00\x00\x00\x00\x01w\x05\x00\x00\x09"
    assert amf0.decode_one(wire)[0] == EcmaArray({"w": None})


def test_encode_rejects_unknown_types() -> None:
    with pytest.raises(TypeError):
        amf0.encode(object())
