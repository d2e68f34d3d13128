"""PostgreSQL for the multi-hub run: a fresh schema, restarting the local cluster, staying up.

schema = Schema.create(dsn)       # CREATE SCHEMA chaos_<hex>; schema.url is the hubs' --store
restart_cluster()                 # pg_ctlcluster --skip-systemctl-redirect VERSION main restart
ensure_up(60)                     # pg_isready loop; starts the cluster once if it stays down
schema.drop()
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg

__all__ = ["Schema", "cluster_version", "ensure_up", "is_ready", "restart_cluster", "schema_url"]

CONNECT_TIMEOUT = 5
CLUSTER = "main"


def schema_url(dsn: str, schema: str) -> str:
    """The DSN with `search_path` set to `schema`: the hubs keep their tables there."""
    sep = "&" if "?" in dsn else "?"
    return f"{dsn}{sep}options={quote(f'-csearch_path={schema}')}"


@dataclass(frozen=True)
class Schema:
    dsn: str
    name: str

    @classmethod
    def create(cls, dsn: str, prefix: str = "chaos") -> Schema:
        schema = cls(dsn, f"{prefix}_{uuid.uuid4().hex[:12]}")
        with psycopg.connect(dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT) as conn:
            conn.execute(f'CREATE SCHEMA "{schema.name}"')
        return schema

    @property
    def url(self) -> str:
        return schema_url(self.dsn, self.name)

    def drop(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT) as conn:
            conn.execute("SET lock_timeout = '20s'")
            conn.execute(f'DROP SCHEMA IF EXISTS "{self.name}" CASCADE')


def cluster_version() -> str:
    """The newest version folder under /etc/postgresql with a cluster named `main`."""
    root = Path("/etc/postgresql")
    versions = sorted(
        (p.name for p in root.iterdir() if (p / CLUSTER).is_dir()) if root.is_dir() else (),
        key=lambda v: [int(x) if x.isdigit() else 0 for x in v.split(".")],
    )
    if not versions:
        raise RuntimeError(f"no PostgreSQL cluster {CLUSTER!r} under /etc/postgresql")
    return versions[-1]


def _ctl(action: str, timeout: float) -> subprocess.CompletedProcess[str]:
    args = ["pg_ctlcluster", "--skip-systemctl-redirect", cluster_version(), CLUSTER, action]
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


def restart_cluster(timeout: float = 120.0) -> float:
    """Restart the local cluster as an operator would; the seconds it took."""
    started = time.monotonic()
    done = _ctl("restart", timeout)
    if done.returncode != 0:
        raise RuntimeError(f"pg_ctlcluster restart failed ({done.returncode}): {done.stderr}")
    return time.monotonic() - started


def is_ready(host: str = "127.0.0.1", port: int = 5432) -> bool:
    if shutil.which("pg_isready"):
        args = ["pg_isready", "-q", "-h", host, "-p", str(port)]
        return subprocess.run(args, timeout=10, check=False).returncode == 0
    try:
        with psycopg.connect(host=host, port=port, user="postgres", connect_timeout=2):
            return True
    except psycopg.Error:
        return False


def ensure_up(timeout: float = 60.0) -> bool:
    """Poll until PostgreSQL accepts connections; start the cluster once if it stays down."""
    deadline = time.monotonic() + timeout
    tried_start = False
    while time.monotonic() < deadline:
        if is_ready():
            return True
        if not tried_start and time.monotonic() > deadline - timeout * 0.75:
            tried_start = True
            _ctl("start", 60.0)
        time.sleep(0.5)
    return is_ready()
