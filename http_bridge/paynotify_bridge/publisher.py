"""Publish a verified notification to the hub and translate the answer into the bridge's terms.

One long-lived, thread-safe gRPC channel serves every waitress thread. Publishes go out over a few
long-lived PublishStream calls on it (`publish_stream.StreamPool`), many per message, instead of
one Publish call each. With several hubs the channel balances round-robin over all of them (each
new stream lands on the next ready hub, a dead one is skipped, a frozen one dropped by keepalive
pings); an item whose stream broke is sent again on another, as Publish is safe to retry: the hub
stores a notification once per identity. With `credentials` the channel is TLS (mutual TLS when they
hold a client certificate); `token` goes with every stream as `authorization: Bearer <token>`.

    outcome / status                       -> result
    ACKNOWLEDGED, ALREADY_ACKNOWLEDGED     -> PublishResult (the bridge answers SUCCESS)
    PENDING, no answer within `timeout`    -> NotAcknowledged (503, Alipay retries)
    REJECTED                               -> MalformedBody, the hub's detail (400, nothing stored)
    UNAVAILABLE, any other gRPC error      -> HubUnavailable (503, Alipay retries)
    UNAUTHENTICATED, PERMISSION_DENIED     -> HubUnavailable, logged as an error (the token)
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from paynotify.v1 import hub_pb2, notification_pb2
from paynotify_bridge.errors import HubUnavailable, MalformedBody, NotAcknowledged
from paynotify_bridge.publish_stream import PublishStreamError, StreamPool, StreamSettings

__all__ = ["READY_TIMEOUT", "HubPublisher", "PublishResult", "channel_target", "service_config"]

logger = logging.getLogger(__name__)

SERVICE_NAME: Final = "paynotify.v1.NotificationHub"
# /readyz must answer quickly even when the hub is a black hole.
READY_TIMEOUT: Final = 1.0
RETRY_MAX_ATTEMPTS: Final = 4
# Reconnect to a hub that went away quickly: a restarted hub is back within seconds.
RECONNECT_BACKOFF_MS: Final = 200
RECONNECT_MAX_BACKOFF_MS: Final = 2000
# Ping each hub this often (the hub accepts one every 10 s); drop a connection whose ping is
# unanswered after PING_TIMEOUT_MS (gRPC's own ping timeout is a minute).
KEEPALIVE_TIME_MS: Final = 15_000
PING_TIMEOUT_MS: Final = 5_000

_ACKED: Final = frozenset(
    {
        hub_pb2.PublishOutcome.PUBLISH_OUTCOME_ACKNOWLEDGED,
        hub_pb2.PublishOutcome.PUBLISH_OUTCOME_ALREADY_ACKNOWLEDGED,
    }
)
_REFUSED: Final = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})
_SETTLED: Final = frozenset(
    {hub_pb2.DeliveryState.DELIVERY_STATE_ACKED, hub_pb2.DeliveryState.DELIVERY_STATE_DEAD}
)


@dataclass(frozen=True)
class PublishResult:
    """An acknowledged Publish: the hub's id for the notification and Alipay's send count."""

    notification_id: str
    alipay_send_count: int
    already_acknowledged: bool


def service_config() -> str:
    """Round-robin over every hub address; retry a unary Publish that found a hub UNAVAILABLE.

    Not PublishStream: its pool re-sends what a broken stream left unanswered itself, and under a
    retry policy gRPC held a stream opened while the hub restarted uncommitted, taking items it
    never sent (measured: one request in the first second after a hub restart answered 503).
    """
    retry = {
        "maxAttempts": RETRY_MAX_ATTEMPTS,
        "initialBackoff": "0.05s",
        "maxBackoff": "0.5s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    return json.dumps(
        {
            "loadBalancingConfig": [{"round_robin": {}}],
            "methodConfig": [
                {"name": [{"service": SERVICE_NAME, "method": "Publish"}], "retryPolicy": retry}
            ],
        }
    )


def channel_target(hubs: Sequence[str]) -> str:
    """One gRPC target naming every hub.

    One address: `dns:///host:port` (DNS may return several hubs; round-robin uses them all).
    Several: gRPC's static `ipv4:`/`ipv6:` list; host names among them are resolved once, here.
    """
    if len(hubs) == 1:
        return f"dns:///{hubs[0]}"
    resolved = [_resolve(hub) for hub in hubs]
    families = {ip.version for ip, _ in resolved}
    if families == {4}:
        return "ipv4:" + ",".join(f"{ip}:{port}" for ip, port in resolved)
    if families == {6}:
        return "ipv6:" + ",".join(f"[{ip}]:{port}" for ip, port in resolved)
    raise ValueError(f"--hub {','.join(hubs)}: mixes IPv4 and IPv6 addresses; use one family")


def _resolve(hub: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    host, _, port_text = hub.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    port = int(port_text)
    try:
        return ipaddress.ip_address(host), port
    except ValueError:
        pass
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    infos.sort(key=lambda info: info[0] != socket.AF_INET)  # prefer IPv4, like most hubs listen
    address = ipaddress.ip_address(infos[0][4][0])
    logger.info("hub %s resolved once to %s (restart the bridge if it moves)", hub, address)
    return address, port


class HubPublisher:
    """Publishes to the hub over one shared channel; safe to call from many threads.

    credentials: TLS channel credentials (None: plaintext); server_name: the name to verify in the
    hub's certificate when it is not the --hub host (with several hubs the target holds addresses).
    token: the publisher token, sent with each stream. `publish` never waits longer than `timeout`.
    """

    def __init__(
        self,
        hubs: Sequence[str],
        timeout: float,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        server_name: str | None = None,
        token: str | None = None,
    ) -> None:
        if not hubs:
            raise ValueError("at least one hub address is needed")
        self.hubs = tuple(hubs)
        self.timeout = timeout
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        options: list[tuple[str, str | int]] = [
            ("grpc.service_config", service_config()),
            ("grpc.lb_policy_name", "round_robin"),
            ("grpc.enable_retries", 1),
            ("grpc.initial_reconnect_backoff_ms", RECONNECT_BACKOFF_MS),
            ("grpc.max_reconnect_backoff_ms", RECONNECT_MAX_BACKOFF_MS),
            ("grpc.min_reconnect_backoff_ms", RECONNECT_BACKOFF_MS),
            # A hub that stops answering without closing its connections (host down, partition,
            # frozen process) is found by pings; round-robin then skips it.
            ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
            ("grpc.keepalive_timeout_ms", PING_TIMEOUT_MS),
            ("grpc.http2.ping_timeout_ms", PING_TIMEOUT_MS),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
        ]
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        target = channel_target(self.hubs)
        self._channel = (
            grpc.secure_channel(target, credentials, options)
            if credentials is not None
            else grpc.insecure_channel(target, options)
        )
        settings = StreamSettings(streams=max(2, len(self.hubs)))
        self._streams = StreamPool(
            self._channel, timeout, metadata=self._metadata, settings=settings
        )
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def publish(
        self, notification: notification_pb2.PaymentNotification, receipt: hub_pb2.Receipt
    ) -> PublishResult:
        """Store and wait for the acks within `timeout` seconds; raise `PublishFailed` otherwise."""
        request = hub_pb2.PublishRequest(notification=notification, receipt=receipt)
        try:
            response = self._streams.publish(request)
        except PublishStreamError as exc:
            raise _failure_of(exc.code, exc.details) from None
        return _result_of(response)

    @property
    def hub_generation(self) -> int:
        """Grows whenever a stream to a hub broke or a hub said it is going away: a hub may have
        restarted (and changed its required groups) since a number read earlier."""
        return self._streams.generation

    def ready(self) -> bool:
        """Whether a hub answers a health check now (a hub without the health service counts)."""
        request = health_pb2.HealthCheckRequest(service="")
        try:
            response = self._health.Check(request, timeout=READY_TIMEOUT)
        except grpc.RpcError as exc:
            return _code(exc) == grpc.StatusCode.UNIMPLEMENTED
        return bool(response.status == health_pb2.HealthCheckResponse.SERVING)

    def close(self) -> None:
        """Fail what still waits (HubUnavailable), end the streams, close the channel."""
        self._streams.close()
        self._channel.close()


def _result_of(response: hub_pb2.PublishResponse) -> PublishResult:
    outcome = response.outcome
    if outcome in _ACKED:
        return PublishResult(
            notification_id=response.notification_id,
            alipay_send_count=response.alipay_send_count,
            already_acknowledged=(
                outcome == hub_pb2.PublishOutcome.PUBLISH_OUTCOME_ALREADY_ACKNOWLEDGED
            ),
        )
    if outcome == hub_pb2.PublishOutcome.PUBLISH_OUTCOME_REJECTED:
        raise MalformedBody(f"the hub refused the notification: {response.detail}")
    if outcome == hub_pb2.PublishOutcome.PUBLISH_OUTCOME_PENDING:
        _log_pending(response)
        raise NotAcknowledged()
    logger.error("the hub answered an unknown Publish outcome %d", outcome)
    raise HubUnavailable()


def _log_pending(response: hub_pb2.PublishResponse) -> None:
    # Group names stay in our logs: the reply to Alipay does not describe our internals.
    waiting = [g.group for g in response.groups if g.required and g.state not in _SETTLED]
    logger.info(
        "notification %s stored, still waiting for %s (Alipay send %d)",
        response.notification_id,
        ", ".join(waiting) or "required groups",
        response.alipay_send_count,
        extra={"notification_id": response.notification_id, "waiting_groups": waiting},
    )


def _failure_of(code: grpc.StatusCode, details: str) -> HubUnavailable | NotAcknowledged:
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return NotAcknowledged()
    if code in _REFUSED:
        logger.error(
            "the hub refused the bridge's credential (%s: %s): check --hub-token-file and the "
            "hub's --publisher-token-file",
            code.name,
            details,
        )
        return HubUnavailable()
    logger.warning("Publish failed: %s %s", code.name, details)
    return HubUnavailable()


def _code(exc: grpc.RpcError) -> grpc.StatusCode | None:
    code = getattr(exc, "code", None)
    return code() if callable(code) else None
