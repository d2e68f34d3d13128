"""Multi-node tests: 2 hub processes on one PostgreSQL schema, bridges as processes, nginx.

Everything is real and on 127.0.0.1: `paynotify hub` and `paynotify bridge` processes, the
subscriber library, signed HTTP requests from the simulator's code, nginx with the shipped config.
PostgreSQL comes from PAYNOTIFY_TEST_POSTGRES_DSN (skipped with the reason when absent); each test
gets a fresh schema, dropped afterwards.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from paynotify_bridge.devkeys import ensure_dev_keys
from tests.multinode.nodes import Keys
from tests.multinode.pgcluster import PgSchema
from tests.pg import postgres_dsn_or_skip


@pytest.fixture
def pg() -> Iterator[PgSchema]:
    """A fresh schema of the test database (hubs: `--store pg.url`)."""
    schema = PgSchema.create(postgres_dsn_or_skip())
    try:
        yield schema
    finally:
        schema.drop()


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    """A key pair playing Alipay's (one per session: RSA key generation is slow)."""
    dev = ensure_dev_keys(tmp_path_factory.mktemp("alipay-keys"))
    return Keys.load(dev.private_path, dev.public_path)


@pytest.fixture(autouse=True)
def quiet_reconnects() -> Iterator[None]:
    """Subscribers of a killed hub retry it every few tenths of a second: noise in the logs."""
    streaming = logging.getLogger("paynotify_client.streaming")
    level = streaming.level
    streaming.setLevel(logging.ERROR)
    try:
        yield
    finally:
        streaming.setLevel(level)
