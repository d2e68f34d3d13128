"""PostgreSQL store: several hubs share one database.

Connections come from a `psycopg_pool.AsyncConnectionPool` in autocommit mode. The hot verbs are
one statement each (`postgres_sql.py`), which autocommit makes its own transaction: one round trip.
The others run in one explicit transaction. Either way a verb is durable when it returns, and its
events are sent only if it commits. Claims use `FOR UPDATE SKIP LOCKED`,
so hubs never lease the same delivery twice. The tables live in the first schema of the URL's
`search_path`; `open()` migrates them from `pg_migrations/NNNN_*.sql` under an advisory lock.

Cross-hub events travel by LISTEN/NOTIFY on a channel named after that schema: committed appends,
nacks, releases and expiries announce the groups that have work, acks and dead letters announce the
settled notification. A hub ignores its own events. They only wake other hubs, which also poll.

Driver errors are wrapped at this boundary: `psycopg.OperationalError` (refused, restarting, shut
down, pool timeout) becomes `StoreUnavailable`, any other `psycopg.Error` becomes `StoreError`, and
so does a statement rolled back by a deadlock, a serialization failure or its timeout (the database
is there). The messages name the operation, the SQLSTATE and the server's primary message (or
libpq's connection message, which names host, port and user): never a payload, a DETAIL line or
the password.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
import select
import time
import weakref
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Hashable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final, Generic, TypeAlias, TypeVar

import psycopg
from psycopg import AsyncConnection, sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout

from paynotify_hub.domain import (
    MAX_NOTIFICATION_ID,
    ActionStatus,
    AppendResult,
    DeadLetter,
    DeliveryState,
    GroupDelivery,
    GroupSpec,
    GroupStats,
    HistoryKind,
    Lease,
    NewNotification,
    NotificationRecord,
    ReceiptRecord,
    RetryPolicy,
)
from paynotify_hub.store import postgres_admin
from paynotify_hub.store import postgres_sql as q
from paynotify_hub.store.base import StoreError, StoreEvent, StoreUnavailable

__all__ = ["PostgresStore"]

logger = logging.getLogger(__name__)

DEFAULT_MIN_SIZE: Final = 1
DEFAULT_MAX_SIZE: Final = 10
# Seconds to wait for a pooled connection (and for the pool to open): a dead database is an error
# within this bound, not a hang.
DEFAULT_TIMEOUT: Final = 5.0
DEFAULT_CONNECT_TIMEOUT: Final = 5
DEFAULT_STATEMENT_TIMEOUT: Final = 30.0
# A connection handed back less than this long ago is handed out again without a ping.
CHECK_IDLE_AFTER: Final = 1.0
# Defaults added to the URL unless it sets them: keepalives notice a silently dropped connection.
CONNECTION_DEFAULTS: Final[Mapping[str, str | int]] = {
    "application_name": "paynotify-hub",
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}
# SQLSTATE class "transaction rollback" (40P01 deadlock, 40001 serialization failure), and a
# statement cancelled (its statement_timeout, or a cancel request).
ROLLED_BACK_CLASS: Final = "40"
QUERY_CANCELED: Final = "57014"
# Appends or acks that one statement takes at most (postgres_sql.APPEND_MANY, ACK_MANY), and how
# many such statements of one verb run at once (of the pool's DEFAULT_MAX_SIZE connections).
MAX_BATCH: Final = 256
MAX_LANES: Final = 3
# A lease token is 8 bytes from the CSPRNG as 16 hex digits (as SQLite's); CLAIM cuts them from
# one string.
TOKEN_BYTES: Final = 8
LISTEN_BACKOFF_MIN: Final = 0.5
LISTEN_BACKOFF_MAX: Final = 30.0
# The listener proves its connection alive this often while no notification arrives.
LISTEN_PING_INTERVAL: Final = 30.0
# NOTIFY payloads must stay under 8000 bytes; group names are at most 63 characters.
GROUPS_PER_EVENT: Final = 100
CHANNEL_PREFIX: Final = "paynotify."
MIGRATIONS_PACKAGE: Final = "paynotify_hub.store"
MIGRATIONS_FOLDER: Final = "pg_migrations"

Conn: TypeAlias = AsyncConnection[TupleRow]
Pool: TypeAlias = AsyncConnectionPool[Conn]

Requeued: TypeAlias = tuple[str, int, int, str | None]  # group, notification id, attempts, member


class PostgresStore:
    """The `Store` on PostgreSQL 13+, for one or several hubs sharing a database.

    `url` is a libpq URL; its `search_path` option picks the schema. The pool keeps `min_size` to
    `max_size` connections; `timeout` bounds the wait for one, `connect_timeout` each connection
    attempt, `statement_timeout` (None: the server's) each statement.
    """

    def __init__(
        self,
        url: str,
        *,
        min_size: int = DEFAULT_MIN_SIZE,
        max_size: int = DEFAULT_MAX_SIZE,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: int = DEFAULT_CONNECT_TIMEOUT,
        statement_timeout: float | None = DEFAULT_STATEMENT_TIMEOUT,
    ) -> None:
        self._conninfo = _conninfo_with_defaults(url, connect_timeout)
        self._target = _describe_target(self._conninfo)
        self._min_size = min_size
        self._max_size = max_size
        self._timeout = timeout
        self._statement_timeout = statement_timeout
        self._origin = secrets.token_hex(6)
        self._pool: Pool | None = None
        self._channel = ""
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._returned_at: weakref.WeakKeyDictionary[Conn, float] = weakref.WeakKeyDictionary()
        self._appends = _Batches(self._append_many, _Append.key, "append")
        self._acks = _Batches(self._ack_many, _Ack.key, "ack")

    async def open(self) -> None:
        if self._pool is not None:
            return
        pool: Pool = AsyncConnectionPool(
            self._conninfo,
            min_size=self._min_size,
            max_size=self._max_size,
            open=False,
            kwargs={"autocommit": True},
            configure=self._configure_connection,
            check=self._check_connection,
            reset=self._returned,
            timeout=self._timeout,
            name="paynotify-store",
        )
        try:
            with _wrapped_errors(f"open store at {self._target}"):
                await pool.open(wait=True, timeout=self._timeout)
                async with pool.connection() as conn:
                    self._channel = await _migrate(conn)
        except BaseException:
            await pool.close()
            raise
        self._pool = pool

    async def close(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._timeout):
                await asyncio.gather(self._appends.drain(), self._acks.drain())
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            await asyncio.wait([listener])
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def append(
        self,
        notification: NewNotification,
        receipt: ReceiptRecord,
        groups: Sequence[GroupSpec],
        *,
        on_queued: Callable[[], None] | None = None,  # never called: the pool runs verbs at once
    ) -> AppendResult:
        if self._pool is None:
            raise StoreError("append: the store is not open")
        wanted = tuple(dict.fromkeys(g.name for g in groups if g.wants(notification.notify_type)))
        return await self._appends.submit(_Append(notification, receipt, wanted))

    async def group_states(self, notification_id: int) -> Mapping[str, GroupDelivery]:
        async with self._statement("group_states") as conn:
            return await _group_states(conn, notification_id)

    async def claim(
        self,
        group: str,
        member: str,
        limit: int,
        lease_seconds: float,
        notify_types: frozenset[str],
        now: float,
    ) -> list[Lease]:
        if limit <= 0:
            return []
        params = {
            "group": group,
            "member": member,
            "now": now,
            "expires": now + lease_seconds,
            "types": sorted(notify_types),
            "limit": limit,
            "tokens": secrets.token_hex(TOKEN_BYTES * limit),
        }
        async with self._statement("claim") as conn:
            rows = await _fetch_all(conn, q.CLAIM, params)
        return sorted((_lease_of(group, row) for row in rows), key=lambda x: x.notification_id)

    async def ack(self, group: str, notification_id: int, token: str, now: float) -> ActionStatus:
        if self._pool is None:
            raise StoreError("ack: the store is not open")
        if not 0 < notification_id <= MAX_NOTIFICATION_ID:
            return ActionStatus.UNKNOWN  # no such delivery, and not a value to fail a batch with
        return await self._acks.submit(_Ack(group, notification_id, token, now))

    async def ack_many(
        self, group: str, acks: Sequence[tuple[int, str]], now: float
    ) -> list[ActionStatus]:
        # Each ack joins the verb's batches (`_Batches`), which never hold one row twice.
        return list(await asyncio.gather(*(self.ack(group, n, t, now) for n, t in acks)))

    async def nack(
        self,
        group: str,
        notification_id: int,
        token: str,
        now: float,
        delay: float | None,
        policy: RetryPolicy,
    ) -> ActionStatus:
        key = {"group": group, "id": notification_id}
        async with self._transaction("nack") as conn:
            status, attempts, member = await _check_lease(conn, key, token)
            if status is ActionStatus.OK:
                requeued = [(group, notification_id, attempts, member)]
                await self._requeue(conn, requeued, HistoryKind.NACKED, now, policy, delay)
        return status

    async def reject(
        self, group: str, notification_id: int, token: str, reason: str, now: float
    ) -> ActionStatus:
        key = {"group": group, "id": notification_id, "now": now, "reason": reason}
        [payload] = _settled_payloads(self._origin, [notification_id])
        return await self._on_lease(
            "reject", q.REJECT, {**key, **self._event_params(payload)}, token
        )

    async def extend(
        self, group: str, notification_id: int, token: str, lease_expires_at: float
    ) -> ActionStatus:
        key = {"group": group, "id": notification_id, "expires": lease_expires_at}
        return await self._on_lease("extend", q.EXTEND, key, token)

    async def release(self, group: str, member: str, now: float, policy: RetryPolicy) -> int:
        async with self._transaction("release") as conn:
            rows = await _fetch_all(conn, q.LOCK_MEMBER_LEASES, {"group": group, "member": member})
            await self._requeue(conn, rows, HistoryKind.RELEASED, now, policy, None)
        return len(rows)

    async def expire_leases(self, now: float, policy: RetryPolicy) -> frozenset[str]:
        async with self._transaction("expire_leases") as conn:
            rows = await _fetch_all(conn, q.LOCK_EXPIRED_LEASES, {"now": now})
            return await self._requeue(conn, rows, HistoryKind.EXPIRED, now, policy, None)

    async def next_due(self, group: str, notify_types: frozenset[str]) -> float | None:
        params = {"group": group, "types": sorted(notify_types)}
        async with self._statement("next_due") as conn:
            due: float | None = (await _fetch_one(conn, q.NEXT_DUE, params))[0]
        return due

    async def purge_settled(self, before: float, batch_size: int) -> int:
        if batch_size <= 0:
            return 0
        async with self._statement("purge_settled") as conn:
            row = await _fetch_one(conn, q.PURGE_SETTLED, {"before": before, "limit": batch_size})
        purged: int = row[0]
        return purged

    # -- the operator's verbs (postgres_admin.py) -------------------------------------------------

    async def group_stats(
        self, now: float, groups: Sequence[str], *, count_acked: bool = True
    ) -> list[GroupStats]:
        async with self._transaction("group_stats") as conn:
            return await postgres_admin.group_stats(conn, now, groups, count_acked)

    async def find_notifications(self, key: str, limit: int) -> list[NotificationRecord]:
        if not key or limit <= 0:
            return []
        async with self._transaction("find_notifications") as conn:
            return await postgres_admin.find_notifications(conn, key, limit)

    async def dead_letters(
        self, group: str | None, after_id: int, limit: int, *, after_group: str = ""
    ) -> list[DeadLetter]:
        if limit <= 0:
            return []
        async with self._transaction("dead_letters") as conn:
            return await postgres_admin.dead_letters(conn, group, after_id, after_group, limit)

    async def replay(self, group: str, notification_id: int, now: float) -> ActionStatus:
        async with self._transaction("replay") as conn:
            status = await postgres_admin.replay(conn, group, notification_id, now)
            if status is ActionStatus.OK:
                await self._notify(conn, _group_payloads(self._origin, [group]))
        return status

    async def replay_since(self, group: str, since: float, now: float) -> int:
        async with self._transaction("replay_since") as conn:
            count = await postgres_admin.replay_since(conn, group, since, now)
            if count:
                await self._notify(conn, _group_payloads(self._origin, [group]))
        return count

    async def listen(self, on_event: Callable[[StoreEvent], None]) -> None:
        """Start listening for other hubs' events on a dedicated connection, kept until `close()`.

        Returns once subscribed, or after `timeout` while the listener keeps reconnecting in the
        background (events are only wake-ups: the callers poll anyway). Calling it again replaces
        the listener.
        """
        if self._pool is None:
            raise StoreError("listen: the store is not open")
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.wait([self._listener])
        self._subscribed.clear()
        self._listener = asyncio.create_task(
            self._listen_forever(on_event), name=f"paynotify-store-listener-{self._channel}"
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), self._timeout)

    # -- internals -------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _transaction(self, operation: str) -> AsyncIterator[Conn]:
        if self._pool is None:
            raise StoreError(f"{operation}: the store is not open")
        with _wrapped_errors(operation):
            async with self._pool.connection() as conn, conn.transaction():
                yield conn

    @contextlib.asynccontextmanager
    async def _statement(self, operation: str) -> AsyncIterator[Conn]:
        """A connection for verbs of one statement each: on an autocommit connection a statement
        is its own transaction, without the round trips of BEGIN and COMMIT."""
        if self._pool is None:
            raise StoreError(f"{operation}: the store is not open")
        with _wrapped_errors(operation):
            async with self._pool.connection() as conn:
                yield conn

    async def _on_lease(
        self, operation: str, query: str, params: Mapping[str, Any], token: str
    ) -> ActionStatus:
        """Run one of the statements that act on a delivery only while `token` holds its lease."""
        # A token that text cannot hold (NUL, lone surrogate) matches no lease: NULL matches none
        # either, and the status is then told from the locked row as for any wrong token.
        sent = token if _is_text(token) else None
        async with self._statement(operation) as conn:
            cur = await conn.execute(query, {**params, "token": sent})
            row = await cur.fetchone()
        if row is None:
            return ActionStatus.UNKNOWN
        status, _, _ = _lease_status(row[:4], token)
        return status

    async def _append_many(self, appends: Sequence[_Append]) -> list[AppendResult | StoreError]:
        """One statement (one transaction) for appends of distinct identities, in the given
        order. What fails after it committed is that append's answer, not the batch's error."""
        params = {**_append_params(appends), **self._event_params()}
        async with self._statement("append") as conn:
            rows = await _fetch_all(conn, q.APPEND_MANY, params)
        rows_of: dict[int, list[TupleRow]] = {}
        for row in rows:
            rows_of.setdefault(row[0] - 1, []).append(row)  # WITH ORDINALITY counts from 1
        results: list[AppendResult | StoreError] = []
        for index, item in enumerate(appends):
            try:
                results.append(await self._appended(rows_of.get(index, []), item.wanted))
            except StoreError as exc:
                results.append(exc)
            except Exception as exc:  # anything else after the commit: still never run again
                failed = StoreError(f"append: reading the result failed ({type(exc).__name__})")
                failed.__cause__ = exc
                results.append(failed)
        return results

    async def _appended(self, rows: list[TupleRow], wanted: Sequence[str]) -> AppendResult:
        if not rows:
            raise StoreError("append: the database returned no row where one was due")
        nid, created, send_count, first_received_at, visible, _ = rows[0][1:7]
        states: Mapping[str, GroupDelivery] = _states_of(row[7:] for row in rows)
        if not created and not (visible and states.keys() >= set(wanted)):
            # Another hub committed this identity (or a group of it) after the statement's
            # snapshot was taken: read the states again in a fresh one.
            states = await self.group_states(nid)
        return AppendResult(
            notification_id=nid,
            created=created,
            send_count=send_count,
            first_received_at=first_received_at,
            groups=states,
        )

    async def _ack_many(self, acks: Sequence[_Ack]) -> list[ActionStatus | StoreError]:
        """One statement (one transaction) for acks of distinct deliveries, in the given order."""
        params = {
            "groups": [a.group for a in acks],
            "ids": [a.notification_id for a in acks],
            # A token that text cannot hold (NUL, lone surrogate) matches no lease, as in _on_lease.
            "tokens": [a.token if _is_text(a.token) else None for a in acks],
            "nows": [a.now for a in acks],
            "events": _settled_payloads(self._origin, (a.notification_id for a in acks)),
            "channel": self._channel,
        }
        statuses: list[ActionStatus | StoreError] = [ActionStatus.UNKNOWN] * len(acks)
        async with self._statement("ack") as conn:
            rows = await _fetch_all(conn, q.ACK_MANY, params)
        for row in rows:
            index = row[0] - 1  # WITH ORDINALITY counts from 1
            statuses[index] = _lease_status(row[1:5], acks[index].token)[0]
        return statuses

    def _event_params(self, event: str = "") -> dict[str, Any]:
        """What statements that queue events need: `event` is a payload made here, the others
        let the statement write payloads as `_group_payloads` does."""
        return {
            "channel": self._channel,
            "event": event,
            "origin": self._origin,
            "per_event": GROUPS_PER_EVENT,
        }

    async def _check_connection(self, conn: Conn) -> None:
        """Before a connection is handed out: ping it, unless it was in use moments ago and the
        server has sent it nothing since (the ping is a round trip per store call). A server
        that goes away (restart, terminated backend) sends a notice or closes the socket first,
        so a dead connection is pinged, fails, and the pool replaces it without failing a call."""
        returned = self._returned_at.get(conn)
        recent = returned is not None and time.monotonic() - returned < CHECK_IDLE_AFTER
        if recent and not _server_spoke(conn):
            return
        await AsyncConnectionPool.check_connection(conn)

    async def _returned(self, conn: Conn) -> None:
        self._returned_at[conn] = time.monotonic()

    async def _configure_connection(self, conn: Conn) -> None:
        await conn.execute(q.DISABLE_SEQSCAN)
        if self._statement_timeout is not None:
            millis = str(int(self._statement_timeout * 1000))
            await conn.execute(q.SET_STATEMENT_TIMEOUT, [millis])

    async def _notify(self, conn: Conn, payloads: list[str]) -> None:
        """Queue events; PostgreSQL sends them only if the transaction commits."""
        if payloads:
            await conn.execute(q.NOTIFY, {"channel": self._channel, "payloads": payloads})

    async def _requeue(
        self,
        conn: Conn,
        rows: Sequence[Requeued],
        kind: HistoryKind,
        now: float,
        policy: RetryPolicy,
        delay: float | None,
    ) -> frozenset[str]:
        """Leases ended by `kind`: pending again after the delay or backoff, dead when out of
        attempts; recorded in the history. Returns the groups that got work back.
        """
        if not rows:
            return frozenset()
        plans = [_requeue_plan(attempts, now, policy, delay) for _, _, attempts, _ in rows]
        await conn.execute(
            q.REQUEUE,
            {
                "now": now,
                "kind": kind.value,
                "groups": [row[0] for row in rows],
                "ids": [row[1] for row in rows],
                "members": [row[3] for row in rows],
                "states": [state for state, _, _ in plans],
                "available": [at for _, at, _ in plans],
                "reasons": [reason for _, _, reason in plans],
            },
        )
        outcomes = list(zip(rows, plans, strict=True))
        with_work = frozenset(row[0] for row, plan in outcomes if plan[0] == DeliveryState.PENDING)
        dead = [row[1] for row, plan in outcomes if plan[0] == DeliveryState.DEAD]
        payloads = _group_payloads(self._origin, with_work)
        await self._notify(conn, payloads + _settled_payloads(self._origin, dead))
        return with_work

    async def _listen_forever(self, on_event: Callable[[StoreEvent], None]) -> None:
        delay = LISTEN_BACKOFF_MIN
        while True:
            try:
                await self._listen_once(on_event)
            except Exception as exc:  # whatever broke the connection, listening goes on
                if self._subscribed.is_set():
                    delay = LISTEN_BACKOFF_MIN
                self._subscribed.clear()
                logger.warning(
                    "store listener has no connection to %s (%s); reconnecting in %.1fs",
                    self._target,
                    _describe(exc),
                    delay,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, LISTEN_BACKOFF_MAX)

    async def _listen_once(self, on_event: Callable[[StoreEvent], None]) -> None:
        conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        async with conn:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
            self._subscribed.set()
            logger.info("store listener subscribed to %s on %s", self._channel, self._target)
            while True:
                async for note in conn.notifies(timeout=LISTEN_PING_INTERVAL):
                    self._dispatch(note.payload, on_event)
                # A quiet spell: make sure the connection still answers.
                await conn.execute("SELECT 1")

    def _dispatch(self, payload: str, on_event: Callable[[StoreEvent], None]) -> None:
        event = _parse_event(payload, self._origin)
        if event is None:
            return
        try:
            on_event(event)
        except Exception:  # a failing callback must not stop the listener
            logger.exception("store event callback failed")


# -- appends and acks, coalesced -----------------------------------------------------------------

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class _Append:
    notification: NewNotification
    receipt: ReceiptRecord
    wanted: tuple[str, ...]  # the groups that get a delivery, in order

    def key(self) -> Hashable:
        return self.notification.identity


@dataclass(frozen=True)
class _Ack:
    group: str
    notification_id: int
    token: str
    now: float

    def key(self) -> Hashable:
        return self.group, self.notification_id


class _Batches(Generic[T, R]):
    """Group commit for one verb: up to `MAX_LANES` statements of it run at once; while they do,
    the calls that arrive wait and go together in the next (at most `MAX_BATCH`, never two of one
    `key` in a statement: it must not change one row twice). A call that finds a lane free goes at
    once, alone. More than one lane: a statement waiting for a row lock (another hub, an
    operator's replay) holds up its own batch, not every call of the verb.

    Each caller gets its own answer, or its batch's error; `run` returns an exception in an
    answer's place for what failed after the statement committed (never run again). A batch the
    database refused (a deadlock, a cancelled statement, one value it cannot take) goes again one
    call at a time, skipping callers that stopped waiting; a caller that stops waiting does not
    stop the batch it is in (its change may still land, as a single statement's may)."""

    def __init__(
        self,
        run: Callable[[Sequence[T]], Awaitable[list[R | StoreError]]],
        key: Callable[[T], Hashable],
        name: str,
    ) -> None:
        self._run = run
        self._key = key
        self._name = name
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._lanes: set[asyncio.Task[None]] = set()

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if len(self._lanes) < MAX_LANES:
            self._lanes.add(
                asyncio.create_task(self._drain(), name=f"paynotify-store-{self._name}")
            )
        return await future

    async def drain(self) -> None:
        """Wait for the calls taken so far (each statement is bounded by the statement timeout)."""
        if self._lanes:
            await asyncio.wait(set(self._lanes))

    async def _drain(self) -> None:
        try:
            while batch := self._next_batch():
                await self._settle(batch)
        finally:
            # At once, not in a done callback: a call submitted from now on must see a free lane.
            lane = asyncio.current_task()
            if lane is not None:
                self._lanes.discard(lane)

    async def _settle(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            answers = await self._run([item for item, _ in batch])
        except asyncio.CancelledError:  # the loop is ending: no caller waits forever
            _fail(batch, StoreError(f"{self._name}: the store is closing"))
            raise
        except StoreUnavailable as exc:  # the database is away: every caller's error
            _fail(batch, exc)
        except Exception as exc:  # refused: a deadlock, a cancelled statement, one bad value
            if len(batch) == 1:
                _fail(batch, exc)
                return
            for one in batch:  # alone, so only what fails again fails
                if not one[1].done():
                    await self._settle([one])
        else:
            for (_, future), answer in zip(batch, answers, strict=True):
                if future.done():
                    continue
                if isinstance(answer, StoreError):
                    future.set_exception(answer)
                else:
                    future.set_result(answer)

    def _next_batch(self) -> list[tuple[T, asyncio.Future[R]]]:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        later: list[tuple[T, asyncio.Future[R]]] = []
        keys: set[Hashable] = set()
        for item, future in self._waiting:
            if future.done():
                continue  # its caller stopped waiting before it was sent
            key = self._key(item)
            if len(batch) < MAX_BATCH and key not in keys:
                keys.add(key)
                batch.append((item, future))
            else:
                later.append((item, future))
        self._waiting = later
        return batch


def _fail(batch: list[tuple[T, asyncio.Future[R]]], exc: Exception) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(exc)


# -- connection and errors ---------------------------------------------------------------------


def _conninfo_with_defaults(url: str, connect_timeout: int) -> str:
    try:
        given = conninfo_to_dict(url)
        defaults = {**CONNECTION_DEFAULTS, "connect_timeout": connect_timeout}
        return make_conninfo(url, **{k: v for k, v in defaults.items() if k not in given})
    except psycopg.Error as exc:
        raise StoreError("invalid PostgreSQL URL (not shown: it may hold a password)") from exc


def _describe_target(conninfo: str) -> str:
    """host:port/dbname for messages: never the user's password."""
    params = conninfo_to_dict(conninfo)
    host, port = params.get("host", "localhost"), params.get("port", "5432")
    return f"{host}:{port}/{params.get('dbname', '')}"


def _describe(exc: BaseException) -> str:
    """The error class, SQLSTATE and primary message: the detail may quote values, so not that."""
    if isinstance(exc, PoolTimeout | PoolClosed):
        return f"{type(exc).__name__}: {exc}"
    if isinstance(exc, psycopg.Error) and exc.sqlstate:
        return f"{type(exc).__name__} [{exc.sqlstate}]: {exc.diag.message_primary}"
    if isinstance(exc, psycopg.OperationalError):
        # libpq's own connection messages name host, port and user, never the password.
        first_line = (str(exc).splitlines() or [""])[0]
        return f"{type(exc).__name__}: {first_line[:200]}"
    return type(exc).__name__


def _server_spoke(conn: Conn) -> bool:
    """Whether an idle connection has input waiting (a pool connection does not LISTEN, so that is
    a termination notice or the end of the connection), or is closed."""
    try:
        readable, _, _ = select.select([conn.pgconn.socket], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        return True
    return bool(readable)


@contextlib.contextmanager
def _wrapped_errors(operation: str) -> Iterator[None]:
    try:
        yield
    except psycopg.OperationalError as exc:
        if (exc.sqlstate or "").startswith(ROLLED_BACK_CLASS) or exc.sqlstate == QUERY_CANCELED:
            # A deadlock, a serialization failure or the statement timeout rolled the statement
            # back: the database is there, and the same work may succeed alone (_Batches).
            raise StoreError(f"{operation} failed: {_describe(exc)}") from exc
        raise StoreUnavailable(f"{operation}: database unavailable: {_describe(exc)}") from exc
    except psycopg.Error as exc:
        raise StoreError(f"{operation} failed: {_describe(exc)}") from exc


# -- migrations -------------------------------------------------------------------------------


async def _migrate(conn: Conn) -> str:
    """Apply the missing migrations in one transaction; return the event channel of the schema."""
    async with conn.transaction():
        schema = (await _fetch_one(conn, "SELECT current_schema()", {}))[0]
        if schema is None:
            raise StoreError("open: no schema of search_path exists to hold the tables")
        await conn.execute(q.LOCK_MIGRATIONS)
        await conn.execute(q.CREATE_MIGRATIONS_TABLE)
        applied = set(await _fetch_column(conn, q.APPLIED_VERSIONS, {}))
        for version, text in _migrations():
            if version not in applied:
                await conn.execute(text)
                await conn.execute(q.RECORD_VERSION, [version])
                logger.info("store schema %s migrated to version %d", schema, version)
    return _channel_of(schema)


def _migrations() -> list[tuple[int, str]]:
    """(version, SQL) of `pg_migrations/NNNN_name.sql`, in version order."""
    folder = resources.files(MIGRATIONS_PACKAGE) / MIGRATIONS_FOLDER
    found = [
        (int(entry.name.split("_", 1)[0]), entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    ]
    return sorted(found)


def _channel_of(schema: str) -> str:
    """Channel names are identifiers: at most 63 bytes, so a long schema name is hashed."""
    channel = CHANNEL_PREFIX + schema
    if len(channel.encode()) > 63:
        channel = CHANNEL_PREFIX + hashlib.sha256(schema.encode()).hexdigest()[:40]
    return channel


# -- queries and rows -------------------------------------------------------------------------


async def _fetch_one(conn: Conn, query: str, params: Mapping[str, Any]) -> TupleRow:
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    if row is None:
        raise StoreError("the database returned no row where one was due")
    return row


async def _fetch_all(conn: Conn, query: str, params: Mapping[str, Any]) -> list[TupleRow]:
    cur = await conn.execute(query, params)
    return await cur.fetchall()


async def _fetch_column(conn: Conn, query: str, params: Mapping[str, Any]) -> list[Any]:
    return [row[0] for row in await _fetch_all(conn, query, params)]


async def _group_states(conn: Conn, notification_id: int) -> dict[str, GroupDelivery]:
    return _states_of(await _fetch_all(conn, q.GROUP_STATES, {"id": notification_id}))


def _states_of(rows: Iterable[Sequence[Any]]) -> dict[str, GroupDelivery]:
    """Rows of (group, state, attempts); a NULL group (an outer join's empty side) is skipped."""
    return {
        group: GroupDelivery(DeliveryState(state), attempts)
        for group, state, attempts in rows
        if group is not None
    }


async def _check_lease(
    conn: Conn, key: Mapping[str, Any], token: str
) -> tuple[ActionStatus, int, str | None]:
    """Lock the delivery; OK only while it is leased under `token`. Also returns its attempts and
    the member holding it."""
    cur = await conn.execute(q.LOCK_DELIVERY, key)
    row = await cur.fetchone()
    if row is None:
        return ActionStatus.UNKNOWN, 0, None
    return _lease_status(row, token)


def _lease_status(row: Sequence[Any], token: str) -> tuple[ActionStatus, int, str | None]:
    """(status, attempts, member) of a locked delivery row (state, token, attempts, member)."""
    state, lease_token, attempts, member = row
    if state != DeliveryState.LEASED or lease_token != token:
        return ActionStatus.STALE, attempts, member
    return ActionStatus.OK, attempts, member


def _append_params(appends: Sequence[_Append]) -> dict[str, Any]:
    """APPEND_MANY's columns, one array each, and the (ordinal, group) pairs of the deliveries."""
    notifications = [a.notification for a in appends]
    receipts = [a.receipt for a in appends]
    wanted = [(index, group) for index, a in enumerate(appends, 1) for group in a.wanted]
    return {
        "identities": [n.identity for n in notifications],
        "notify_types": [n.notify_type for n in notifications],
        "payment_request_ids": [n.payment_request_id for n in notifications],
        "payment_ids": [n.payment_id for n in notifications],
        "result_statuses": [n.result_status for n in notifications],
        "payloads": [n.payload for n in notifications],
        "received_ats": [r.received_at for r in receipts],
        "client_ids": [r.client_id for r in receipts],
        "request_times": [r.request_time for r in receipts],
        "request_ids": [r.request_id for r in receipts],
        "wanted_ords": [index for index, _ in wanted],
        "wanted_groups": [group for _, group in wanted],
    }


def _is_text(value: str) -> bool:
    """Whether PostgreSQL text can hold `value`: no NUL, nothing UTF-8 cannot encode."""
    if "\x00" in value:
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _lease_of(group: str, row: TupleRow) -> Lease:
    nid, token, attempts, expires, payload, notify_type, send_count, first_received_at = row
    return Lease(
        notification_id=nid,
        group=group,
        token=token,
        attempt=attempts,
        lease_expires_at=expires,
        payload=bytes(payload),
        notify_type=notify_type,
        send_count=send_count,
        first_received_at=first_received_at,
    )


def _requeue_plan(
    attempts: int, now: float, policy: RetryPolicy, delay: float | None
) -> tuple[str, float, str | None]:
    """(state, available_at, dead_reason) of a delivery whose lease ended after `attempts`."""
    if attempts >= policy.max_attempts:
        return DeliveryState.DEAD, now, f"max attempts reached ({policy.max_attempts})"
    wait = delay if delay is not None else policy.backoff(attempts)
    return DeliveryState.PENDING, now + wait, None


# -- events -----------------------------------------------------------------------------------


def _group_payloads(origin: str, groups: Iterable[str]) -> list[str]:
    names = sorted(groups)
    return [
        json.dumps({"o": origin, "g": names[i : i + GROUPS_PER_EVENT]})
        for i in range(0, len(names), GROUPS_PER_EVENT)
    ]


def _settled_payloads(origin: str, notification_ids: Iterable[int]) -> list[str]:
    return [json.dumps({"o": origin, "n": nid}) for nid in notification_ids]


def _parse_event(payload: str, origin: str) -> StoreEvent | None:
    """The event of another hub, or None for our own or a payload we do not understand."""
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("o") == origin:
        return None
    groups, nid = data.get("g", []), data.get("n")
    if not isinstance(groups, list) or not (nid is None or isinstance(nid, int)):
        return None
    return StoreEvent(groups=frozenset(str(g) for g in groups), notification_id=nid)
