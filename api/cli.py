"""`restream-relay`: `serve` runs the relay and its control API; `keys` manages API keys.

Command-line parsing, the key commands and the announcement; the node itself is api/server.py.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from api.loops import loop_factory
from api.server import Server, serve
from relay import logs, malloc
from relay.config import ConfigError, Settings, from_environment, with_overrides
from relay.ingest.tls import write_self_signed
from relay.keys import ADMIN_CLIENT_ID, ADMIN_KEY_FILE
from relay.secrets import SecretRegistry
from relay.store.base import AmbiguousKeyPrefix, Store, StoreError, StoreUnavailable
from relay.store.copy import copy_sqlite_to_postgres
from relay.store.open import open_store
from relay.store.postgres import database_label

log = logging.getLogger("relay.cli")


def announce(server: Server, demo_stream: dict[str, str | None] | None, *, show_secrets: bool = False) -> str:
    """What `make run` prints: where the dashboard, the API and the ingest listen, the key, a demo stream.

    The API key and the demo stream's key only with `show_secrets` (`make run`, on a terminal): a
    container's output is kept in its log, so the default says where the key is instead."""
    settings = server.settings
    ports = server.ports
    api_host = "127.0.0.1" if settings.api_bind in ("0.0.0.0", "::") else settings.api_bind
    lines = [
        "",
        "restream-relay is running (Ctrl-C stops it)",
        f"  dashboard     http://{api_host}:{ports.http}/",
        f"  control API   http://{api_host}:{ports.http}/streaming   (Authorization: APIKey <key>)",
        f"  API key       {_key_line(server, show_secrets)}",
        f"  RTMP ingest   rtmp://{settings.public_host}:{ports.rtmp}/in",
    ]
    if ports.rtmps:
        lines.append(f"  RTMPS ingest  rtmps://{settings.public_host}:{ports.rtmps}/in")
    if ports.srt:
        lines.append(f"  SRT ingest    srt://{settings.public_host}:{ports.srt}")
    if demo_stream and demo_stream.get("push_url"):
        key, push_url = demo_stream["key"], demo_stream["push_url"]
        if not show_secrets:
            key = f"{demo_stream['id']}?<token>   (the token: GET /streaming/streams/{demo_stream['id']})"
            push_url = f"rtmp://{settings.public_host}:{ports.rtmp}/in/{demo_stream['id']}?<token>"
        lines += [
            "",
            f"Demo stream '{demo_stream['name']}': OBS server rtmp://{settings.public_host}:{ports.rtmp}/in,"
            f" stream key {key}",
            "Publish a test pattern to it:",
            "  ffmpeg -re -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine=frequency=440 \\",
            "    -c:v libx264 -preset veryfast -tune zerolatency -g 60 -c:a aac -f flv \\",
            f"    '{push_url}'",
        ]
    return "\n".join(lines) + "\n"


def _key_line(server: Server, show_secrets: bool) -> str:
    if server.admin_key is None:
        return "(managed with: restream-relay keys create --client ID)"
    if show_secrets:
        return server.admin_key
    if server.settings.api_key:
        return "the one in RELAY_API_KEY (not printed)"
    return f"in {server.settings.data_dir / ADMIN_KEY_FILE} (not printed; --show-secrets prints it)"


async def _demo_stream(server: Server) -> dict[str, str | None] | None:
    """The admin client's first stream, created as "demo" on first start, for the announcement."""
    store, addresses = server.store, server.addresses
    page = await store.list_streams(ADMIN_CLIENT_ID, 0, 1)
    stream = page.items[0] if page.items else await store.create_stream(ADMIN_CLIENT_ID, {"name": "demo"})
    urls = addresses.push_urls(stream.id, stream.token)
    return {"id": str(stream.id), "name": stream.name, "push_url": urls.rtmp, "key": f"{stream.id}?{stream.token}"}


def announcer(show_secrets: bool) -> Callable[[Server], Awaitable[None]]:
    """The `on_started` hook of `serve` that prints the announcement."""

    async def _announce(server: Server) -> None:
        demo = await _demo_stream(server) if server.admin_key else None
        sys.stdout.write(announce(server, demo, show_secrets=show_secrets))
        sys.stdout.flush()

    return _announce


