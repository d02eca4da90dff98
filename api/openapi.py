"""The OpenAPI 3.0 description of the control API, written to match what the handlers really do."""

from __future__ import annotations

from functools import cache
from typing import Any

from relay.destinations import MAX_URI_LENGTH
from relay.ingest.gate import SourceType
from relay.pull.runner import PullState
from relay.pull.sources import MAX_ALTERNATIVES
from relay.supervisor.states import PushState

_INT = {"type": "integer", "format": "int64"}
_NULL_INT = {"type": "integer", "format": "int64", "nullable": True}
_NULL_STR = {"type": "string", "nullable": True}
_NULL_NUM = {"type": "number", "nullable": True}
_TIME = {"type": "string", "format": "date-time", "nullable": True}
_PULL_URI_MAX = MAX_ALTERNATIVES * MAX_URI_LENGTH


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


_ERRORS = {
    "401": _json(_ref("AuthError"), "Missing, unknown or revoked API key"),
    "503": _json(_ref("GenericError"), "The relay cannot use its storage now (disk full, I/O error); nothing was kept"),
}
_NOT_FOUND = {"404": _json(_ref("NotFound"), "No such object for this client")}
_INVALID = {
    "400": _json(_ref("GenericError"), "The body is not a JSON object"),
    "413": _json(_ref("GenericError"), "The body is larger than 64 KiB"),
    "422": _json(_ref("ValidationError"), "A field is invalid; messages per field"),
}
_LIST_HEADERS = {
    "X-Total-Count": {"schema": {"type": "integer"}, "description": "Number of objects on all pages"},
    "Link": {"schema": {"type": "string"}, "description": 'rel="next" link while a further page exists'},
}
_PAGE = {
    "name": "page",
    "in": "query",
    "required": False,
    "schema": {"type": "integer", "minimum": 1, "maximum": 999999999, "default": 1},
    "description": "1-based page number, 25 objects a page, newest first",
}
_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}


def _resource(
    name: str, plural: str, schema: str, create_body: dict[str, Any], update_body: dict[str, Any]
) -> dict[str, Any]:
    return {
        f"/streaming/{plural}": {
            "get": {
                "summary": f"List {plural}",
                "operationId": f"list_{plural}",
                "parameters": [_PAGE],
                "responses": {
                    "200": _json({"type": "array", "items": _ref(schema)}, f"A page of {plural}", _LIST_HEADERS),
                    "422": _json(_ref("ValidationError"), "Invalid page"),
                    **_ERRORS,
                },
            },
            "post": {
                "summary": f"Create a {name}",
                "operationId": f"create_{name}",
                "requestBody": {"required": True, "content": {"application/json": {"schema": create_body}}},
                "responses": {
                    "200": {
                        **_json(_ref(schema), f"The created {name}"),
                        "links": {
                            f"Get{schema}": {"operationId": f"get_{name}", "parameters": {"id": "$response.body#/id"}},
                            f"Update{schema}": {
                                "operationId": f"update_{name}",
                                "parameters": {"id": "$response.body#/id"},
                            },
                            f"Delete{schema}": {
                                "operationId": f"delete_{name}",
                                "parameters": {"id": "$response.body#/id"},
                            },
                        },
                    },
                    **_INVALID,
                    **_ERRORS,
                },
            },
        },
        f"/streaming/{plural}/{{id}}": {
            "parameters": [_ID],
            "get": {
                "summary": f"Get a {name}",
                "operationId": f"get_{name}",
                "responses": {"200": _json(_ref(schema), f"The {name}"), **_NOT_FOUND, **_ERRORS},
            },
            "patch": {
                "summary": f"Update a {name} (only the fields sent change)",
                "operationId": f"update_{name}",
                "requestBody": {"required": True, "content": {"application/json": {"schema": update_body}}},
                "responses": {"200": _json(_ref(schema), f"The updated {name}"), **_NOT_FOUND, **_INVALID, **_ERRORS},
            },
            "delete": {
                "summary": f"Delete a {name}",
                "operationId": f"delete_{name}",
                "responses": {"204": {"description": "Deleted"}, **_NOT_FOUND, **_ERRORS},
            },
        },
    }


