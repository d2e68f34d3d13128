"""PostgreSQL-only behaviour: several hubs on one schema, cross-hub events, migrations, outages.

The shared semantics are in test_contract.py; here two `PostgresStore`s stand for two hubs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, cast

import psycopg
import pytest

from paynotify_hub.domain import (
    ActionStatus,
    DeliveryState,
    GroupSpec,
    NewNotification,
    ReceiptRecord,
    RetryPolicy,
    identity_of,
)
from paynotify_hub.store import StoreError, StoreEvent, StoreUnavailable
from paynotify_hub.store.postgres import PostgresStore
from tests.pg import postgres_dsn_or_skip, schema_url

pytestmark = pytest.mark.postgres

GROUPS = [GroupSpec("ledger"), GroupSpec("mailer", required=False)]
ENV_RESTART = "PAYNOTIFY_TEST_PG_RESTART"
T0 = 1_700_000_000.0


def notification(n: int) -> NewNotification:
    payment_id = f"pay-{n:05d}"
    return NewNotification(
        identity=identity_of("PAYMENT_RESULT", payment_id, "", "SUCCESS"),
        notify_type="PAYMENT_RESULT",
        payment_request_id=f"req-{n:05d}",
        payment_id=payment_id,
        result_status="SUCCESS",
        payload=b"\x00payload\xff" + str(n).encode(),
    )


def receipt(at: float = T0) -> ReceiptRecord:
    return ReceiptRecord(received_at=at, client_id="client", request_time="t", request_id="r")


@pytest.fixture
def dsn() -> str:
    return postgres_dsn_or_skip()


def _fresh_schema(dsn: str) -> Iterator[str]:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield schema
    finally:
        if not os.environ.get("PAYNOTIFY_TEST_KEEP_SCHEMAS"):
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def schema(dsn: str) -> Iterator[str]:
    yield from _fresh_schema(dsn)


@pytest.fixture
def other_schema(dsn: str) -> Iterator[str]:
    yield from _fresh_schema(dsn)


@pytest.fixture
async def hubs(dsn: str, schema: str) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    """Two stores on one schema: two hubs."""
    a = PostgresStore(schema_url(dsn, schema), max_size=6)
    b = PostgresStore(schema_url(dsn, schema), max_size=6)
    await a.open()
    await b.open()
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def wait_for(predicate: Callable[[], bool], within: float) -> bool:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def test_concurrent_append_of_one_identity_creates_it_once(
    hubs: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = hubs
    for n in range(20):
        results = await asyncio.gather(
            *(hub.append(notification(n), receipt(), GROUPS) for hub in (a, b, a, b))
        )
        assert sum(r.created for r in results) == 1
        assert len({r.notification_id for r in results}) == 1
        assert sorted(r.send_count for r in results) == [1, 2, 3, 4]
        assert all(set(r.groups) == {"ledger", "mailer"} for r in results)


async def test_concurrent_claims_by_two_hubs_never_share_a_delivery(
    hubs: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = hubs
    for n in range(200):
        await a.append(notification(n), receipt(), GROUPS)

    async def claimer(store: PostgresStore, member: str) -> list[int]:
        got: list[int] = []
        while leases := await store.claim("ledger", member, 7, 30.0, frozenset(), T0 + 1):
            got.extend(lease.notification_id for lease in leases)
        return got

    claims = [claimer(hub, f"{name}-{i}") for name, hub in (("a", a), ("b", b)) for i in range(4)]
    batches = await asyncio.gather(*claims)
    every = [nid for batch in batches for nid in batch]
    assert len(every) == 200
    assert len(set(every)) == 200
    assert sum(1 for batch in batches if batch) > 1  # the claimers did compete


async def test_listener_hears_appends_and_acks_of_the_other_hub_only(
    hubs: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = hubs
    heard_by_a: list[StoreEvent] = []
    heard_by_b: list[StoreEvent] = []
    await a.listen(heard_by_a.append)
    await b.listen(heard_by_b.append)

    appended = await a.append(notification(1), receipt(), GROUPS)
    assert await wait_for(
        lambda: StoreEvent(groups=frozenset({"ledger", "mailer"})) in heard_by_b, 5
    )

    (lease,) = await a.claim("ledger", "m", 1, 30.0, frozenset(), T0 + 1)
    await a.ack("ledger", lease.notification_id, lease.token, T0 + 2)
    settled = StoreEvent(notification_id=appended.notification_id)
    assert await wait_for(lambda: settled in heard_by_b, 5)
    assert heard_by_a == []  # a hub's own changes are not news to it


def watch_batches(batches: Any) -> list[int]:
    """The sizes of the batches a store's `_Batches` runs from now on (its real statement)."""
    sizes: list[int] = []
    run = batches._run

    async def counted(items: Any) -> Any:
        sizes.append(len(items))
        return await run(items)

    batches._run = counted
    return sizes


