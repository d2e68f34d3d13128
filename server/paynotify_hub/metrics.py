"""Prometheus metrics of the hub, in an injected `CollectorRegistry` (never the global one).

Labels carry group names, outcomes and action kinds only: never payloads, ids or customer data.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from paynotify_hub.config import split_host_port

__all__ = ["HubMetrics", "MetricsServer", "serve_metrics"]

_WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class HubMetrics:
    """The hub's counters; one instance per hub, bound to `registry`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.publishes = Counter(
            "paynotify_hub_publishes", "Publish calls by outcome", ["outcome"], registry=r
        )
        self.publish_wait = Histogram(
            "paynotify_hub_publish_wait_seconds",
            "Time Publish spent waiting for the required groups",
            buckets=_WAIT_BUCKETS,
            registry=r,
        )
        self.deliveries = Counter(
            "paynotify_hub_deliveries", "Deliveries streamed to members", ["group"], registry=r
        )
        self.redeliveries = Counter(
            "paynotify_hub_redeliveries", "Deliveries with attempt > 1", ["group"], registry=r
        )
        self.actions = Counter(
            "paynotify_hub_actions",
            "Acks, nacks, rejects and extensions by result",
            ["group", "kind", "status"],
            registry=r,
        )
        self.dead_letters = Counter(
            "paynotify_hub_dead_letters", "Deliveries rejected by a member", ["group"], registry=r
        )
        self.members = Gauge(
            "paynotify_hub_members", "Connected subscriber streams", ["group"], registry=r
        )
        self.store_errors = Counter(
            "paynotify_hub_store_errors", "Store calls that failed", ["operation"], registry=r
        )


@dataclass
class MetricsServer:
    """The HTTP endpoint serving /metrics; `close()` stops it."""

    server: WSGIServer
    thread: threading.Thread
    port: int

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve_metrics(listen: str, registry: CollectorRegistry) -> MetricsServer:
    """Serve `registry` on HOST:PORT (port 0: any free port) in a background thread."""
    host, port = split_host_port(listen)
    server, thread = start_http_server(port, addr=host.strip("[]"), registry=registry)
    return MetricsServer(server=server, thread=thread, port=server.server_port)
