"""PostgreSQL for the multi-node tests: a fresh schema per test, and restarting the local cluster.

The cluster and schema handling is the fault-injection suite's (chaos/pg.py); this adds reading
the hubs' tables and keeping schemas for a post-mortem.

schema = PgSchema.create(dsn)          # CREATE SCHEMA; schema.url is the hubs' --store
schema.rows("SELECT ...")              # read the hubs' tables
schema.drop()

restart_cluster()                      # pg_ctlcluster ... main restart
wait_until_ready(60)                   # pg_isready loop
"""

from __future__ import annotations

import os
from typing import Any

import psycopg

from chaos.pg import CONNECT_TIMEOUT, Schema, cluster_version, restart_cluster
from chaos.pg import ensure_up as wait_until_ready

__all__ = ["ENV_RESTART", "PgSchema", "cluster_version", "restart_cluster", "wait_until_ready"]

ENV_RESTART = "PAYNOTIFY_TEST_PG_RESTART"
KEEP_SCHEMAS = "PAYNOTIFY_TEST_KEEP_SCHEMAS"


class PgSchema(Schema):
    """One schema of the test database: hubs given `url` keep their tables there."""

    @classmethod
    def create(cls, dsn: str, prefix: str = "mn") -> PgSchema:
        schema = super().create(dsn, prefix)
        return cls(schema.dsn, schema.name)

    def rows(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT) as conn:
            return conn.execute(query, params).fetchall()

    def drop(self) -> None:
        if not os.environ.get(KEEP_SCHEMAS):
            super().drop()
