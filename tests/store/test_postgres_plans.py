"""The hot statements of the PostgreSQL store stay index lookups whatever the tables held when
their plan was made.

psycopg prepares a statement after a few runs on a connection, and PostgreSQL then keeps one
generic plan for it. A hub starts on empty tables, so that plan is often made when the planner
thinks a table has a few rows: a statement whose plan then scans a whole table costs more with
every notification stored, until an ANALYZE happens to replace the plan. `force_generic_plan` on
freshly created, never analyzed tables makes exactly that plan here, and each hot statement's plan
must reach the big tables through an index only.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import psycopg
import pytest

from paynotify_hub.store import postgres_sql as q
from paynotify_hub.store.postgres import PostgresStore
from tests.pg import fresh_schema_url

pytestmark = pytest.mark.postgres

# Tables that grow with every notification: a plan must never read one of them whole.
GROWING = ("notifications", "receipts", "deliveries", "delivery_history")
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


@pytest.fixture
def fresh_url() -> Iterator[str]:
    """A schema whose tables exist (migrated by a store) and were never analyzed."""
    with fresh_schema_url() as url:
        yield url


async def _migrate(url: str) -> None:
    store = PostgresStore(url)
    await store.open()
    await store.close()


def _generic_plan(conn: psycopg.Connection, name: str, text: str) -> str:
    positional, names = _positional(text)
    types = ", ".join(TYPES.get(n, "unknown") for n in names)
    conn.execute(f"PREPARE {name.lower()} ({types}) AS {positional}")
    # A generic plan does not depend on the values: NULLs stand for all of them.
    nulls = ", ".join(["NULL"] * len(names))
    call = f"EXECUTE {name.lower()}({nulls})"
    return "\n".join(str(row[0]) for row in conn.execute(f"EXPLAIN {call}").fetchall())


@pytest.mark.parametrize("name", sorted(HOT))
async def test_generic_plan_made_on_empty_tables_reads_no_growing_table_whole(
    fresh_url: str, name: str
) -> None:
    await _migrate(fresh_url)
    with psycopg.connect(fresh_url, autocommit=True) as conn:
        for table in GROWING:
            conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
        conn.execute("SET plan_cache_mode = force_generic_plan")
        plan = _generic_plan(conn, name, HOT[name])
    scans = [t for t in GROWING if re.search(rf"Seq Scan on {t}\b", plan)]
    assert not scans, f"{name}'s generic plan reads {scans} whole:\n{plan}"
    assert "hashed SubPlan" not in plan, f"{name}'s generic plan hashes a subquery:\n{plan}"
