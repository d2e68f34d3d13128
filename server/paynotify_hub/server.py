"""Builds the hub's gRPC server: the NotificationHub and HubAdmin servicers, health checking and
reflection, behind the token interceptor (`paynotify_hub.auth`), over TLS when configured.

hub = create_server(config, store)     # store opened; call from the loop that will run it
await hub.start()                      # health SERVING, admin gauges refreshing
...
await hub.stop()                       # NOT_SERVING, drain, streams end with UNAVAILABLE
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from paynotify.v1 import hub_pb2
from paynotify_hub.admin_service import ADMIN_SERVICE_NAME, AdminService, add_admin_service
from paynotify_hub.auth import AuthInterceptor, log_security
from paynotify_hub.broker import Broker
from paynotify_hub.config import HubConfig, check_transport
from paynotify_hub.errors import ConfigError
from paynotify_hub.metrics import HubMetrics, MetricsServer, serve_metrics
from paynotify_hub.service import NotificationHubServicer, add_notification_hub
from paynotify_hub.store.base import Store
from paynotify_hub.tls import server_credentials

__all__ = ["SERVICE_NAME", "Hub", "create_server"]

logger = logging.getLogger(__name__)

SERVICE_NAME: str = hub_pb2.DESCRIPTOR.services_by_name["NotificationHub"].full_name

# How long a stop waits for the admin gauges' refresh task to end.
ADMIN_CLOSE_TIMEOUT = 2.0
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
    admin: AdminService | None = field(default=None)

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
        if self.admin is not None:
            self.admin.start()

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
        if self.admin is not None:
            await _close_admin(self.admin)
        await self.broker.close()
        if self.metrics_server is not None:
            self.metrics_server.close()
            self.metrics_server = None


async def _close_admin(admin: AdminService) -> None:
    """Stop the admin gauges, waiting at most ADMIN_CLOSE_TIMEOUT: their refresh loop can miss a
    cancellation (asyncio.wait_for on Python 3.11, CPython gh-86296), and that must not hold the
    hub's stop forever."""
    closing = asyncio.ensure_future(admin.close())
    done, _ = await asyncio.wait({closing}, timeout=ADMIN_CLOSE_TIMEOUT)
    if not done:
        closing.cancel()  # cancels the refresh task once more
        logger.warning(
            "admin gauges did not stop within %.0fs; stopping without them", ADMIN_CLOSE_TIMEOUT
        )


def create_server(
    config: HubConfig,
    store: Store,
    *,
    clock: Callable[[], float] = time.time,
    metrics: HubMetrics | None = None,
    credentials: grpc.ServerCredentials | None = None,
) -> Hub:
    """Build (not start) the hub on an opened `store`, bound to `config.listen`.

    Raises ConfigError when the address cannot be bound, the TLS files cannot serve, or plaintext
    is asked for beyond loopback without `insecure_plaintext`. `credentials`: the TLS credentials
    already loaded from `config.tls` (loaded here when not given).
    """
    check_transport(config)
    if credentials is None and config.tls is not None:
        credentials = server_credentials(config.tls)
    log_security(config)
    metrics = metrics if metrics is not None else HubMetrics()
    broker = Broker(config, store, clock=clock, metrics=metrics)
    interceptor = AuthInterceptor(
        config.tokens, admin_open=config.listens_on_loopback, registry=metrics.registry
    )
    server = grpc.aio.server(options=_options(config), interceptors=[interceptor])
    add_notification_hub(NotificationHubServicer(broker, config, clock=clock), server)
    admin = add_admin_service(
        server, broker, clock=clock, metrics_interval=config.admin_refresh_interval
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, ADMIN_SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    port = _bind(server, config.listen, credentials)
    return Hub(server, port, broker, config, metrics, health_servicer, admin=admin)


def _options(config: HubConfig) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        *_KEEPALIVE_OPTIONS,
    ]


def _bind(server: grpc.aio.Server, listen: str, credentials: grpc.ServerCredentials | None) -> int:
    try:
        if credentials is None:
            port = server.add_insecure_port(listen)
        else:
            port = server.add_secure_port(listen, credentials)
    except RuntimeError as exc:
        raise ConfigError(
            f"cannot listen on {listen}: the address is in use or not available here"
        ) from exc
    if port == 0:
        raise ConfigError(f"cannot listen on {listen}: the address is in use or not available")
    return port