_KEPT = "Gcore's setting, kept and returned as sent; not a relay feature"
_GCORE_SETTINGS_INPUT: dict[str, Any] = {
    "client_entity_data": {
        "type": "string",
        "nullable": True,
        "maxLength": 4096,
        "description": "Free text of the client's own, kept and returned as sent",
    },
    "auto_record": {
        "type": "boolean",
        "nullable": True,
        "default": False,
        "description": "true is refused (422 on auto_record): the relay does not record streams",
    },
    "dvr_enabled": {
        "type": "boolean",
        "nullable": True,
        "default": False,
        "description": "true is refused (422 on dvr_enabled): the relay keeps no recording to rewind",
    },
    "dvr_duration": {
        "type": "integer",
        "nullable": True,
        "minimum": 30,
        "maximum": 14400,
        "default": 3600,
        "description": _KEPT,
    },
    "record_type": {
        "type": "string",
        "nullable": True,
        "enum": ["origin", "transcoded"],
        "default": "origin",
        "description": _KEPT,
    },
    "html_overlay": {"type": "boolean", "nullable": True, "default": False, "description": _KEPT},
    "projection": {
        "type": "string",
        "nullable": True,
        "enum": ["regular", "vr360", "vr180", "vr360tb"],
        "default": "regular",
        "description": _KEPT,
    },
    "cdn_id": {**_NULL_INT, "description": _KEPT},
    "broadcast_ids": {"type": "array", "nullable": True, "maxItems": 1000, "items": _INT, "description": _KEPT},
    "quality_set_id": {**_NULL_INT, "description": _KEPT},
    "hls_mpegts_endlist_tag": {"type": "boolean", "nullable": True, "default": True, "description": _KEPT},
}
_NULL_DEFAULT = "An explicit null restores a field's default (Terraform sends null for an attribute it no longer sets)."
_STREAM_INPUT = {
    "type": "object",
    "description": _NULL_DEFAULT,
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"\S"},
        "active": {"type": "boolean", "nullable": True, "default": True},
        "client_user_id": {"type": "integer", "format": "int64", "nullable": True},
        "srt_passphrase": {"type": "string", "nullable": True, "pattern": r"^[!-~]{10,79}$"},
        "srt_latency_ms": {
            "type": "integer",
            "nullable": True,
            "minimum": 20,
            "maximum": 8000,
            "description": "Extension (ours): SRT receiver latency for this stream",
        },
        **_GCORE_SETTINGS_INPUT,
        "pull": {
            "type": "boolean",
            "nullable": True,
            "default": False,
            "description": "true: the relay feeds the stream itself by pulling `uri` (publishers are refused); "
            "null is false",
        },
        "uri": {
            "type": "string",
            "nullable": True,
            "maxLength": _PULL_URI_MAX,
            "description": "The source a pulled stream reads: rtmp://host[:port]/app/key, rtmps://..., "
            "srt://host:port?mode=caller&..., rtsp://host[:port]/path (pulled over TCP), or http(s):// serving "
            "HLS or MPEG-TS. Several addresses separated by spaces are alternatives, tried in turn. Required "
            "when pull is true. For clients other than the operator's, a host that is or resolves to a "
            "loopback, private, link-local, shared, multicast or reserved address is refused (422 on uri "
            "here, a failed attempt when resolved before each pull)",
        },
    },
}
_RESTREAM_INPUT = {
    "type": "object",
    "description": _NULL_DEFAULT + " uri and stream_id have none.",
    "properties": {
        "name": {"type": "string", "nullable": True, "maxLength": 255, "default": ""},
        "active": {"type": "boolean", "nullable": True, "default": True},
        "uri": {
            "type": "string",
            "maxLength": 2048,
            "description": "rtmp://host[:port]/app/key, rtmps://..., or srt://host:port?mode=caller&... "
            "(integer SRT options within documented ranges, send_buffer_size and recv_buffer_size among them). "
            "For clients other than the operator's, a host "
            "that is or resolves to a loopback, private, link-local, shared, multicast or reserved address "
            "is refused (422 on uri here, a failed push when resolved at start)",
        },
        "stream_id": _INT,
        "client_user_id": _NULL_INT,
        "no_audio": {"type": "boolean", "nullable": True, "default": False},
        "no_audio_mode": {"type": "string", "nullable": True, "enum": ["drop", "silence"], "default": "drop"},
        "source": {"type": "string", "nullable": True, "enum": ["original"], "default": "original"},
        "tls_verify": {"type": "boolean", "nullable": True, "default": True},
    },
}

