"""The store interface: domain verbs, one module per backend (sqlite.py, postgres.py).

Error tree::

    StoreError                 anything the backend could not do (driver errors are wrapped here)
    └── StoreUnavailable       the database cannot be reached right now; retrying later may work

Every method that changes state commits durably before it returns: a caller that got an answer may
tell Alipay so.

History: claim, ack, nack, reject, release, expire_leases, replay and replay_since each add the
`DeliveryEvent`s of what they changed (one multi-row insert, same transaction); `extend` does not.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from paynotify_hub.domain import (
    ActionStatus,
    AppendResult,
    DeadLetter,
    GroupDelivery,
    GroupSpec,
    GroupStats,
    Lease,
    NewNotification,
    NotificationRecord,
    ReceiptRecord,
    RetryPolicy,
)

__all__ = ["Store", "StoreError", "StoreEvent", "StoreUnavailable"]


class StoreError(Exception):
    """The store failed; the message says what, never with payload contents."""


class StoreUnavailable(StoreError):
    """The database is unreachable or restarting."""


@dataclass(frozen=True)
class StoreEvent:
    """A change another hub made: `groups` have new deliverable work, `notification_id` settled."""

    groups: frozenset[str] = frozenset()
    notification_id: int | None = None


class Store(Protocol):
    """Durable state of notifications and their per-group deliveries.

    Times are seconds since the epoch (float), passed in by the caller so tests need not sleep.
    `token` names one lease: actions with the token of an older lease answer STALE.
    """

    async def open(self) -> None:
        """Connect, create or migrate the schema. Safe when several hubs start at once."""

    async def close(self) -> None: ...

    async def append(
        self,
        notification: NewNotification,
        receipt: ReceiptRecord,
        groups: Sequence[GroupSpec],
        *,
        on_queued: Callable[[], None] | None = None,
    ) -> AppendResult:
        """Store a notification once per identity and record the receipt.

        New identity: one pending delivery per group that wants its notifyType. Known identity: only
        the receipt is added and the send count grows; deliveries are untouched (an acked group is
        never redelivered), except that a group declared since gets its pending delivery.

        `on_queued`: a store that runs verbs one at a time in the order they are called (SQLite's
        worker) calls it once the append is queued and before it runs, when the append would
        otherwise commit alone (the worker is idle). A `claim` called from it runs after the
        append, sees its rows and shares its transaction (one commit for both). A store without
        that order (PostgreSQL) never calls it.
        """

    async def group_states(self, notification_id: int) -> Mapping[str, GroupDelivery]:
        """State of each group's delivery of one notification."""

    def claim(
        self,
        group: str,
        member: str,
        limit: int,
        lease_seconds: float,
        notify_types: frozenset[str],
        now: float,
    ) -> Awaitable[list[Lease]]:
        """Lease up to `limit` pending deliveries of `group` due by `now`, oldest first.

        Each lease increments the delivery's attempt and is held by `member` until
        `now + lease_seconds`. Two members never hold the same delivery at once. A store that
        runs verbs in call order queues the claim when called, not when awaited (see `append`).
        """
        ...

    async def ack(
        self, group: str, notification_id: int, token: str, now: float
    ) -> ActionStatus: ...

    async def ack_many(
        self, group: str, acks: Sequence[tuple[int, str]], now: float
    ) -> list[ActionStatus]:
        """`ack` of each (notification id, token), as one call: an answer for each, in order.
        The same delivery twice is acked once; the second answers STALE."""

    async def nack(
        self,
        group: str,
        notification_id: int,
        token: str,
        now: float,
        delay: float | None,
        policy: RetryPolicy,
    ) -> ActionStatus:
        """Make the delivery pending again after `delay` (None: the policy's backoff), or dead when
        it has had `policy.max_attempts` attempts."""

    async def reject(
        self, group: str, notification_id: int, token: str, reason: str, now: float
    ) -> ActionStatus:
        """Dead-letter the delivery, keeping its payload and the reason."""

    async def extend(
        self, group: str, notification_id: int, token: str, lease_expires_at: float
    ) -> ActionStatus: ...

    async def release(self, group: str, member: str, now: float, policy: RetryPolicy) -> int:
        """A member's stream ended: its leases become pending after the backoff (or dead when out of
        attempts). Returns how many."""

    async def expire_leases(self, now: float, policy: RetryPolicy) -> frozenset[str]:
        """Leases past their expiry become pending after the backoff (or dead when out of attempts).
        Returns the groups where at least one delivery became pending again (not those whose
        leases only went dead)."""

    async def next_due(self, group: str, notify_types: frozenset[str]) -> float | None:
        """When the earliest pending delivery of `group` becomes due, or None if there is none."""

    async def purge_settled(self, before: float, batch_size: int) -> int:
        """Delete up to `batch_size` notifications whose every delivery is acked (dead letters are
        kept for the operator until replayed or acked; a notification with no delivery counts as
        acked) and that were last received before `before`, with their receipts, deliveries and
        delivery history.
        Returns how many; call again until it returns less than `batch_size`."""

    # -- the operator's verbs ----------------------------------------------------------------------

    async def group_stats(
        self, now: float, groups: Sequence[str], *, count_acked: bool = True
    ) -> list[GroupStats]:
        """One `GroupStats` per name of `groups`, in that order (zeros for a group with no
        deliveries). Counting acked deliveries reads every one the retention keeps: periodic
        callers (metrics) pass `count_acked=False` and get `acked=None`."""

    async def find_notifications(self, key: str, limit: int) -> list[NotificationRecord]:
        """Up to `limit` notifications whose paymentId or paymentRequestId is `key`, oldest
        first, each with its receipts, its deliveries and their history. An empty key finds
        nothing."""

    async def dead_letters(
        self, group: str | None, after_id: int, limit: int, *, after_group: str = ""
    ) -> list[DeadLetter]:
        """Up to `limit` dead deliveries (of `group`, or of every group when None) with their
        payload, ordered by (notification id, group) and strictly after
        (`after_id`, `after_group`): pass the last one's to read the next page."""

    async def replay(self, group: str, notification_id: int, now: float) -> ActionStatus:
        """A dead letter becomes pending again, due at `now`, attempts reset to 0; recorded in
        its history. UNKNOWN: no such delivery; STALE: the delivery is not dead."""

    async def replay_since(self, group: str, since: float, now: float) -> int:
        """Every delivery of `group` whose notification was first received at or after `since`
        becomes pending again, whatever its state (a lease in flight is revoked: its actions
        answer STALE), due at `now`, attempts reset to 0; recorded in each history. For a
        service that lost its own data; purged notifications are gone. Returns how many."""

    async def listen(self, on_event: Callable[[StoreEvent], None]) -> None:
        """Call `on_event` for changes made by other hubs sharing this store (no-op for one hub).

        Only a wake-up: callers also poll, so a lost event delays but never loses work. A hub's own
        changes are not reported. Returns once subscribed (or after a bounded wait, retrying in the
        background); calling it again replaces the callback.
        """
