"""The hot statements of the PostgreSQL store stay index lookups whatever the tables held when
their plan was made.

psycopg prepares a statement after a few runs on a connection, and PostgreSQL then keeps one
generic plan for it. A hub starts on empty tables, so that plan is often made while a table is
young: empty, a few pages never analyzed, or analyzed by autovacuum while it held a few dozen rows.
There, reading the table whole costs the planner about what the index costs (on an analyzed young
table, less), and the plan is kept as the table grows, until an ANALYZE replaces it: a statement
then costs more with every notification stored. Each hot statement must have an index path, and
the hub's sessions plan with sequential scans off (`postgres_sql.DISABLE_SEQSCAN`) so that the
path is taken: `force_generic_plan` makes exactly the kept plan here, in each of those states.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from paynotify_hub.domain import ActionStatus, GroupSpec
from paynotify_hub.store import postgres_sql as q
from paynotify_hub.store.postgres import PostgresStore
from tests.pg import fresh_schema_url
from tests.store.test_postgres_only import T0, notification, receipt

pytestmark = pytest.mark.postgres

# Tables that grow with every notification: a plan must never read one of them whole.
GROWING = ("notifications", "receipts", "deliveries", "delivery_history")
GROUPS = [GroupSpec("ledger"), GroupSpec("mailer")]
LEASE_S = 30.0
# Everything the hub runs for each notification or each action on one.
HOT = {
    "APPEND_MANY": q.APPEND_MANY,
    "GROUP_STATES": q.GROUP_STATES,
    "CLAIM": q.CLAIM,
    "ACK_MANY": q.ACK_MANY,
    "REJECT": q.REJECT,
    "EXTEND": q.EXTEND,
    "LOCK_DELIVERY": q.LOCK_DELIVERY,
    "LOCK_MEMBER_LEASES": q.LOCK_MEMBER_LEASES,
    "REQUEUE": q.REQUEUE,
    "NEXT_DUE": q.NEXT_DUE,
    # Periodic, every few seconds for the life of the hub.
    "LOCK_EXPIRED_LEASES": q.LOCK_EXPIRED_LEASES,
    "PURGE_SETTLED": q.PURGE_SETTLED,
}
PLACEHOLDER = re.compile(r"%\((\w+)\)[sb]")
# Parameters whose type no cast in the text names (psycopg sends these typed, as Python floats).
TYPES = {
    "now": "float8",
    "expires": "float8",
    "received_at": "float8",
    "before": "float8",
    "limit": "int8",
}


def _positional(text: str) -> tuple[str, list[str]]:
    """psycopg's %(name)s and %(name)b placeholders as PREPARE's $n; returns the text and the names
    in order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return PLACEHOLDER.sub(number, text), names


def _generic_plan(conn: psycopg.Connection, name: str, text: str) -> str:
    positional, names = _positional(text)
    types = ", ".join(TYPES.get(n, "unknown") for n in names)
    conn.execute(f"PREPARE {name.lower()} ({types}) AS {positional}")
    # A generic plan does not depend on the values: NULLs stand for all of them.
    nulls = ", ".join(["NULL"] * len(names))
    call = f"EXECUTE {name.lower()}({nulls})"
    return "\n".join(str(row[0]) for row in conn.execute(f"EXPLAIN {call}").fetchall())


async def _migrate(url: str) -> None:
    store = PostgresStore(url)
    await store.open()
    await store.close()