_STREAM = {
    "type": "object",
    "required": ["id", "name", "active", "client_id", "token", "push_url", "live", "created_at"],
    "properties": {
        "id": _INT,
        "name": {"type": "string"},
        "active": {"type": "boolean"},
        "client_id": _INT,
        "client_user_id": _NULL_INT,
        "token": {"type": "string"},
        "push_url": {"type": "string"},
        "push_url_srt": _NULL_STR,
        "push_url_rtmps": _NULL_STR,
        "backup_push_url": {
            "type": "string",
            "description": "The backup input: the key is the id followed by `b` (`rtmp://HOST:PORT/in/<id>b?<token>`)",
        },
        "backup_push_url_srt": {**_NULL_STR, "description": "`srt://HOST:PORT?streamid=<id>b#<token>`"},
        "backup_push_url_rtmps": {**_NULL_STR, "description": "Extension (ours): the backup input over RTMPS"},
        "srt_passphrase": _NULL_STR,
        "srt_latency_ms": _NULL_INT,
        "pull": {"type": "boolean"},
        "uri": _NULL_STR,
        "live": {"type": "boolean"},
        "node_id": {
            **_NULL_STR,
            "description": "Extension (ours): the relay node running the stream while it is live (several "
            "nodes on PostgreSQL: the holder of the stream's lease); null while offline",
        },
        "backup_live": {"type": "boolean", "description": "A publisher is connected on the backup input"},
        "input": {
            "type": "string",
            "enum": ["main", "backup"],
            "nullable": True,
            "description": "Extension (ours): the input feeding the destinations (the main whenever it "
            "sends; the backup while the main is gone or silent); null while offline",
        },
        "stream_source_type": {"type": "string", "enum": [kind.value for kind in SourceType], "nullable": True},
        "started_at_primary": _TIME,
        "finished_at_primary": _TIME,
        "started_at_backup": _TIME,
        "finished_at_backup": _TIME,
        "video_width": _NULL_NUM,
        "video_height": _NULL_NUM,
        "frame_rate": _NULL_NUM,
        "transcoded_qualities": {"type": "array", "items": {"type": "string"}},
        "client_entity_data": _NULL_STR,
        "auto_record": {"type": "boolean"},
        "dvr_enabled": {"type": "boolean"},
        "dvr_duration": {"type": "integer"},
        "record_type": {"type": "string", "enum": ["origin", "transcoded"]},
        "html_overlay": {"type": "boolean"},
        "projection": {"type": "string", "enum": ["regular", "vr360", "vr180", "vr360tb"]},
        "cdn_id": _NULL_INT,
        "broadcast_ids": {"type": "array", "items": _INT},
        "quality_set_id": _NULL_INT,
        "hls_mpegts_endlist_tag": {"type": "boolean"},
        "low_latency_enabled": {"type": "boolean", "description": "Gcore: deprecated, always true"},
        "created_at": {"type": "string", "format": "date-time"},
        "status": {
            "type": "object",
            "description": "Extension (ours): what the ingest sees of the source",
            "properties": {
                "pull": {
                    "type": "object",
                    "nullable": True,
                    "description": "A pulled stream's pull (null otherwise): which alternative (masked, from 1), "
                    "its state, why the last failed attempt failed (masked), the wait before the next",
                    "properties": {
                        "state": {"type": "string", "enum": [state.value for state in PullState]},
                        "source": _NULL_STR,
                        "source_index": _NULL_INT,
                        "sources": _INT,
                        "since": _TIME,
                        "attempts": _INT,
                        "last_error": _NULL_STR,
                        "next_retry_seconds": _NULL_NUM,
                    },
                },
            },
            "additionalProperties": True,
        },
    },
}
_RESTREAM = {
    "type": "object",
    "required": ["id", "name", "active", "uri", "stream_id", "client_id", "live", "no_audio", "no_audio_mode"],
    "properties": {
        "id": _INT,
        "name": {"type": "string"},
        "active": {"type": "boolean"},
        "uri": {"type": "string"},
        "stream_id": _INT,
        "client_id": _INT,
        "client_user_id": _NULL_INT,
        "live": {"type": "boolean"},
        "node_id": {
            **_NULL_STR,
            "description": "Extension (ours): the relay node running the push's stream while it is live (several "
            "nodes on PostgreSQL: the holder of the stream's lease); null while offline",
        },
        "no_audio": {"type": "boolean"},
        "no_audio_mode": {"type": "string", "enum": ["drop", "silence"]},
        "source": {"type": "string", "enum": ["original", "transcoded"]},
        "quality_id": _NULL_INT,
        "playlist_id": _NULL_INT,
        "tls_verify": {"type": "boolean"},
        "status": {
            "type": "object",
            "description": "Extension (ours): the push's observed state",
            "properties": {
                "state": {"type": "string", "enum": [state.value for state in PushState]},
                "overflows": {
                    "type": "integer",
                    "description": "Times the destination fell a whole queue behind (it takes less than the "
                    "stream's bitrate) and the push skipped ahead to a keyframe; repeated, the push restarts",
                },
                "bitrate_kbps": {
                    "type": "integer",
                    "description": "ffmpeg's figure: the size it wrote over the media time it wrote (the stream's "
                    "bitrate, whatever the destination takes; see acked_bitrate_kbps)",
                },
                "acked_bitrate_kbps": {
                    "type": "integer",
                    "nullable": True,
                    "description": "RTMP(S): what the destination acknowledged over the last 5 s (TCP_INFO)",
                },
                "rtt_ms": {"type": "number", "nullable": True, "description": "RTMP(S): TCP round-trip time"},
                "retransmits": {"type": "integer", "nullable": True, "description": "RTMP(S): retransmitted segments"},
                "unacked_bytes": {
                    "type": "integer",
                    "nullable": True,
                    "description": "RTMP(S): bytes written and not yet acknowledged by the destination",
                },
                "send_window_bytes": {
                    "type": "integer",
                    "nullable": True,
                    "description": "RTMP(S): the destination's receive window; 0 when it stopped reading",
                },
                "behind_live_seconds": {
                    "type": "number",
                    "nullable": True,
                    "description": "How far behind live the destination is: media queued for it plus "
                    "(RTMP(S)) its unacknowledged bytes at the output's bytes per media second",
                },
                "srt": {
                    "type": ["object", "null"],
                    "description": "An SRT destination's link as libsrt measures it on the relay's own caller, "
                    "sampled each second (null for RTMP(S), or with RELAY_SRT_PUSH=ffmpeg)",
                    "properties": {
                        "rtt_ms": {"type": "number"},
                        "send_rate_kbps": {
                            "type": "number",
                            "description": "payload sent per second, retransmissions excluded",
                        },
                        "bandwidth_mbps": {"type": "number", "description": "libsrt's estimate of the link"},
                        "send_buffer_ms": {"type": "integer", "description": "sent, not yet acknowledged"},
                        "latency_ms": {"type": "integer", "description": "negotiated with the destination"},
                        "packets_sent": _INT,
                        "packets_lost": {"type": "integer", "description": "reported missing by the destination"},
                        "packets_retransmitted": _INT,
                        "packets_dropped": {"type": "integer", "description": "given up on: holes at the destination"},
                        "bytes_sent": _INT,
                        "encrypted": {"type": "boolean"},
                    },
                },
            },
            "additionalProperties": True,
        },
    },
}


