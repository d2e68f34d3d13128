"""The admin service with two hubs on one PostgreSQL store: the numbers are the store's, and a
replay on one hub wakes the members connected to the other (LISTEN/NOTIFY, not the poll)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from paynotify.v1 import admin_pb2
from tests.admin.kit import admin_hub, admin_stub
from tests.hub.helpers import publish_pending
from tests.hubkit import raw_subscriber
from tests.pg import fresh_schema_url

pytestmark = pytest.mark.postgres

# Long enough that only an event can explain a prompt delivery.
SLOW_POLL = 30.0


@pytest.fixture
def store_url() -> Iterator[str]:
    with fresh_schema_url() as url:
        yield url


async def test_replay_on_one_hub_wakes_members_of_another(tmp_path: Path, store_url: str) -> None:
    async with (
        admin_hub(tmp_path / "a", store_url=store_url, hub_id="hub-a") as a,
        admin_hub(
            tmp_path / "b", store_url=store_url, hub_id="hub-b", poll_interval=SLOW_POLL
        ) as b,
        admin_stub(a.address) as stub_a,
        admin_stub(b.address) as stub_b,
        raw_subscriber(b.address, "billing", client_id="on-b") as sub,
    ):
        await publish_pending(a.address, 1, deadline=0.5)
        [d] = await sub.receive(1, timeout=10)
        await sub.reject(d.delivery_id, "bad")
        [on_a] = (await stub_a.Status(admin_pb2.StatusRequest())).groups
        [on_b] = (await stub_b.Status(admin_pb2.StatusRequest())).groups
        assert on_a.dead_letters == on_b.dead_letters == 1
        assert (on_a.connected_members, on_b.connected_members) == (0, 1)
        show = admin_pb2.ShowRequest(id=d.notification.payment_id)
        [shown] = (await stub_a.Show(show)).notifications
        [attempt] = shown.deliveries[0].attempt_history
        assert attempt.member_id.startswith("hub-b/on-b/")
        replayed_at = time.monotonic()
        request = admin_pb2.ReplayRequest(group="billing", notification_id=d.notification_id)
        assert (await stub_a.Replay(request)).replayed == 1
        [again] = await sub.receive(1, timeout=10)
        assert again.notification_id == d.notification_id
        assert time.monotonic() - replayed_at < SLOW_POLL / 3
        await sub.ack(again.delivery_id)