async def _fill(url: str, count: int) -> None:
    """`count` notifications for two groups, half of one group's acked: a table a few pages big."""
    store = PostgresStore(url)
    await store.open()
    try:
        for n in range(count):
            await store.append(notification(n), receipt(), GROUPS)
        leases = await store.claim("ledger", "m1", count // 2, LEASE_S, frozenset(), T0)
        await store.ack_many("ledger", [(x.notification_id, x.token) for x in leases], T0)
    finally:
        await store.close()


# What a new hub's tables look like when its statements are first planned.
STATES = {
    "empty": (0, False),
    "young": (40, False),
    # autovacuum analyzes a table once 50 rows changed, then not again for a minute or so
    "analyzed young": (40, True),
}


@pytest.fixture(scope="module", params=sorted(STATES))
def young_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A schema in one of STATES, autovacuum off on it so that the state stays as made."""
    count, analyzed = STATES[request.param]
    with fresh_schema_url() as url:
        asyncio.run(_migrate(url))
        with psycopg.connect(url, autocommit=True) as conn:
            for table in GROWING:
                conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
        asyncio.run(_fill(url, count))
        if analyzed:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("ANALYZE")
        yield url


@pytest.mark.parametrize("name", sorted(HOT))
def test_generic_plan_made_on_young_tables_reads_no_growing_table_whole(
    young_url: str, name: str
) -> None:
    with psycopg.connect(young_url, autocommit=True) as conn:
        conn.execute(q.DISABLE_SEQSCAN)  # as every store session
        conn.execute("SET plan_cache_mode = force_generic_plan")
        plan = _generic_plan(conn, name, HOT[name])
    scans = [t for t in GROWING if re.search(rf"Seq Scan on {t}\b", plan)]
    assert not scans, f"{name}'s generic plan reads {scans} whole:\n{plan}"
    assert "hashed SubPlan" not in plan, f"{name}'s generic plan hashes a subquery:\n{plan}"


def _scans(url: str) -> dict[str, tuple[int, int]]:
    """(sequential scans, index scans) so far of each growing table of the URL's schema."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT relname, seq_scan, coalesce(idx_scan, 0) FROM pg_stat_user_tables"
            " WHERE schemaname = current_schema() AND relname = ANY(%s)",
            [list(GROWING)],
        ).fetchall()
    return {name: (seq, idx) for name, seq, idx in rows}


def _wait_for_sessions_to_end(url: str) -> None:
    """Until no session named as the URL names its own is left: a session's table statistics
    reach the others when it ends (or idles for a second)."""
    name = conninfo_to_dict(url)["application_name"]
    deadline = time.monotonic() + 15
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            left = conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE application_name = %s AND pid <> pg_backend_pid()",
                [name],
            ).fetchone()
            if left is not None and left[0] == 0:
                return
            assert time.monotonic() < deadline, f"sessions named {name} did not end in 15 s"
            time.sleep(0.05)


async def test_the_store_reads_no_growing_table_whole_after_autovacuum_saw_it_young() -> None:
    """The sessions of a real store, on tables analyzed while young (where every hot statement's
    plan would read them whole), append, claim and ack through indexes only."""
    with fresh_schema_url() as schema_url:
        # The store's sessions, and only they, named apart from any other test's.
        url = make_conninfo(schema_url, application_name=f"plans-{uuid.uuid4().hex[:8]}")
        await _migrate(url)
        with psycopg.connect(schema_url, autocommit=True) as conn:
            for table in GROWING:
                conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
        await _fill(url, 10)
        with psycopg.connect(schema_url, autocommit=True) as conn:
            conn.execute("ANALYZE")
        _wait_for_sessions_to_end(url)
        before = _scans(schema_url)
        store = PostgresStore(url, max_size=2)
        await store.open()
        try:
            for r in range(30):  # psycopg prepares a statement from its 6th run on a connection
                ns = (100 + 2 * r, 101 + 2 * r)
                await asyncio.gather(
                    *(store.append(notification(n), receipt(), GROUPS) for n in ns)
                )
                for group in ("ledger", "mailer"):
                    leases = await store.claim(group, "m1", 10, LEASE_S, frozenset(), T0)
                    assert len(leases) >= 2  # the two appended, and what _fill left
                    acks = [(x.notification_id, x.token) for x in leases]
                    assert set(await store.ack_many(group, acks, T0)) == {ActionStatus.OK}
        finally:
            await store.close()
        _wait_for_sessions_to_end(url)
        after = _scans(schema_url)
    for table in ("notifications", "deliveries"):
        seq = after[table][0] - before[table][0]
        idx = after[table][1] - before[table][1]
        assert idx > 0, f"no index scan of {table} counted: the statistics did not arrive"
        assert seq == 0, f"the store read {table} whole {seq} times ({idx} index scans)"