_EVENTS_DESCRIPTION = """\
Server-Sent Events (extension, ours): the caller's client only, never another client's objects, and no
tokens or destination URIs. Each event is `event: <name>` and one `data: <JSON object>` line, then a
blank line:

- `hello` first: `{"client_id", "stats_interval_seconds", "heartbeat_seconds"}`;
- `stream.live` when a stream starts, holds (publisher dropped, destinations kept for its return) or
  ends publishing, and when the backup input connects or leaves: `{"client_id", "stream_id", "live",
  "backup_live", "state": "live"|"reconnecting"|"offline", "reason"?, "node_id"}` (`node_id`: the
  relay node that saw the change: this one, or in a cluster the node running the stream);
- `stream.input` when another input feeds the destinations: `{"client_id", "stream_id", "input":
  "main"|"backup", "reason": "dropped"|"silent"|"preferred"|"returned", "restarted"}` (`restarted`:
  the inputs' codecs or containers differed, so the pushes restarted instead of continuing);
- `stream.info` when the source's video is known: `{"client_id", "stream_id", "video_width",
  "video_height", "frame_rate"}`;
- `restream.status` when a push changes state: `{"client_id", "stream_id", "restream_id", "status",
  "node_id"}` (`status` as on a restream; `node_id` as above);
- `stats` every 2 s: `{"client_id", "time", "streams": [{"id", "name", "active", "live",
  "backup_live", "input", "stream_source_type", "video_width", "video_height", "frame_rate", "status",
  "node_id"}], "restreams": [{"id", "stream_id", "name", "active", "live", "status", "node_id"}]}`;
- `resync` when this reader fell too far behind and events were dropped: reload everything.

A comment line `: heartbeat` comes every 15 s while nothing else is sent. Only the latest `stats` is
kept for a slow reader. The stream never ends by itself (the relay ends it when it stops): a reader
opens it again after a drop. Browsers read it with `fetch()` (EventSource cannot send the header).
The request must accept `text/event-stream` explicitly (otherwise 406), so that no client is left
holding an endless response it did not ask for."""

