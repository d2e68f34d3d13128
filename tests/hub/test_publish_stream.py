"""PublishStream: many Publishes over one stream, each answered by its `ref` as it settles.

Everything runs against a real hub (grpc.aio on port 0, a real SQLite file) with a raw subscriber
acking by hand; `StreamPublisher` drives the stream the way the bridge does.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from paynotify.v1 import hub_pb2, hub_pb2_grpc, notification_pb2
from paynotify_hub import service
from paynotify_hub.publish_stream import MAX_RESULTS_PER_MESSAGE, PublishStreamSession
from tests.hub.helpers import group_state
from tests.hubkit import (
    RawSubscriber,
    aio_channel,
    bearer,
    make_notification,
    raw_subscriber,
    running_hub,
)

ACKNOWLEDGED = hub_pb2.PUBLISH_OUTCOME_ACKNOWLEDGED
ALREADY = hub_pb2.PUBLISH_OUTCOME_ALREADY_ACKNOWLEDGED
PENDING = hub_pb2.PUBLISH_OUTCOME_PENDING
REJECTED = hub_pb2.PUBLISH_OUTCOME_REJECTED
METHOD = "/paynotify.v1.NotificationHub/PublishStream"
# The bound on every wait of these tests: far above what any of them needs on a loaded machine.
BOUND = 15.0


def _code(status: grpc.StatusCode) -> int:
    return int(status.value[0])


def item(
    ref: int,
    notification: notification_pb2.PaymentNotification | None,
    wait: float | None = None,
) -> hub_pb2.PublishItem:
    """One PublishItem as the bridge builds it (`notification` None: an item without one)."""
    received = Timestamp()
    received.GetCurrentTime()
    request = hub_pb2.PublishRequest(
        receipt=hub_pb2.Receipt(
            received_at=received,
            client_id="SANDBOX_5Y3A2N2YEB3002022",
            request_time="2020-01-01T12:01:02+08:30",
            request_id=uuid.uuid4().hex,
        )
    )
    if notification is not None:
        request.notification.CopyFrom(notification)
    published = hub_pb2.PublishItem(ref=ref, request=request)
    if wait is not None:
        duration = Duration()
        duration.FromNanoseconds(round(wait * 1e9))
        published.wait.CopyFrom(duration)
    return published


class StreamPublisher:
    """One PublishStream call driven by hand: send batches, await results by ref.

    Every response is kept in `responses`; `arrivals` lists the refs in the order their results
    came; `arrived_at` the monotonic time of each ref's latest result.
    """

    def __init__(self, channel: grpc.aio.Channel, metadata: Sequence[tuple[str, str]] = ()) -> None:
        self._outbox: asyncio.Queue[hub_pb2.PublishStreamRequest | None] = asyncio.Queue()
        self._by_ref: defaultdict[int, list[hub_pb2.PublishItemResult]] = defaultdict(list)
        self._changed = asyncio.Condition()
        self._closed = asyncio.Event()
        self.responses: list[hub_pb2.PublishStreamResponse] = []
        self.arrivals: list[int] = []
        self.arrived_at: dict[int, float] = {}
        self.code: grpc.StatusCode | None = None
        self.details = ""
        stub = hub_pb2_grpc.NotificationHubStub(channel)
        self._call = stub.PublishStream(self._requests(), metadata=tuple(metadata))
        self._reader = asyncio.create_task(self._read())

    async def _requests(self) -> AsyncIterator[hub_pb2.PublishStreamRequest]:
        while (request := await self._outbox.get()) is not None:
            yield request

    async def _read(self) -> None:
        try:
            async for response in self._call:
                await self._route(response)
            self.code = await self._call.code()
            self.details = await self._call.details() or ""
        except grpc.aio.AioRpcError as exc:
            self.code, self.details = exc.code(), exc.details() or ""
        except asyncio.CancelledError:
            self.code = grpc.StatusCode.CANCELLED
        finally:
            self._closed.set()
            async with self._changed:
                self._changed.notify_all()

    async def _route(self, response: hub_pb2.PublishStreamResponse) -> None:
        now = time.monotonic()
        async with self._changed:
            self.responses.append(response)
            for result in response.results:
                self._by_ref[result.ref].append(result)
                self.arrivals.append(result.ref)
                self.arrived_at[result.ref] = now
            self._changed.notify_all()

    def send(self, *items: hub_pb2.PublishItem) -> None:
        self._outbox.put_nowait(hub_pb2.PublishStreamRequest(items=items))

    def half_close(self) -> None:
        self._outbox.put_nowait(None)

    async def result(self, ref: int, timeout: float = BOUND) -> hub_pb2.PublishItemResult:  # noqa: ASYNC109
        """The next result for `ref` (each is taken once); AssertionError when none comes."""
        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: bool(self._by_ref[ref]) or self.closed)
        except TimeoutError:
            raise AssertionError(f"no result for ref {ref} within {timeout}s") from None
        if not self._by_ref[ref]:
            raise AssertionError(f"stream ended ({self.code}: {self.details}) before ref {ref}")
        return self._by_ref[ref].pop(0)

    async def results(self, refs: Sequence[int]) -> dict[int, hub_pb2.PublishItemResult]:
        return {ref: await self.result(ref) for ref in refs}

    async def no_result(self, ref: int, within: float) -> None:
        """Assert that no result for `ref` arrives within `within` seconds."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within), self._changed:
                await self._changed.wait_for(lambda: bool(self._by_ref[ref]))
            raise AssertionError(f"unexpected result for ref {ref}: {self._by_ref[ref][0]}")

    def unclaimed(self) -> list[hub_pb2.PublishItemResult]:
        """Results received but not taken by `result`."""
        return [r for results in self._by_ref.values() for r in results]

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def wait_closed(self, timeout: float = BOUND) -> grpc.StatusCode | None:  # noqa: ASYNC109
        """Until the hub ends the stream; its status code."""
        async with asyncio.timeout(timeout):
            await self._closed.wait()
        return self.code

    async def cancel(self) -> None:
        self._call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@contextlib.asynccontextmanager