async def test_appends_that_arrive_together_share_statements_each_with_its_own_answer(
    hubs: tuple[PostgresStore, PostgresStore], schema: str, dsn: str
) -> None:
    a, b = hubs
    heard_by_b: list[StoreEvent] = []
    await b.listen(heard_by_b.append)
    groups = [*GROUPS, GroupSpec("refunds", notify_types=frozenset({"REFUND_RESULT"}))]
    batches = watch_batches(a._appends)
    refund = NewNotification(
        identity=identity_of("REFUND_RESULT", "pay-r", "", "SUCCESS"),
        notify_type="REFUND_RESULT",
        payment_request_id="req-r",
        payment_id="pay-r",
        result_status="SUCCESS",
        payload=b"refund",
    )
    sent = [notification(n) for n in range(30)] + [notification(0), notification(1), refund]
    results = await asyncio.gather(
        *(a.append(x, receipt(T0 + i), groups) for i, x in enumerate(sent))
    )
    assert sum(batches) == 33 and len(batches) < 33, batches
    assert len({r.notification_id for r in results}) == 31
    by_identity: dict[str, list[Any]] = {}
    for x, r in zip(sent, results, strict=True):
        by_identity.setdefault(x.identity, []).append(r)
    for identity, rs in by_identity.items():
        assert sorted(r.created for r in rs) == [False] * (len(rs) - 1) + [True], identity
        assert sorted(r.send_count for r in rs) == list(range(1, len(rs) + 1)), identity
        assert len({r.notification_id for r in rs}) == 1
    for x, r in zip(sent, results, strict=True):
        wanted = {"ledger", "mailer", "refunds"} if x is refund else {"ledger", "mailer"}
        assert set(r.groups) == wanted, (x.identity, r.groups)
        assert {d.state for d in r.groups.values()} == {DeliveryState.PENDING}
    with psycopg.connect(schema_url(dsn, schema)) as conn:
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM receipts), (SELECT count(*) FROM deliveries),"
            " (SELECT sum(send_count) FROM notifications)"
        ).fetchone()
    assert counts == (33, 31 * 2 + 1, 33)
    assert await wait_for(
        lambda: (
            any("refunds" in e.groups for e in heard_by_b)
            and any({"ledger", "mailer"} <= e.groups for e in heard_by_b)
        ),
        5,
    )


async def test_an_append_the_database_refuses_fails_alone(
    hubs: tuple[PostgresStore, PostgresStore],
) -> None:
    a, _ = hubs
    # PostgreSQL text cannot hold NUL: a notification with one fails the statement it is in.
    bad = NewNotification(
        identity="bad",
        notify_type="PAYMENT_RESULT",
        payment_request_id="req\x00",
        payment_id="pay-bad",
        result_status="SUCCESS",
        payload=b"",
    )
    answers = await asyncio.gather(
        *(a.append(notification(n), receipt(), GROUPS) for n in range(5)),
        a.append(bad, receipt(), GROUPS),
        return_exceptions=True,
    )
    assert [getattr(r, "created", None) for r in answers[:5]] == [True] * 5
    assert isinstance(answers[5], StoreError)
    assert "\x00" not in str(answers[5])


