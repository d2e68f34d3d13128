"""PostgreSQL store: several hubs share one database.

Connections come from a `psycopg_pool.AsyncConnectionPool` in autocommit mode; every verb runs in
one explicit transaction, so it is durable when it returns. Claims use `FOR UPDATE SKIP LOCKED`,
so hubs never lease the same delivery twice. The tables live in the first schema of the URL's
`search_path`; `open()` migrates them from `pg_migrations/NNNN_*.sql` under an advisory lock.

Cross-hub events travel by LISTEN/NOTIFY on a channel named after that schema: committed appends,
nacks, releases and expiries announce the groups that have work, acks and dead letters announce the
settled notification. A hub ignores its own events. They only wake other hubs, which also poll.

Driver errors are wrapped at this boundary: `psycopg.OperationalError` (refused, restarting, shut
down, pool timeout) becomes `StoreUnavailable`, any other `psycopg.Error` becomes `StoreError`. The
messages name the operation, the SQLSTATE and the server's primary message (or libpq's connection
message, which names host, port and user): never a payload, a DETAIL line or the password.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from importlib import resources
from typing import Any, Final, TypeAlias

import psycopg
from psycopg import AsyncConnection, sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout

from paynotify_hub.domain import (
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
# Defaults added to the URL unless it sets them: keepalives notice a silently dropped connection.
CONNECTION_DEFAULTS: Final[Mapping[str, str | int]] = {
    "application_name": "paynotify-hub",
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}
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

_CREATE_MIGRATIONS_TABLE: Final = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""
# Keyed by schema: hubs of different schemas need not wait for each other.
_LOCK_MIGRATIONS: Final = (
    "SELECT pg_advisory_xact_lock(hashtext('paynotify.migrate'), hashtext(current_schema()))"
)
_APPLIED_VERSIONS: Final = "SELECT version FROM schema_migrations"
_RECORD_VERSION: Final = "INSERT INTO schema_migrations (version) VALUES (%s)"

# (xmax = 0) is true only for a freshly inserted row: the one hub that created it sees True.
_UPSERT_NOTIFICATION: Final = """
INSERT INTO notifications AS n (identity, notify_type, payment_request_id, payment_id,
    result_status, payload, send_count, first_received_at, last_received_at)
VALUES (%(identity)s, %(notify_type)s, %(payment_request_id)s, %(payment_id)s,
    %(result_status)s, %(payload)s, 1, %(received_at)s, %(received_at)s)
ON CONFLICT (identity) DO UPDATE
SET send_count = n.send_count + 1,
    last_received_at = GREATEST(n.last_received_at, EXCLUDED.last_received_at)
