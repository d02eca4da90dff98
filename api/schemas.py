"""Request models and response bodies of the Gcore-compatible resources.

Requests are validated with pydantic (strict types: `"true"` is not a boolean) and every failure is
mapped to the Gcore 422 shape with a message per field; inputs are never echoed back.
Responses are built from domain records plus live state, separate from the request models.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from api.errors import BadRequest, ValidationFailed
from relay.destinations import INVALID_SCHEME, MAX_URI_LENGTH, InvalidDestination, parse_destination
from relay.policy import DestinationPolicy
from relay.pull.sources import INVALID_SOURCE_SCHEME, MAX_ALTERNATIVES, InvalidSource, normalise_sources, parse_sources
from relay.srt.passphrase import PASSPHRASE_LENGTH_RULE, passphrase_length_ok

INT64 = 2**63 - 1
NAME_MAX = 255
CANT_BE_BLANK = "can't be blank"


class _Strict(BaseModel):
    # Unknown fields are ignored, as Gcore does: its SDKs and tools send fields the relay has no use for.
    model_config = ConfigDict(extra="ignore", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _null_restores_the_default(cls, data: Any) -> Any:
        """An explicit null stands for the field's default: Terraform's provider sends `null` for an
        attribute removed from the configuration, on create and on update alike. A field without a
        default (a required one: a stream's name, a restream's uri and stream_id) stays null and is
        refused by the caller."""
        if not isinstance(data, dict):
            return data
        return {
            name: cls.model_fields[name].get_default(call_default_factory=True)
            if value is None and name in cls.model_fields
            else value
            for name, value in data.items()
        }


RECORDING_REFUSED = "is not supported: the relay does not record streams"
DVR_REFUSED = "is not supported: the relay keeps no recording to rewind (DVR)"
CLIENT_ENTITY_DATA_MAX = 4096


class StreamFields(_Strict):
    """Writable stream fields. On create `name` is required; on update only sent fields change.

    Gcore's settings that mean nothing to a relay (DVR window, recording source, overlays, projection,
    CDN, broadcasts, quality set, HLS tag) are kept and given back as sent, with Gcore's defaults
    (relay/store/models.py GcoreSettings); the two that would promise a feature the relay lacks are
    refused when switched on, naming the field, rather than accepted and silently not done.
    """

    name: str | None = Field(default=None, max_length=NAME_MAX)
    active: bool = True
    client_user_id: int | None = Field(default=None, ge=-INT64, le=INT64)
    srt_passphrase: str | None = None
    srt_latency_ms: int | None = Field(default=None, ge=20, le=8000)
    client_entity_data: str | None = Field(default=None, max_length=CLIENT_ENTITY_DATA_MAX)
    auto_record: bool = False
    dvr_enabled: bool = False
    dvr_duration: int = Field(default=3600, ge=30, le=14400)
    record_type: Literal["origin", "transcoded"] = "origin"
    html_overlay: bool = False
    projection: Literal["regular", "vr360", "vr180", "vr360tb"] = "regular"
    cdn_id: int | None = Field(default=None, ge=-INT64, le=INT64)
    broadcast_ids: list[Annotated[int, Field(ge=-INT64, le=INT64)]] = Field(default_factory=list, max_length=1000)
    quality_set_id: int | None = Field(default=None, ge=-INT64, le=INT64)
    hls_mpegts_endlist_tag: bool = True

    @field_validator("auto_record")
    @classmethod
    def _no_recording(cls, value: bool) -> bool:
        if value:
            raise PydanticCustomError("relay", RECORDING_REFUSED)
        return value

    @field_validator("dvr_enabled")
    @classmethod
    def _no_dvr(cls, value: bool) -> bool:
        if value:
            raise PydanticCustomError("relay", DVR_REFUSED)
        return value

    pull: bool | None = False
    """Null (Terraform's removed attribute) is the default, false."""
    uri: str | None = Field(default=None, max_length=MAX_ALTERNATIVES * MAX_URI_LENGTH)

    @field_validator("uri")
    @classmethod
    def _uri(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        try:
            # Stored normalised (scheme and host in lower case, one space between alternatives).
            return normalise_sources(value)
        except InvalidSource as exc:
            raise PydanticCustomError("relay", str(exc)) from None

    @field_validator("srt_passphrase")
    @classmethod
    def _passphrase(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not passphrase_length_ok(value):
            raise PydanticCustomError("relay", PASSPHRASE_LENGTH_RULE)
        if any(not 0x21 <= ord(ch) <= 0x7E for ch in value):
            raise PydanticCustomError("relay", "must be printable ASCII without whitespace")
        return value


class RestreamFields(_Strict):
    """Writable restream fields (Gcore's plus `tls_verify`); `live`, `id`, `client_id` are read-only."""

    name: str = Field(default="", max_length=NAME_MAX)
    active: bool = True
    uri: str | None = None
    stream_id: int | None = Field(default=None, ge=-INT64, le=INT64)
    client_user_id: int | None = Field(default=None, ge=-INT64, le=INT64)
    no_audio: bool = False
    no_audio_mode: Literal["drop", "silence"] = "drop"
    source: Literal["original", "transcoded"] = "original"
    tls_verify: bool = True

    @field_validator("uri")
    @classmethod
    def _uri(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            # Stored as normalised (scheme and host in lower case), as ffmpeg will need it.
            return parse_destination(value).uri
        except InvalidDestination as exc:
            raise PydanticCustomError("relay", str(exc)) from None

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        if value == "transcoded":
            raise PydanticCustomError("relay", "transcoded is not supported: the relay never transcodes video")
        return value


_TYPE_MESSAGES = {
    "bool_type": "must be a boolean",
    "int_type": "must be an integer",
    "string_type": "must be a string",
    "greater_than_equal": "is out of range",
    "less_than_equal": "is out of range",
}


def _message(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    if kind == "relay":
        return str(error["msg"])
    if kind == "string_too_long":
        return f"is too long (maximum is {error.get('ctx', {}).get('max_length', NAME_MAX)} characters)"
    if kind == "too_long":
        return f"is too long (maximum is {error.get('ctx', {}).get('max_length')} items)"
    if kind == "list_type":
        return "must be an array"
    if kind == "literal_error":
        return f"must be one of: {error.get('ctx', {}).get('expected', '')}".replace("'", "")
    return _TYPE_MESSAGES.get(kind, "is invalid")


def _errors(exc: ValidationError, *, invalid_uri: str = INVALID_SCHEME) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for error in exc.errors(include_url=False, include_input=False):
        field = str(error["loc"][0]) if error["loc"] else "base"
        message = _message(error)
        if field == "uri" and error["type"] not in ("relay", "string_too_long"):
            message = invalid_uri
        if field == "stream_id" and error["type"] != "relay":
            field, message = "stream", "must exist"
        found.setdefault(field, [])
        if message not in found[field]:
            found[field].append(message)
    return found


def parse_body(raw: bytes, wrapper: str) -> dict[str, Any]:
    """The JSON object of a request, unwrapped from `{"<wrapper>": {...}}` when so wrapped."""
    try:
        body = json.loads(raw or b"{}", parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise BadRequest("request body is not valid JSON") from exc
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    if wrapper in body and body[wrapper] is None:
        # Terraform's provider models both forms and sends a removed nested attribute as null: the
        # fields are then the flat ones beside it.
        del body[wrapper]
    if wrapper in body:
        inner = body[wrapper]
        if not isinstance(inner, dict):
            raise ValidationFailed({wrapper: ["must be an object"]})
        return inner
    return body


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


PULL_NEEDS_URI = "can't be blank when pull is true"


def validate_stream(
    body: dict[str, Any], *, creating: bool, policy: DestinationPolicy, client_id: int
) -> dict[str, Any]:
    """The fields to store (only those sent, on update), or ValidationFailed.

    A pulled source's `uri` is held against the destination policy for `client_id`, alternative by
    alternative (relay/policy.py): the relay would connect there on the client's behalf.
    """
    errors: dict[str, list[str]] = {}
    try:
        model = StreamFields.model_validate(body)
    except ValidationError as exc:
        errors = _errors(exc, invalid_uri=INVALID_SOURCE_SCHEME)
        model = None
    if model is not None and model.uri is not None:
        for index, source in enumerate(parse_sources(model.uri), start=1):
            refusal = policy.check_host(source.host, client_id)
            if refusal is not None:
                refusal = refusal.replace("destination not allowed", "source not allowed")
                several = " " in model.uri
                errors["uri"] = [f"alternative {index}: {refusal}" if several else refusal]
                break
    if creating and model is not None and model.pull and model.uri is None and "uri" not in errors:
        errors["uri"] = [PULL_NEEDS_URI]
    name = body.get("name")
    sent_name = "name" in body
    if (creating or sent_name) and "name" not in errors and (not isinstance(name, str) or not name.strip()):
        errors["name"] = [CANT_BE_BLANK]
    if errors or model is None:
        raise ValidationFailed(errors)
    # On create every field (unsent ones at their defaults); on update only those sent.
    fields = StreamFields.model_fields if creating else model.model_fields_set
    values = {name: getattr(model, name) for name in fields}
    if "pull" in values:
        values["pull"] = bool(values["pull"])
    return values


def validate_restream(
    body: dict[str, Any], *, creating: bool, policy: DestinationPolicy, client_id: int
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """(fields to store, field errors so far): the caller adds the stream checks, then raises.

    A URI is also held against the destination policy for `client_id` (relay/policy.py): an address
    the client may not reach is a 422 on `uri` naming the rule, never the URI.
    """
    errors: dict[str, list[str]] = {}
    model: RestreamFields | None = None
    try:
        model = RestreamFields.model_validate(body)
    except ValidationError as exc:
        errors = _errors(exc)
    if model is not None and model.uri is not None:
        refusal = policy.check_host(parse_destination(model.uri).host, client_id)
        if refusal is not None:
            errors["uri"] = [refusal]
    must_have = ("uri", "stream_id") if creating else ()
    # A null elsewhere restores the default (see _Strict); these two have none.
    for name in ("uri", "stream_id"):
        if (name in body or name in must_have) and body.get(name) is None:
            field = "stream" if name == "stream_id" else name
            message = INVALID_SCHEME if name == "uri" else "must exist"
            errors.setdefault(field, [message])
    if model is None or errors:
        stream_id = body.get("stream_id")
        usable = isinstance(stream_id, int) and not isinstance(stream_id, bool) and "stream" not in errors
        return ({"stream_id": stream_id} if usable else {}), errors
    names = RestreamFields.model_fields if creating else model.model_fields_set
    values = {name: getattr(model, name) for name in names if name != "source"}
    return values, errors


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