async def keys_command(settings: Settings, args: argparse.Namespace) -> int:
    store = await open_store(settings)
    try:
        if args.keys_command == "create":
            key, record = await store.create_api_key(args.client, args.label or "")
            print(f"created key {record.id} (prefix {record.prefix}) for client {record.client_id}")
            print(key)
        elif args.keys_command == "list":
            for record in await store.list_api_keys(args.client):
                state = f"revoked {record.revoked_at:%Y-%m-%d %H:%M}" if record.revoked_at else "active"
                print(f"{record.id}\tclient {record.client_id}\t{record.prefix}…\t{state}\t{record.label}")
        elif args.keys_command == "revoke":
            return await _revoke(store, args.key)
    finally:
        await store.close()
    return 0


async def db_command(settings: Settings, args: argparse.Namespace) -> int:
    """`db copy`: the SQLite file's definitions into PostgreSQL, ids kept; one line of counts."""
    target = args.to or settings.database_url
    if not target:
        print("refused: say where to copy to: --to postgresql://... or RELAY_DATABASE_URL", file=sys.stderr)
        return 2
    source = args.source or settings.database_path
    copied = await copy_sqlite_to_postgres(source, target, replace=args.force)
    print(
        f"copied {copied.api_keys} API keys, {copied.streams} streams and {copied.restreams} restreams"
        f" from {source} to {database_label(target)}"
    )
    return 0


async def _revoke(store: Store, wanted: str) -> int:
    """Revoke one key by id or prefix; an ambiguous prefix revokes nothing (revoking cannot be undone).

    The argument is never echoed: an operator who pastes a whole key instead of its prefix must not
    find it in a terminal log."""
    try:
        record = await store.revoke_api_key(wanted.strip().rstrip("…"))  # `keys list` ends prefixes with …
    except AmbiguousKeyPrefix as exc:
        print(
            f"refused: that prefix matches {exc.matches} active keys, nothing was revoked; "
            "give the key id from `restream-relay keys list`",
            file=sys.stderr,
        )
        return 1
    if record is None:
        print("no active key has that id or prefix (see `restream-relay keys list`)", file=sys.stderr)
        return 1
    print(f"revoked 1 key: id {record.id}, client {record.client_id}, prefix {record.prefix}…")
    return 0


