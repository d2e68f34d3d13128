"""Publish: the one promise (acknowledged only when every required group settled it)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from paynotify.v1 import hub_pb2, notification_pb2
from tests.hub.helpers import dead_letters, group_state
from tests.hubkit import make_notification, publish, publish_async, raw_subscriber, running_hub

ACKNOWLEDGED = hub_pb2.PUBLISH_OUTCOME_ACKNOWLEDGED
ALREADY = hub_pb2.PUBLISH_OUTCOME_ALREADY_ACKNOWLEDGED
PENDING = hub_pb2.PUBLISH_OUTCOME_PENDING
REJECTED = hub_pb2.PUBLISH_OUTCOME_REJECTED


async def test_required_group_ack_completes_a_waiting_publish(tmp_path: Path) -> None:
    async with running_hub(tmp_path) as hub, raw_subscriber(hub.address) as sub:
        publishing = asyncio.create_task(publish_async(hub.address, make_notification("P1"), 10))
        [d] = await sub.receive(1)
        await asyncio.sleep(0.3)
        assert not publishing.done(), "Publish answered before the required group acked"
        [result] = await sub.ack(d.delivery_id)
        assert result.status == hub_pb2.ACTION_STATUS_OK
        assert result.kind == hub_pb2.ACTION_KIND_ACK
        response = await publishing
        assert response.outcome == ACKNOWLEDGED
        assert response.notification_id == d.notification_id
        assert response.alipay_send_count == 1
        billing = group_state(response, "billing")
        assert billing.required and billing.state == hub_pb2.DELIVERY_STATE_ACKED
        assert billing.attempts == 1


async def test_best_effort_groups_do_not_gate_publish(tmp_path: Path) -> None:
    async with (
        running_hub(tmp_path, groups=("billing", "audit:best-effort")) as hub,
        raw_subscriber(hub.address, "billing") as billing,
    ):
        publishing = asyncio.create_task(publish_async(hub.address, make_notification("P1"), 10))
        [d] = await billing.receive(1)
        await billing.ack(d.delivery_id)
        response = await publishing
        assert response.outcome == ACKNOWLEDGED
        audit = group_state(response, "audit")
        assert not audit.required and audit.state == hub_pb2.DELIVERY_STATE_PENDING
        async with raw_subscriber(hub.address, "audit") as audit_sub:
            [late] = await audit_sub.receive(1)  # it still collects and delivers
            assert late.notification_id == d.notification_id


async def test_duplicate_publish_after_ack_answers_at_once_and_redelivers_nothing(
    tmp_path: Path,
) -> None:
    async with running_hub(tmp_path) as hub, raw_subscriber(hub.address) as sub:
        n = make_notification("P1")
        publishing = asyncio.create_task(publish_async(hub.address, n, 10))
        [d] = await sub.receive(1)
        await sub.ack(d.delivery_id)
        assert (await publishing).outcome == ACKNOWLEDGED
        again = await publish_async(hub.address, n, 10)
        assert again.outcome == ALREADY
        assert again.alipay_send_count == 2
        assert again.notification_id == d.notification_id
        await sub.receive_none(within=0.5)


async def test_duplicate_publish_while_pending_is_stored_once(tmp_path: Path) -> None:
    async with running_hub(tmp_path) as hub:
        n = make_notification("P1")
        first = await publish_async(hub.address, n, 1)
        second = await publish_async(hub.address, n, 1)
        assert first.outcome == second.outcome == PENDING
        assert first.notification_id == second.notification_id
        assert second.alipay_send_count == 2
        async with raw_subscriber(hub.address) as sub:
            [d] = await sub.receive(1)
            assert d.alipay_send_count == 2
            await sub.receive_none(within=0.4)


async def test_publish_without_subscriber_answers_pending_before_the_deadline(
    tmp_path: Path,
) -> None:
    async with running_hub(tmp_path, publish_margin=0.25) as hub:
        response = await publish_async(hub.address, make_notification("P1"), timeout=1.0)
        assert response.outcome == PENDING  # not DEADLINE_EXCEEDED
        assert group_state(response, "billing").state == hub_pb2.DELIVERY_STATE_PENDING


def test_sync_publish_helper_works_without_a_loop_of_its_own(tmp_path: Path) -> None:
    from tests.hubkit import hub_in_thread

    with hub_in_thread(tmp_path) as hub:
        response = publish(hub.address, make_notification("P1"), timeout=1.0)
        assert response.outcome == PENDING


async def test_reject_dead_letters_with_payload_and_settles_publish(tmp_path: Path) -> None:
    async with running_hub(tmp_path) as hub, raw_subscriber(hub.address) as sub:
        n = make_notification("P1")
        publishing = asyncio.create_task(publish_async(hub.address, n, 10))
        [d] = await sub.receive(1)
        [result] = await sub.reject(d.delivery_id, "amount mismatch")
        assert result.status == hub_pb2.ACTION_STATUS_OK
        assert result.kind == hub_pb2.ACTION_KIND_REJECT
        response = await publishing
        assert response.outcome == ACKNOWLEDGED
        assert group_state(response, "billing").state == hub_pb2.DELIVERY_STATE_DEAD
        [(group, payment_id, payload)] = await dead_letters(hub.store)
        assert (group, payment_id) == ("billing", "P1")
        assert notification_pb2.PaymentNotification.FromString(payload).raw_json == n.raw_json
        await sub.receive_none(within=0.4)
        assert (await publish_async(hub.address, n, 5)).outcome == ALREADY


@pytest.mark.parametrize(
    ("mutate", "detail"),
    [
        (lambda n: n.ClearField("notify_type_text"), "notify_type_text is empty"),
        (lambda n: (n.ClearField("payment_id"), n.ClearField("payment_request_id")), "neither"),
        (lambda n: setattr(n, "payment_id", "x" * 65), "payment_id is longer than 64"),
        (lambda n: n.ClearField("raw_json"), "raw_json is empty"),
        (lambda n: setattr(n, "raw_json", b"x" * 300_000), "more than the limit"),
    ],
)
async def test_invalid_publish_is_rejected_and_nothing_stored(
    tmp_path: Path, mutate: object, detail: str
) -> None:
    async with running_hub(tmp_path) as hub:
        n = make_notification("P1")
        mutate(n)  # type: ignore[operator]
        response = await publish_async(hub.address, n, 10)
        assert response.outcome == REJECTED
        assert detail in response.detail
        assert not response.notification_id
        async with raw_subscriber(hub.address) as sub:
            await sub.receive_none(within=0.3)


async def test_publish_without_notification_is_rejected(tmp_path: Path) -> None:
    async with running_hub(tmp_path) as hub, grpc.aio.insecure_channel(hub.address) as channel:
        from paynotify.v1 import hub_pb2_grpc

        stub = hub_pb2_grpc.NotificationHubStub(channel)
        response = await stub.Publish(hub_pb2.PublishRequest(), timeout=10)
        assert response.outcome == REJECTED
        assert "notification is missing" in response.detail
