"""One delivery handed to a callback, with the verbs that settle it."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

from paynotify.v1 import hub_pb2, notification_pb2
from paynotify_client.actions import Ack, Action, ActionSink, Extend, Nack, Reject

__all__ = ["Message"]

logger = logging.getLogger(__name__)


def _datetime(delivery: hub_pb2.Delivery, field: str) -> datetime | None:
    if not delivery.HasField(field):  # type: ignore[arg-type]
        return None
    stamp: timestamp_pb2.Timestamp = getattr(delivery, field)
    return stamp.ToDatetime(tzinfo=UTC)


class Message:
    """A payment notification leased to this subscriber, until it is settled or its lease ends.

    Settle it exactly once with `ack()`, `nack()` or `reject()`; a second settlement is ignored (the
    first wins). `extend()` pushes the lease and may be called any number of times before that. The
    verbs only queue the action: the Subscriber's stream sends it within milliseconds. They are safe
    to call from any thread, also after the callback has returned.
    """

    def __init__(self, delivery: hub_pb2.Delivery, sink: ActionSink) -> None:
        self._delivery = delivery
        self._sink = sink
        self._lock = threading.Lock()
        self._settlement: Action | None = None

    # -- what was delivered -------------------------------------------------------------------

    @property
    def delivery_id(self) -> str:
        """Opaque id of this lease; a redelivery has a new one."""
        return self._delivery.delivery_id

    @property
    def notification_id(self) -> str:
        """The hub's id for the notification, the same across redeliveries and Alipay's resends."""
        return self._delivery.notification_id

    @property
    def notification(self) -> notification_pb2.PaymentNotification:
        """The typed notification (`paynotify.v1.PaymentNotification`)."""
        return self._delivery.notification

    @property
    def raw_json(self) -> bytes:
        """The HTTP body exactly as Alipay sent it, including fields the contract does not model."""
        return self._delivery.raw_json or self._delivery.notification.raw_json

    @property
    def attempt(self) -> int:
        """1 on the first delivery to this group, then 2, 3, ... (redeliveries)."""
        return self._delivery.attempt

    @property
    def alipay_send_count(self) -> int:
        """How many times Alipay has sent this notification so far."""
        return self._delivery.alipay_send_count

    @property
    def first_received_at(self) -> datetime | None:
        """When the bridge first received it (UTC)."""
        return _datetime(self._delivery, "first_received_at")

    @property
    def lease_expires_at(self) -> datetime | None:
        """When the hub redelivers it unless it is settled or extended (UTC, as of delivery)."""
        return _datetime(self._delivery, "lease_expires_at")

    @property
    def settled(self) -> bool:
        """Whether ack(), nack() or reject() has been called."""
        with self._lock:
            return self._settlement is not None

    # -- settling ------------------------------------------------------------------------------

    def ack(self) -> None:
        """Done with it: the hub stops redelivering it and counts it as received for Alipay."""
        self._settle(Ack(self.delivery_id))

    def nack(self, delay: float | None = None) -> None:
        """Not now: redeliver it (to any member of the group) after `delay` seconds, or after the
        hub's backoff for this attempt when `delay` is None. Counts as an attempt.
        """
        if delay is not None and delay < 0:
            raise ValueError("nack delay must not be negative")
        self._settle(Nack(self.delivery_id, delay))

    def reject(self, reason: str) -> None:
        """Never: park it as a dead letter (payload kept for an operator). For Alipay's reply it
        counts as received, so use it only for a notification no retry can ever process.
        `reason` is stored and shown to operators: keep customer data out of it.
        """
        self._settle(Reject(self.delivery_id, reason))

    def extend(self, seconds: float | None = None) -> None:
        """Still working: the lease now ends `seconds` from now (None: the stream's ack deadline).

        Does not settle the message; call it again before the new deadline if need be.
        """
        if seconds is not None and seconds <= 0:
            raise ValueError("extend needs a positive number of seconds")
        with self._lock:
            if self._settlement is not None:
                logger.debug("extend of settled delivery %s ignored", self.delivery_id)
                return
        self._sink(Extend(self.delivery_id, seconds))

    def _settle(self, action: Action) -> None:
        with self._lock:
            if self._settlement is not None:
                logger.debug(
                    "delivery %s already settled (%s); %s ignored",
                    self.delivery_id,
                    type(self._settlement).__name__.lower(),
                    type(action).__name__.lower(),
                )
                return
            self._settlement = action
        self._sink(action)

    def __repr__(self) -> str:
        notification = self._delivery.notification
        notify_type = notification.notify_type_text or notification_pb2.NotifyType.Name(
            notification.notify_type
        )
        return (
            f"Message(delivery_id={self.delivery_id!r}, notification_id={self.notification_id!r}, "
            f"notify_type={notify_type!r}, attempt={self.attempt}, "
            f"alipay_send_count={self.alipay_send_count})"
        )
