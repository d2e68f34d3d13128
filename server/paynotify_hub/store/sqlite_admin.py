"""The operator's verbs on SQLite: statistics, one notification's story, dead letters, replay.

Functions here run on the SQLiteStore's worker thread inside its transaction (see sqlite.py); they
take the connection and return domain records. Reads use the partial indexes of live work (pending,
leased, dead), so they stay cheap however many acked rows the retention keeps.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from paynotify_hub.domain import (
    ActionStatus,
    DeadLetter,
    DeliveryState,
    GroupStats,
    NotificationRecord,
)
from paynotify_hub.store.records import (
    REPLAY_NOTE,
    dead_letter_of,
    group_stats_of,
    notifications_of,
    replay_since_note,
)

__all__ = ["dead_letters", "find_notifications", "group_stats", "replay", "replay_since"]

_IN_GROUPS = "d.group_name IN (SELECT value FROM json_each(:groups))"
# One branch per live state, each served by that state's partial index.
_GROUP_STATS = f"""
    SELECT d.group_name, 'pending', count(*), sum(d.available_at <= :now), min(n.first_received_at)
    FROM deliveries AS d JOIN notifications AS n ON n.id = d.notification_id
    WHERE d.state = 'pending' AND {_IN_GROUPS}
    GROUP BY d.group_name
    UNION ALL
    SELECT d.group_name, 'leased', count(*), 0, min(n.first_received_at)
    FROM deliveries AS d JOIN notifications AS n ON n.id = d.notification_id
    WHERE d.state = 'leased' AND {_IN_GROUPS}
    GROUP BY d.group_name
    UNION ALL
    SELECT d.group_name, 'dead', count(*), 0, NULL
    FROM deliveries AS d
    WHERE d.state = 'dead' AND {_IN_GROUPS}
    GROUP BY d.group_name
"""
_ACKED_COUNTS = f"""
    SELECT d.group_name, count(*) FROM deliveries AS d
    WHERE d.state = 'acked' AND {_IN_GROUPS}
    GROUP BY d.group_name
"""
_FIND = """
    SELECT id, identity, notify_type, payment_request_id, payment_id, result_status, send_count,
           first_received_at, last_received_at, payload
    FROM notifications WHERE payment_id = :key OR payment_request_id = :key
    ORDER BY id LIMIT :limit
"""
_IN_IDS = "notification_id IN (SELECT value FROM json_each(:ids))"
_FIND_RECEIPTS = f"""
    SELECT notification_id, received_at, client_id, request_time, request_id FROM receipts
    WHERE {_IN_IDS} ORDER BY received_at, rowid
"""
# SQLite keeps no dead_at: a dead delivery's updated_at is when it died (nothing updates it later).
_FIND_DELIVERIES = f"""
    SELECT notification_id, group_name, state, attempts, available_at, lease_member,
           lease_expires_at, acked_at, updated_at, dead_reason
    FROM deliveries WHERE {_IN_IDS} ORDER BY group_name
"""
_FIND_HISTORY = f"""
    SELECT notification_id, group_name, kind, at, attempt, member, state, lease_expires_at,
           due_at, detail
    FROM delivery_history WHERE {_IN_IDS} ORDER BY rowid
"""
_DEAD_LETTERS = """
    SELECT d.notification_id, d.group_name, n.notify_type, n.payment_request_id, n.payment_id,
           d.attempts, d.dead_reason, d.updated_at, n.first_received_at, n.payload
    FROM deliveries AS d JOIN notifications AS n ON n.id = d.notification_id
    WHERE d.state = 'dead' AND (:group IS NULL OR d.group_name = :group)
      AND (d.notification_id, d.group_name) > (:after_id, :after_group)
    ORDER BY d.notification_id, d.group_name
    LIMIT :limit
"""
_SELECT_STATE = "SELECT state FROM deliveries WHERE group_name = :group AND notification_id = :id"
# Replays first record the history (attempts before the reset), then reset the deliveries.
_RECORD_REPLAY = """
    INSERT INTO delivery_history (notification_id, group_name, kind, at, attempt, member, state,
                                  lease_expires_at, due_at, detail)
    SELECT d.notification_id, d.group_name, 'replayed', :now, d.attempts, '', 'pending', NULL,
           :now, :detail
    FROM deliveries AS d
"""
_RESET = """
    UPDATE deliveries
    SET state = 'pending', attempts = 0, available_at = :now, updated_at = :now,
        lease_token = NULL, lease_expires_at = NULL, acked_at = NULL, dead_reason = NULL
"""
_ONE = "WHERE group_name = :group AND notification_id = :id"
_SINCE = """
    WHERE group_name = :group
      AND notification_id IN (SELECT id FROM notifications WHERE first_received_at >= :since)
"""


def group_stats(
    conn: sqlite3.Connection, now: float, groups: Sequence[str], count_acked: bool
) -> list[GroupStats]:
    query = {"now": now, "groups": json.dumps(list(groups))}
    rows = conn.execute(_GROUP_STATS, query).fetchall()
    acked = conn.execute(_ACKED_COUNTS, query).fetchall() if count_acked else None
    return group_stats_of(groups, rows, acked)


def find_notifications(conn: sqlite3.Connection, key: str, limit: int) -> list[NotificationRecord]:
    rows = conn.execute(_FIND, {"key": key, "limit": limit}).fetchall()
    if not rows:
        return []
    ids = {"ids": json.dumps([row[0] for row in rows])}
    return notifications_of(
        rows,
        conn.execute(_FIND_RECEIPTS, ids).fetchall(),
        conn.execute(_FIND_DELIVERIES, ids).fetchall(),
        conn.execute(_FIND_HISTORY, ids).fetchall(),
    )


def dead_letters(
    conn: sqlite3.Connection, group: str | None, after_id: int, after_group: str, limit: int
) -> list[DeadLetter]:
    query = {"group": group, "after_id": after_id, "after_group": after_group, "limit": limit}
    return [dead_letter_of(row) for row in conn.execute(_DEAD_LETTERS, query).fetchall()]


def replay(conn: sqlite3.Connection, group: str, notification_id: int, now: float) -> ActionStatus:
    key = {"group": group, "id": notification_id, "now": now, "detail": REPLAY_NOTE}
    row = conn.execute(_SELECT_STATE, key).fetchone()
    if row is None:
        return ActionStatus.UNKNOWN
    if row[0] != DeliveryState.DEAD:
        return ActionStatus.STALE
    conn.execute(f"{_RECORD_REPLAY} {_ONE}", key)
    conn.execute(f"{_RESET} {_ONE}", key)
    return ActionStatus.OK


def replay_since(conn: sqlite3.Connection, group: str, since: float, now: float) -> int:
    key = {"group": group, "since": since, "now": now, "detail": replay_since_note(since)}
    conn.execute(f"{_RECORD_REPLAY} {_SINCE}", key)
    return conn.execute(f"{_RESET} {_SINCE}", key).rowcount
