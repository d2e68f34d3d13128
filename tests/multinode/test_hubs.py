"""Several `paynotify hub` processes on one PostgreSQL schema behave as one hub.

An ack that reaches another hub answers the waiting Publish; members of a group on different hubs
share its work and never hold the same delivery at once; a lease held through a killed hub moves to
a member on another hub once it expires; one notification published through two hubs at the same
moment is stored once and delivered once per group.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from paynotify.v1 import hub_pb2, hub_pb2_grpc, notification_pb2
from tests.hubkit import HubProcess, hub_process, make_notification, publish
from tests.multinode.ledger import Ledger
from tests.multinode.pgcluster import PgSchema

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

ACKNOWLEDGED = hub_pb2.PUBLISH_OUTCOME_ACKNOWLEDGED
ALREADY = hub_pb2.PUBLISH_OUTCOME_ALREADY_ACKNOWLEDGED
PENDING = hub_pb2.PUBLISH_OUTCOME_PENDING
OK = hub_pb2.ACTION_STATUS_OK


@contextlib.contextmanager
def two_hubs(
    tmp_path: Path, pg: PgSchema, *args: str, groups: tuple[str, ...] = ("billing",)
) -> Iterator[tuple[HubProcess, HubProcess]]:
    """Two hub processes on the schema of `pg` (logs in tmp_path/hub1, tmp_path/hub2)."""
    (tmp_path / "hub1").mkdir()
    (tmp_path / "hub2").mkdir()
    with (
        hub_process(tmp_path / "hub1", *args, groups=groups, store_url=pg.url) as hub1,
        hub_process(tmp_path / "hub2", *args, groups=groups, store_url=pg.url) as hub2,
    ):
        yield hub1, hub2


def test_an_ack_through_hub2_answers_the_publish_waiting_on_hub1(
    tmp_path: Path, pg: PgSchema
) -> None:
    # The safety poll is set far beyond the deadline: only the hubs' events (LISTEN/NOTIFY) can
    # wake hub 2's member for the new notification and hub 1's Publish for the ack.
    with two_hubs(tmp_path, pg, "--poll-interval", "30") as (hub1, hub2):
        ledger = Ledger()
        with ledger.members([(hub2.address, "billing", "b@hub2")]):
            for i in range(3):
                started = time.monotonic()
                response = publish(hub1.address, make_notification(f"CROSS-{i}"), timeout=10.0)
                elapsed = time.monotonic() - started
                assert response.outcome == ACKNOWLEDGED, response
                assert elapsed < 5.0, f"Publish on hub 1 answered after {elapsed:.1f}s"
            ledger.wait_for(lambda led: len(led.acked("billing")) == 3, 5, "acks confirmed")
        assert [d.payment_id for d in ledger.of("billing")] == ["CROSS-0", "CROSS-1", "CROSS-2"]
        assert {d.member for d in ledger.of()} == {"b@hub2"}


def test_members_on_two_hubs_share_a_group_and_a_killed_hubs_lease_moves_over(
    tmp_path: Path, pg: PgSchema
) -> None:
    with two_hubs(tmp_path, pg) as (hub1, hub2):
        ledger = Ledger(ack_deadline=3.0, max_in_flight=4)
        specs = [(hub1.address, "billing", "a@hub1"), (hub2.address, "billing", "b@hub2")]
        with ledger.members(specs) as members:
            # 1. Sharing: published through both hubs at once, acked by whoever gets it.
            sent = [make_notification(f"SHARE-{i:02d}") for i in range(60)]
            hubs = [hub1.address, hub2.address]
            with ThreadPoolExecutor(12) as pool:
                responses = list(
                    pool.map(lambda i: publish(hubs[i % 2], sent[i], timeout=10.0), range(60))
                )
            assert {r.outcome for r in responses} == {ACKNOWLEDGED}
            ledger.wait_for(lambda led: len(led.acked("billing")) == 60, 5, "acks confirmed")
            time.sleep(0.5)  # a duplicate would show up now
            got = [d.payment_id for d in ledger.of("billing")]
            assert sorted(got) == sorted(n.payment_id for n in sent)  # all, each exactly once
            share = {m: len(ledger.of("billing", m)) for m in ("a@hub1", "b@hub2")}
            print(f"\nload shared between members: {share}")
            assert min(share.values()) > 0, share

            # 2. a@hub1 holds one delivery; hub 1 is killed; the lease moves to b2@hub2 on expiry.
            ledger.decide("a@hub1", "hold")
            members["b@hub2"].close(timeout=5)
            held_n = make_notification("HELD-1")
            assert publish(hub1.address, held_n, timeout=1.0).outcome == PENDING
            ledger.wait_for(
                lambda led: any(d.payment_id == "HELD-1" for d in led.of(member="a@hub1")),
                5,
                "HELD-1 delivered to a@hub1",
            )
            [held] = [d for d in ledger.of(member="a@hub1") if d.payment_id == "HELD-1"]
            newcomer = ledger.subscribe(hub2.address, "billing", "b2@hub2")
            try:
                time.sleep(1.0)
                assert not ledger.of(member="b2@hub2"), "leased to two members at once"
                hub1.kill()
                ledger.wait_for(
                    lambda led: bool(led.acked_payment_ids("billing") & {"HELD-1"}),
                    held.lease_expires_at - time.time() + 10,
                    "HELD-1 redelivered to b2@hub2 and acked",
                )
            finally:
                newcomer.close(timeout=5)
            [moved] = ledger.of(member="b2@hub2")
            assert moved.payment_id == "HELD-1" and moved.attempt == 2
            assert moved.notification_id == held.notification_id
            # Not before the lease of the killed hub's member ran out (a little slack for clocks).
            assert moved.received >= held.lease_expires_at - 0.05
            print(f"lease moved {moved.received - held.lease_expires_at:.2f}s after it expired")
            # Alipay's next retry, through the surviving hub, is answered from the store.
            assert publish(hub2.address, held_n, timeout=5.0).outcome == ALREADY
        assert not ledger.duplicates_after_ack()


def _request(notification: notification_pb2.PaymentNotification) -> hub_pb2.PublishRequest:
    now = Timestamp()
    now.GetCurrentTime()
    receipt = hub_pb2.Receipt(
        received_at=now,
        client_id="SANDBOX_MULTINODE_TEST",
        request_time="2020-01-01T12:01:02+08:30",
        request_id=uuid.uuid4().hex,
    )
    return hub_pb2.PublishRequest(notification=notification, receipt=receipt)


async def _race(
    addresses: tuple[str, str], notifications: list[notification_pb2.PaymentNotification]
) -> list[tuple[hub_pb2.PublishResponse, hub_pb2.PublishResponse]]:
    """Each notification published through both hubs at the same moment (channels ready first)."""
    async with (
        grpc.aio.insecure_channel(addresses[0]) as one,
        grpc.aio.insecure_channel(addresses[1]) as two,
    ):
        await asyncio.wait_for(asyncio.gather(one.channel_ready(), two.channel_ready()), 10)
        stubs = [hub_pb2_grpc.NotificationHubStub(c) for c in (one, two)]
        calls = [stub.Publish(_request(n), timeout=10.0) for n in notifications for stub in stubs]
        answers = await asyncio.gather(*calls)
    return [(answers[i], answers[i + 1]) for i in range(0, len(answers), 2)]


def test_one_notification_through_two_hubs_at_once_is_stored_and_delivered_once(
    tmp_path: Path, pg: PgSchema
) -> None:
    with two_hubs(tmp_path, pg, groups=("billing", "audit")) as (hub1, hub2):
        ledger = Ledger()
        specs = [
            (hub1.address, "billing", "billing@hub1"),
            (hub2.address, "billing", "billing@hub2"),
            (hub1.address, "audit", "audit@hub1"),
            (hub2.address, "audit", "audit@hub2"),
        ]
        with ledger.members(specs):
            sent = [make_notification(f"RACE-{i:02d}") for i in range(15)]
            pairs = asyncio.run(_race((hub1.address, hub2.address), sent))
            ledger.wait_for(
                lambda led: len(led.acked("billing")) == len(led.acked("audit")) == 15,
                5,
                "acks confirmed",
            )
            time.sleep(1.0)  # a second delivery would show up now
        for n, (first, second) in zip(sent, pairs, strict=True):
            assert first.notification_id == second.notification_id, n.payment_id
            assert {first.outcome, second.outcome} <= {ACKNOWLEDGED, ALREADY}, (first, second)
            assert sorted([first.alipay_send_count, second.alipay_send_count]) == [1, 2]
        for group in ("billing", "audit"):
            got = sorted(d.payment_id for d in ledger.of(group))
            assert got == sorted(n.payment_id for n in sent), f"{group} deliveries"
        stored = pg.rows(
            "SELECT n.payment_id, n.send_count, "
            "(SELECT count(*) FROM receipts r WHERE r.notification_id = n.id), "
            "(SELECT string_agg(d.group_name || ':' || d.state || ':' || d.attempts, ',' "
            "ORDER BY d.group_name) FROM deliveries d WHERE d.notification_id = n.id) "
            "FROM notifications n ORDER BY n.payment_id"
        )
        expected = [
            (n.payment_id, 2, 2, "audit:acked:1,billing:acked:1")
            for n in sorted(sent, key=lambda n: n.payment_id)
        ]
        assert stored == expected


def test_a_subscriber_given_every_hub_moves_to_a_surviving_one(
    tmp_path: Path, pg: PgSchema
) -> None:
    """The client takes any gRPC target: with both hubs in it, losing one only costs a reconnect."""
    with two_hubs(tmp_path, pg) as (hub1, hub2):
        ledger = Ledger()
        target = f"ipv4:{hub1.address},{hub2.address}"
        with ledger.members([(target, "billing", "b@both")]):
            assert publish(hub1.address, make_notification("BOTH-1"), 10).outcome == ACKNOWLEDGED
            hub1.kill()
            started = time.monotonic()
            response = publish(hub2.address, make_notification("BOTH-2"), 10)
            elapsed = time.monotonic() - started
            assert response.outcome == ACKNOWLEDGED, response
            print(f"\nacked through the surviving hub {elapsed:.2f}s after the other was killed")
        assert [d.payment_id for d in ledger.of()] == ["BOTH-1", "BOTH-2"]
