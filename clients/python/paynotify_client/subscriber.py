"""Subscriber: receive a group's payment notifications from the hub, one callback per delivery."""

from __future__ import annotations

import os
import re
import socket
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Self

import grpc
from google.protobuf import duration_pb2

from paynotify.v1 import hub_pb2, notification_pb2
from paynotify_client.backoff import Backoff
from paynotify_client.callback import Callback
from paynotify_client.credentials import bearer_metadata, warn_plaintext_token
from paynotify_client.errors import SubscriberStateError
from paynotify_client.flow import FlowControl
from paynotify_client.future import SubscribeFuture
from paynotify_client.streaming import ActionResultHook, StreamingPull, StreamSettings

__all__ = [
    "DEFAULT_ACK_DEADLINE",
    "DEFAULT_BACKOFF",
    "DEFAULT_CLOSE_TIMEOUT",
    "DEFAULT_FLOW_CONTROL",
    "Subscriber",
    "notify_type_value",
]

DEFAULT_ACK_DEADLINE = 30.0
DEFAULT_CLOSE_TIMEOUT = 30.0
DEFAULT_FLOW_CONTROL = FlowControl()
DEFAULT_BACKOFF = Backoff()

# The hub's rule for group names (hub.proto, Open.group), checked here to fail before connecting.
_GROUP_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")

# Keepalive pings find a hub that vanished without closing the connection (a power cut). Six minutes
# stays above gRPC servers' default minimum ping interval (five), so no hub turns them away.
_DEFAULT_CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", 360_000),
    ("grpc.keepalive_timeout_ms", 20_000),
)


def notify_type_value(notify_type: str | int) -> notification_pb2.NotifyType.ValueType:
    """The NotifyType for `PAYMENT_RESULT`, `NOTIFY_TYPE_PAYMENT_RESULT` or its number."""
    enum = notification_pb2.NotifyType
    try:
        if isinstance(notify_type, int):
            name = enum.Name(notify_type)  # type: ignore[arg-type]
        else:
            name = "NOTIFY_TYPE_" + notify_type.strip().upper().removeprefix("NOTIFY_TYPE_")
        value = enum.Value(name)
    except ValueError:
        value = notification_pb2.NOTIFY_TYPE_UNSPECIFIED
    if value == notification_pb2.NOTIFY_TYPE_UNSPECIFIED:
        raise ValueError(f"unknown notify type {notify_type!r}")
    return value


def _default_client_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _open_request(
    group: str,
    client_id: str,
    flow_control: FlowControl,
    ack_deadline: float,
    notify_types: Sequence[str | int],
) -> hub_pb2.SubscribeRequest:
    deadline = duration_pb2.Duration()
    deadline.FromNanoseconds(round(ack_deadline * 1e9))
    request = hub_pb2.SubscribeRequest()
    request.open.group = group
    request.open.client_id = client_id
    request.open.max_in_flight = flow_control.max_in_flight
    request.open.ack_deadline.CopyFrom(deadline)
    request.open.notify_types.extend(notify_type_value(t) for t in notify_types)
    return request