async def test_acks_that_arrive_together_share_statements_each_with_its_own_answer(
    hubs: tuple[PostgresStore, PostgresStore], schema: str, dsn: str
) -> None:
    a, b = hubs
    heard_by_b: list[StoreEvent] = []
    await b.listen(heard_by_b.append)
    for n in range(40):
        await a.append(notification(n), receipt(), GROUPS)
    leases = await a.claim("ledger", "m", 40, 30.0, frozenset(), T0 + 1)
    assert len(leases) == 40
    batches = watch_batches(a._acks)
    first = leases[0]
    answers = await asyncio.gather(
        *(a.ack("ledger", x.notification_id, x.token, T0 + 2) for x in leases),
        a.ack("ledger", first.notification_id, first.token, T0 + 2),  # the same ack twice
        a.ack("ledger", leases[1].notification_id, "not-the-token", T0 + 2),
        a.ack("ledger", leases[2].notification_id, "nul\x00token", T0 + 2),
        a.ack("ledger", 10**9, "whatever", T0 + 2),  # no such delivery
        a.ack("ledger", 2**70, "whatever", T0 + 2),  # no bigint: never sent
        a.ack("mailer", first.notification_id, first.token, T0 + 2),  # not leased there
    )
    assert answers[:40] == [ActionStatus.OK] * 40
    assert answers[40:] == [ActionStatus.STALE] * 3 + [ActionStatus.UNKNOWN] * 2 + [
        ActionStatus.STALE
    ]
    assert sum(batches) == 45 and len(batches) < 45, batches  # shared, and 2**70 never went
    for lease in leases:
        states = await a.group_states(lease.notification_id)
        assert states["ledger"].state is DeliveryState.ACKED
    with psycopg.connect(schema_url(dsn, schema)) as conn:
        history = conn.execute(
            "SELECT count(*), count(DISTINCT notification_id) FROM delivery_history"
            " WHERE kind = 'acked'"
        ).fetchone()
    assert history == (40, 40)
    settled = {StoreEvent(notification_id=x.notification_id) for x in leases}
    assert await wait_for(lambda: settled <= set(heard_by_b), 5)


async def test_a_batch_a_deadlock_rolled_back_is_retried_one_by_one(
    hubs: tuple[PostgresStore, PostgresStore], schema: str, dsn: str
) -> None:
    """Another transaction holds the second delivery and then asks for the first, which the batch
    holds: PostgreSQL rolls the batch back (it waited first), and each ack goes again alone."""
    a, _ = hubs
    for n in range(2):
        await a.append(notification(n), receipt(), GROUPS)
    first, second = await a.claim("ledger", "m", 2, 30.0, frozenset(), T0 + 1)
    lock = (
        "SELECT 1 FROM deliveries WHERE group_name = 'ledger' AND notification_id = %s FOR UPDATE"
    )
    with psycopg.connect(schema_url(dsn, schema)) as other:
        other.execute(lock, [second.notification_id])
        acks = asyncio.gather(
            *(a.ack("ledger", x.notification_id, x.token, T0 + 2) for x in (first, second))
        )
        await asyncio.sleep(0.3)  # the batch now holds the first and waits for the second
        await asyncio.to_thread(other.execute, lock, [first.notification_id])
        other.commit()
        assert await asyncio.wait_for(acks, 10) == [ActionStatus.OK, ActionStatus.OK]


async def test_a_statement_waiting_for_a_lock_holds_up_its_batch_only(
    dsn: str, schema: str
) -> None:
    """A row lock held elsewhere until the statement timeout: the batch's other appends land
    (alone, after it), the one that waited fails, and appends meanwhile take another lane."""
    url = schema_url(dsn, schema)
    store = PostgresStore(url, statement_timeout=1.0)
    await store.open()
    try:
        await store.append(notification(0), receipt(), GROUPS)
        with psycopg.connect(url) as other:
            other.execute(
                "SELECT 1 FROM notifications WHERE identity = %s FOR UPDATE",
                [notification(0).identity],
            )
            batch = asyncio.gather(
                store.append(notification(0), receipt(), GROUPS),  # waits for the lock
                *(store.append(notification(n), receipt(), GROUPS) for n in range(1, 6)),
                return_exceptions=True,
            )
            await asyncio.sleep(0.1)
            meanwhile = await store.append(notification(99), receipt(), GROUPS)
            assert meanwhile.created and not batch.done()
            waited, *others = await batch
            other.rollback()
        assert isinstance(waited, StoreError) and "57014" in str(waited)
        assert [getattr(r, "created", r) for r in others] == [True] * 5
    finally:
        await store.close()


