"""The store contract suite runs against every backend.

SQLite: a fresh file per test. PostgreSQL: a fresh schema per test in the database named by
PAYNOTIFY_TEST_POSTGRES_DSN (skipped with the reason when unset or unreachable; .ci/run sets it and
makes it mandatory with PAYNOTIFY_REQUIRE_POSTGRES=1).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from paynotify_hub.store import Store, open_store
from tests.pg import postgres_dsn_or_skip, schema_url


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
        yield_store = open_store(url)
        await yield_store.open()
        try:
            yield yield_store
        finally:
            await yield_store.close()
        return
    dsn = postgres_dsn_or_skip()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    pg_store = open_store(schema_url(dsn, schema))
    await pg_store.open()
    try:
        yield pg_store
    finally:
        await pg_store.close()
        if not os.environ.get("PAYNOTIFY_TEST_KEEP_SCHEMAS"):
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
