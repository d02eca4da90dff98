"""Stream ownership by leases in PostgreSQL: claim, renew, release, take over, and lose in time.

A lease is a row of `leases` (stream id, node, epoch, expires_at, media_at). Every time is the
database's `now()`; no node's clock is compared with another's. The rules:

- claim: one statement, `INSERT .. ON CONFLICT DO UPDATE .. WHERE` the lease expired, or is this
  node's, or (publishers only) its publisher sent no media for `takeover_idle_seconds` *and the owner
  said so*: a renewal came after that silence began (its time is `expires_at - lease_seconds`, so every
  node must run with the same `lease_seconds`). A node that stopped renewing (frozen, cut off) is never
  taken over this way, only once its lease expired: by then it has stopped by its local deadline. Another node's
  lease taken over (or an expired one) gets `epoch + 1`, and the old owner is told on `relay_leases`
  to let go at once; this node claiming again keeps the epoch.
- renewal: every `lease_renew_seconds`, one statement for all the node's leases, each only where node
  and epoch still match and it has not expired; `media_at` moves for the streams whose publisher sent
  media since the last renewal (what takeover reads). A lease the renewal does not return is lost.
- local deadline: a renewal (or claim) answered sets, on this node's monotonic clock, deadline = the
  time it was *sent* + lease_seconds - margin_seconds. `owns()` is false from then on (pushes are not
  placed, the ingest drops packets) and the lease is lost, before the database can hand the stream
  to another node. A process frozen (SIGSTOP) past its deadline sees it passed when it runs again,
  before it writes a packet.

The renewals use a connection of their own, never shared with status writes or claims; the listener
(`relay_leases`) another. Nothing here blocks on the database for longer than one renewal period.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import asyncpg

from relay.cluster.listen import DATABASE_ERRORS, listen_forever
from relay.engine.ownership import ClaimRefused, LostCallback
from relay.ingest.gate import RefusalReason

log = logging.getLogger("relay.cluster")

LEASES_CHANNEL = "relay_leases"

_CLAIM = """
INSERT INTO leases AS l (stream_id, node_id, epoch, expires_at, media_at)
VALUES ($1, $2, 1, now() + make_interval(secs => $3), now())
ON CONFLICT (stream_id) DO UPDATE SET
    node_id = EXCLUDED.node_id,
    epoch = CASE WHEN l.node_id = EXCLUDED.node_id AND l.expires_at > now() THEN l.epoch ELSE l.epoch + 1 END,
    expires_at = EXCLUDED.expires_at,
    media_at = now()
WHERE l.expires_at <= now()
   OR l.node_id = EXCLUDED.node_id
   OR ($4::float8 IS NOT NULL
       AND l.media_at < now() - make_interval(secs => $4::float8)
       AND l.expires_at - make_interval(secs => $3) > l.media_at + make_interval(secs => $4::float8))
RETURNING l.epoch
"""
# Read before the claim, in its transaction and locked, to know whom a takeover must tell.
_PREVIOUS = "SELECT node_id, expires_at > now() AS valid FROM leases WHERE stream_id = $1 FOR UPDATE"

_RENEW = """
WITH seen AS (UPDATE nodes SET last_seen = now() WHERE id = $1)
UPDATE leases AS l SET
    expires_at = now() + make_interval(secs => $2),
    media_at = CASE WHEN l.stream_id = ANY($5::bigint[]) THEN now() ELSE l.media_at END
FROM unnest($3::bigint[], $4::bigint[]) AS mine(stream_id, epoch)
WHERE l.stream_id = mine.stream_id AND l.epoch = mine.epoch AND l.node_id = $1 AND l.expires_at > now()
RETURNING l.stream_id
"""

# Released leases stay as expired rows: the next claim, whoever makes it, gets epoch + 1 (epochs only grow).
_RELEASE = "UPDATE leases SET expires_at = now() WHERE stream_id = $1 AND node_id = $2 AND epoch = $3"


@dataclass(slots=True)
class Lease:
    epoch: int
    deadline: float
    """On this node's monotonic clock: past it, the lease cannot be proved and is lost."""


@dataclass(frozen=True, slots=True)
class LeaseSettings:
    lease_seconds: float = 10.0
    renew_seconds: float = 2.0
    margin_seconds: float = 2.0


