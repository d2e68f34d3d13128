"""A Subscribe stream's writer sends what queued up behind a write as one message, and action
results wait a moment for deliveries to ride with.

Fewer messages per delivery for the subscriber to wake up for; every delivery and action result
still goes out exactly once, in order, and no message exceeds the send limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from paynotify.v1 import hub_pb2, notification_pb2
from paynotify_hub import service
from paynotify_hub.broker import Broker
from paynotify_hub.config import HubConfig
from paynotify_hub.domain import GroupSpec, Lease
from paynotify_hub.service import _RESPONSE_OVERHEAD, _Stream
from paynotify_hub.store.sqlite import SQLiteStore
from tests.hubkit import (
    RawSubscriber,
    make_notification,
    publish_async,
    raw_subscriber,
    running_hub,
)

Response = hub_pb2.SubscribeResponse


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Broker]:
    store = SQLiteStore(tmp_path / "hub.db")
    await store.open()
    b = Broker(HubConfig(groups=(GroupSpec("billing"),), hub_id="unit"), store)
    await b.start()
    yield b
    await b.shutdown(drain=0)
    await b.close()
    await store.close()


async def stream(broker: Broker, max_message_bytes: int) -> _Stream:
    member = await broker.open_member("billing", "m")
    return _Stream(broker, member, max_message_bytes)


def delivery(n: int, size: int = 0) -> Response:
    return Response(deliveries=[hub_pb2.Delivery(delivery_id=f"{n}.t", raw_json=b"x" * size)])


def result(n: int) -> Response:
    return Response(action_results=[hub_pb2.ActionResult(delivery_id=f"{n}.t")])


def ids(response: Response) -> tuple[list[str], list[str]]:
    return (
        [d.delivery_id for d in response.deliveries],
        [r.delivery_id for r in response.action_results],
    )


async def test_what_queued_behind_goes_out_as_one_message(broker: Broker) -> None:
    s = await stream(broker, 4 * 1024 * 1024)
    for response in (delivery(1), result(7), delivery(2), result(8)):
        s._out.put_nowait(response)
    merged = await s.next_response()
    assert merged is not None
    assert ids(merged) == (["1.t", "2.t"], ["7.t", "8.t"])
    assert s._out.empty() and not s._back
    s._out.put_nowait(result(9))  # alone: sent as it is
    alone = await s.next_response()
    assert alone is not None and ids(alone) == ([], ["9.t"])


async def test_merging_stops_at_the_send_limit(broker: Broker) -> None:
    limit = _RESPONSE_OVERHEAD + 3_000
    s = await stream(broker, limit)
    for n in range(5):
        s._out.put_nowait(delivery(n, size=1_000))
    sent: list[str] = []
    while len(sent) < 5:
        message = await s.next_response()
        assert message is not None
        assert message.ByteSize() <= limit - _RESPONSE_OVERHEAD
        sent += ids(message)[0]
    assert sent == [f"{n}.t" for n in range(5)]
    assert s._out.empty() and not s._back


async def test_the_end_comes_after_what_was_queued_before_it(broker: Broker) -> None:
    s = await stream(broker, 4 * 1024 * 1024)
    s._out.put_nowait(delivery(1))
    s._out.put_nowait(result(1))
    s._out.put_nowait(None)
    s._out.put_nowait(delivery(2))  # queued after the end: never sent
    last = await s.next_response()
    assert last is not None and ids(last) == (["1.t"], ["1.t"])
    async with asyncio.timeout(5):
        assert await s.next_response() is None


# -- action results held for the next deliveries (a real hub and stream) -------------------------

LONG_HOLD = 30.0  # far longer than any test waits: only a delivery or the stream's end sends it
BOUND = 10.0


@pytest.fixture
def long_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "ACTION_RESULT_HOLD_S", LONG_HOLD)


async def acked_and_held(address: str, sub: RawSubscriber, payment_id: str) -> hub_pb2.Delivery:
    """Publish, receive and ack one notification; the publish is answered ACKNOWLEDGED while the
    ack's result is still held (nothing else to carry it)."""
    published = asyncio.create_task(publish_async(address, make_notification(payment_id)))
    (delivery,) = await sub.receive(1)
    await sub.ack(delivery.delivery_id, wait=False)
    async with asyncio.timeout(BOUND):
        answer = await published  # waits for the ack to be stored, not for its result
    assert answer.outcome == hub_pb2.PUBLISH_OUTCOME_ACKNOWLEDGED
    assert sub.pending_results() == 0
    return delivery


