"""The operator's metrics: per-group queue gauges refreshed from the store, and the ack latency.

Gauges are computed in the hub's event loop every `interval` seconds (one `group_stats` read that
uses only the partial indexes of live work) and served from memory on scrape: a scrape never
touches the store. With several hubs on one store every hub exports the same store-wide values:
aggregate them with max by (group), never sum.

metrics = register(registry, store, config.groups, clock=clock)
metrics.start()                    # in the running loop; await metrics.close() on the way out
metrics.observe_ack("billing", lease.first_received_at, now)   # where an ack succeeds

Labels carry group names only: never payloads, ids or customer data.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from paynotify_hub.domain import GroupSpec, GroupStats
from paynotify_hub.store.base import Store, StoreError

__all__ = ["ACK_LATENCY_BUCKETS", "DEFAULT_REFRESH_INTERVAL", "AdminMetrics", "register"]

logger = logging.getLogger(__name__)

DEFAULT_REFRESH_INTERVAL = 15.0
# From first receipt to ack: sub-second when all is well, up to Alipay's 24 h of retries when not.
ACK_LATENCY_BUCKETS = (
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0,
)  # fmt: skip


class AdminMetrics:
    """Gauges of every declared group, the refresh loop that sets them, and the ack latency."""

    def __init__(
        self,
        registry: CollectorRegistry,
        store: Store,
        groups: Sequence[GroupSpec],
        *,
        clock: Callable[[], float] = time.time,
        interval: float = DEFAULT_REFRESH_INTERVAL,
        store_timeout: float = 10.0,
    ) -> None:
        self._store = store
        self._groups = tuple(groups)
        self._clock = clock
        self._interval = interval
        self._store_timeout = store_timeout
        self._task: asyncio.Task[None] | None = None
        r = registry

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, ["group"], registry=r)

        self.queue_depth = gauge(
            "paynotify_hub_queue_depth", "Pending deliveries: due now or waiting for a backoff"
        )
        self.queue_due = gauge(
            "paynotify_hub_queue_due", "Pending deliveries due now, waiting only for a member"
        )
        self.in_flight = gauge("paynotify_hub_in_flight", "Deliveries leased, not yet answered")
        self.dead_letters = gauge(
            "paynotify_hub_dead_letters_stored", "Dead letters kept for an operator to replay"
        )
        self.oldest_unacked_age = gauge(
            "paynotify_hub_oldest_unacked_age_seconds",
            "Age of the oldest pending or in-flight delivery since its first receipt (0: none)",
        )
        self.required = gauge(
            "paynotify_hub_group_required", "1 for a required group, 0 for a best-effort one"
        )
        self.refreshed = Gauge(
            "paynotify_hub_group_stats_refreshed_timestamp_seconds",
            "When the group gauges were last read from the store",
            registry=r,
        )
        self.refresh_errors = Counter(
            "paynotify_hub_group_stats_errors",
            "Group gauge refreshes that failed (the gauges keep their last values)",
            registry=r,
        )
        self.ack_latency = Histogram(
            "paynotify_hub_ack_latency_seconds",
            "From a notification's first receipt to a group's ack",
            ["group"],
            buckets=ACK_LATENCY_BUCKETS,
            registry=r,
        )
        for spec in self._groups:
            self.required.labels(spec.name).set(1 if spec.required else 0)

    def observe_ack(self, group: str, first_received_at: float, now: float) -> None:
        self.ack_latency.labels(group).observe(max(0.0, now - first_received_at))

    def update(self, now: float, stats: Sequence[GroupStats]) -> None:
        """Set the gauges from statistics taken at `now`."""
        for s in stats:
            self.queue_depth.labels(s.group).set(s.pending)
            self.queue_due.labels(s.group).set(s.pending_due)
            self.in_flight.labels(s.group).set(s.leased)
            self.dead_letters.labels(s.group).set(s.dead)
            self.oldest_unacked_age.labels(s.group).set(s.oldest_unacked_age(now) or 0.0)
        self.refreshed.set(now)

    async def refresh(self) -> None:
        """Read the statistics once (bounded by the store timeout) and set the gauges."""
        now = self._clock()
        names = [spec.name for spec in self._groups]
        # Not asyncio.wait_for: on Python 3.11 it can swallow a cancellation (CPython gh-86296).
        async with asyncio.timeout(self._store_timeout):
            stats = await self._store.group_stats(now, names, count_acked=False)
        self.update(now, stats)

    async def refresh_forever(self) -> None:
        """Refresh every interval until cancelled; a failure is logged and counted, never raised."""
        while True:
            try:
                await self.refresh()
            except (StoreError, TimeoutError) as exc:
                self.refresh_errors.inc()
                logger.warning("group gauges not refreshed: %s", exc or type(exc).__name__)
            except Exception:
                self.refresh_errors.inc()
                logger.exception("group gauges not refreshed")
            await asyncio.sleep(self._interval)

    def start(self) -> None:
        """Start refreshing in the running loop (again after close)."""
        if self._task is None:
            self._task = asyncio.create_task(self.refresh_forever(), name="admin-metrics")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def register(
    registry: CollectorRegistry,
    store: Store,
    groups: Sequence[GroupSpec],
    *,
    clock: Callable[[], float] = time.time,
    interval: float = DEFAULT_REFRESH_INTERVAL,
    store_timeout: float = 10.0,
) -> AdminMetrics:
    """Create the admin metrics in `registry` (not started: call `start()` in the hub's loop)."""
    return AdminMetrics(
        registry, store, groups, clock=clock, interval=interval, store_timeout=store_timeout
    )
