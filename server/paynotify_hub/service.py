"""The gRPC face of the broker (grpc.aio): converts messages, calls the broker, maps errors.

Subscribe is an async generator: a reader task answers each request's actions with one response, a
pump task turns the member's leases into deliveries, and the generator yields both in order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn

import grpc
from google.protobuf.message import DecodeError

from paynotify.v1 import hub_pb2, hub_pb2_grpc
from paynotify_hub.broker import Broker
from paynotify_hub.config import HubConfig
from paynotify_hub.convert import (
    duration_or_none,
    fill_delivery,
    new_notification,
    notify_type_texts,
    opened_of,
    publish_response,
    publish_response_rejected,
    receipt_of,
    validate_publish,
)
from paynotify_hub.domain import ActionStatus, Lease
from paynotify_hub.errors import HubError, InvalidArgument, ShuttingDown, Unavailable
from paynotify_hub.member import Member
from paynotify_hub.publish_stream import PublishStreamSession
from paynotify_hub.status import status_code_for

__all__ = ["NotificationHubServicer", "Undecodable", "add_notification_hub"]

logger = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[hub_pb2.SubscribeRequest, hub_pb2.SubscribeResponse]
PublishContext = grpc.aio.ServicerContext[hub_pb2.PublishRequest, hub_pb2.PublishResponse]
PublishStreamContext = grpc.aio.ServicerContext[
    hub_pb2.PublishStreamRequest, hub_pb2.PublishStreamResponse
]

# The longest a caller may have a publish wait (a stream item's `wait`, a unary deadline).
MAX_CALLER_WAIT = 300.0
# How long a Subscribe stream holds action results for the next deliveries to carry them. No
# publish waits for a result (only for its ack to be stored), so the hold delays no delivery and
# no publish; a result that rides with deliveries saves the hub a write and the subscriber a read
# and a wake-up. Past `MAX_HELD_RESULTS` they go at once, in responses of at most that many (the
# writer joins responses only under the send limit).
ACTION_RESULT_HOLD_S = 0.01
MAX_HELD_RESULTS = 1000

_STATUS = {
    ActionStatus.OK: hub_pb2.ACTION_STATUS_OK,
    ActionStatus.UNKNOWN: hub_pb2.ACTION_STATUS_UNKNOWN,
    ActionStatus.STALE: hub_pb2.ACTION_STATUS_STALE,
}


async def _abort(context: grpc.aio.ServicerContext[Any, Any], error: HubError) -> NoReturn:
    await context.abort(status_code_for(error), str(error))
    raise AssertionError("context.abort returned")  # pragma: no cover


class NotificationHubServicer(hub_pb2_grpc.NotificationHubServicer):
    """paynotify.v1.NotificationHub on a `Broker`."""

    def __init__(
        self, broker: Broker, config: HubConfig, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._broker = broker
        self._config = config
        self._clock = clock

    async def Publish(
        self, request: hub_pb2.PublishRequest, context: PublishContext
    ) -> hub_pb2.PublishResponse:
        if isinstance(request, Undecodable):
            await _abort(context, InvalidArgument(request.reason()))
        try:
            return await self._publish(request, context.time_remaining())
        except HubError as exc:
            await _abort(context, exc)

    async def PublishStream(
        self,
        request_iterator: AsyncIterator[hub_pb2.PublishStreamRequest],
        context: PublishStreamContext,
    ) -> AsyncIterator[hub_pb2.PublishStreamResponse]:
        session = PublishStreamSession(self._publish, _undecodable_reason)
        if self._broker.stopping:
            await _abort(context, ShuttingDown("hub shutting down, publish to another hub"))
        forget = self._broker.on_end(session.hub_ended)
        try:
            async for response in session.responses(request_iterator):
                yield response
        finally:
            forget()
        if session.error is not None:
            await _abort(context, session.error)

    async def _publish(
        self, request: hub_pb2.PublishRequest, remaining: float | None
    ) -> hub_pb2.PublishResponse:
        """One publish (unary or a stream's item); HubError propagates."""
        detail = validate_publish(request, self._config.max_notification_bytes)
        if detail is not None:
            return publish_response_rejected(detail)
        result = await self._broker.publish(
            new_notification(request.notification),
            receipt_of(request, self._clock()),
            self._publish_timeout(remaining),
        )
        return publish_response(result)

    def _publish_timeout(self, remaining: float | None) -> float:
        """Answer PENDING shortly before the caller's deadline; without one, after the max wait."""
        if remaining is None:
            return self._config.publish_max_wait
        remaining = min(remaining, MAX_CALLER_WAIT)
        return max(0.0, remaining - self._config.publish_margin)

    async def Subscribe(
        self,
        request_iterator: AsyncIterator[hub_pb2.SubscribeRequest],
        context: Context,
    ) -> AsyncIterator[hub_pb2.SubscribeResponse]:
        requests = aiter(request_iterator)
        try:
            member = await self._open(requests)
        except HubError as exc:
            await _abort(context, exc)
        try:
            yield hub_pb2.SubscribeResponse(opened=opened_of(member.id, member.settings))
            async with _Stream(self._broker, member, self._config.max_message_bytes) as stream:
                stream.start(requests)
                while (response := await stream.next_response()) is not None:
                    yield response
                error = stream.error
        finally:
            await asyncio.shield(self._broker.close_member(member))
        if error is not None:
            await _abort(context, error)

    async def _open(self, requests: AsyncIterator[hub_pb2.SubscribeRequest]) -> Member:
        try:
            first = await anext(requests)
        except StopAsyncIteration:
            raise InvalidArgument("first request must carry open; the stream ended") from None
        if isinstance(first, Undecodable):
            raise InvalidArgument(first.reason())
        if not first.HasField("open"):
            raise InvalidArgument("first request must carry open")
        o = first.open
        return await self._broker.open_member(
            o.group,
            o.client_id,
            o.max_in_flight,
            duration_or_none(o, "ack_deadline"),
            notify_type_texts(o.notify_types),
        )


class _Stream:
    """One Subscribe stream after its open: a reader task answers actions, a pump task turns the
    member's leases into deliveries; both feed one queue of responses, so writes never interleave.
    What queued up while a write went out leaves as one message (fewer messages for a subscriber
    to wake up for). Action results wait up to `ACTION_RESULT_HOLD_S` to leave with the next
    deliveries, and always leave before the stream ends. `next_response()` gives None at the end;
    `error` then says why (None: the client closed).
    """

    def __init__(self, broker: Broker, member: Member, max_message_bytes: int) -> None:
        # Room for the response's own framing under the send limit.
        self._max_bytes = max_message_bytes - _RESPONSE_OVERHEAD
        self._broker = broker
        self._member = member
        self._out: asyncio.Queue[hub_pb2.SubscribeResponse | None] = asyncio.Queue()
        self._back: deque[hub_pb2.SubscribeResponse | None] = deque()  # taken, not yet sent
        self._tasks: list[asyncio.Task[None]] = []
        self._held: list[hub_pb2.ActionResult] = []  # results waiting for deliveries to ride with
        self._flush_timer: asyncio.TimerHandle | None = None
        self.error: HubError | None = None

    async def __aenter__(self) -> _Stream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def start(self, requests: AsyncIterator[hub_pb2.SubscribeRequest]) -> None:
        self._tasks = [
            asyncio.create_task(self._guard(self._read(requests))),
            asyncio.create_task(self._guard(self._pump())),
        ]

    async def next_response(self) -> hub_pb2.SubscribeResponse | None:
        """The next response; what queued up behind it while the last write went out joins
        it as one message (deliveries, then action results, in order), under the send limit."""
        response = self._back.popleft() if self._back else await self._out.get()
        if response is None or self._out.empty():
            return response
        size = response.ByteSize()
        while not self._out.empty():
            after = self._out.get_nowait()
            n = 0 if after is None else after.ByteSize()
            if after is None or size + n > self._max_bytes:
                self._back.append(after)  # the end, or too much for this message: next time
                break
            response.deliveries.extend(after.deliveries)
            response.action_results.extend(after.action_results)
            size += n
        return response

    async def _guard(self, work: Awaitable[None]) -> None:
        """Run `work`; whatever way it ends, the stream ends (an unexpected error is logged)."""
        try:
            await work
        except HubError as exc:
            self.error = self.error or exc
        except Exception:
            logger.exception("subscribe stream of %s failed", self._member.id)
            self.error = self.error or Unavailable("internal error, reconnect")
        finally:
            self._flush_results()  # results go out before the end of the stream
            self._out.put_nowait(None)

    async def _read(self, requests: AsyncIterator[hub_pb2.SubscribeRequest]) -> None:
        async for request in requests:
            if isinstance(request, Undecodable):
                raise InvalidArgument(request.reason())
            if request.HasField("open"):
                raise InvalidArgument("open may only be sent in the first request")
            results = await self._act(request)
            if results:
                self._hold_results(results)

    async def _pump(self) -> None:
        while True:
            leases = await self._member.next_batch()  # raises ShuttingDown at the end
            # One response per slice under the send limit: a backlog of large notifications in
            # one message would end the stream RESOURCE_EXHAUSTED, again on every reconnect.
            for response in _responses(leases, self._max_bytes):
                self._out.put_nowait(response)
            self._flush_results()  # queued right behind: `next_response` sends them as one

    def _hold_results(self, results: list[hub_pb2.ActionResult]) -> None:
        """Send `results` with the next deliveries, or on their own after the hold."""
        self._held.extend(results)
        if len(self._held) >= MAX_HELD_RESULTS:
            self._flush_results()
        elif self._flush_timer is None:
            loop = asyncio.get_running_loop()
            self._flush_timer = loop.call_later(ACTION_RESULT_HOLD_S, self._flush_results)

    def _flush_results(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        held, self._held = self._held, []
        for start in range(0, len(held), MAX_HELD_RESULTS):
            piece = held[start : start + MAX_HELD_RESULTS]
            self._out.put_nowait(hub_pb2.SubscribeResponse(action_results=piece))

    async def _act(self, request: hub_pb2.SubscribeRequest) -> list[hub_pb2.ActionResult]:
        b, m = self._broker, self._member
        results: list[hub_pb2.ActionResult] = []

        def add(delivery_id: str, kind: hub_pb2.ActionKind.ValueType, status: ActionStatus) -> None:
            results.append(
                hub_pb2.ActionResult(delivery_id=delivery_id, kind=kind, status=_STATUS[status])
            )

        # A request's acks go to the store as one call: on SQLite one job of the worker's group
        # commit, on PostgreSQL into its ack batches. Nacks, rejects and extensions stay in order.
        ack_ids = list(request.ack_ids)
        if ack_ids:
            statuses = await b.ack_many(m, ack_ids)
            for ack_id, status in zip(ack_ids, statuses, strict=True):
                add(ack_id, hub_pb2.ACTION_KIND_ACK, status)
        for nack in request.nacks:
            status = await b.nack(m, nack.delivery_id, duration_or_none(nack, "delay"))
            add(nack.delivery_id, hub_pb2.ACTION_KIND_NACK, status)
        for rej in request.rejects:
            status = await b.reject(m, rej.delivery_id, rej.reason)
            add(rej.delivery_id, hub_pb2.ACTION_KIND_REJECT, status)
        for ext in request.extensions:
            status = await b.extend(m, ext.delivery_id, duration_or_none(ext, "extension"))
            add(ext.delivery_id, hub_pb2.ACTION_KIND_EXTEND, status)
        return results


# A repeated field's tag and length prefix, per delivery; and slack for the response itself.
_DELIVERY_OVERHEAD = 16
_RESPONSE_OVERHEAD = 1024


def _responses(leases: list[Lease], max_bytes: int) -> list[hub_pb2.SubscribeResponse]:
    """The deliveries of `leases` in order, in responses each serialized under `max_bytes` (a
    delivery alone always forms one). Each is written in place in its response."""
    responses: list[hub_pb2.SubscribeResponse] = []
    size = max_bytes  # no response yet: the first delivery starts one
    for lease in leases:
        if responses:
            delivery = responses[-1].deliveries.add()
            fill_delivery(delivery, lease)
            n = delivery.ByteSize() + _DELIVERY_OVERHEAD
            if size + n <= max_bytes:
                size += n
                continue
            del responses[-1].deliveries[-1]  # too big for this response: it starts the next
        response = hub_pb2.SubscribeResponse()
        fill_delivery(response.deliveries.add(), lease)
        responses.append(response)
        size = response.deliveries[0].ByteSize() + _DELIVERY_OVERHEAD
    return responses


class Undecodable:
    """Stands in for request bytes that are not a valid `type_name`: the lenient deserializers
    below hand it to the servicer, which answers INVALID_ARGUMENT (grpc.aio's own answer to a
    deserializer that raises is UNKNOWN, with the exception's text)."""

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name

    def reason(self) -> str:
        return f"the request is not a valid {self.type_name} (protobuf wire format or UTF-8)"


def _undecodable_reason(request: object) -> str | None:
    return request.reason() if isinstance(request, Undecodable) else None


def _lenient(message_type: Any) -> Callable[[bytes], Any]:
    name = message_type.DESCRIPTOR.full_name

    def parse(data: bytes) -> Any:
        try:
            return message_type.FromString(data)
        except DecodeError:
            return Undecodable(name)

    return parse


def add_notification_hub(servicer: NotificationHubServicer, server: grpc.aio.Server) -> None:
    """`hub_pb2_grpc.add_NotificationHubServicer_to_server`, with lenient request parsing."""
    handlers = {
        "Publish": grpc.unary_unary_rpc_method_handler(
            servicer.Publish,
            request_deserializer=_lenient(hub_pb2.PublishRequest),
            response_serializer=hub_pb2.PublishResponse.SerializeToString,
        ),
        "PublishStream": grpc.stream_stream_rpc_method_handler(
            servicer.PublishStream,
            request_deserializer=_lenient(hub_pb2.PublishStreamRequest),
            response_serializer=hub_pb2.PublishStreamResponse.SerializeToString,
        ),
        "Subscribe": grpc.stream_stream_rpc_method_handler(
            servicer.Subscribe,
            request_deserializer=_lenient(hub_pb2.SubscribeRequest),
            response_serializer=hub_pb2.SubscribeResponse.SerializeToString,
        ),
    }
    service = hub_pb2.DESCRIPTOR.services_by_name["NotificationHub"].full_name
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    server.add_registered_method_handlers(service, handlers)
