"""Acks, nacks, rejects and extensions by delivery id, as one member sends them.

A malformed id answers UNKNOWN without touching the store; the store answers STALE for a lease that
is no longer the one named. Settling signals local publish waiters; the store tells other hubs.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from paynotify_hub.config import HubConfig
from paynotify_hub.domain import ActionStatus, DeliveryState, GroupDelivery
from paynotify_hub.member import DeliveryKey, Member, parse_delivery_id
from paynotify_hub.metrics import HubMetrics
from paynotify_hub.signals import GroupWakeups, SettleSignals
from paynotify_hub.store.base import Store
from paynotify_hub.storecall import store_call

__all__ = ["MAX_REASON_CHARS", "Actions"]

MAX_REASON_CHARS = 1000


@dataclass
class Actions:
    store: Store
    config: HubConfig
    metrics: HubMetrics
    clock: Callable[[], float]
    settles: SettleSignals
    wakeups: GroupWakeups
    # Told (group, first received at) for every ack that landed: the ack latency metric.
    on_ack: Callable[[str, float], None] | None = None

    async def ack(self, member: Member, delivery_id: str) -> ActionStatus:
        [status] = await self.ack_many(member, [delivery_id])
        return status

    async def ack_many(self, member: Member, delivery_ids: Sequence[str]) -> list[ActionStatus]:
        """The acks of one request, an answer for each in order. The leases this stream holds go
        to the store in one call (one store call and one SQLite job, not one per ack)."""
        keys = [parse_delivery_id(delivery_id) for delivery_id in delivery_ids]
        statuses: dict[int, ActionStatus] = {}
        held = [(i, key) for i, key in enumerate(keys) if key is not None and member.holds(key)]
        if held:
            received = [member.first_received_at(key) for _, key in held]
            call = self.store.ack_many(member.group, [key for _, key in held], self.clock())
            answers = await store_call("ack", call, self.config.store_timeout, self.metrics)
            for (i, key), status, first in zip(held, answers, received, strict=True):
                statuses[i] = status
                self._account(member, key, status, DeliveryState.ACKED)
                if status is ActionStatus.OK and first is not None and self.on_ack is not None:
                    self.on_ack(member.group, first)
        # Malformed ids answer UNKNOWN; leases not held here are looked up side by side (after a
        # reconnect a request may name many of the old stream's).
        unheld = [(i, key) for i, key in enumerate(keys) if i not in statuses]
        looked_up = await asyncio.gather(
            *(self._not_held(member, key) for _, key in unheld if key is not None)
        )
        answers_of_unheld = iter(looked_up)
        for i, named in unheld:
            statuses[i] = ActionStatus.UNKNOWN if named is None else next(answers_of_unheld)
        ordered = [statuses[i] for i in range(len(keys))]
        for status, count in Counter(ordered).items():
            self.metrics.actions.labels(member.group, "ack", status.value).inc(count)
        return ordered

    async def nack(self, member: Member, delivery_id: str, delay: float | None) -> ActionStatus:
        if delay is not None:
            delay = min(max(0.0, delay), self.config.retry.max_backoff)

        def call(nid: int, token: str) -> Awaitable[ActionStatus]:
            return self.store.nack(member.group, nid, token, self.clock(), delay, self.config.retry)

        # Out of attempts, a nack dead-letters the delivery: that settles a waiting publish too.
        # Pending again or dead: which, only the store knows (None: waiters read it back).
        status = await self._act("nack", member, delivery_id, call, settles=None)
        if status is ActionStatus.OK:
            self.wakeups.wake([member.group])
        return status

    async def reject(self, member: Member, delivery_id: str, reason: str) -> ActionStatus:
        # PostgreSQL text cannot hold NUL: a reason must never make the store fail.
        reason = reason[:MAX_REASON_CHARS].replace("\x00", "\ufffd")

        def call(nid: int, token: str) -> Awaitable[ActionStatus]:
            return self.store.reject(member.group, nid, token, reason, self.clock())

        status = await self._act("reject", member, delivery_id, call, settles=DeliveryState.DEAD)
        if status is ActionStatus.OK:
            self.metrics.dead_letters.labels(member.group).inc()
        return status

    async def extend(self, member: Member, delivery_id: str, seconds: float | None) -> ActionStatus:
        cfg = self.config
        seconds = member.settings.ack_deadline if seconds is None else seconds
        seconds = min(max(seconds, cfg.min_ack_deadline), cfg.max_ack_deadline)
        expires_at = self.clock() + seconds

        def call(nid: int, token: str) -> Awaitable[ActionStatus]:
            return self.store.extend(member.group, nid, token, expires_at)

        key = parse_delivery_id(delivery_id)
        status = await self._act("extend", member, delivery_id, call, settles=False)
        if key is not None and status is ActionStatus.OK:
            member.extended(key, expires_at)
        return status

    async def _act(
        self,
        kind: str,
        member: Member,
        delivery_id: str,
        call: Callable[[int, str], Awaitable[ActionStatus]],
        *,
        settles: DeliveryState | Literal[False] | None,
    ) -> ActionStatus:
        """Parse, call the store (StoreDown propagates), keep the member's flow control right."""
        key = parse_delivery_id(delivery_id)
        if key is None:
            status = ActionStatus.UNKNOWN
        elif not member.holds(key):
            status = await self._not_held(member, key)
        else:
            status = await store_call(kind, call(*key), self.config.store_timeout, self.metrics)
            self._account(member, key, status, settles)
        self.metrics.actions.labels(member.group, kind, status.value).inc()
        return status

    async def _not_held(self, member: Member, key: DeliveryKey) -> ActionStatus:
        """Another stream's lease, or one this stream already settled: only the holder may act,
        so the store is only read, to tell STALE (it exists) from UNKNOWN (never issued)."""
        states = await store_call(
            "group_states", self.store.group_states(key[0]), self.config.store_timeout, self.metrics
        )
        return ActionStatus.STALE if member.group in states else ActionStatus.UNKNOWN

    def _account(
        self,
        member: Member,
        key: DeliveryKey,
        status: ActionStatus,
        settles: DeliveryState | Literal[False] | None,
    ) -> None:
        """Free the member's slot; tell waiting publishes what the action made of the delivery
        (`settles`: the state it now has, None: unknown, False: not a settling action)."""
        if status is not ActionStatus.OK:
            member.settle(key)  # not this stream's lease any more: its slot is free
        elif settles is not False:
            attempt = member.attempt(key)
            member.settle(key)
            if settles is None or attempt is None:
                self.settles.notify(key[0])
            else:
                self.settles.notify(key[0], member.group, GroupDelivery(settles, attempt))