class Subscriber:
    """A member of one subscriber group on a paynotify hub.

    ::

        def handle(message: Message) -> None:
            book_payment(message.notification)  # idempotent: delivery is at least once
            message.ack()

        with Subscriber("hub.internal:50051", "billing") as subscriber:
            subscriber.subscribe(handle).result()  # blocks; raises SubscriberError if refused

    target: the hub's address, "host:port".
    group: a group declared on the hub; members of one group share its deliveries.
    client_id: names this member in the hub's logs (default: "<hostname>-<pid>").
    flow_control: deliveries held at once and callback threads (see FlowControl).
    ack_deadline: seconds a delivery stays leased before the hub redelivers it (see `extend()`).
    notify_types: only these notifyTypes are streamed (names or NotifyType numbers; empty: all).
    channel_credentials: TLS credentials, e.g. `grpc.ssl_channel_credentials(ca_pem)`, or
        `paynotify_client.credentials.tls_credentials(ca="ca.pem", cert=..., key=...)` (mutual
        TLS with a client certificate); None: plaintext (loopback development only).
    token: the group's subscriber token, sent as `authorization: Bearer <token>` on the stream
        (`paynotify_client.credentials.read_token_file` reads it); never logged or repr'd.
        A hub refusing it ends the subscription with SubscriberAuthError.
    backoff: reconnect backoff after a retryable stream error (see Backoff).
    channel_options: extra gRPC channel options, e.g. keepalive settings.
    on_action_result: called with each ActionResult the hub returns (on the stream thread).
    """

    def __init__(
        self,
        target: str,
        group: str,
        *,
        client_id: str | None = None,
        flow_control: FlowControl = DEFAULT_FLOW_CONTROL,
        ack_deadline: float = DEFAULT_ACK_DEADLINE,
        notify_types: Sequence[str | int] = (),
        channel_credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
        backoff: Backoff = DEFAULT_BACKOFF,
        channel_options: Sequence[tuple[str, str | int]] = (),
        on_action_result: ActionResultHook | None = None,
    ) -> None:
        if not _GROUP_NAME.match(group):
            raise ValueError(f"invalid group name {group!r}: expected [a-z0-9][a-z0-9._-]{{0,62}}")
        if ack_deadline <= 0:
            raise ValueError("ack_deadline must be positive")
        self.target = target
        self.group = group
        self.client_id = client_id or _default_client_id()
        self.flow_control = flow_control
        self._open = _open_request(group, self.client_id, flow_control, ack_deadline, notify_types)
        self._credentials = channel_credentials
        self._metadata = bearer_metadata(token)
        warn_plaintext_token(target, channel_credentials is not None, token)
        self._backoff = backoff
        self._channel_options = tuple(channel_options)
        self._on_action_result = on_action_result
        self._lock = threading.Lock()
        self._pull: StreamingPull | None = None
        self._closed = False

    def subscribe(self, callback: Callback, *, auto_ack: bool = False) -> SubscribeFuture:
        """Start receiving: `callback(message)` runs on a callback thread for each delivery.

        The callback settles the message with `ack()`, `nack()` or `reject()`. If it raises, the
        error is logged and the message nacked. If it returns without settling, the message stays
        leased until it is settled (from any thread) or its ack deadline passes, unless `auto_ack`
        is set, which acks it. One subscription per Subscriber.
        """
        with self._lock:
            if self._closed:
                raise SubscriberStateError("this Subscriber is closed")
            if self._pull is not None:
                raise SubscriberStateError("this Subscriber is already subscribed")
            future = SubscribeFuture(on_cancel=self._close_in_background)
            self._pull = StreamingPull(
                self._make_channel(), self._settings(auto_ack), callback, future
            )
            self._pull.start()
        return future

    def close(self, timeout: float = DEFAULT_CLOSE_TIMEOUT) -> None:
        """Stop receiving: no new callbacks start, running ones get up to `timeout` seconds to
        finish and have their acks confirmed by the hub, then the stream and channel are closed.
        Deliveries not settled by then are redelivered by the hub. Safe to call more than once.
        """
        with self._lock:
            self._closed = True
            pull = self._pull
        if pull is not None:
            pull.close(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Subscriber(target={self.target!r}, group={self.group!r}, "
            f"client_id={self.client_id!r})"
        )

    def _close_in_background(self) -> None:
        threading.Thread(target=self.close, name="paynotify-close", daemon=True).start()

    def _settings(self, auto_ack: bool) -> StreamSettings:
        return StreamSettings(
            target=self.target,
            open_request=self._open,
            metadata=self._metadata,
            backoff=self._backoff,
            threads=self.flow_control.threads,
            auto_ack=auto_ack,
            on_action_result=self._on_action_result,
        )

    def _make_channel(self) -> grpc.Channel:
        options: dict[str, str | int] = dict(_DEFAULT_CHANNEL_OPTIONS)
        # Let the channel's own reconnection keep pace with ours.
        options["grpc.initial_reconnect_backoff_ms"] = max(1, int(self._backoff.initial * 1000))
        options["grpc.max_reconnect_backoff_ms"] = max(1, int(self._backoff.maximum * 1000))
        options.update(self._channel_options)
        if self._credentials is not None:
            return grpc.secure_channel(self.target, self._credentials, list(options.items()))
        return grpc.insecure_channel(self.target, list(options.items()))
