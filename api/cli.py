"""`restream-relay`: `serve` runs the relay and its control API; `keys` manages API keys.

This is the composition root: it is the one place that sees both the engine (relay/) and the HTTP
API (api/), so that the engine never imports the API.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from api.app import create_app
from relay import logs
from relay.app import ADMIN_CLIENT_ID, RelayNode
from relay.config import ConfigError, Settings, from_environment, with_overrides
from relay.engine import BoundPorts, Relay
from relay.ingest.tls import write_self_signed
from relay.store.sqlite import SqliteStore

log = logging.getLogger("relay.cli")
GRACEFUL_STOP_SECONDS = 10.0


class RelayService:
    """A running relay with its HTTP site: `start()`, then `close()`; used by `serve` and by tests."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.node = RelayNode(settings)
        self._runner: web.AppRunner | None = None
        self.http_port: int | None = None

    @property
    def relay(self) -> Relay:
        assert self.node.relay is not None, "start() first"
        return self.node.relay

    async def start(self) -> None:
        relay = await self.node.start()
        try:
            self._runner = web.AppRunner(create_app(relay), access_log=None, handle_signals=False,
                                         shutdown_timeout=GRACEFUL_STOP_SECONDS)
            await self._runner.setup()
            site = web.TCPSite(self._runner, self.settings.api_bind, self.settings.http_port,
                               reuse_address=True)
            await site.start()
            self.http_port = _bound_port(site, self.settings.http_port)
            relay.ports = BoundPorts(http=self.http_port, rtmp=relay.ports.rtmp, rtmps=relay.ports.rtmps,
                                     srt=relay.ports.srt)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        # Listeners first (no new requests), then the engine (pushes, publishers), then the store.
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        await self.node.close()


def _bound_port(site: web.TCPSite, configured: int) -> int:
    server = site._server  # aiohttp keeps the asyncio server private; port 0 needs the real one
    sockets = getattr(server, "sockets", None) or ()
    return int(sockets[0].getsockname()[1]) if sockets else configured


def announce(service: RelayService, demo_stream: dict[str, str | None] | None) -> str:
    settings = service.settings
    relay = service.relay
    api_host = "127.0.0.1" if settings.api_bind in ("0.0.0.0", "::") else settings.api_bind
    lines = [
        "",
        "restream-relay is running (Ctrl-C stops it)",
        f"  dashboard     http://{api_host}:{service.http_port}/",
        f"  control API   http://{api_host}:{service.http_port}/streaming   (Authorization: APIKey <key>)",
        f"  API key       {service.node.admin_key or '(managed with: restream-relay keys create --client ID)'}",
        f"  RTMP ingest   rtmp://{settings.public_host}:{relay.ports.rtmp or settings.rtmp_port}/in",
    ]
    if settings.rtmps_enabled:
        lines.append(f"  RTMPS ingest  rtmps://{settings.public_host}:{relay.ports.rtmps or settings.rtmps_port}/in")
    if relay.ports.srt:
        lines.append(f"  SRT ingest    srt://{settings.public_host}:{relay.ports.srt}")
    if demo_stream and demo_stream.get("push_url"):
        lines += [
            "",
            f"Demo stream '{demo_stream['name']}': OBS server rtmp://{settings.public_host}:"
            f"{relay.ports.rtmp or settings.rtmp_port}/in, stream key {demo_stream['key']}",
            "Publish a test pattern to it:",
            "  ffmpeg -re -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine=frequency=440 \\",
            "    -c:v libx264 -preset veryfast -tune zerolatency -g 60 -c:a aac -f flv \\",
            f"    '{demo_stream['push_url']}'",
        ]
    return "\n".join(lines) + "\n"


async def _demo_stream(relay: Relay) -> dict[str, str | None] | None:
    """The admin client's first stream, created as "demo" on first start, for the announcement."""
    page = await relay.store.list_streams(ADMIN_CLIENT_ID, 0, 1)
    stream = page.items[0] if page.items else await relay.store.create_stream(ADMIN_CLIENT_ID, {"name": "demo"})
    urls = relay.push_urls(stream)
    return {"name": stream.name, "push_url": urls["push_url"], "key": f"{stream.id}?{stream.token}"}


async def serve(settings: Settings, *, announce_start: bool = False) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals_seen = 0

    def on_signal() -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            log.info("stopping (again to force)")
            stop.set()
        else:
            log.warning("forced stop")
            main_task.cancel()

    current = asyncio.current_task()
    assert current is not None
    main_task: asyncio.Task[object] = current
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    service = RelayService(settings)
    try:
        await service.start()
        if announce_start:
            demo = await _demo_stream(service.relay) if service.node.admin_key else None
            sys.stdout.write(announce(service, demo))
            sys.stdout.flush()
        log.info("relay started: API on %s:%s", settings.api_bind, service.http_port)
        await stop.wait()
    finally:
        with contextlib.suppress(asyncio.CancelledError):
            await service.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return 0


async def keys_command(settings: Settings, args: argparse.Namespace) -> int:
    store = SqliteStore(settings.database_path)
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
            count = await store.revoke_api_key(args.key)
            print(f"revoked {count} key(s)")
            return 0 if count else 1
    finally:
        await store.close()
    return 0


def self_signed_tls(settings: Settings) -> Settings:
    """Point RTMPS at a self-signed pair in the data dir, made on first use: for local tests only."""
    directory = settings.data_dir / "tls"
    cert, key = directory / "cert.pem", directory / "key.pem"
    if not (cert.exists() and key.exists()):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
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
    serve_p.add_argument("--ffmpeg", help="ffmpeg binary for pushes (RELAY_FFMPEG)")
    serve_p.add_argument("--announce", action="store_true", help="print addresses, key and a publish command")
    serve_p.add_argument("--self-signed-tls", action="store_true",
                         help="without a certificate, make a self-signed one in the data dir (local use)")
    keys_p = sub.add_parser("keys", help="create, list or revoke API keys")
    keys_sub = keys_p.add_subparsers(dest="keys_command", required=True)
    create_p = keys_sub.add_parser("create", help="create a key; the key alone is the last line printed")
    create_p.add_argument("--client", type=int, required=True, help="client (tenant) id the key belongs to")
    create_p.add_argument("--label", help="a note to tell keys apart")
    list_p = keys_sub.add_parser("list", help="list keys (prefixes only)")
    list_p.add_argument("--client", type=int)
    revoke_p = keys_sub.add_parser("revoke", help="revoke a key by id or prefix")
    revoke_p.add_argument("key", help="key id or prefix as shown by list")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = with_overrides(from_environment(), data_dir=args.data_dir)
        if args.command == "serve":
            bind = args.bind
            settings = with_overrides(
                settings, media_bind=bind, api_bind=args.api_bind, http_port=args.http_port,
                rtmp_port=args.rtmp_port, rtmps_port=args.rtmps_port, srt_port=args.srt_port,
                public_host=args.public_host, tls_cert_file=args.tls_cert, tls_key_file=args.tls_key,
                ffmpeg_path=args.ffmpeg,
            )
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    if args.command == "serve" and args.self_signed_tls and not settings.rtmps_enabled:
        settings = self_signed_tls(settings)
    if args.command == "serve":
        try:
            return asyncio.run(serve(settings, announce_start=args.announce))
        except OSError as exc:
            log.error("cannot start: %s", exc)
            return 1
    return asyncio.run(keys_command(settings, args))


if __name__ == "__main__":
    sys.exit(main())
