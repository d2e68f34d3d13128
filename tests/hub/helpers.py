"""Small helpers shared by the hub tests (the reusable kit lives in tests/hubkit.py)."""

from __future__ import annotations

import asyncio

from paynotify.v1 import hub_pb2, notification_pb2
from paynotify_hub.store import Store
from tests.hubkit import make_notification, publish_async


async def publish_pending(
    address: str, count: int, *, prefix: str = "P", deadline: float = 1.0
) -> list[notification_pb2.PaymentNotification]:
    """Publish `count` fresh notifications nobody acks; each answers PENDING."""
    notifications = [make_notification(f"{prefix}{i:03d}") for i in range(count)]
    responses = await asyncio.gather(*(publish_async(address, n, deadline) for n in notifications))
    assert {r.outcome for r in responses} == {hub_pb2.PUBLISH_OUTCOME_PENDING}
    return notifications


def group_state(response: hub_pb2.PublishResponse, group: str) -> hub_pb2.GroupStatus:
    [status] = [g for g in response.groups if g.group == group]
    return status


async def dead_letters(store: Store) -> list[tuple[str, str, bytes]]:
    """(group, payment id, payload) of every dead delivery, as the store keeps it."""
    letters = await store.dead_letters(None, 0, 100)
    return [(x.group, x.payment_id, x.payload) for x in letters]
