"""The composition root: one relay node, its parts started top to bottom and closed in reverse.

    store -> API keys -> [cluster] -> engine -> RTMP -> RTMPS -> SRT -> HTTP

(the cluster only with RELAY_DATABASE_URL: relay/cluster/node.py).

This is the one module that sees both the engine (relay/) and the HTTP API (api/), so that the engine
never imports the API. `Server` owns the lifecycle only; command-line parsing, key commands and the
announcement live in api/cli.py (uvicorn's main.py / server.py split).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiohttp import web

from api.app import create_app
from api.auth_failures import AuthFailureSettings
from api.bodies import published_stream_fields, restream_status_body
from api.limits import ConnectionGuard, GuardedSite, HttpLimits
from api.loops import ApiLoop, loop_factory
from api.routes.events import FeedSettings
from api.signals import add_stop_handler, remove_stop_handler
from relay.cluster.node import Cluster
from relay.config import Settings
from relay.doors import DoorCounts
from relay.engine import Engine
from relay.ingest.addresses import IngestAddresses
from relay.ingest.rtmp_server import RtmpServer, RtmpServerSettings
from relay.ingest.srt_server import SrtServer, SrtSettings
from relay.ingest.tls import load_server_context
from relay.keys import bootstrap_admin_key
from relay.secrets import SecretRegistry
from relay.store.base import Store
from relay.store.open import database_secrets, open_store

log = logging.getLogger("relay.server")
GRACEFUL_STOP_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class BoundPorts:
    """Ports the listeners really bound (they differ from the settings where those say 0)."""

    http: int
    rtmp: int
    rtmps: int | None
    """None while RTMPS is off (no certificate)."""
    srt: int | None
    """None while SRT ingest is off (disabled, or libsrt missing)."""


class Server:
    """One relay node: `start()` brings every part up and returns the bound ports; `close()` (idempotent)
    takes them down in reverse: listeners first, then the engine (publishers, pushes), then the store."""

    def __init__(self, settings: Settings, secrets: SecretRegistry | None = None) -> None:
        self.settings = settings
        self.secrets = secrets if secrets is not None else SecretRegistry()
        """What the logs must mask (tokens, passphrases, destination and API keys); see relay/secrets.py."""
        self._stack = contextlib.AsyncExitStack()
        self._store: Store | None = None
        self._engine: Engine | None = None
        self.cluster: Cluster | None = None
        """This node's part of the cluster, when RELAY_DATABASE_URL names a PostgreSQL."""
        self.admin_key: str | None = None
        """The operator's key in clear when known (given, or generated on first start)."""
        self._ports: BoundPorts | None = None
        self._addresses: IngestAddresses | None = None

    @property
    def store(self) -> Store:
        assert self._store is not None, "start() first"
        return self._store

    @property
    def engine(self) -> Engine:
        assert self._engine is not None, "start() first"
        return self._engine

    @property
    def ports(self) -> BoundPorts:
        assert self._ports is not None, "start() first"
        return self._ports

    @property
    def addresses(self) -> IngestAddresses:
        assert self._addresses is not None, "start() first"
        return self._addresses

    async def start(self) -> BoundPorts:
        settings = self.settings
        async with contextlib.AsyncExitStack() as stack:
            settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # secrets live here
            self.secrets.hold(("database", "password"), database_secrets(settings))
            store = self._store = await open_store(settings)
            stack.push_async_callback(store.close)
            stack.callback(await self.secrets.follow(store))  # before the engine: keys known before pushes

            self.admin_key = await bootstrap_admin_key(store, settings)
            self.secrets.hold(("api key", "operator"), (self.admin_key, settings.api_key))

            cluster = None
            if settings.database_url:  # several nodes: leases and status in PostgreSQL, beside the store
                cluster = self.cluster = Cluster(settings)
                stack.push_async_callback(cluster.close)
                await cluster.start()

            ownership, remote = (cluster.ownership, cluster.view) if cluster is not None else (None, None)
            engine = self._engine = Engine(settings, store, ownership=ownership, remote=remote)
            stack.push_async_callback(engine.close)
            await engine.start()
            if cluster is not None:
                cluster.publish(engine, published_stream_fields, restream_status_body)

            rtmp_settings = self._rtmp_settings(settings.rtmp_port)
            rtmp = RtmpServer(engine, rtmp_settings, on_refused=engine.admission.refused)
            await stack.enter_async_context(rtmp)
            doors: list[Callable[[], DoorCounts]] = [rtmp.door_counts]  # for /metrics

            rtmps_port: int | None = None
            if settings.tls_cert_file is not None and settings.tls_key_file is not None:
                context = load_server_context(settings.tls_cert_file, settings.tls_key_file)
                rtmps_settings = self._rtmp_settings(settings.rtmps_port)
                rtmps = RtmpServer(engine, rtmps_settings, ssl_context=context, on_refused=engine.admission.refused)
                rtmps_port = (await stack.enter_async_context(rtmps)).port
                doors.append(rtmps.door_counts)
            log.info(
                "RTMP ingest on %s:%d%s",
                settings.media_bind,
                rtmp.port,
                f", RTMPS on port {rtmps_port}" if rtmps_port else "",
            )

            srt_port = await self._start_srt(stack, engine, doors)

            addresses = self._addresses = IngestAddresses(  # a balancer's ports, when set, in push URLs
                settings.public_host,
                settings.public_rtmp_port or rtmp.port,
                (settings.public_rtmps_port or rtmps_port) if rtmps_port else None,
                (settings.public_srt_port or srt_port) if srt_port else None,
            )
            http_port = await self._start_http(stack, engine, store, addresses, doors)

            self._ports = BoundPorts(http=http_port, rtmp=rtmp.port, rtmps=rtmps_port, srt=srt_port)
            if cluster is not None:
                ingest = {"host": settings.public_host, "rtmp": rtmp.port, "rtmps": rtmps_port, "srt": srt_port}
                await cluster.register(f"http://{settings.public_host}:{http_port}", ingest)
            self._stack = stack.pop_all()
        return self._ports

    def _rtmp_settings(self, port: int) -> RtmpServerSettings:
        settings = self.settings
        return RtmpServerSettings(
            host=settings.media_bind,
            port=port,
            max_unauthenticated_connections=settings.rtmp_max_unauthenticated_connections,
            max_connections=settings.rtmp_max_connections,
            max_connections_per_address=settings.rtmp_max_connections_per_address,
            preauth_timeout_seconds=settings.rtmp_preauth_timeout_seconds,
            preauth_max_message_bytes=settings.rtmp_preauth_max_message_bytes,
            preauth_max_partial_bytes=settings.rtmp_preauth_max_partial_bytes,
            idle_timeout_seconds=settings.rtmp_idle_timeout_seconds,
            merge_interval_seconds=settings.merge_interval_ms / 1000,
        )

    async def _start_srt(
        self, stack: contextlib.AsyncExitStack, engine: Engine, doors: list[Callable[[], DoorCounts]]
    ) -> int | None:
        settings = self.settings
        if not settings.srt_enabled:
            log.info("SRT ingest off (RELAY_SRT=off)")
            return None
        srt = SrtServer(
            engine,
            engine.admission,
            SrtSettings(
                host=settings.media_bind,
                port=settings.srt_port,
                latency_ms=settings.srt_latency_ms,
                max_connections=settings.srt_max_connections,
                handshake_timeout_seconds=settings.srt_handshake_timeout_seconds,
                handshakes_per_second_per_address=settings.srt_handshakes_per_second_per_address,
                handshake_burst_per_address=settings.srt_handshake_burst_per_address,
            ),
            on_refused=engine.admission.refused,
        )
        stack.push_async_callback(srt.close)
        if not await srt.start():  # libsrt missing, said once in the log
            return None
        doors.append(srt.door_counts)
        return srt.port

    async def _start_http(
        self,
        stack: contextlib.AsyncExitStack,
        engine: Engine,
        store: Store,
        addresses: IngestAddresses,
        doors: Sequence[Callable[[], DoorCounts]],
    ) -> int:
        settings = self.settings
        limits = HttpLimits(
            max_connections=settings.http_max_connections,
            header_timeout_seconds=settings.http_header_timeout_seconds,
            body_timeout_seconds=settings.http_body_timeout_seconds,
            keepalive_timeout_seconds=settings.http_keepalive_timeout_seconds,
        )
        feeds = FeedSettings(reserved_subscriptions_per_client=settings.event_feeds_reserved_per_client)
        engine_loop = asyncio.get_running_loop()
        # The API on a loop and a thread of its own, off the media path's loop (api/loops.py says why and
        # what crosses). Closed last of the two: the runner's cleanup runs on it first.
        api = ApiLoop(loop_factory(settings.event_loop))
        api.start()
        stack.push_async_callback(api.close)

        async def serve_http() -> tuple[web.AppRunner, int]:
            guard = ConnectionGuard(limits)
            app = create_app(
                engine,
                store,
                addresses,
                feed_settings=feeds,
                guard=guard,
                auth_failure_settings=AuthFailureSettings.from_settings(self.settings),
                engine_loop=engine_loop,
                ingest_doors=doors,
            )
            runner = web.AppRunner(
                app,
                access_log=None,
                handle_signals=False,
                shutdown_timeout=GRACEFUL_STOP_SECONDS,
                keepalive_timeout=limits.keepalive_timeout_seconds,
            )
            await runner.setup()
            site = GuardedSite(runner, settings.api_bind, settings.http_port, guard)  # its own site: port 0 resolved
            try:
                await site.start()
            except BaseException:
                await runner.cleanup()
                raise
            return runner, site.port

        runner, port = await api.run(serve_http())
        stack.push_async_callback(lambda: api.run(runner.cleanup()))
        return port

    async def close(self) -> None:
        stack, self._stack = self._stack, contextlib.AsyncExitStack()
        await stack.aclose()


async def serve(
    settings: Settings,
    on_started: Callable[[Server], Awaitable[None]] | None = None,
    secrets: SecretRegistry | None = None,
) -> int:
    """Run a node until SIGINT or SIGTERM; a second signal forces the stop. `secrets` is the registry
    the log filter reads (relay.logs.configure)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals_seen = 0
    main_task = asyncio.current_task()
    assert main_task is not None

    def on_signal() -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            log.info("stopping (again to force)")
            stop.set()
        else:
            log.warning("forced stop")
            main_task.cancel()

    add_stop_handler(loop, on_signal)
    server = Server(settings, secrets)
    try:
        ports = await server.start()
        if on_started is not None:
            await on_started(server)
        log.info("relay started: API on %s:%s", settings.api_bind, ports.http)
        await stop.wait()
    finally:
        with contextlib.suppress(asyncio.CancelledError):
            await server.close()
        remove_stop_handler(loop)
    return 0
