"""PostgreSQL for the multi-node tests: a fresh schema per test, and restarting the local cluster.

schema = PgSchema.create(dsn)          # CREATE SCHEMA; schema.url is the hubs' --store
schema.rows("SELECT ...")              # read the hubs' tables
schema.drop()

restart_cluster()                      # pg_ctlcluster ... main restart
wait_until_ready(60)                   # pg_isready loop
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from tests.pg import schema_url

__all__ = ["ENV_RESTART", "PgSchema", "cluster_version", "restart_cluster", "wait_until_ready"]

ENV_RESTART = "PAYNOTIFY_TEST_PG_RESTART"
KEEP_SCHEMAS = "PAYNOTIFY_TEST_KEEP_SCHEMAS"
CONNECT_TIMEOUT = 5


@dataclass(frozen=True)
class PgSchema:
    """One schema of the test database: hubs given `url` keep their tables there."""

    dsn: str
    name: str

    @classmethod
    def create(cls, dsn: str, prefix: str = "mn") -> PgSchema:
        schema = cls(dsn, f"{prefix}_{uuid.uuid4().hex[:12]}")
        with psycopg.connect(dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT) as conn:
            conn.execute(f'CREATE SCHEMA "{schema.name}"')
        return schema

    @property
    def url(self) -> str:
        return schema_url(self.dsn, self.name)

    def rows(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT) as conn:
            return conn.execute(query, params).fetchall()

    def drop(self) -> None:
        if os.environ.get(KEEP_SCHEMAS):
            return
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT) as conn:
            conn.execute("SET lock_timeout = '20s'")
            conn.execute(f'DROP SCHEMA IF EXISTS "{self.name}" CASCADE')


def cluster_version() -> str:
    """The version folder of the local cluster named `main` (as `ls /etc/postgresql` shows)."""
    versions = sorted(
        (p.name for p in Path("/etc/postgresql").iterdir() if (p / "main").is_dir()),
        key=lambda v: [int(x) if x.isdigit() else 0 for x in v.split(".")],
    )
    if not versions:
        raise RuntimeError("no PostgreSQL cluster 'main' under /etc/postgresql")
    return versions[-1]


def restart_cluster(timeout: float = 120.0) -> float:
    """Restart the local cluster the way an operator would; returns the seconds it took."""
    started = time.monotonic()
    args = ["pg_ctlcluster", "--skip-systemctl-redirect", cluster_version(), "main", "restart"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return time.monotonic() - started


def is_ready(host: str = "127.0.0.1", port: int = 5432) -> bool:
    if shutil.which("pg_isready"):
        args = ["pg_isready", "-q", "-h", host, "-p", str(port)]
        return subprocess.run(args, timeout=10).returncode == 0
    try:
        with psycopg.connect(host=host, port=port, user="postgres", connect_timeout=2):
            return True
    except psycopg.Error:
        return False


def wait_until_ready(timeout: float = 60.0) -> bool:
    """Poll until PostgreSQL accepts connections; start the cluster once if it stays down."""
    deadline = time.monotonic() + timeout
    tried_start = False
    while time.monotonic() < deadline:
        if is_ready():
            return True
        if not tried_start and time.monotonic() > deadline - timeout / 2:
            tried_start = True
            args = [
                "pg_ctlcluster",
                "--skip-systemctl-redirect",
                cluster_version(),
                "main",
                "start",
            ]
            subprocess.run(args, capture_output=True, timeout=60)
        time.sleep(0.5)
    return is_ready()
