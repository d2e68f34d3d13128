"""The operator's verbs on PostgreSQL: statistics, one notification's story, dead letters, replay.

Functions here run inside a `PostgresStore` transaction (see postgres.py, which also wraps driver
errors and announces replays to other hubs); they take the connection and return domain records.
Reads use the partial indexes of live work (pending, leased, dead), so they stay cheap however
many acked rows the retention keeps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, TypeAlias

from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from paynotify_hub.domain import ActionStatus, DeadLetter, GroupStats, NotificationRecord
from paynotify_hub.store.records import (
    REPLAY_NOTE,
    dead_letter_of,
    group_stats_of,
    notifications_of,
    replay_since_note,
)

__all__ = ["dead_letters", "find_notifications", "group_stats", "replay", "replay_since"]

Conn: TypeAlias = AsyncConnection[TupleRow]

_IN_GROUPS: Final = "d.group_name = ANY(%(groups)s::text[])"
# One branch per live state, each served by that state's partial index.
_GROUP_STATS: Final = f"""
SELECT d.group_name, 'pending', count(*), count(*) FILTER (WHERE d.available_at <= %(now)s),
    min(n.first_received_at)
FROM deliveries AS d JOIN notifications AS n ON n.id = d.notification_id
WHERE d.state = 'pending' AND {_IN_GROUPS}
GROUP BY d.group_name
UNION ALL
SELECT d.group_name, 'leased', count(*), 0, min(n.first_received_at)
FROM deliveries AS d JOIN notifications AS n ON n.id = d.notification_id
WHERE d.state = 'leased' AND {_IN_GROUPS}
GROUP BY d.group_name
UNION ALL
SELECT d.group_name, 'dead', count(*), 0, NULL::double precision
FROM deliveries AS d
WHERE d.state = 'dead' AND {_IN_GROUPS}
GROUP BY d.group_name"""
_ACKED_COUNTS: Final = f"""
SELECT d.group_name, count(*) FROM deliveries AS d
WHERE d.state = 'acked' AND {_IN_GROUPS}
GROUP BY d.group_name"""
# One snapshot for the four reads of `find_notifications`.
_SNAPSHOT: Final = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
_FIND: Final = """
SELECT id, identity, notify_type, payment_request_id, payment_id, result_status, send_count,
    first_received_at, last_received_at, payload
FROM notifications WHERE payment_id = %(key)s OR payment_request_id = %(key)s
ORDER BY id LIMIT %(limit)s"""
_IN_IDS: Final = "notification_id = ANY(%(ids)s::bigint[])"
_FIND_RECEIPTS: Final = f"""
SELECT notification_id, received_at, client_id, request_time, request_id FROM receipts
WHERE {_IN_IDS} ORDER BY received_at, id"""
_FIND_DELIVERIES: Final = f"""
SELECT notification_id, group_name, state, attempts, available_at, lease_member,
    lease_expires_at, acked_at, dead_at, dead_reason
FROM deliveries WHERE {_IN_IDS} ORDER BY notification_id, group_name"""
_FIND_HISTORY: Final = f"""
SELECT notification_id, group_name, kind, at, attempt, member, state, lease_expires_at, due_at,
    detail
FROM delivery_history WHERE {_IN_IDS} ORDER BY id"""
_DEAD_LETTERS: Final = """
SELECT d.notification_id, d.group_name, n.notify_type, n.payment_request_id, n.payment_id,
    d.attempts, d.dead_reason, coalesce(d.dead_at, d.available_at), n.first_received_at, n.payload
FROM deliveries AS d JOIN notifications AS n ON n.id = d.notification_id
WHERE d.state = 'dead' AND (%(group)s::text IS NULL OR d.group_name = %(group)s::text)
    AND (d.notification_id, d.group_name) > (%(after_id)s::bigint, %(after_group)s::text)