_METRICS_DESCRIPTION = """\
Prometheus exposition (extension, ours), OpenMetrics when the `Accept` header asks for it. Needs an
API key like /streaming/ (Prometheus: `authorization: {type: APIKey, credentials_file: ...}`). Series
per stream (`relay_stream_*`, labels stream_id, name, client_id) and per restream (`relay_restream_*`,
labels restream_id, stream_id, name, client_id; `relay_restream_state` has a `state` label, 1 for the
current state) cover the key's client only; `relay_ingest_refusals_total{transport, reason}`,
`relay_ffmpeg_processes`, `relay_ffmpeg_resident_memory_bytes`, `relay_tasks` and `process_*` are node-wide. Labels
never carry tokens, keys or URIs."""

_OBSERVABILITY: dict[str, Any] = {
    "/streaming/events": {
        "get": {
            "summary": "Live event feed (Server-Sent Events)",
            "operationId": "stream_events",
            "description": _EVENTS_DESCRIPTION,
            "responses": {
                "200": {
                    "description": "An endless text/event-stream",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                "406": _json(_ref("GenericError"), "The request does not accept text/event-stream"),
                "503": _json(_ref("GenericError"), "Too many open feeds (for the relay or for this client)"),
                **_ERRORS,
            },
        }
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics",
            "operationId": "metrics",
            "description": _METRICS_DESCRIPTION,
            "responses": {
                "200": {
                    "description": "The exposition, text format 0.0.4 or OpenMetrics 1.0.0",
                    "content": {
                        "text/plain": {"schema": {"type": "string"}},
                        "application/openmetrics-text": {"schema": {"type": "string"}},
                    },
                },
                **_ERRORS,
            },
        }
    },
}


