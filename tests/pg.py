"""PostgreSQL for tests: the DSN comes from PAYNOTIFY_TEST_POSTGRES_DSN."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import pytest

ENV_DSN = "PAYNOTIFY_TEST_POSTGRES_DSN"
ENV_REQUIRE = "PAYNOTIFY_REQUIRE_POSTGRES"


def postgres_dsn_or_skip() -> str:
    """The test DSN, or a skip that says why; a failure instead when PostgreSQL is mandatory."""
    dsn = os.environ.get(ENV_DSN, "")
    reason = ""
    if not dsn:
        reason = f"{ENV_DSN} is not set (e.g. postgresql://postgres@127.0.0.1:5432/test)"
    else:
        try:
            import psycopg

            with psycopg.connect(dsn, connect_timeout=3):
                pass
        except Exception as exc:  # any driver error means: not reachable from here
            reason = f"PostgreSQL at {ENV_DSN} is not reachable: {type(exc).__name__}: {exc}"
    if reason:
        if os.environ.get(ENV_REQUIRE) == "1":
            pytest.fail(f"PostgreSQL is mandatory here ({ENV_REQUIRE}=1) but {reason}")
        pytest.skip(reason)
    return dsn


def schema_url(dsn: str, schema: str) -> str:
    """The DSN with `search_path` set to `schema`, so a test gets its own tables."""
    sep = "&" if "?" in dsn else "?"
    return f"{dsn}{sep}options={quote(f'-csearch_path={schema}')}"


@contextlib.contextmanager
def fresh_schema_url() -> Iterator[str]:
    """A new schema in the test database (skipped as `postgres_dsn_or_skip` says), as the URL
    that selects it; dropped after."""
    import psycopg

    dsn = postgres_dsn_or_skip()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield schema_url(dsn, schema)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