async def publish_stream(address: str, token: str | None = None) -> AsyncIterator[StreamPublisher]:
    """A PublishStream call on its own channel, cancelled on exit."""
    async with aio_channel(address) as channel:
        stream = StreamPublisher(channel, bearer(token))
        try:
            yield stream
        finally:
            await stream.cancel()


async def deliveries_by_payment_id(sub: RawSubscriber, count: int) -> dict[str, hub_pb2.Delivery]:
    deliveries = await sub.receive(count)
    by_id = {d.notification.payment_id: d for d in deliveries}
    assert len(by_id) == count, "a notification was delivered twice"
    return by_id


# -- the outcomes of Publish, per item ----------------------------------------------------------


async def test_many_items_in_one_request_and_across_requests_are_acknowledged(
    tmp_path: Path,
) -> None:
    refs = [0, 1, 2, 3, 4, 2**64 - 1, 1000, 1001, 1002, 1003]  # any uint64, zero and max included
    notifications = {ref: make_notification(f"P{i:02d}") for i, ref in enumerate(refs)}
    async with (
        running_hub(tmp_path) as hub,
        raw_subscriber(hub.address, max_in_flight=20) as sub,
        publish_stream(hub.address) as stream,
    ):
        stream.send(*(item(ref, notifications[ref], wait=BOUND) for ref in refs[:5]))
        stream.send(*(item(ref, notifications[ref], wait=BOUND) for ref in refs[5:8]))
        stream.send(*(item(ref, notifications[ref], wait=BOUND) for ref in refs[8:]))
        delivered = await deliveries_by_payment_id(sub, len(refs))
        assert all(
            result.status == hub_pb2.ACTION_STATUS_OK
            for result in await sub.ack(*(d.delivery_id for d in delivered.values()))
        )
        results = await stream.results(refs)
        for ref, result in results.items():
            assert result.ref == ref
            assert result.error_code == 0 and not result.error_message
            response = result.response
            assert response.outcome == ACKNOWLEDGED
            d = delivered[notifications[ref].payment_id]
            assert response.notification_id == d.notification_id
            assert d.notification.raw_json == notifications[ref].raw_json
            assert response.alipay_send_count == 1
            assert group_state(response, "billing").state == hub_pb2.DELIVERY_STATE_ACKED
        assert len({r.response.notification_id for r in results.values()}) == len(refs)
        await sub.receive_none(within=0.5)
        assert stream.unclaimed() == [] and not stream.closed