@cache
def openapi_document() -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/healthz": {
            "get": {
                "summary": "Liveness",
                "operationId": "healthz",
                "security": [],
                "responses": {
                    "200": _json(
                        {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
                        "The relay is up",
                    ),
                    "503": _json(
                        {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
                        "The relay cannot write its definitions (disk full, I/O error)",
                    ),
                },
            }
        },
    }
    paths.update(_OBSERVABILITY)
    paths.update(
        _resource(
            "stream",
            "streams",
            "Stream",
            _STREAM_INPUT,
            {
                "oneOf": [
                    {"type": "object", "required": ["stream"], "properties": {"stream": _STREAM_INPUT}},
                    _STREAM_INPUT,
                ]
            },
        )
    )
    paths.update(
        _resource(
            "restream",
            "restreams",
            "Restream",
            {
                "type": "object",
                "required": ["restream"],
                "properties": {"restream": {**_RESTREAM_INPUT, "required": ["uri", "stream_id"]}},
            },
            {
                "oneOf": [
                    {"type": "object", "required": ["restream"], "properties": {"restream": _RESTREAM_INPUT}},
                    _RESTREAM_INPUT,
                ]
            },
        )
    )
    paths["/streaming/streams/{id}/reset_push_token"] = {
        "parameters": [_ID],
        "post": {
            "summary": "Give a stream a new publish token",
            "operationId": "reset_push_token",
            "description": "Every publisher that came in on the old token is disconnected before the answer, and "
            "the old token is refused from then on (RTMP, RTMPS, SRT). No body is needed.",
            "responses": {"200": _json(_ref("Stream"), "The stream, with its new token"), **_NOT_FOUND, **_ERRORS},
        },
    }
    _STREAM_INPUT_CREATE = {**_STREAM_INPUT, "required": ["name"]}
    paths["/streaming/streams"]["post"]["requestBody"]["content"]["application/json"]["schema"] = {
        "oneOf": [
            _STREAM_INPUT_CREATE,
            {"type": "object", "required": ["stream"], "properties": {"stream": _STREAM_INPUT_CREATE}},
        ],
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "restream-relay control API",
            "version": "1",
            "description": "Wire-compatible with the Gcore Streaming API for streams and restreams.",
        },
        "paths": paths,
        "security": [{"APIKey": []}],
        "components": {
            "securitySchemes": {
                "APIKey": {"type": "apiKey", "in": "header", "name": "Authorization", "description": "`APIKey <key>`"}
            },
            "schemas": {
                "Stream": _STREAM,
                "Restream": _RESTREAM,
                "AuthError": {
                    "type": "object",
                    "required": ["errors"],
                    "properties": {
                        "errors": {
                            "type": "object",
                            "properties": {"auth": {"type": "array", "items": {"type": "string"}}},
                        }
                    },
                },
                "NotFound": {
                    "type": "object",
                    "required": ["status", "error"],
                    "properties": {"status": {"type": "integer"}, "error": {"type": "string"}},
                },
                "GenericError": {
                    "type": "object",
                    "required": ["status", "error"],
                    "properties": {"status": {"type": "integer"}, "error": {"type": "string"}},
                },
                "ValidationError": {
                    "type": "object",
                    "required": ["errors"],
                    "properties": {
                        "errors": {
                            "type": "object",
                            "additionalProperties": {"type": "array", "items": {"type": "string"}},
                        }
                    },
                },
            },
        },
    }