@pytest.mark.usefixtures("long_hold")
async def test_an_action_result_rides_with_the_next_delivery(tmp_path: Path) -> None:
    async with running_hub(tmp_path) as hub, raw_subscriber(hub.address) as sub:
        one = await acked_and_held(hub.address, sub, "H1")
        second = asyncio.create_task(publish_async(hub.address, make_notification("H2")))
        (two,) = await sub.receive(1)
        (result,) = await sub.results(1)
        assert (result.delivery_id, result.status) == (one.delivery_id, hub_pb2.ACTION_STATUS_OK)
        [carrier] = [r for r in sub.responses if two.delivery_id in ids(r)[0]]
        assert ids(carrier) == ([two.delivery_id], [one.delivery_id])
        await sub.ack(two.delivery_id, wait=False)
        async with asyncio.timeout(BOUND):
            await second


@pytest.mark.usefixtures("long_hold")
async def test_held_results_go_out_before_the_stream_ends(tmp_path: Path) -> None:
    async with running_hub(tmp_path) as hub, raw_subscriber(hub.address) as sub:
        one = await acked_and_held(hub.address, sub, "H3")
        await hub.stop(grace=1.0)  # ends every stream
        (result,) = await sub.results(1)
        assert result.delivery_id == one.delivery_id
        await sub.wait_closed()


async def test_a_result_with_no_delivery_to_ride_with_goes_out_after_the_hold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "ACTION_RESULT_HOLD_S", 0.05)
    async with running_hub(tmp_path) as hub, raw_subscriber(hub.address) as sub:
        published = asyncio.create_task(publish_async(hub.address, make_notification("H4")))
        (one,) = await sub.receive(1)
        (result,) = await sub.ack(one.delivery_id)  # waits for the result, up to 10 s
        assert result.status == hub_pb2.ACTION_STATUS_OK
        assert ids(sub.responses[-1]) == ([], [one.delivery_id])
        async with asyncio.timeout(BOUND):
            await published


@pytest.mark.usefixtures("long_hold")
async def test_many_results_go_out_at_once_however_long_the_hold(tmp_path: Path) -> None:
    count = service.MAX_HELD_RESULTS * 2 + 500
    async with running_hub(tmp_path) as hub, raw_subscriber(hub.address) as sub:
        # Malformed ids: answered UNKNOWN without the store, one result each.
        sent = [f"bad-{n}" for n in range(count)]
        results = await sub.ack(*sent)  # waits up to 10 s, not the 30 s hold
        assert [r.delivery_id for r in results] == sent
        assert {r.status for r in results} == {hub_pb2.ACTION_STATUS_UNKNOWN}


def _lease(number: int, notification: notification_pb2.PaymentNotification) -> Lease:
    return Lease(
        notification_id=number,
        group="billing",
        token=f"token{number}",
        attempt=number % 3 + 1,
        lease_expires_at=1_700_000_000.25 + number,
        payload=notification.SerializeToString(),
        notify_type=notification.notify_type_text,
        send_count=number,
        first_received_at=1_699_999_999.5,
    )


@pytest.mark.parametrize("max_bytes", [200, 2_500, 1 << 20])
def test_deliveries_are_written_in_order_into_responses_under_the_limit(max_bytes: int) -> None:
    notifications = [make_notification(amount=str(10**k)) for k in range(9)]
    leases = [_lease(n, x) for n, x in enumerate(notifications, start=1)]

    responses = service._responses(leases, max_bytes)

    deliveries = [d for r in responses for d in r.deliveries]
    assert [d.delivery_id for d in deliveries] == [f"{x.notification_id}.{x.token}" for x in leases]
    for delivery, lease, notification in zip(deliveries, leases, notifications, strict=True):
        assert delivery.notification == notification
        assert delivery.raw_json == notification.raw_json
        assert delivery.notification_id == str(lease.notification_id)
        assert (delivery.attempt, delivery.alipay_send_count) == (lease.attempt, lease.send_count)
        assert delivery.first_received_at.ToNanoseconds() == 1_699_999_999_500_000_000
        assert delivery.lease_expires_at.ToNanoseconds() == round(lease.lease_expires_at * 1e9)
    for response in responses:
        # a delivery alone may exceed a tiny limit; two together never do
        assert len(response.deliveries) == 1 or response.ByteSize() <= max_bytes
        assert not response.action_results
    single = service._responses(leases[:1], 1 << 20)[0].ByteSize()
    if max_bytes < single:
        assert len(responses) == len(leases)  # each alone
    elif max_bytes > 2 * len(leases) * single:
        assert len(responses) == 1
    else:
        assert 1 < len(responses) < len(leases)