async def test_a_duplicate_on_the_same_stream_is_already_acknowledged(tmp_path: Path) -> None:
    async with (
        running_hub(tmp_path) as hub,
        raw_subscriber(hub.address) as sub,
        publish_stream(hub.address) as stream,
    ):
        n = make_notification("P1")
        stream.send(item(1, n, wait=BOUND))
        [d] = await sub.receive(1)
        await sub.ack(d.delivery_id)
        first = await stream.result(1)
        assert first.response.outcome == ACKNOWLEDGED
        assert first.response.alipay_send_count == 1
        # A ref may be used again once answered; the same identity is found, not stored again.
        stream.send(item(1, n, wait=BOUND), item(2, n, wait=BOUND))
        again = await stream.results([1, 2])
        assert {r.response.outcome for r in again.values()} == {ALREADY}
        assert sorted(r.response.alipay_send_count for r in again.values()) == [2, 3]
        assert {r.response.notification_id for r in again.values()} == {d.notification_id}
        await sub.receive_none(within=0.5)


async def test_an_item_nobody_acks_answers_pending_shortly_before_its_wait(tmp_path: Path) -> None:
    wait, margin = 1.5, 0.5
    async with (
        running_hub(tmp_path, publish_margin=margin) as hub,
        publish_stream(hub.address) as stream,
    ):
        sent = time.monotonic()
        stream.send(item(1, make_notification("P1"), wait=wait))
        result = await stream.result(1)
        elapsed = stream.arrived_at[1] - sent
        assert result.error_code == 0
        assert result.response.outcome == PENDING
        assert result.response.notification_id
        assert group_state(result.response, "billing").state == hub_pb2.DELIVERY_STATE_PENDING
        # The hub's clock starts when it reads the item, after we sent it: never before
        # wait - margin; and the answer is in before the caller stops waiting.
        assert wait - margin - 0.05 <= elapsed < wait, elapsed
        async with raw_subscriber(hub.address) as sub:  # it is stored
            [d] = await sub.receive(1)
            assert d.notification_id == result.response.notification_id


async def test_without_a_wait_the_hub_waits_its_maximum(tmp_path: Path) -> None:
    async with (
        running_hub(tmp_path, publish_max_wait=0.5) as hub,
        publish_stream(hub.address) as stream,
    ):
        stream.send(item(1, make_notification("P1")))
        result = await stream.result(1)
        assert result.response.outcome == PENDING


async def test_a_zero_wait_stores_and_answers_pending_at_once(tmp_path: Path) -> None:
    async with running_hub(tmp_path) as hub, publish_stream(hub.address) as stream:
        stream.send(item(1, make_notification("P1"), wait=0.0))
        result = await stream.result(1)
        assert result.response.outcome == PENDING
        async with raw_subscriber(hub.address) as sub:
            [d] = await sub.receive(1)
            assert d.notification_id == result.response.notification_id


async def test_a_negative_wait_answers_pending_at_once_and_a_huge_one_is_capped(
    tmp_path: Path,
) -> None:
    async with (
        running_hub(tmp_path) as hub,
        raw_subscriber(hub.address) as sub,
        publish_stream(hub.address) as stream,
    ):
        negative, huge = item(1, make_notification("NEG")), item(2, make_notification("HUGE"))
        negative.wait.seconds = -5
        huge.wait.seconds = 10**9  # ~32 years: the hub waits at most MAX_CALLER_WAIT
        stream.send(negative, huge)
        assert (await stream.result(1)).response.outcome == PENDING
        delivered = await deliveries_by_payment_id(sub, 2)
        await sub.ack(*(d.delivery_id for d in delivered.values()))
        assert (await stream.result(2)).response.outcome == ACKNOWLEDGED


