"""SQL text of the PostgreSQL store (postgres.py runs it; postgres_admin.py has the operator's).

The hot verbs (append, claim, ack, reject, extend, group_states, next_due) are one statement each
(appends, and acks, that arrive together share one): on the pool's autocommit connections a
single statement is its own transaction, so each costs one round trip instead of BEGIN, several
statements and COMMIT. Their parts are data-modifying WITH queries; events are queued by
`pg_notify` inside the statement, so they are still sent only on commit. All parts of a statement
share one snapshot: a part never sees rows another part inserted (only their RETURNING), and rows
committed by others after the statement began are seen only by the row locks and conflict checks,
which wait for and read the newest version.

Plans: psycopg prepares a statement after a few runs on a connection and PostgreSQL then keeps
one generic plan for it, often made while the tables were near empty (a new hub, a new schema)
and kept until an ANALYZE replaces it. A plan that reads a growing table whole costs more with
every notification stored, so each statement here reaches those tables through an index
whatever their size looked like: a subquery that only needs a value of another part reads it
uncorrelated (an InitPlan, never a hashed subplan), a join with `unnest` of the caller's rows
also filters by `= ANY(ids)`, and a set of ids is `= ANY(ARRAY(subquery))`. That gives every
statement an index path; the hub's sessions also plan with sequential scans off
(`DISABLE_SEQSCAN`), because on a young table (a few pages, analyzed or not) reading it whole
costs the planner about as much as the index, and such a plan, once kept, reads the table whole
as it grows. tests/store/test_postgres_plans.py checks every statement the hub runs per
notification or periodically, with tables empty, young and analyzed young.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ACK_MANY",
    "APPEND_MANY",
    "APPLIED_VERSIONS",
    "CLAIM",
    "CREATE_MIGRATIONS_TABLE",
    "DISABLE_SEQSCAN",
    "EXTEND",
    "GROUP_STATES",
    "LOCK_DELIVERY",
    "LOCK_EXPIRED_LEASES",
    "LOCK_MEMBER_LEASES",
    "LOCK_MIGRATIONS",
    "NEXT_DUE",
    "NOTIFY",
    "PURGE_SETTLED",
    "RECORD_VERSION",
    "REJECT",
    "REQUEUE",
    "SET_STATEMENT_TIMEOUT",
]

CREATE_MIGRATIONS_TABLE: Final = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""
# Keyed by schema: hubs of different schemas need not wait for each other.
LOCK_MIGRATIONS: Final = (
    "SELECT pg_advisory_xact_lock(hashtext('paynotify.migrate'), hashtext(current_schema()))"
)
APPLIED_VERSIONS: Final = "SELECT version FROM schema_migrations"
RECORD_VERSION: Final = "INSERT INTO schema_migrations (version) VALUES (%s)"
SET_STATEMENT_TIMEOUT: Final = "SELECT set_config('statement_timeout', %s, false)"
# For the session (each pool connection, once). Measured in the PostgreSQL benchmark on a new
# schema: APPEND_MANY's generic plan read `deliveries` whole (and sometimes `notifications`) in
# every run sampled, ACK_MANY's in a third, a plan made while the table held a few dozen rows,
# kept as it grew to thousands. Only paths without an index still scan (a penalty, not a ban).
DISABLE_SEQSCAN: Final = "SELECT set_config('enable_seqscan', 'off', false)"

# Events are JSON written exactly as json.dumps writes them (postgres.py's _group_payloads),
# names in code point order (COLLATE "C"), `per_event` names per event.
_GROUP_EVENTS_OF_ADDED: Final = """
SELECT pg_notify(%(channel)s, '{"o": ' || to_json(%(origin)s::text)::text || ', "g": ['
        || string_agg(to_json(group_name)::text, ', ' ORDER BY group_name COLLATE "C") || ']}')
    FROM (SELECT group_name,
            (row_number() OVER (ORDER BY group_name COLLATE "C") - 1) / %(per_event)s AS chunk
        FROM (SELECT DISTINCT group_name FROM added) AS d) AS a
    GROUP BY chunk"""

# Appends of several notifications at once (postgres.py's `_Batches`), no identity twice: `input`
# holds one row per append, `wanted` the (ordinal, group) pairs of the deliveries each wants.
# (xmax = 0) is true only for a freshly inserted row: the one hub that created it sees True.
# Notifications are inserted in identity order, so two such statements wait for each other's
# identities in one order. The states come from the snapshot plus the deliveries added here.
# `visible` is false when the notification was committed by another hub after the snapshot was
# taken (a concurrent append of the same identity): its deliveries are then missing from the
# snapshot and the caller reads them again. One row per (append, group), or one with NULL group
# for an append with no delivery; each starts with the append's ordinal (from 1).
# The arrays of APPEND_MANY and ACK_MANY go in binary (%(name)b): in text, psycopg escapes every
# element in Python, each payload as hex.
APPEND_MANY: Final = f"""
WITH input AS MATERIALIZED (
    SELECT * FROM unnest(%(identities)b::text[], %(notify_types)b::text[],
        %(payment_request_ids)b::text[], %(payment_ids)b::text[], %(result_statuses)b::text[],
        %(payloads)b::bytea[], %(received_ats)b::float8[], %(client_ids)b::text[],
        %(request_times)b::text[], %(request_ids)b::text[]) WITH ORDINALITY
        AS i(identity, notify_type, payment_request_id, payment_id, result_status, payload,
            received_at, client_id, request_time, request_id, ord)
), upserted AS (
    INSERT INTO notifications AS n (identity, notify_type, payment_request_id, payment_id,
        result_status, payload, send_count, first_received_at, last_received_at)
    SELECT identity, notify_type, payment_request_id, payment_id, result_status, payload, 1,
        received_at, received_at
    FROM input ORDER BY identity COLLATE "C"
    ON CONFLICT (identity) DO UPDATE
    SET send_count = n.send_count + 1,
        last_received_at = GREATEST(n.last_received_at, EXCLUDED.last_received_at)
    RETURNING n.id, (n.xmax = 0) AS created, n.send_count, n.first_received_at, n.identity
), mine AS MATERIALIZED (
    SELECT i.ord, u.id, u.created, u.send_count, u.first_received_at, i.notify_type,
        i.received_at, i.client_id, i.request_time, i.request_id
    FROM upserted AS u JOIN input AS i ON i.identity = u.identity
), received AS (
    INSERT INTO receipts (notification_id, received_at, client_id, request_time, request_id)
    SELECT id, received_at, client_id, request_time, request_id FROM mine
), added AS (
    INSERT INTO deliveries (group_name, notification_id, notify_type, state, attempts,
        available_at)
    SELECT w.group_name, m.id, m.notify_type, 'pending', 0, m.received_at
    FROM unnest(%(wanted_ords)b::bigint[], %(wanted_groups)b::text[]) AS w(ord, group_name)
    JOIN mine AS m ON m.ord = w.ord
    ON CONFLICT (group_name, notification_id) DO NOTHING
    RETURNING group_name, notification_id, state, attempts
), announced AS ({_GROUP_EVENTS_OF_ADDED}
), seen AS (
    SELECT id FROM notifications WHERE id = ANY(ARRAY(SELECT id FROM mine))
)
SELECT m.ord, m.id, m.created, m.send_count, m.first_received_at,
    m.id = ANY(ARRAY(SELECT id FROM seen)) AS visible,
    (SELECT count(*) FROM announced) AS events,
    s.group_name, s.state, s.attempts