RETURNING n.id, (n.xmax = 0) AS created, n.send_count, n.first_received_at"""
_INSERT_RECEIPT: Final = """
INSERT INTO receipts (notification_id, received_at, client_id, request_time, request_id)
VALUES (%(id)s, %(received_at)s, %(client_id)s, %(request_time)s, %(request_id)s)"""
_INSERT_DELIVERIES: Final = """
INSERT INTO deliveries (group_name, notification_id, notify_type, state, attempts, available_at)
SELECT g, %(id)s, %(notify_type)s, 'pending', 0, %(received_at)s
FROM unnest(%(groups)s::text[]) AS g
ON CONFLICT (group_name, notification_id) DO NOTHING
RETURNING group_name"""
_GROUP_STATES: Final = """
SELECT group_name, state, attempts FROM deliveries WHERE notification_id = %(id)s"""
_TYPE_FILTER: Final = "(cardinality(%(types)s::text[]) = 0 OR notify_type = ANY(%(types)s::text[]))"
_PICK_PENDING: Final = f"""
SELECT notification_id FROM deliveries
WHERE group_name = %(group)s AND state = 'pending' AND available_at <= %(now)s AND {_TYPE_FILTER}
ORDER BY notification_id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED"""
# Changes that end or start a lease record it in delivery_history in the same statement (a
# data-modifying WITH): no extra round trip on the hot paths.
_HISTORY_COLUMNS: Final = """
INSERT INTO delivery_history (notification_id, group_name, kind, at, attempt, member, state,
    lease_expires_at, due_at, detail)"""
_LEASE: Final = f"""
WITH leased AS (
    UPDATE deliveries AS d
    SET state = 'leased', attempts = d.attempts + 1, lease_token = p.token,
        lease_member = %(member)s, lease_expires_at = %(expires)s
    FROM unnest(%(ids)s::bigint[], %(tokens)s::text[]) AS p(notification_id, token),
        notifications AS n
    WHERE d.group_name = %(group)s AND d.notification_id = p.notification_id
        AND n.id = d.notification_id
    RETURNING d.notification_id, d.lease_token, d.attempts, d.lease_expires_at,
        n.payload, n.notify_type, n.send_count, n.first_received_at
), recorded AS ({_HISTORY_COLUMNS}
    SELECT notification_id, %(group)s, 'leased', %(now)s, attempts, %(member)s, 'leased',
        lease_expires_at, NULL, ''
    FROM leased
)
SELECT * FROM leased"""
_LOCK_DELIVERY: Final = """
SELECT state, lease_token, attempts, lease_member FROM deliveries
WHERE group_name = %(group)s AND notification_id = %(id)s
FOR UPDATE"""
_ACK: Final = f"""
WITH acked AS (
    UPDATE deliveries SET state = 'acked', acked_at = %(now)s, lease_expires_at = NULL
    WHERE group_name = %(group)s AND notification_id = %(id)s
    RETURNING notification_id, group_name, attempts, lease_member
){_HISTORY_COLUMNS}
SELECT notification_id, group_name, 'acked', %(now)s, attempts, coalesce(lease_member, ''),
    'acked', NULL, NULL, ''
FROM acked"""
_REJECT: Final = f"""
WITH rejected AS (
    UPDATE deliveries
    SET state = 'dead', dead_at = %(now)s, dead_reason = %(reason)s, lease_token = NULL,
        lease_expires_at = NULL
    WHERE group_name = %(group)s AND notification_id = %(id)s
    RETURNING notification_id, group_name, attempts, lease_member
){_HISTORY_COLUMNS}
SELECT notification_id, group_name, 'rejected', %(now)s, attempts, coalesce(lease_member, ''),
    'dead', NULL, NULL, %(reason)s
FROM rejected"""
_EXTEND: Final = """
UPDATE deliveries SET lease_expires_at = %(expires)s
WHERE group_name = %(group)s AND notification_id = %(id)s"""
# Rows stay locked by these until the transaction ends; SKIP LOCKED leaves rows another hub (or an
# ack in flight) holds to that hub.
_LOCK_MEMBER_LEASES: Final = """
SELECT group_name, notification_id, attempts, lease_member FROM deliveries
WHERE group_name = %(group)s AND state = 'leased' AND lease_member = %(member)s
FOR UPDATE SKIP LOCKED"""
_LOCK_EXPIRED_LEASES: Final = """
SELECT group_name, notification_id, attempts, lease_member FROM deliveries
WHERE state = 'leased' AND lease_expires_at <= %(now)s
FOR UPDATE SKIP LOCKED"""
_REQUEUE: Final = f"""
WITH requeued AS (
    UPDATE deliveries AS d
    SET state = r.state, available_at = r.available_at, dead_reason = r.dead_reason,
        dead_at = CASE WHEN r.state = 'dead' THEN %(now)s END,
        lease_token = NULL, lease_member = NULL, lease_expires_at = NULL
    FROM unnest(%(groups)s::text[], %(ids)s::bigint[], %(states)s::text[],
        %(available)s::float8[], %(reasons)s::text[], %(members)s::text[])
        AS r(group_name, notification_id, state, available_at, dead_reason, member)
    WHERE d.group_name = r.group_name AND d.notification_id = r.notification_id
    RETURNING d.notification_id, d.group_name, d.attempts, r.member, d.state, d.available_at,
        d.dead_reason
){_HISTORY_COLUMNS}
SELECT notification_id, group_name, %(kind)s, %(now)s, attempts, coalesce(member, ''), state,
    NULL, CASE WHEN state = 'pending' THEN available_at END, coalesce(dead_reason, '')