async def test_results_come_back_in_the_order_items_settle(tmp_path: Path) -> None:
    async with (
        running_hub(tmp_path) as hub,
        raw_subscriber(hub.address, max_in_flight=2) as sub,
        publish_stream(hub.address) as stream,
    ):
        stream.send(item(1, make_notification("SLOW"), wait=BOUND))
        stream.send(item(2, make_notification("FAST"), wait=BOUND))
        delivered = await deliveries_by_payment_id(sub, 2)
        await sub.ack(delivered["FAST"].delivery_id)
        assert (await stream.result(2)).response.outcome == ACKNOWLEDGED
        await stream.no_result(1, within=0.3)
        await sub.ack(delivered["SLOW"].delivery_id)
        assert (await stream.result(1)).response.outcome == ACKNOWLEDGED
        assert stream.arrivals == [2, 1]


async def test_a_rejected_subscriber_delivery_settles_the_item(tmp_path: Path) -> None:
    async with (
        running_hub(tmp_path) as hub,
        raw_subscriber(hub.address) as sub,
        publish_stream(hub.address) as stream,
    ):
        stream.send(item(1, make_notification("P1"), wait=BOUND))
        [d] = await sub.receive(1)
        await sub.reject(d.delivery_id, "amount mismatch")
        result = await stream.result(1)
        assert result.response.outcome == ACKNOWLEDGED
        assert group_state(result.response, "billing").state == hub_pb2.DELIVERY_STATE_DEAD


def _without_payment_ids() -> notification_pb2.PaymentNotification:
    n = make_notification("P1")
    n.ClearField("payment_id")
    n.ClearField("payment_request_id")
    return n


@pytest.mark.parametrize(
    ("build", "detail"),
    [(_without_payment_ids, "neither"), (lambda: None, "notification is missing")],
    ids=["no-payment-ids", "no-notification"],
)
async def test_an_invalid_item_is_rejected_and_nothing_stored(
    tmp_path: Path,
    build: Callable[[], notification_pb2.PaymentNotification | None],
    detail: str,
) -> None:
    notification = build()
    async with running_hub(tmp_path) as hub, publish_stream(hub.address) as stream:
        stream.send(item(1, notification, wait=BOUND), item(2, make_notification("OK"), wait=0.5))
        rejected = await stream.result(1)
        assert rejected.error_code == 0
        assert rejected.response.outcome == REJECTED
        assert detail in rejected.response.detail
        assert not rejected.response.notification_id
        assert (await stream.result(2)).response.outcome == PENDING  # its neighbour is unharmed
        async with raw_subscriber(hub.address) as sub:
            [d] = await sub.receive(1)
            assert d.notification.payment_id == "OK"
            await sub.receive_none(within=0.3)


# -- errors of one item -----------------------------------------------------------------------


async def test_a_ref_already_in_flight_is_invalid_and_the_first_still_answered(
    tmp_path: Path,
) -> None:
    async with (
        running_hub(tmp_path) as hub,
        raw_subscriber(hub.address) as sub,
        publish_stream(hub.address) as stream,
    ):
        stream.send(item(7, make_notification("FIRST"), wait=BOUND))
        [d] = await sub.receive(1)
        stream.send(item(7, make_notification("SECOND"), wait=BOUND))
        refused = await stream.result(7)
        assert refused.error_code == _code(grpc.StatusCode.INVALID_ARGUMENT)
        assert "already in flight" in refused.error_message
        assert not refused.HasField("response")
        await sub.ack(d.delivery_id)
        answered = await stream.result(7)
        assert answered.error_code == 0
        assert answered.response.outcome == ACKNOWLEDGED
        assert answered.response.notification_id == d.notification_id
        await sub.receive_none(within=0.5)  # SECOND was never stored
        assert stream.unclaimed() == []


async def test_a_ref_twice_in_one_request_refuses_the_second(tmp_path: Path) -> None:
    async with (
        running_hub(tmp_path) as hub,
        raw_subscriber(hub.address) as sub,
        publish_stream(hub.address) as stream,
    ):
        stream.send(item(3, make_notification("A"), wait=BOUND), item(3, make_notification("B")))
        refused = await stream.result(3)
        assert refused.error_code == _code(grpc.StatusCode.INVALID_ARGUMENT)
        [d] = await sub.receive(1)
        assert d.notification.payment_id == "A"
        await sub.ack(d.delivery_id)
        assert (await stream.result(3)).response.outcome == ACKNOWLEDGED
        await sub.receive_none(within=0.5)