ORDER BY d.notification_id, d.group_name
LIMIT %(limit)s"""
_SELECT_STATE: Final = """
SELECT state FROM deliveries WHERE group_name = %(group)s AND notification_id = %(id)s"""
# Lock the targets first, so the history records the attempts of the version that is reset.
_REPLAY: Final = """
WITH target AS (
    SELECT d.group_name, d.notification_id, d.attempts FROM deliveries AS d
    WHERE {where}
    FOR UPDATE
), reset AS (
    UPDATE deliveries AS d
    SET state = 'pending', attempts = 0, available_at = %(now)s, lease_token = NULL,
        lease_member = NULL, lease_expires_at = NULL, acked_at = NULL, dead_at = NULL,
        dead_reason = NULL
    FROM target AS t
    WHERE d.group_name = t.group_name AND d.notification_id = t.notification_id
    RETURNING d.notification_id
), recorded AS (
    INSERT INTO delivery_history (notification_id, group_name, kind, at, attempt, member, state,
        lease_expires_at, due_at, detail)
    SELECT t.notification_id, t.group_name, 'replayed', %(now)s, t.attempts, '', 'pending', NULL,
        %(now)s, %(detail)s
    FROM target AS t
)
SELECT count(*) FROM reset"""
_REPLAY_ONE: Final = _REPLAY.format(
    where="d.group_name = %(group)s AND d.notification_id = %(id)s AND d.state = 'dead'"
)
_REPLAY_SINCE: Final = _REPLAY.format(
    where="d.group_name = %(group)s AND d.notification_id IN ("
    "SELECT id FROM notifications WHERE first_received_at >= %(since)s)"
)


async def group_stats(
    conn: Conn, now: float, groups: Sequence[str], count_acked: bool
) -> list[GroupStats]:
    params = {"now": now, "groups": list(groups)}
    rows = await _fetch_all(conn, _GROUP_STATS, params)
    acked = await _fetch_all(conn, _ACKED_COUNTS, params) if count_acked else None
    return group_stats_of(groups, rows, acked)


async def find_notifications(conn: Conn, key: str, limit: int) -> list[NotificationRecord]:
    await conn.execute(_SNAPSHOT)
    rows = await _fetch_all(conn, _FIND, {"key": key, "limit": limit})
    if not rows:
        return []
    ids = {"ids": [row[0] for row in rows]}
    return notifications_of(
        rows,
        await _fetch_all(conn, _FIND_RECEIPTS, ids),
        await _fetch_all(conn, _FIND_DELIVERIES, ids),
        await _fetch_all(conn, _FIND_HISTORY, ids),
    )


async def dead_letters(
    conn: Conn, group: str | None, after_id: int, after_group: str, limit: int
) -> list[DeadLetter]:
    params = {"group": group, "after_id": after_id, "after_group": after_group, "limit": limit}
    return [dead_letter_of(row) for row in await _fetch_all(conn, _DEAD_LETTERS, params)]


async def replay(conn: Conn, group: str, notification_id: int, now: float) -> ActionStatus:
    key = {"group": group, "id": notification_id, "now": now, "detail": REPLAY_NOTE}
    if not await _fetch_all(conn, _SELECT_STATE, key):
        return ActionStatus.UNKNOWN
    replayed = await _count(conn, _REPLAY_ONE, key)
    return ActionStatus.OK if replayed else ActionStatus.STALE


async def replay_since(conn: Conn, group: str, since: float, now: float) -> int:
    key = {"group": group, "since": since, "now": now, "detail": replay_since_note(since)}
    return await _count(conn, _REPLAY_SINCE, key)


async def _fetch_all(conn: Conn, query: str, params: Mapping[str, Any]) -> list[TupleRow]:
    cur = await conn.execute(query, params)
    return await cur.fetchall()


async def _count(conn: Conn, query: str, params: Mapping[str, Any]) -> int:
    rows = await _fetch_all(conn, query, params)
    return int(rows[0][0])
