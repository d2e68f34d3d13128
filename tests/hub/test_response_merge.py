"""A Subscribe stream's writer sends what queued up behind a write as one message.

Fewer messages per delivery for the subscriber to wake up for; every delivery and action result
still goes out exactly once, in order, and no message exceeds the send limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from paynotify.v1 import hub_pb2
from paynotify_hub.broker import Broker
from paynotify_hub.config import HubConfig
from paynotify_hub.domain import GroupSpec
from paynotify_hub.service import _RESPONSE_OVERHEAD, _Stream
from paynotify_hub.store.sqlite import SQLiteStore

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