async def test_a_caller_that_stopped_waiting_is_not_sent_again(
    hubs: tuple[PostgresStore, PostgresStore], schema: str, dsn: str
) -> None:
    """Its batch waits for a lock, its caller leaves, then PostgreSQL refuses the batch: it goes
    again one by one, but not with the append whose caller left."""
    a, _ = hubs
    known = notification(0)
    await a.append(known, receipt(), GROUPS)
    refused = NewNotification(
        identity="~refused",  # after `known` in identity order: checked once the lock is free
        notify_type="PAYMENT_RESULT",
        payment_request_id="req-refused",
        payment_id=cast(str, None),  # NOT NULL: refused by the server, not by the driver
        result_status="SUCCESS",
        payload=b"",
    )

    async def gives_up() -> str:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.3):
                await a.append(known, receipt(), GROUPS)
        return "gave up"

    with psycopg.connect(schema_url(dsn, schema)) as other:
        other.execute(
            "SELECT 1 FROM notifications WHERE identity = %s FOR UPDATE", [known.identity]
        )
        both = asyncio.gather(
            gives_up(), a.append(refused, receipt(), GROUPS), return_exceptions=True
        )
        await asyncio.sleep(0.6)
        other.rollback()
        left, failed = await both
    assert left == "gave up" and isinstance(failed, StoreError)
    await asyncio.sleep(0.3)
    with psycopg.connect(schema_url(dsn, schema)) as conn:
        sends = conn.execute(
            "SELECT send_count FROM notifications WHERE identity = %s", [known.identity]
        ).fetchone()
    assert sends == (1,)


async def test_an_ack_the_database_refuses_fails_alone(
    hubs: tuple[PostgresStore, PostgresStore],
) -> None:
    a, _ = hubs
    for n in range(5):
        await a.append(notification(n), receipt(), GROUPS)
    leases = await a.claim("ledger", "m", 5, 30.0, frozenset(), T0 + 1)
    # PostgreSQL text cannot hold NUL: a group name with one fails the statement it is in.
    answers = await asyncio.gather(
        *(a.ack("ledger", x.notification_id, x.token, T0 + 2) for x in leases),
        a.ack("led\x00ger", leases[0].notification_id, leases[0].token, T0 + 2),
        return_exceptions=True,
    )
    assert answers[:5] == [ActionStatus.OK] * 5
    assert isinstance(answers[5], StoreError)
    assert "\x00" not in str(answers[5])


async def test_events_do_not_cross_schemas(
    dsn: str, schema: str, other_schema: str, hubs: tuple[PostgresStore, PostgresStore]
) -> None:
    a, _ = hubs
    elsewhere = PostgresStore(schema_url(dsn, other_schema))
    await elsewhere.open()
    try:
        heard: list[StoreEvent] = []
        await elsewhere.listen(heard.append)
        await a.append(notification(1), receipt(), GROUPS)
        await asyncio.sleep(0.5)
        assert heard == []
    finally:
        await elsewhere.close()


