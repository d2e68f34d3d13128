"""The engine behind Subscriber: Pub/Sub's StreamingPullManager, at a fraction of the size.

One background thread holds the Subscribe stream (gRPC's sync bidi call) and reads it; each
delivery becomes a Message whose callback runs on a callback thread (`CallbackPool`). A Message's
verbs only put actions into the stream's Outbox, which is the stream's request iterator. When the
stream ends with a retryable status the thread opens a new one after a backoff, with a new Outbox:
actions for the old stream's deliveries are dropped, because the hub has already made those
deliveries pending again.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import grpc

from paynotify.v1 import hub_pb2, hub_pb2_grpc
from paynotify_client.backoff import Backoff
from paynotify_client.callback import Callback, invoke
from paynotify_client.errors import SubscriberError, error_from_status, is_retryable
from paynotify_client.future import SubscribeFuture
from paynotify_client.message import Message
from paynotify_client.outbox import Outbox
from paynotify_client.pool import CallbackPool

__all__ = ["ActionResultHook", "StreamSettings", "StreamingPull"]

logger = logging.getLogger(__name__)

# Called on the stream thread with each ActionResult the hub sends back; keep it quick.
ActionResultHook = Callable[[hub_pb2.ActionResult], object]


@dataclass(frozen=True)
class StreamSettings:
    """Everything a StreamingPull needs besides the channel and the callback."""

    target: str
    open_request: hub_pb2.SubscribeRequest
    metadata: tuple[tuple[str, str], ...] = field(repr=False)  # carries the bearer token
    backoff: Backoff
    threads: int
    auto_ack: bool = False
    on_action_result: ActionResultHook | None = None


@dataclass(frozen=True)
class _StreamEnd:
    code: grpc.StatusCode
    details: str
    opened: bool


class StreamingPull:
    """Runs one subscription: start() once, then close() once (or it stops on a terminal error)."""

    def __init__(
        self,
        channel: grpc.Channel,
        settings: StreamSettings,
        callback: Callback,
        future: SubscribeFuture,
        *,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._channel = channel
        self._stub = hub_pb2_grpc.NotificationHubStub(channel)
        self._settings = settings
        self._callback = callback
        self._future = future
        self._rand = rand
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._closed = threading.Event()
        self._close_started = False
        self._call: grpc.Call | None = None
        self._outbox: Outbox | None = None
        self._busy = 0
        self._idle = threading.Condition()
        self._local = threading.local()
        self._pool: CallbackPool | None = None  # started with the stream thread
        self._thread = threading.Thread(target=self._run, name="paynotify-subscriber", daemon=True)

    @property
    def _group(self) -> str:
        return self._settings.open_request.open.group

    def start(self) -> None:
        """Start the callback threads and open the stream on a background thread."""
        self._pool = CallbackPool(self._settings.threads, "paynotify-callback")
        self._thread.start()

    # -- the stream thread ----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            error: BaseException | None = self._stream_until_stopped()
        except Exception as exc:  # a bug here must not leave result() waiting forever
            logger.exception("paynotify subscriber thread failed")
            error = exc
        if error is not None:
            self._abandon(error)

    def _stream_until_stopped(self) -> SubscriberError | None:
        attempt = 0
        while not self._closing.is_set():
            end = self._one_stream()
            if self._closing.is_set():
                return None
            if end.code != grpc.StatusCode.OK and not is_retryable(end.code):
                logger.error(
                    "Subscribe to group %s at %s refused: %s (%s); not retrying",
                    self._group,
                    self._settings.target,
                    end.code.name,
                    end.details,
                )
                return error_from_status(end.code, end.details)
            attempt = 1 if end.opened else attempt + 1
            delay = self._settings.backoff.delay(attempt, self._rand)
            logger.warning(
                "Subscribe stream for group %s at %s ended: %s (%s); reconnecting in %.2fs",
                self._group,
                self._settings.target,
                end.code.name,
                end.details,
                delay,
            )
            self._closing.wait(delay)
        return None

    def _one_stream(self) -> _StreamEnd:
        outbox = Outbox(self._settings.open_request)
        with self._lock:
            if self._closing.is_set():
                return _StreamEnd(grpc.StatusCode.CANCELLED, "closing", opened=False)
            call = self._stub.Subscribe(outbox.requests(), metadata=self._settings.metadata)
            self._call, self._outbox = call, outbox
        opened = False
        try:
            for response in call:
                opened = self._on_response(response, outbox) or opened
            return _StreamEnd(grpc.StatusCode.OK, "the hub ended the stream", opened)
        except grpc.RpcError as err:
            return _StreamEnd(err.code(), err.details() or "", opened)
        finally:
            unconfirmed = outbox.close()
            if unconfirmed and not self._closing.is_set():
                logger.info(
                    "%d action(s) on the ended stream were not confirmed by the hub; "
                    "it redelivers those deliveries",
                    unconfirmed,
                )

    def _on_response(self, response: hub_pb2.SubscribeResponse, outbox: Outbox) -> bool:
        opened = response.HasField("opened")
        if opened:
            logger.info(
                "subscribed to group %s at %s as member %s (max in flight %d)",
                response.opened.group,
                self._settings.target,
                response.opened.member_id,
                response.opened.max_in_flight,
            )
        for delivery in response.deliveries:
            self._dispatch(Message(delivery, outbox.put), outbox)
        if response.action_results:
            self._on_action_results(response.action_results, outbox)
        return opened

    def _dispatch(self, message: Message, outbox: Outbox) -> None:
        if self._closing.is_set():
            # Not nacked: a nack frees this stream's slot and the hub would lease the next
            # delivery (or this one again) to this closing stream at once, spending an attempt
            # per round trip until it is dead-lettered unseen. Left unsettled it keeps its slot;
            # the hub releases it to the group when close() ends the stream.
            logger.debug("closing: delivery %s left for the hub to release", message.delivery_id)
            return
        with self._idle:
            self._busy += 1
        assert self._pool is not None  # started before the stream thread that calls this
        run = functools.partial(self._run_callback, message, outbox)
        if not self._pool.submit(run, self._callback_done):
            self._callback_done()  # the pool is stopped: we are closing; no nack, as above

    def _on_action_results(self, results: Sequence[hub_pb2.ActionResult], outbox: Outbox) -> None:
        outbox.answered(len(results))
        hook = self._settings.on_action_result
        for result in results:
            if result.status != hub_pb2.ACTION_STATUS_OK:
                logger.info(
                    "hub answered %s to %s of delivery %s",
                    hub_pb2.ActionStatus.Name(result.status).removeprefix("ACTION_STATUS_"),
                    hub_pb2.ActionKind.Name(result.kind).removeprefix("ACTION_KIND_").lower(),
                    result.delivery_id,
                )
            if hook is not None:
                try:
                    hook(result)
                except Exception:
                    logger.exception("on_action_result hook raised")

    # -- callback threads -----------------------------------------------------------------------

    def _run_callback(self, message: Message, outbox: Outbox) -> None:
        self._local.in_callback = True
        try:
            if self._closing.is_set():
                logger.debug("closing: delivery %s left for the hub", message.delivery_id)
            elif outbox.closed:
                logger.debug("delivery %s of an ended stream skipped", message.delivery_id)
            else:
                invoke(self._callback, message, auto_ack=self._settings.auto_ack)
        finally:
            self._local.in_callback = False
            self._callback_done()

    def _callback_done(self) -> None:
        with self._idle:
            self._busy -= 1
            if self._busy == 0:  # only close() waits, and only for none at all
                self._idle.notify_all()

    # -- stopping -------------------------------------------------------------------------------

    def close(self, timeout: float) -> None:
        """Stop taking deliveries, wait (at most `timeout` s in all) for running callbacks and for
        the hub to answer their actions, then end the stream and close the channel. Deliveries that
        arrive meanwhile, or wait for a callback thread, are left unsettled: the hub releases them
        to the group's other members when the stream ends (nacking them would have the hub lease
        them straight back to this closing stream, an attempt spent each time).
        """
        if getattr(self._local, "in_callback", False):
            # Waiting for callbacks to finish from inside one would wait for ourselves.
            threading.Thread(target=self.close, args=(timeout,), daemon=True).start()
            return
        with self._lock:
            started, self._close_started = self._close_started, True
        if started:
            self._closed.wait(timeout)
            return
        deadline = time.monotonic() + timeout
        self._closing.set()
        self._drain(deadline)
        self._end_stream()
        self._thread.join(max(deadline - time.monotonic(), 0.1))
        self._release()
        self._future._set_result()
        self._closed.set()

    def _drain(self, deadline: float) -> None:
        with self._idle:
            idle = self._idle.wait_for(lambda: self._busy == 0, max(deadline - time.monotonic(), 0))
            busy = self._busy
        if not idle:
            logger.warning(
                "close: %d callback(s) still running after the timeout; "
                "their deliveries will be redelivered",
                busy,
            )
        outbox = self._outbox
        answered = (
            outbox is None or outbox.closed or outbox.wait_answered(deadline - time.monotonic())
        )
        if not answered:
            logger.warning("close: the hub did not confirm every action before the timeout")

    def _end_stream(self) -> None:
        with self._lock:
            call, outbox = self._call, self._outbox
        if outbox is not None:
            outbox.close()
        if call is not None:
            call.cancel()

    def _release(self) -> None:
        if self._pool is not None:
            self._pool.stop()
        self._channel.close()

    def _abandon(self, error: BaseException) -> None:
        """The stream stopped for good: free the threads and the channel, fail the future."""
        with self._lock:
            self._close_started = True
        self._closing.set()
        self._release()
        self._future._set_exception(error)
        self._closed.set()
