"""Talking to a real hub at the byte level, and a hub on either store for one test.

code, details, reply = raw_unary(address, "Publish", b"\\xff\\xff")      # raw request bytes
code, details, replies = raw_stream(address, [b"...", b"..."])          # Subscribe, raw
async with hub_on(backend, tmp_path, groups=...) as hub:                # "sqlite"/"postgres"
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from paynotify.v1 import hub_pb2, notification_pb2
from tests.hubkit import RunningHub, running_hub
from tests.pg import postgres_dsn_or_skip, schema_url

__all__ = ["SERVICE", "hub_on", "publish_request", "raw_stream", "raw_unary", "stored"]

SERVICE = "/paynotify.v1.NotificationHub/"

logger = logging.getLogger(__name__)


def publish_request(
    notification: notification_pb2.PaymentNotification, request_id: str
) -> hub_pb2.PublishRequest:
    """A PublishRequest as the bridge sends it: the notification and a receipt of now."""
    received = Timestamp()
    received.GetCurrentTime()
    receipt = hub_pb2.Receipt(
        received_at=received,
        client_id="SANDBOX_5Y3A2N2YEB3002022",
        request_time="2020-01-01T12:01:02+08:30",
        request_id=request_id,
    )
    return hub_pb2.PublishRequest(notification=notification, receipt=receipt)


def _identity(data: bytes) -> bytes:
    return data


def raw_unary(
    target: str | grpc.Channel, method: str, data: bytes, timeout: float = 5.0
) -> tuple[grpc.StatusCode, str, bytes | None]:
    """Call `method` with `data` as the request's bytes; (status, details, reply bytes).

    `target` is an address (a channel just for this call) or an open channel to reuse.
    """
    with _channel(target) as channel:
        call = channel.unary_unary(
            SERVICE + method, request_serializer=_identity, response_deserializer=_identity
        )
        try:
            reply = call(data, timeout=timeout)
        except grpc.RpcError as exc:
            return exc.code(), exc.details() or "", None
        return grpc.StatusCode.OK, "", reply


@contextlib.contextmanager
def _channel(target: str | grpc.Channel) -> Iterator[grpc.Channel]:
    if isinstance(target, str):
        with grpc.insecure_channel(target) as channel:
            yield channel
    else:
        yield target


def raw_stream(
    target: str | grpc.Channel, messages: Iterable[bytes], timeout: float = 5.0
) -> tuple[grpc.StatusCode, str, list[bytes]]:
    """Subscribe with `messages` as raw request bytes, then half-close; every reply's bytes."""
    with _channel(target) as channel:
        call = channel.stream_stream(
            SERVICE + "Subscribe", request_serializer=_identity, response_deserializer=_identity
        )
        replies: list[bytes] = []
        try:
            for reply in call(iter(list(messages)), timeout=timeout):
                replies.append(reply)
        except grpc.RpcError as exc:
            return exc.code(), exc.details() or "", replies
        return grpc.StatusCode.OK, "", replies


def stored(hub: Any) -> tuple[int, int]:
    """(notifications, receipts) in a hub's store (SQLite file or PostgreSQL schema)."""
    url: str = hub.config.store_url
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db:
            return (
                int(db.execute("SELECT count(*) FROM notifications").fetchone()[0]),
                int(db.execute("SELECT count(*) FROM receipts").fetchone()[0]),
            )
    import psycopg

    with psycopg.connect(url, connect_timeout=5) as conn:
        n = conn.execute("SELECT count(*) FROM notifications").fetchone()
        r = conn.execute("SELECT count(*) FROM receipts").fetchone()
    assert n is not None and r is not None
    return int(n[0]), int(r[0])


@contextlib.asynccontextmanager
async def hub_on(backend: str, tmp_path: Path, **options: Any) -> AsyncIterator[RunningHub]:
    """`running_hub` on a fresh SQLite file, or on a fresh schema of the test PostgreSQL
    (skipped with the reason when PAYNOTIFY_TEST_POSTGRES_DSN is unset or unreachable)."""
    if backend == "sqlite":
        async with running_hub(tmp_path, **options) as hub:
            yield hub
        return
    dsn = postgres_dsn_or_skip()
    schema = f"fuzz_{uuid.uuid4().hex[:12]}"
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        async with running_hub(tmp_path, store_url=schema_url(dsn, schema), **options) as hub:
            yield hub
    finally:
        if not os.environ.get("PAYNOTIFY_TEST_KEEP_SCHEMAS"):
            _drop_schema(dsn, schema)


def _drop_schema(dsn: str, schema: str) -> None:
    """Best effort and bounded: a lock still held elsewhere leaves the schema, not a hung test."""
    import psycopg

    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
            conn.execute("SET lock_timeout = '10s'")
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    except psycopg.Error as exc:
        logger.warning("schema %s left behind: %s", schema, exc)