def dead_letter(url: str, nid: int, group: str) -> tuple[bytes, str]:
    """Payload and reason of a dead letter, read beside the store: no Protocol verb reads them."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT n.payload, d.dead_reason FROM notifications n JOIN deliveries d"
            " ON d.notification_id = n.id"
            " WHERE n.id = %s AND d.group_name = %s AND d.state = 'dead'",
            (nid, group),
        ).fetchone()
    assert row is not None
    return bytes(row[0]), str(row[1])


async def test_dead_letters_keep_payload_and_reason(
    dsn: str, schema: str, hubs: tuple[PostgresStore, PostgresStore]
) -> None:
    a, b = hubs
    policy = RetryPolicy(min_backoff=1.0, max_backoff=4.0, max_attempts=2)
    rejected = (await a.append(notification(1), receipt(), GROUPS)).notification_id
    (lease,) = await a.claim("ledger", "m", 1, 30.0, frozenset(), T0)
    assert await b.reject("ledger", rejected, lease.token, "no such order", T0) is ActionStatus.OK
    worn_out = (await a.append(notification(2), receipt(), GROUPS)).notification_id
    for attempt in range(policy.max_attempts):
        now = T0 + 10 * attempt
        (lease,) = await b.claim("ledger", "m", 1, 30.0, frozenset(), now)
        assert lease.notification_id == worn_out
        assert await a.nack("ledger", worn_out, lease.token, now, 0.0, policy) is ActionStatus.OK
    url = schema_url(dsn, schema)
    assert dead_letter(url, rejected, "ledger") == (notification(1).payload, "no such order")
    assert dead_letter(url, worn_out, "ledger") == (
        notification(2).payload,
        "max attempts reached (2)",
    )


async def test_hubs_opening_at_once_migrate_once(dsn: str, schema: str) -> None:
    stores = [PostgresStore(schema_url(dsn, schema)) for _ in range(4)]
    try:
        await asyncio.gather(*(store.open() for store in stores))
    finally:
        await asyncio.gather(*(store.close() for store in stores))
    with psycopg.connect(schema_url(dsn, schema)) as conn:
        rows = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    assert rows == [(1,), (2,)]


async def test_reopening_a_migrated_schema_keeps_the_data(dsn: str, schema: str) -> None:
    first = PostgresStore(schema_url(dsn, schema))
    await first.open()
    appended = await first.append(notification(1), receipt(), GROUPS)
    await first.close()
    await first.close()  # idempotent
    second = PostgresStore(schema_url(dsn, schema))
    await second.open()
    try:
        assert set(await second.group_states(appended.notification_id)) == {"ledger", "mailer"}
    finally:
        await second.close()


async def test_dead_database_fails_fast_without_the_password() -> None:
    store = PostgresStore("postgresql://postgres:s3cret@127.0.0.1:1/test", timeout=2.0)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as caught:
        await store.open()
    assert time.monotonic() - started < 6
    assert "s3cret" not in str(caught.value)
    await store.close()


async def test_a_missing_schema_is_a_store_error(dsn: str) -> None:
    store = PostgresStore(schema_url(dsn, f"missing_{uuid.uuid4().hex[:8]}"))
    with pytest.raises(StoreError, match="schema"):
        await store.open()


async def test_driver_errors_are_wrapped(dsn: str, schema: str) -> None:
    store = PostgresStore(schema_url(dsn, schema))
    await store.open()
    try:
        with psycopg.connect(schema_url(dsn, schema), autocommit=True) as conn:
            conn.execute("DROP TABLE deliveries")
        with pytest.raises(StoreError, match="next_due") as caught:
            await store.next_due("ledger", frozenset())
        assert not isinstance(caught.value, StoreUnavailable)
    finally:
        await store.close()


async def test_calls_before_open_and_after_close_are_store_errors(dsn: str, schema: str) -> None:
    store = PostgresStore(schema_url(dsn, schema))
    with pytest.raises(StoreError, match="not open"):
        await store.next_due("ledger", frozenset())
    await store.open()
    await store.close()
    with pytest.raises(StoreError, match="not open"):
        await store.group_states(1)


async def _restart_postgres() -> None:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    proc = await asyncio.create_subprocess_exec(
        "pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"
    )
    assert await proc.wait() == 0


async def _calls_until_done(store: PostgresStore, task: asyncio.Task[None]) -> list[str]:
    """Call the store over and over while `task` runs: each call succeeds or is unavailable."""
    outcomes: list[str] = []
    while not task.done():
        try:
            await store.next_due("ledger", frozenset())
            outcomes.append("ok")
        except StoreUnavailable:
            outcomes.append("unavailable")
        await asyncio.sleep(0.05)
    return outcomes


@pytest.mark.timeout(90)
async def test_pool_and_listener_recover_after_a_restart(
    hubs: tuple[PostgresStore, PostgresStore],
) -> None:
    if os.environ.get(ENV_RESTART) != "1":
        pytest.skip(f"restarts the PostgreSQL server: set {ENV_RESTART}=1 to run it")
    a, b = hubs
    heard: list[StoreEvent] = []
    await b.listen(heard.append)

    restart = asyncio.create_task(_restart_postgres())
    outcomes = await _calls_until_done(a, restart)
    await restart
    assert outcomes  # each call during the outage either succeeded or raised StoreUnavailable

    first = await a.append(notification(1), receipt(), GROUPS)  # the pool recovered at once
    assert first.created
    assert await b.next_due("ledger", frozenset()) == T0

    n = 2
    deadline = time.monotonic() + 45
    while not heard and time.monotonic() < deadline:  # the listener reconnects with backoff
        await a.append(notification(n), receipt(), GROUPS)
        n += 1
        await asyncio.sleep(0.5)
    assert heard, "the listener did not reconnect after the restart"


async def test_connections_whose_backend_ended_are_replaced_without_failing_a_call(
    dsn: str, schema: str
) -> None:
    """A connection used moments ago is handed out without a ping, unless the server has spoken
    since: a terminated backend (as in a restart) is noticed and replaced, no call fails."""
    app = f"pool_{uuid.uuid4().hex[:10]}"
    url = schema_url(dsn, schema) + f"&application_name={app}"
    store = PostgresStore(url, min_size=3, max_size=3)
    await store.open()
    try:
        await asyncio.gather(*(store.group_states(1) for _ in range(3)))  # all just returned
        with psycopg.connect(dsn, autocommit=True) as conn:
            ended = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = %s",
                [app],
            ).fetchone()
        assert ended is not None and ended[0] >= 3
        await asyncio.sleep(0.2)  # the notices arrive
        for _ in range(6):
            assert await store.group_states(1) == {}
    finally:
        await store.close()
