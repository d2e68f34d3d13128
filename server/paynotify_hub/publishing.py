"""Publish: store once, then wait (bounded) until every required group has settled the delivery.

Pure asyncio, no gRPC. The wait ends on a local settle signal, another hub's event, or the safety
poll of the store, whichever first; at the deadline it answers PENDING (the notification is stored).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from paynotify_hub.config import HubConfig
from paynotify_hub.domain import DeliveryState, GroupDelivery, NewNotification, ReceiptRecord
from paynotify_hub.errors import ShuttingDown, StoreDown
from paynotify_hub.member import wait_event
from paynotify_hub.metrics import HubMetrics
from paynotify_hub.signals import GroupWakeups, SettleSignals, SettleWatch
from paynotify_hub.store.base import Store
from paynotify_hub.storecall import store_call

__all__ = ["GroupStatus", "PublishOutcome", "PublishResult", "Publisher"]

logger = logging.getLogger(__name__)


class PublishOutcome(enum.StrEnum):
    ACKNOWLEDGED = "acknowledged"
    ALREADY_ACKNOWLEDGED = "already_acknowledged"
    PENDING = "pending"


@dataclass(frozen=True)
class GroupStatus:
    group: str
    required: bool
    state: DeliveryState
    attempts: int


@dataclass(frozen=True)
class PublishResult:
    outcome: PublishOutcome
    notification_id: int
    send_count: int
    groups: tuple[GroupStatus, ...]


@dataclass
class Publisher:
    store: Store
    config: HubConfig
    metrics: HubMetrics
    settles: SettleSignals
    wakeups: GroupWakeups
    # True once the hub ended its streams: a publish still waiting then raises ShuttingDown.
    ended: Callable[[], bool]
    # Called with the groups of an append the store has queued (see `Store.append`'s
    # `on_queued`): their idle members claim right behind it, in the same transaction if the
    # store takes both together, and every member of them is woken.
    kick: Callable[[Iterable[str]], None]

    async def publish(
        self, notification: NewNotification, receipt: ReceiptRecord, max_wait: float
    ) -> PublishResult:
        """Store `notification` once and wait up to `max_wait` seconds for the required groups.

        Raises StoreDown when the store could not take it (nothing was promised), ShuttingDown
        when the hub stopped before the wait ended.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, max_wait)
        kicked = False

        def queued() -> None:
            nonlocal kicked
            kicked = True
            self.kick(g.name for g in self.config.groups if g.wants(notification.notify_type))

        appended = await store_call(
            "append",
            self.store.append(notification, receipt, self.config.groups, on_queued=queued),
            max(max_wait, self.config.store_timeout),
            self.metrics,
        )
        nid, states = appended.notification_id, appended.groups
        if self._settled(states, notification.notify_type):
            outcome = PublishOutcome.ACKNOWLEDGED
            if not appended.created:
                outcome = PublishOutcome.ALREADY_ACKNOWLEDGED
            return self._result(outcome, nid, appended.send_count, states)
        with self.settles.watch(nid) as watch:
            if not kicked:  # woken already, and claiming behind the append
                self.wakeups.wake(states, due_now=True)
            states = await self._wait(nid, notification.notify_type, states, watch, deadline)
        outcome = PublishOutcome.PENDING
        if self._settled(states, notification.notify_type):
            outcome = PublishOutcome.ACKNOWLEDGED
        elif self.ended():
            # Stored, but this hub can no longer see it acked: another hub can (Publish is
            # idempotent), so UNAVAILABLE lets the caller retry there within its deadline.
            raise ShuttingDown("hub shutting down; publish again, the notification is stored")
        self.metrics.publish_wait.observe(max(0.0, loop.time() - (deadline - max_wait)))
        return self._result(outcome, nid, appended.send_count, states)

    async def _wait(
        self,
        nid: int,
        notify_type: str,
        states: Mapping[str, GroupDelivery],
        watch: SettleWatch,
        deadline: float,
    ) -> Mapping[str, GroupDelivery]:
        """Until settled, the deadline, or the hub's end. What this hub's own actions settled is
        taken from the signal (`watch.known`); the store is read only for news without a state
        (another hub's, a nack's) and on each safety poll."""
        loop = asyncio.get_running_loop()
        while not self.ended():
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            fired = await wait_event(watch.event, min(remaining, self.config.poll_interval))
            watch.event.clear()
            if watch.known:
                states = {**states, **watch.known}
                if self._settled(states, notify_type):
                    break
            remaining = deadline - loop.time()
            if remaining <= 0 or self.ended():
                break
            if fired and not watch.unexplained:
                continue  # only this hub's own news, already applied
            watch.unexplained = False
            try:
                states = await store_call(
                    "group_states", self.store.group_states(nid), remaining, self.metrics
                )
            except StoreDown as exc:
                logger.warning("publish of %d: %s", nid, exc, extra={"notification_id": nid})
                continue
            if self._settled(states, notify_type):
                break
        return states

    def _settled(self, states: Mapping[str, GroupDelivery], notify_type: str) -> bool:
        """Every required group that wants this type acked or dead-lettered it."""
        for group in self.config.groups:
            if not group.required or not group.wants(notify_type):
                continue
            delivery = states.get(group.name)
            if delivery is None or not delivery.state.settled:
                return False
        return True

    def _result(
        self,
        outcome: PublishOutcome,
        nid: int,
        send_count: int,
        states: Mapping[str, GroupDelivery],
    ) -> PublishResult:
        self.metrics.publishes.labels(outcome.value).inc()
        groups = tuple(
            GroupStatus(name, self._required(name), d.state, d.attempts)
            for name, d in sorted(states.items())
        )
        return PublishResult(outcome, nid, send_count, groups)

    def _required(self, name: str) -> bool:
        spec = self.config.group(name)
        return spec is not None and spec.required
