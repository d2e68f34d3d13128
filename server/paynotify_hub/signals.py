"""In-process wake-ups: publish waiters per notification, dispatch loops per group.

Only wake-ups: every waiter also polls the store, so a lost signal delays but never loses work.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from paynotify_hub.member import Member

__all__ = ["GroupWakeups", "SettleSignals"]


class SettleSignals:
    """Publish calls waiting for a notification's deliveries to settle."""

    def __init__(self) -> None:
        self._events: defaultdict[int, set[asyncio.Event]] = defaultdict(set)

    @contextmanager
    def watch(self, notification_id: int) -> Iterator[asyncio.Event]:
        event = asyncio.Event()
        self._events[notification_id].add(event)
        try:
            yield event
        finally:
            waiting = self._events.get(notification_id)
            if waiting is not None:
                waiting.discard(event)
                if not waiting:
                    del self._events[notification_id]

    def notify(self, notification_id: int) -> None:
        for event in self._events.get(notification_id, ()):
            event.set()

    def notify_all(self) -> None:
        for events in self._events.values():
            for event in events:
                event.set()

    def __len__(self) -> int:
        return sum(len(events) for events in self._events.values())


class GroupWakeups:
    """The members connected to this hub, by group."""

    def __init__(self) -> None:
        self._members: defaultdict[str, set[Member]] = defaultdict(set)

    def add(self, member: Member) -> None:
        self._members[member.group].add(member)

    def remove(self, member: Member) -> None:
        members = self._members.get(member.group)
        if members is not None:
            members.discard(member)
            if not members:
                del self._members[member.group]

    def wake(self, groups: Iterable[str]) -> None:
        for group in groups:
            for member in self._members.get(group, ()):
                member.wake()

    def members(self) -> list[Member]:
        return [m for members in self._members.values() for m in members]

    def count(self, group: str) -> int:
        return len(self._members.get(group, ()))