FROM mine AS m
LEFT JOIN (
    SELECT notification_id, group_name, state, attempts FROM deliveries
    WHERE notification_id = ANY(ARRAY(SELECT id FROM mine))
    UNION ALL
    SELECT notification_id, group_name, state, attempts FROM added
) AS s ON s.notification_id = m.id"""
GROUP_STATES: Final = """
SELECT group_name, state, attempts FROM deliveries WHERE notification_id = %(id)s"""
_TYPE_FILTER: Final = "(cardinality(%(types)s::text[]) = 0 OR notify_type = ANY(%(types)s::text[]))"
# Changes that end or start a lease record it in delivery_history in the same statement.
_HISTORY_COLUMNS: Final = """
INSERT INTO delivery_history (notification_id, group_name, kind, at, attempt, member, state,
    lease_expires_at, due_at, detail)"""
# The picked rows stay locked until the statement commits; SKIP LOCKED leaves rows another hub
# (or an ack in flight) holds to that hub. `tokens` is at least `limit` fresh tokens of 16 hex
# digits each, in one text: as a list of texts they took ~5% of the hub's CPU in the PostgreSQL
# benchmark (py-spy), most claims leasing one delivery of a `limit` of hundreds.
CLAIM: Final = f"""
WITH picked AS MATERIALIZED (
    SELECT notification_id FROM deliveries
    WHERE group_name = %(group)s AND state = 'pending' AND available_at <= %(now)s
        AND {_TYPE_FILTER}
    ORDER BY notification_id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), tokened AS (
    SELECT notification_id,
        substr(%(tokens)s::text, (row_number() OVER (ORDER BY notification_id))::int * 16 - 15,
            16) AS token
    FROM picked
), leased AS (
    UPDATE deliveries AS d
    SET state = 'leased', attempts = d.attempts + 1, lease_token = p.token,
        lease_member = %(member)s, lease_expires_at = %(expires)s
    FROM tokened AS p, notifications AS n
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
LOCK_DELIVERY: Final = """
SELECT state, lease_token, attempts, lease_member FROM deliveries
WHERE group_name = %(group)s AND notification_id = %(id)s
FOR UPDATE"""


# ACK_MANY, REJECT and EXTEND lock the delivery as LOCK_DELIVERY does (the newest version of its
# row) and change it only while it is leased under the token given. They answer LOCK_DELIVERY's row
# (none: no such delivery) and the number of events queued.
_HELD: Final = "t.state = 'leased' AND t.lease_token = %(token)s"
# Acks of several deliveries at once (postgres.py's `_Batches`): `asked` holds one row per ack,
# no delivery twice; the rows are locked in key order, so two such statements never deadlock.
# Each row answered starts with the ack's ordinal (from 1).
ACK_MANY: Final = f"""
WITH asked AS (
    SELECT * FROM unnest(%(groups)b::text[], %(ids)b::bigint[], %(tokens)b::text[],
        %(nows)b::float8[], %(events)b::text[]) WITH ORDINALITY
        AS a(group_name, notification_id, token, now, event, ord)
), t AS MATERIALIZED (
    SELECT a.ord, d.state, d.lease_token, d.attempts, d.lease_member
    FROM deliveries AS d
    JOIN asked AS a ON d.group_name = a.group_name AND d.notification_id = a.notification_id
    WHERE d.notification_id = ANY(%(ids)b::bigint[])
    ORDER BY d.group_name, d.notification_id
    FOR UPDATE OF d
), acked AS (
    UPDATE deliveries AS d SET state = 'acked', acked_at = a.now, lease_expires_at = NULL
    FROM t JOIN asked AS a ON a.ord = t.ord
    WHERE d.group_name = a.group_name AND d.notification_id = a.notification_id
        AND d.notification_id = ANY(%(ids)b::bigint[])
        AND t.state = 'leased' AND t.lease_token = a.token
    RETURNING d.notification_id, d.group_name, d.attempts, d.lease_member, a.now, a.event
), recorded AS ({_HISTORY_COLUMNS}
    SELECT notification_id, group_name, 'acked', now, attempts, coalesce(lease_member, ''),
        'acked', NULL, NULL, ''
    FROM acked
), announced AS (
    SELECT pg_notify(%(channel)s, event) FROM acked
)
SELECT t.*, (SELECT count(*) FROM announced) FROM t"""
REJECT: Final = f"""
WITH t AS MATERIALIZED ({LOCK_DELIVERY}
), rejected AS (
    UPDATE deliveries AS d
    SET state = 'dead', dead_at = %(now)s, dead_reason = %(reason)s, lease_token = NULL,
        lease_expires_at = NULL
    FROM t
    WHERE d.group_name = %(group)s AND d.notification_id = %(id)s AND {_HELD}
    RETURNING d.notification_id, d.group_name, d.attempts, d.lease_member
), recorded AS ({_HISTORY_COLUMNS}
    SELECT notification_id, group_name, 'rejected', %(now)s, attempts,
        coalesce(lease_member, ''), 'dead', NULL, NULL, %(reason)s
    FROM rejected
), announced AS (
    SELECT pg_notify(%(channel)s, %(event)s) FROM rejected
)
SELECT t.*, (SELECT count(*) FROM announced) FROM t"""
EXTEND: Final = f"""
WITH t AS MATERIALIZED ({LOCK_DELIVERY}
), extended AS (
    UPDATE deliveries AS d SET lease_expires_at = %(expires)s
    FROM t
    WHERE d.group_name = %(group)s AND d.notification_id = %(id)s AND {_HELD}
)
SELECT t.*, 0 FROM t"""
# Rows stay locked by these until the transaction ends; SKIP LOCKED leaves rows another hub (or an
# ack in flight) holds to that hub.
LOCK_MEMBER_LEASES: Final = """
SELECT group_name, notification_id, attempts, lease_member FROM deliveries
WHERE group_name = %(group)s AND state = 'leased' AND lease_member = %(member)s
FOR UPDATE SKIP LOCKED"""
LOCK_EXPIRED_LEASES: Final = """
SELECT group_name, notification_id, attempts, lease_member FROM deliveries
WHERE state = 'leased' AND lease_expires_at <= %(now)s
FOR UPDATE SKIP LOCKED"""
REQUEUE: Final = f"""
WITH requeued AS (
    UPDATE deliveries AS d
    SET state = r.state, available_at = r.available_at, dead_reason = r.dead_reason,
        dead_at = CASE WHEN r.state = 'dead' THEN %(now)s END,
        lease_token = NULL, lease_member = NULL, lease_expires_at = NULL
    FROM unnest(%(groups)s::text[], %(ids)s::bigint[], %(states)s::text[],
        %(available)s::float8[], %(reasons)s::text[], %(members)s::text[])
        AS r(group_name, notification_id, state, available_at, dead_reason, member)
    WHERE d.group_name = r.group_name AND d.notification_id = r.notification_id
        AND d.notification_id = ANY(%(ids)s::bigint[])
    RETURNING d.notification_id, d.group_name, d.attempts, r.member, d.state, d.available_at,
        d.dead_reason
){_HISTORY_COLUMNS}
SELECT notification_id, group_name, %(kind)s, %(now)s, attempts, coalesce(member, ''), state,
    NULL, CASE WHEN state = 'pending' THEN available_at END, coalesce(dead_reason, '')
FROM requeued"""
NEXT_DUE: Final = f"""
SELECT min(available_at) FROM deliveries
WHERE group_name = %(group)s AND state = 'pending' AND {_TYPE_FILTER}"""
# Dead letters are kept for the operator: only notifications whose deliveries are all acked go.
PURGE_SETTLED: Final = """
WITH purged AS (
    DELETE FROM notifications WHERE id = ANY(ARRAY(
        SELECT n.id FROM notifications AS n
        WHERE n.last_received_at < %(before)s
            AND NOT EXISTS (SELECT 1 FROM deliveries AS d
                            WHERE d.notification_id = n.id AND d.state <> 'acked')
        ORDER BY n.id
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED))
    RETURNING id
), history AS (
    DELETE FROM delivery_history WHERE notification_id = ANY(ARRAY(SELECT id FROM purged))
)
SELECT count(*) FROM purged"""
NOTIFY: Final = "SELECT pg_notify(%(channel)s, p) FROM unnest(%(payloads)s::text[]) AS p"