FROM requeued"""
_NEXT_DUE: Final = f"""
SELECT min(available_at) FROM deliveries
WHERE group_name = %(group)s AND state = 'pending' AND {_TYPE_FILTER}"""
# Dead letters are kept for the operator: only notifications whose deliveries are all acked go.
_PURGE_SETTLED: Final = """
WITH purged AS (
    DELETE FROM notifications WHERE id IN (
        SELECT n.id FROM notifications AS n
        WHERE n.last_received_at < %(before)s
            AND NOT EXISTS (SELECT 1 FROM deliveries AS d
                            WHERE d.notification_id = n.id AND d.state <> 'acked')
        ORDER BY n.id
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED)
    RETURNING id
), history AS (
    DELETE FROM delivery_history AS h USING purged WHERE h.notification_id = purged.id
)
SELECT count(*) FROM purged"""
_NOTIFY: Final = "SELECT pg_notify(%(channel)s, p) FROM unnest(%(payloads)s::text[]) AS p"

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
            check=AsyncConnectionPool.check_connection,
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
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            await asyncio.wait([listener])
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def append(
        self, notification: NewNotification, receipt: ReceiptRecord, groups: Sequence[GroupSpec]
    ) -> AppendResult:
        wanted = list(dict.fromkeys(g.name for g in groups if g.wants(notification.notify_type)))
        params = _append_params(notification, receipt, wanted)
        async with self._transaction("append") as conn:
            row = await _fetch_one(conn, _UPSERT_NOTIFICATION, params)
            params["id"] = row[0]
            await conn.execute(_INSERT_RECEIPT, params)
            new_groups = await _fetch_column(conn, _INSERT_DELIVERIES, params)
            states = await _group_states(conn, row[0])
            await self._notify(conn, _group_payloads(self._origin, new_groups))
        return AppendResult(
            notification_id=row[0],
            created=row[1],
            send_count=row[2],
            first_received_at=row[3],
            groups=states,
        )

    async def group_states(self, notification_id: int) -> Mapping[str, GroupDelivery]:
        async with self._transaction("group_states") as conn:
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
        pick = {"group": group, "now": now, "types": sorted(notify_types), "limit": limit}
        async with self._transaction("claim") as conn:
            ids = await _fetch_column(conn, _PICK_PENDING, pick)
            if not ids:
                return []
            tokens = [secrets.token_hex(8) for _ in ids]
            lease = {"group": group, "member": member, "expires": now + lease_seconds, "now": now}
            rows = await _fetch_all(conn, _LEASE, {**lease, "ids": ids, "tokens": tokens})
        return sorted((_lease_of(group, row) for row in rows), key=lambda x: x.notification_id)

    async def ack(self, group: str, notification_id: int, token: str, now: float) -> ActionStatus:
        key = {"group": group, "id": notification_id, "now": now}
        async with self._transaction("ack") as conn:
            status, _, _ = await _check_lease(conn, key, token)
            if status is ActionStatus.OK:
                await conn.execute(_ACK, key)
                await self._notify(conn, _settled_payloads(self._origin, [notification_id]))
        return status

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
        async with self._transaction("reject") as conn:
            status, _, _ = await _check_lease(conn, key, token)
            if status is ActionStatus.OK:
                await conn.execute(_REJECT, key)
                await self._notify(conn, _settled_payloads(self._origin, [notification_id]))
        return status

    async def extend(
        self, group: str, notification_id: int, token: str, lease_expires_at: float
    ) -> ActionStatus:
        key = {"group": group, "id": notification_id, "expires": lease_expires_at}
        async with self._transaction("extend") as conn:
            status, _, _ = await _check_lease(conn, key, token)
            if status is ActionStatus.OK:
                await conn.execute(_EXTEND, key)
        return status

    async def release(self, group: str, member: str, now: float, policy: RetryPolicy) -> int:
        async with self._transaction("release") as conn:
            rows = await _fetch_all(conn, _LOCK_MEMBER_LEASES, {"group": group, "member": member})
            await self._requeue(conn, rows, HistoryKind.RELEASED, now, policy, None)
        return len(rows)

    async def expire_leases(self, now: float, policy: RetryPolicy) -> frozenset[str]:
        async with self._transaction("expire_leases") as conn:
            rows = await _fetch_all(conn, _LOCK_EXPIRED_LEASES, {"now": now})
            return await self._requeue(conn, rows, HistoryKind.EXPIRED, now, policy, None)

    async def next_due(self, group: str, notify_types: frozenset[str]) -> float | None:
        params = {"group": group, "types": sorted(notify_types)}
        async with self._transaction("next_due") as conn:
            due: float | None = (await _fetch_one(conn, _NEXT_DUE, params))[0]
        return due

    async def purge_settled(self, before: float, batch_size: int) -> int:
        if batch_size <= 0:
            return 0
        async with self._transaction("purge_settled") as conn:
            row = await _fetch_one(conn, _PURGE_SETTLED, {"before": before, "limit": batch_size})
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

    async def _configure_connection(self, conn: Conn) -> None:
        if self._statement_timeout is not None:
            millis = str(int(self._statement_timeout * 1000))
            await conn.execute("SELECT set_config('statement_timeout', %s, false)", [millis])

    async def _notify(self, conn: Conn, payloads: list[str]) -> None:
        """Queue events; PostgreSQL sends them only if the transaction commits."""
        if payloads:
            await conn.execute(_NOTIFY, {"channel": self._channel, "payloads": payloads})

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
            _REQUEUE,
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


@contextlib.contextmanager
def _wrapped_errors(operation: str) -> Iterator[None]:
    try:
        yield
    except psycopg.OperationalError as exc:
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
        await conn.execute(_LOCK_MIGRATIONS)
        await conn.execute(_CREATE_MIGRATIONS_TABLE)
        applied = set(await _fetch_column(conn, _APPLIED_VERSIONS, {}))
        for version, text in _migrations():
            if version not in applied:
                await conn.execute(text)
                await conn.execute(_RECORD_VERSION, [version])
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
    rows = await _fetch_all(conn, _GROUP_STATES, {"id": notification_id})
    return {group: GroupDelivery(DeliveryState(state), attempts) for group, state, attempts in rows}


async def _check_lease(
    conn: Conn, key: Mapping[str, Any], token: str
) -> tuple[ActionStatus, int, str | None]:
    """Lock the delivery; OK only while it is leased under `token`. Also returns its attempts and
    the member holding it."""
    cur = await conn.execute(_LOCK_DELIVERY, key)
    row = await cur.fetchone()
    if row is None:
        return ActionStatus.UNKNOWN, 0, None
    state, lease_token, attempts, member = row
    if state != DeliveryState.LEASED or lease_token != token:
        return ActionStatus.STALE, attempts, member
    return ActionStatus.OK, attempts, member


def _append_params(
    notification: NewNotification, receipt: ReceiptRecord, groups: list[str]
) -> dict[str, Any]:
    return {
        "identity": notification.identity,
        "notify_type": notification.notify_type,
        "payment_request_id": notification.payment_request_id,
        "payment_id": notification.payment_id,
        "result_status": notification.result_status,
        "payload": notification.payload,
        "received_at": receipt.received_at,
        "client_id": receipt.client_id,
        "request_time": receipt.request_time,
        "request_id": receipt.request_id,
        "groups": groups,
    }


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