def self_signed_tls(settings: Settings) -> Settings:
    """Point RTMPS at a self-signed pair in the data dir, made on first use: for local tests only."""
    directory = settings.data_dir / "tls"
    cert, key = directory / "cert.pem", directory / "key.pem"
    if not (cert.exists() and key.exists()):
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        cert, key = write_self_signed(directory, settings.public_host)
    log.warning("RTMPS uses a self-signed certificate (%s): fine for local tests, encoders must not verify it", cert)
    return with_overrides(settings, tls_cert_file=cert, tls_key_file=key)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="restream-relay", description=__doc__)
    parser.add_argument("--data-dir", type=Path, help="where the database lives (RELAY_DATA_DIR, ./data)")
    sub = parser.add_subparsers(dest="command", required=True)
    serve_p = sub.add_parser("serve", help="run the relay in the foreground")
    serve_p.add_argument("--bind", help="address of the media listeners (RELAY_BIND)")
    serve_p.add_argument("--api-bind", help="address of the control API (RELAY_API_BIND)")
    serve_p.add_argument("--http-port", type=int, help="control API port (RELAY_HTTP_PORT, 8080)")
    serve_p.add_argument("--rtmp-port", type=int, help="RTMP ingest port (RELAY_RTMP_PORT, 1935)")
    serve_p.add_argument("--rtmps-port", type=int, help="RTMPS ingest port (RELAY_RTMPS_PORT, 1936)")
    serve_p.add_argument("--srt-port", type=int, help="SRT ingest port (RELAY_SRT_PORT, 5001)")
    serve_p.add_argument("--public-host", help="host written into push URLs (RELAY_PUBLIC_HOST)")
    serve_p.add_argument("--tls-cert", type=Path, help="RTMPS certificate (RELAY_TLS_CERT)")
    serve_p.add_argument("--tls-key", type=Path, help="RTMPS private key (RELAY_TLS_KEY)")
    serve_p.add_argument("--ffmpeg", help="ffmpeg binary for pushes and pulls (RELAY_FFMPEG)")
    serve_p.add_argument("--push-ffmpeg", help="ffmpeg binary for pushes alone (RELAY_PUSH_FFMPEG)")
    serve_p.add_argument(
        "--client-limits",
        help="per-client limits, e.g. '2:streams=10,pushes=4;7:restreams_per_stream=50' (RELAY_CLIENT_LIMITS)",
    )
    serve_p.add_argument("--max-pushes", type=int, help="pushes running at once on this node (RELAY_MAX_PUSHES, 64)")
    serve_p.add_argument("--announce", action="store_true", help="print addresses and a publish command")
    serve_p.add_argument(
        "--show-secrets",
        action="store_true",
        help="with --announce, print the API key and the demo stream's key too (a terminal: container logs are kept)",
    )
    serve_p.add_argument(
        "--self-signed-tls",
        action="store_true",
        help="without a certificate, make a self-signed one in the data dir (local use)",
    )
    keys_p = sub.add_parser("keys", help="create, list or revoke API keys")
    keys_sub = keys_p.add_subparsers(dest="keys_command", required=True)
    create_p = keys_sub.add_parser("create", help="create a key; the key alone is the last line printed")
    create_p.add_argument("--client", type=int, required=True, help="client (tenant) id the key belongs to")
    create_p.add_argument("--label", help="a note to tell keys apart")
    list_p = keys_sub.add_parser("list", help="list keys (prefixes only)")
    list_p.add_argument("--client", type=int)
    revoke_p = keys_sub.add_parser("revoke", help="revoke one key by id or prefix (for good)")
    revoke_p.add_argument("key", help="key id, or a prefix matching exactly one active key, as shown by list")
    db_p = sub.add_parser("db", help="move definitions between databases")
    db_sub = db_p.add_subparsers(dest="db_command", required=True)
    copy_p = db_sub.add_parser(
        "copy", help="copy a SQLite database (keys, streams, restreams, their ids) into PostgreSQL"
    )
    copy_p.add_argument("--from", dest="source", type=Path, help="the SQLite file (default: the data dir's)")
    copy_p.add_argument(
        "--to", help="postgresql://... (default RELAY_DATABASE_URL, which keeps a password out of the process list)"
    )
    copy_p.add_argument("--force", action="store_true", help="replace the definitions the target already holds")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = with_overrides(from_environment(), data_dir=args.data_dir)
        if args.command == "serve":
            bind = args.bind
            settings = with_overrides(
                settings,
                media_bind=bind,
                api_bind=args.api_bind,
                http_port=args.http_port,
                rtmp_port=args.rtmp_port,
                rtmps_port=args.rtmps_port,
                srt_port=args.srt_port,
                public_host=args.public_host,
                tls_cert_file=args.tls_cert,
                tls_key_file=args.tls_key,
                ffmpeg_path=args.ffmpeg,
                push_ffmpeg_path=args.push_ffmpeg,
                client_limits=args.client_limits,
                max_pushes=args.max_pushes,
            )
            settings.limits()  # a malformed --client-limits is refused here, with the setting named
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    secrets = SecretRegistry()
    logs.configure(settings.log_level, settings.log_format, secrets)
    if args.command == "serve" and args.self_signed_tls and not settings.rtmps_enabled:
        settings = self_signed_tls(settings)
    # What an operator must fix (a port in use, a corrupt database) is one line and an exit code, not a traceback.
    if args.command == "serve":
        malloc.limit_arenas()  # before any thread: see relay/malloc.py
        try:
            on_started = announcer(args.show_secrets) if args.announce else None
            with asyncio.Runner(loop_factory=loop_factory(settings.event_loop)) as runner:
                return runner.run(serve(settings, on_started, secrets))
        except ConfigError as exc:  # found at start-up (RELAY_API_KEY revoked, say): the same one line
            print(f"configuration error: {exc}", file=sys.stderr)
            return 2
        except (OSError, StoreError) as exc:
            log.error("cannot start: %s", exc)
            return 1
    try:
        if args.command == "db":
            return asyncio.run(db_command(settings, args))
        return asyncio.run(keys_command(settings, args))
    except (StoreError, StoreUnavailable) as exc:
        log.error("%s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
