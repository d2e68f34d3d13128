"""Prometheus metrics of the bridge, registered on an injected registry (one per app, so tests and
several apps in one process never share counters)."""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE", "BridgeMetrics"]

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST

# Seconds; the last finite bucket sits above the longest allowed publish timeout.
PUBLISH_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Alipay sends a notification at most 8 times; more means our deduplication is off.
SEND_COUNT_BUCKETS: Final = (1, 2, 3, 4, 5, 6, 7, 8, 12)


class BridgeMetrics:
    """The bridge's counters; `outcome` labels are those of `replies.OUTCOMES` plus `success`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "paynotify_bridge_requests",
            "Notification requests answered, by outcome.",
            ["outcome"],
            registry=registry,
        )
        self.signature_failures = Counter(
            "paynotify_bridge_signature_failures",
            "Requests rejected by signature verification, by reason.",
            ["reason"],
            registry=registry,
        )
        self.publish_seconds = Histogram(
            "paynotify_bridge_publish_seconds",
            "Time from calling the hub's Publish to its answer (or failure).",
            buckets=PUBLISH_BUCKETS,
            registry=registry,
        )
        self.alipay_send_count = Histogram(
            "paynotify_bridge_alipay_send_count",
            "How many times Alipay had sent a notification, as counted by the hub at each Publish.",
            buckets=SEND_COUNT_BUCKETS,
            registry=registry,
        )
        self.ack_cache_hits = Counter(
            "paynotify_bridge_ack_cache_hits",
            "Retries of a body this bridge had answered SUCCESS, answered SUCCESS again without "
            "the hub (they are in requests{outcome=success} too, not in the hub's receipts).",
            registry=registry,
        )
        self.ack_cache_repeats = Counter(
            "paynotify_bridge_ack_cache_repeats",
            "Of those hits, the retries byte for byte a request verified before (path, "
            "Client-Id, Request-Time, Signature and body): their signature was not verified "
            "again.",
            registry=registry,
        )
        self.insecure_requests = Counter(
            "paynotify_bridge_unverified_requests",
            "Requests accepted without signature verification (--insecure-skip-signature-check).",
            registry=registry,
        )

        self._success = self.requests.labels(outcome="success")  # the hot path's, looked up once

    def count(self, outcome: str) -> None:
        self.requests.labels(outcome=outcome).inc()

    def count_success(self) -> None:
        self._success.inc()

    def count_signature_failure(self, reason: str) -> None:
        self.signature_failures.labels(reason=reason).inc()

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)
