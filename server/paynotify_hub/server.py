"""Builds the hub's gRPC server: the NotificationHub servicer, health checking and reflection.

hub = create_server(config, store)     # store opened; call from the loop that will run it
await hub.start()                      # health SERVING
...
await hub.stop()                       # NOT_SERVING, drain, streams end with UNAVAILABLE
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from paynotify.v1 import hub_pb2, hub_pb2_grpc
from paynotify_hub.broker import Broker
from paynotify_hub.config import HubConfig
from paynotify_hub.errors import ConfigError
from paynotify_hub.metrics import HubMetrics, MetricsServer, serve_metrics
from paynotify_hub.service import NotificationHubServicer
from paynotify_hub.store.base import Store

__all__ = ["SERVICE_NAME", "Hub", "create_server"]

logger = logging.getLogger(__name__)

SERVICE_NAME: str = hub_pb2.DESCRIPTOR.services_by_name["NotificationHub"].full_name

# Keepalive finds subscribers whose host vanished without closing the connection.
_KEEPALIVE_OPTIONS = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    # A second hub on the same port must fail, not share it silently.
    ("grpc.so_reuseport", 0),
)


@dataclass
class Hub:
    """A built hub: `port` is the bound port (the real one when the config asked for 0)."""

    server: grpc.aio.Server
    port: int
    broker: Broker
    config: HubConfig
    metrics: HubMetrics
    health: health.aio.HealthServicer
    metrics_server: MetricsServer | None = field(default=None)
    stopped: bool = False

    @property
    def address(self) -> str:
        host = self.config.listen.rpartition(":")[0]
        return f"{host}:{self.port}"

    async def start(self) -> None:
        await self.broker.start()
        await self.server.start()
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if self.config.metrics_listen:
            self.metrics_server = serve_metrics(self.config.metrics_listen, self.metrics.registry)
            logger.info("metrics on port %d", self.metrics_server.port)

    async def stop(self, grace: float | None = None) -> None:
        """Health NOT_SERVING, let acks land for up to `grace` seconds, end the streams with
        UNAVAILABLE, stop the server and release the leases still held. The store stays open."""
        if self.stopped:
            return
        self.stopped = True
        grace = self.config.shutdown_grace if grace is None else grace
        await self.health.enter_graceful_shutdown()
        await self.broker.shutdown(drain=grace)
        await self.server.stop(grace)
        await self.broker.close()
        if self.metrics_server is not None:
            self.metrics_server.close()
            self.metrics_server = None


def create_server(
    config: HubConfig,
    store: Store,
    *,
    clock: Callable[[], float] = time.time,
    metrics: HubMetrics | None = None,
) -> Hub:
    """Build (not start) the hub on an opened `store`, bound to `config.listen`.

    Raises ConfigError when the address cannot be bound.
    """
    metrics = metrics if metrics is not None else HubMetrics()
    broker = Broker(config, store, clock=clock, metrics=metrics)
    server = grpc.aio.server(options=_options(config))
    hub_pb2_grpc.add_NotificationHubServicer_to_server(
        NotificationHubServicer(broker, config, clock=clock), server
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    port = _bind(server, config.listen)
    return Hub(server, port, broker, config, metrics, health_servicer)


def _options(config: HubConfig) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        *_KEEPALIVE_OPTIONS,
    ]


def _bind(server: grpc.aio.Server, listen: str) -> int:
    try:
        port = server.add_insecure_port(listen)
    except RuntimeError as exc:
        raise ConfigError(
            f"cannot listen on {listen}: the address is in use or not available here"
        ) from exc
    if port == 0:
        raise ConfigError(f"cannot listen on {listen}: the address is in use or not available")
    return port