@pytest.fixture
def max_items_in_flight(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """Make the hub's PublishStream sessions hold at most `n` items (the real limit is 10,000)."""

    def limit(n: int) -> None:
        session = functools.partial(PublishStreamSession, max_in_flight=n)
        monkeypatch.setattr(service, "PublishStreamSession", session)

    return limit


async def test_items_over_the_limit_are_resource_exhausted_until_room_is_made(
    tmp_path: Path, max_items_in_flight: Callable[[int], None]
) -> None:
    max_items_in_flight(2)
    async with (
        running_hub(tmp_path) as hub,
        raw_subscriber(hub.address, max_in_flight=10) as sub,
        publish_stream(hub.address) as stream,
    ):
        stream.send(
            item(1, make_notification("P1"), wait=BOUND),
            item(2, make_notification("P2"), wait=BOUND),
            item(3, make_notification("P3"), wait=BOUND),
        )
        over = await stream.result(3)
        assert over.error_code == _code(grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert "2 items already in flight" in over.error_message
        delivered = await deliveries_by_payment_id(sub, 2)
        assert set(delivered) == {"P1", "P2"}  # P3 was never stored
        await sub.ack(delivered["P1"].delivery_id)
        assert (await stream.result(1)).response.outcome == ACKNOWLEDGED
        stream.send(item(3, make_notification("P3"), wait=BOUND))  # room again
        [d3] = await sub.receive(1)
        await sub.ack(d3.delivery_id, delivered["P2"].delivery_id)
        assert (await stream.result(3)).response.outcome == ACKNOWLEDGED
        assert (await stream.result(2)).response.outcome == ACKNOWLEDGED
        await sub.receive_none(within=0.3)


async def test_a_caller_that_does_not_read_is_held_back_not_buffered(tmp_path: Path) -> None:
    """Unsent results count against the limit: the hub stops reading the caller's items instead
    of holding an unbounded backlog of answers (RESOURCE_EXHAUSTED ones included)."""
    limit, batches, per_batch = 10, 50, 100
    consumed = 0

    async def requests() -> AsyncIterator[hub_pb2.PublishStreamRequest]:
        nonlocal consumed
        for batch in range(batches):
            consumed += 1
            refs = range(batch * per_batch, (batch + 1) * per_batch)
            yield hub_pb2.PublishStreamRequest(items=[item(ref, None) for ref in refs])

    async with running_hub(tmp_path) as hub:
        # The servicer's own publish on the real broker, driven without a network in between so
        # that "the caller does not read" is exact (no transport buffers).
        servicer = service.NotificationHubServicer(hub.broker, hub.config)
        session = PublishStreamSession(
            servicer._publish, service._undecodable_reason, max_in_flight=limit
        )
        responses = session.responses(requests())
        async with asyncio.timeout(BOUND):
            first = await anext(responses)
            await asyncio.sleep(0.3)  # rejections need no I/O: all the reader can do, it did
            assert consumed < batches
            rest = [r async for r in responses]
        answered = [r for response in [first, *rest] for r in response.results]
        assert sorted(r.ref for r in answered) == list(range(batches * per_batch))
        exhausted = _code(grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert {r.error_code or r.response.outcome for r in answered} <= {exhausted, REJECTED}
        assert session.error is None


async def test_many_results_are_split_into_several_messages(tmp_path: Path) -> None:
    count = MAX_RESULTS_PER_MESSAGE + 200
    invalid = make_notification("P1")
    invalid.ClearField("raw_json")  # rejected at once, so all settle together
    async with running_hub(tmp_path) as hub, publish_stream(hub.address) as stream:
        stream.send(*(item(ref, invalid) for ref in range(count)))
        results = await stream.results(range(count))
        assert {r.response.outcome for r in results.values()} == {REJECTED}
        assert sorted(stream.arrivals) == list(range(count))
        assert len(stream.responses) >= 2
        assert all(len(r.results) <= MAX_RESULTS_PER_MESSAGE for r in stream.responses)


# -- the stream's own end -------------------------------------------------------------------------


async def test_half_close_answers_the_items_still_waiting_then_ends_ok(tmp_path: Path) -> None:
    async with (
        running_hub(tmp_path, publish_margin=0.25) as hub,
        raw_subscriber(hub.address) as sub,
        publish_stream(hub.address) as stream,
    ):
        stream.send(
            item(1, make_notification("ACKED"), wait=BOUND),
            item(2, make_notification("UNACKED"), wait=1.0),
        )
        delivered = await deliveries_by_payment_id(sub, 2)
        stream.half_close()
        await stream.no_result(1, within=0.2)
        assert not stream.closed
        await sub.ack(delivered["ACKED"].delivery_id)
        assert (await stream.result(1)).response.outcome == ACKNOWLEDGED
        assert (await stream.result(2)).response.outcome == PENDING
        assert await stream.wait_closed() == grpc.StatusCode.OK
        assert stream.unclaimed() == []


async def test_half_close_with_nothing_in_flight_ends_ok_at_once(tmp_path: Path) -> None:
    async with running_hub(tmp_path) as hub, publish_stream(hub.address) as stream:
        stream.half_close()
        assert await stream.wait_closed() == grpc.StatusCode.OK
        assert stream.responses == []


async def test_cancelling_the_stream_abandons_its_items_but_keeps_what_they_stored(
    tmp_path: Path,
) -> None:
    async with running_hub(tmp_path) as hub:
        async with publish_stream(hub.address) as stream:
            stream.send(item(1, make_notification("P1"), wait=BOUND))
            async with raw_subscriber(hub.address) as sub:
                [d] = await sub.receive(1)  # stored and delivered; left unacked
        # The hub goes on serving: the same notification on a new stream is found, not re-stored.
        async with raw_subscriber(hub.address) as sub, publish_stream(hub.address) as stream:
            stream.send(item(1, make_notification("P1"), wait=BOUND))
            [again] = await sub.receive(1)
            assert again.notification_id == d.notification_id
            await sub.ack(again.delivery_id)
            result = await stream.result(1)
            assert result.response.outcome == ACKNOWLEDGED
            assert result.response.alipay_send_count == 2


async def _raw_publish_stream(address: str, *messages: bytes) -> grpc.aio.AioRpcError:
    """Send `messages` as they are (no serializer) on a PublishStream; the error it ends with."""
    async with aio_channel(address) as channel:
        call = channel.stream_stream(METHOD)(iter(messages))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async with asyncio.timeout(BOUND):
                async for _ in call:
                    pass
        return caught.value


async def test_undecodable_request_bytes_end_the_stream_invalid_argument(tmp_path: Path) -> None:
    async with running_hub(tmp_path) as hub:
        error = await _raw_publish_stream(hub.address, b"\xff\xff\xff\xff")
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not a valid paynotify.v1.PublishStreamRequest" in (error.details() or "")


async def test_undecodable_bytes_after_answered_items_end_the_stream(tmp_path: Path) -> None:
    async with running_hub(tmp_path) as hub, aio_channel(hub.address) as channel:
        invalid = make_notification("P1")
        invalid.ClearField("raw_json")
        outbox: asyncio.Queue[bytes | None] = asyncio.Queue()

        async def requests() -> AsyncIterator[bytes]:
            while (data := await outbox.get()) is not None:
                yield data

        call = channel.stream_stream(METHOD)(requests())
        outbox.put_nowait(
            hub_pb2.PublishStreamRequest(items=[item(5, invalid)]).SerializeToString()
        )
        async with asyncio.timeout(BOUND):
            first = hub_pb2.PublishStreamResponse.FromString(await call.read())
        assert [(r.ref, r.response.outcome) for r in first.results] == [(5, REJECTED)]
        outbox.put_nowait(b"\x0a\xff")  # field 1, length past the end
        async with asyncio.timeout(BOUND):
            assert await call.code() == grpc.StatusCode.INVALID_ARGUMENT
        outbox.put_nowait(None)


async def test_hub_shutdown_answers_waiting_items_unavailable_never_acknowledged(
    tmp_path: Path,
) -> None:
    async with (
        running_hub(tmp_path) as hub,
        raw_subscriber(hub.address, max_in_flight=10) as sub,
        publish_stream(hub.address) as stream,
    ):
        stream.send(
            item(1, make_notification("ACKED"), wait=BOUND),
            item(2, make_notification("UNACKED"), wait=BOUND),
            item(3, make_notification("NOSUB"), wait=BOUND),
        )
        delivered = await deliveries_by_payment_id(sub, 3)
        await sub.ack(delivered["ACKED"].delivery_id)
        assert (await stream.result(1)).response.outcome == ACKNOWLEDGED
        await hub.stop(grace=0.5)
        await stream.wait_closed()
        assert stream.code == grpc.StatusCode.UNAVAILABLE, (stream.code, stream.details)
        # Ended by the hub itself once its waiting items were answered, not cancelled by gRPC
        # when the grace ran out.
        assert "publish again on another hub" in (stream.details or ""), stream.details
        unavailable = _code(grpc.StatusCode.UNAVAILABLE)
        leftovers = stream.unclaimed()
        assert sorted(r.ref for r in leftovers) == [2, 3], leftovers  # each answered, once
        for leftover in leftovers:
            assert leftover.error_code == unavailable, leftover


async def test_items_sent_while_the_hub_stops_are_unavailable(tmp_path: Path) -> None:
    async with (
        running_hub(tmp_path) as hub,
        raw_subscriber(hub.address, max_in_flight=10) as sub,
        publish_stream(hub.address) as stream,
    ):
        stream.send(item(1, make_notification("WAITING"), wait=BOUND))
        # A lease in flight keeps the hub draining (up to its grace) with the stream open.
        await deliveries_by_payment_id(sub, 1)
        stopping = asyncio.create_task(hub.stop(grace=2.0))
        await asyncio.sleep(0.2)  # the broker now refuses new publishes
        stream.send(item(2, make_notification("LATE"), wait=BOUND))
        late = await stream.result(2)
        assert late.error_code == _code(grpc.StatusCode.UNAVAILABLE)
        assert "shutting down" in late.error_message
        async with asyncio.timeout(BOUND):
            await stopping
        await stream.wait_closed()
        assert stream.code == grpc.StatusCode.UNAVAILABLE, (stream.code, stream.details)
        leftovers = stream.unclaimed()
        assert [r.ref for r in leftovers] == [1], leftovers  # the waiting item was answered
        for leftover in leftovers:
            assert leftover.error_code == _code(grpc.StatusCode.UNAVAILABLE), leftover


# -- tokens ---------------------------------------------------------------------------------------


async def test_publish_stream_needs_the_publisher_token(tmp_path: Path) -> None:
    publisher, subscriber = secrets.token_hex(32), secrets.token_hex(32)
    tokens = {"publisher": publisher, "subscriber:billing": subscriber}
    async with running_hub(tmp_path, tokens=tokens) as hub:
        for token, code in (
            (None, grpc.StatusCode.UNAUTHENTICATED),
            ("0123456789abcdef" * 4, grpc.StatusCode.UNAUTHENTICATED),
            (subscriber, grpc.StatusCode.PERMISSION_DENIED),
        ):
            async with publish_stream(hub.address, token) as refused:
                refused.send(item(1, make_notification("REFUSED"), wait=0.5))
                assert await refused.wait_closed() == code, refused.details
                assert refused.responses == []
        async with publish_stream(hub.address, publisher) as stream:
            stream.send(item(1, make_notification("ALLOWED"), wait=0.5))
            assert (await stream.result(1)).response.outcome == PENDING
            stream.half_close()
            assert await stream.wait_closed() == grpc.StatusCode.OK
        async with raw_subscriber(hub.address, token=subscriber) as sub:
            [d] = await sub.receive(1)
            assert d.notification.payment_id == "ALLOWED"  # nothing refused was stored
            await sub.receive_none(within=0.3)