class PostgresOwnership:
    """The `Ownership` of one node of a cluster. `start()` connects and starts renewing; `close()`
    stops, gives every lease up and closes its connections."""

    leased = True

    def __init__(
        self,
        dsn: str,
        node_id: str,
        settings: LeaseSettings,
        *,
        pool: asyncpg.Pool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._dsn = dsn
        self._node_id = node_id
        self.settings = settings
        self._pool = pool
        """Shared with the status writer: claims and releases (never the renewals)."""
        self._clock = clock
        self._leases: dict[int, Lease] = {}
        self._media: set[int] = set()
        self._lost: LostCallback = lambda stream_id: None
        self._renewer: asyncpg.Connection | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._releasing: dict[int, asyncio.Task[None]] = {}
        """Releases on their way, by stream: a new claim of the stream waits for its release first."""
        self._wake = asyncio.Event()
        self._closed = False
        self.renewals = 0
        """Renewals answered (for tests and metrics)."""
        self.renewal_failures = 0
        self.leases_lost = 0
        self.lost_at: dict[int, float] = {}
        """When each stream's lease was last lost, on the monotonic clock (the moment its pushes were
        ordered to stop): for tests and diagnostics."""
        self.paused = False
        """While true nothing reaches the database: renewals are not sent, claims are refused as
        `database_unavailable` (tests: a node cut off from the database, or whose loop is stuck)."""

    @property
    def node_id(self) -> str:
        return self._node_id

    def on_lost(self, callback: LostCallback) -> None:
        self._lost = callback

    # The engine's questions (no I/O) ----------------------------------------------------------
    def owns(self, stream_id: int) -> bool:
        lease = self._leases.get(stream_id)
        return lease is not None and self._clock() < lease.deadline

    def media(self, stream_id: int) -> bool:
        if self.owns(stream_id):
            self._media.add(stream_id)
            return True
        if stream_id in self._leases:  # its deadline passed: the engine drops the stream right after this packet
            self._forget(stream_id, "a packet came after the local deadline")
        return False

    def lapsed(self, stream_id: int) -> bool:
        lease = self._leases.get(stream_id)
        return lease is not None and self._clock() >= lease.deadline

    def owned(self) -> frozenset[int]:
        return frozenset(self._leases)

    def epoch(self, stream_id: int) -> int | None:
        lease = self._leases.get(stream_id)
        return lease.epoch if lease is not None else None

    # Claim and release ------------------------------------------------------------------------
    async def claim(self, stream_id: int, *, takeover_idle_seconds: float | None) -> None:
        if self._closed:
            raise ClaimRefused(RefusalReason.UNAVAILABLE, "relay is shutting down")
        if self.paused:
            raise ClaimRefused(RefusalReason.DATABASE_UNAVAILABLE, "the cluster's database is unavailable")
        releasing = self._releasing.get(stream_id)
        if releasing is not None:  # its release must not land after this claim (it would expire it)
            await asyncio.shield(releasing)
        sent = self._clock()
        try:
            async with self._pool.acquire(timeout=self.settings.renew_seconds) as connection:
                async with connection.transaction():
                    previous = await connection.fetchrow(_PREVIOUS, stream_id, timeout=self.settings.renew_seconds)
                    epoch = await connection.fetchval(
                        _CLAIM,
                        stream_id,
                        self._node_id,
                        self.settings.lease_seconds,
                        takeover_idle_seconds,
                        timeout=self.settings.renew_seconds,
                    )
                    if epoch is not None and previous is not None and previous["node_id"] != self._node_id:
                        payload = {"stream_id": stream_id, "node_id": self._node_id, "previous": previous["node_id"]}
                        await connection.execute(
                            "SELECT pg_notify($1, $2)", LEASES_CHANNEL, json.dumps({**payload, "epoch": epoch})
                        )
        except DATABASE_ERRORS as exc:
            why = type(exc).__name__
            log.warning("stream %d: cannot claim its lease, the database did not answer (%s)", stream_id, why)
            raise ClaimRefused(RefusalReason.DATABASE_UNAVAILABLE, "the cluster's database is unavailable") from exc
        if epoch is None:
            owner = previous["node_id"] if previous is not None else None
            raise ClaimRefused(RefusalReason.OWNED_ELSEWHERE, f"stream {stream_id} is live on node {owner}", owner)
        deadline = sent + self.settings.lease_seconds - self.settings.margin_seconds
        if self._clock() >= deadline or self._closed:
            raise ClaimRefused(RefusalReason.DATABASE_UNAVAILABLE, "the claim came back too late to be proved")
        if previous is not None and previous["node_id"] != self._node_id:
            log.info("stream %d: lease taken from node %s (epoch %d)", stream_id, previous["node_id"], epoch)
        self._leases[stream_id] = Lease(int(epoch), deadline)
        self._wake.set()

    def release(self, stream_id: int) -> None:
        lease = self._leases.pop(stream_id, None)
        self._media.discard(stream_id)
        if lease is not None and not self._closed:
            task = self._spawn(self._release(stream_id, lease.epoch), f"release-{stream_id}")
            self._releasing[stream_id] = task
            task.add_done_callback(lambda done: self._releasing.pop(stream_id, None) if done is task else None)

    async def _release(self, stream_id: int, epoch: int) -> None:
        try:
            async with self._pool.acquire(timeout=self.settings.lease_seconds) as connection:
                await connection.execute(_RELEASE, stream_id, self._node_id, epoch, timeout=self.settings.lease_seconds)
        except DATABASE_ERRORS as exc:  # the lease expires by itself
            log.info("stream %d: lease not released (%s); it expires", stream_id, type(exc).__name__)

    # Losing ----------------------------------------------------------------------------------
    def _forget(self, stream_id: int, why: str) -> bool:
        """Drop a lost lease from the books; False if it was not held."""
        if self._leases.pop(stream_id, None) is None:
            return False
        self._media.discard(stream_id)
        self.leases_lost += 1
        self.lost_at[stream_id] = self._clock()
        log.warning("stream %d: lease lost (%s)", stream_id, why)
        return True

    def _lose(self, stream_id: int, why: str) -> None:
        if not self._forget(stream_id, why):
            return
        try:
            self._lost(stream_id)
        except Exception:
            log.exception("stream %d: the lost-lease callback failed", stream_id)

    def _expire_overdue(self) -> None:
        now = self._clock()
        for stream_id, lease in list(self._leases.items()):
            if now >= lease.deadline:
                self._lose(stream_id, "no renewal came back before the local deadline")

    def _on_notify(self, connection: object, pid: int, channel: str, payload: object) -> None:
        try:
            told = json.loads(str(payload))
            stream_id, node_id, epoch = int(told["stream_id"]), str(told["node_id"]), int(told["epoch"])
        except (ValueError, KeyError, TypeError):
            return
        lease = self._leases.get(stream_id)
        if lease is not None and node_id != self._node_id and epoch > lease.epoch:
            self._lose(stream_id, f"taken over by node {node_id}")

    # Background tasks -------------------------------------------------------------------------
    async def start(self) -> None:
        self._spawn(self._renew_forever(), "lease-renewal")
        self._spawn(self._watch_deadlines(), "lease-deadlines")
        self._spawn(self._listen_forever(), "lease-listener")

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _watch_deadlines(self) -> None:
        while True:
            self._expire_overdue()
            deadlines = [lease.deadline for lease in self._leases.values()]
            wait = self.settings.renew_seconds if not deadlines else max(0.0, min(deadlines) - self._clock())
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(wait, self.settings.renew_seconds) + 0.01):
                    await self._wake.wait()

    async def _renew_forever(self) -> None:
        """Nothing but cancellation ends this loop: without it, every lease of this node would be lost at
        its deadline. An error that is not the database's is logged with its traceback, and the next
        renewal makes a new connection."""
        while True:
            await asyncio.sleep(self.settings.renew_seconds)
            if self.paused:
                continue
            try:
                await self.renew()
            except Exception:
                log.exception("lease renewal failed unexpectedly; the next one reconnects")
                await self._drop_renewal_connection()

    async def renew(self) -> None:
        """One renewal of every lease held (the periodic task's step; tests call it too)."""
        self._expire_overdue()  # a lease whose deadline passed is never renewed back to life
        held = dict(self._leases)
        media, self._media = self._media & set(held), set()
        sent = self._clock()
        try:
            connection = await self._renewal_connection()
            renewed = await connection.fetch(
                _RENEW,
                self._node_id,
                self.settings.lease_seconds,
                list(held),
                [lease.epoch for lease in held.values()],
                list(media),
                timeout=self.settings.renew_seconds,
            )
        except DATABASE_ERRORS as exc:
            self.renewal_failures += 1
            self._media |= media
            await self._drop_renewal_connection()
            why = type(exc).__name__
            log.warning("lease renewal failed (%s); %d stream(s) held until their deadline", why, len(held))
            return
        self.renewals += 1
        deadline = sent + self.settings.lease_seconds - self.settings.margin_seconds
        back = {row["stream_id"] for row in renewed}
        for stream_id, lease in held.items():
            current = self._leases.get(stream_id)
            if current is not lease:
                continue  # released, lost or claimed again meanwhile: that claim's answer is its own
            if stream_id in back:
                current.deadline = max(current.deadline, deadline)
            else:
                self._lose(stream_id, "the renewal did not return it (expired or taken over)")

    async def _renewal_connection(self) -> asyncpg.Connection:
        if self._renewer is None or self._renewer.is_closed():
            self._renewer = await asyncpg.connect(self._dsn, timeout=self.settings.renew_seconds)
        return self._renewer

    async def _drop_renewal_connection(self) -> None:
        renewer, self._renewer = self._renewer, None
        if renewer is not None:
            renewer.terminate()

    async def _listen_forever(self) -> None:
        """LISTEN on `relay_leases`; reconnect after a loss (a takeover missed meanwhile is still caught by
        the next renewal, which does not return a lease whose epoch moved)."""
        await listen_forever(
            self._dsn,
            LEASES_CHANNEL,
            self._on_notify,
            timeout_seconds=self.settings.renew_seconds,
            pause_seconds=self.settings.renew_seconds,
        )

    async def close(self) -> None:
        """Stop renewing; give every lease up (so another node may take the streams at once); close."""
        if self._closed:
            return
        self._closed = True
        for task in list(self._tasks):
            if task.get_name().startswith("lease-"):
                task.cancel()
        held, self._leases = self._leases, {}
        if held:
            with contextlib.suppress(*DATABASE_ERRORS):
                async with asyncio.timeout(self.settings.renew_seconds):
                    async with self._pool.acquire() as connection:
                        await connection.execute(
                            "UPDATE leases SET expires_at = now() WHERE node_id = $1 AND stream_id = ANY($2::bigint[])",
                            self._node_id,
                            list(held),
                        )
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self._drop_renewal_connection()
