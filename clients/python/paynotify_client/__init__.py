"""paynotify_client: receive Alipay payment notifications from a paynotify hub, acknowledge them.

::

    from paynotify_client import Message, Subscriber

    def handle(message: Message) -> None:
        record_payment(message.notification)   # make this idempotent: delivery is at least once
        message.ack()

    with Subscriber("127.0.0.1:50051", "billing") as subscriber:
        subscriber.subscribe(handle).result()

See `paynotify_client.testing` for a fake to test callbacks without a hub.
"""

from paynotify_client.actions import Ack, Action, Extend, Nack, Reject
from paynotify_client.backoff import Backoff
from paynotify_client.callback import Callback
from paynotify_client.errors import (
    RETRYABLE_STATUS_CODES,
    TERMINAL_STATUS_CODES,
    GroupNotFoundError,
    HubUnsupportedError,
    InvalidSubscriptionError,
    PaynotifyClientError,
    SubscriberAuthError,
    SubscriberError,
    SubscriberStateError,
)
from paynotify_client.flow import FlowControl
from paynotify_client.future import SubscribeFuture
from paynotify_client.message import Message
from paynotify_client.subscriber import Subscriber

__all__ = [
    "RETRYABLE_STATUS_CODES",
    "TERMINAL_STATUS_CODES",
    "Ack",
    "Action",
    "Backoff",
    "Callback",
    "Extend",
    "FlowControl",
    "GroupNotFoundError",
    "HubUnsupportedError",
    "InvalidSubscriptionError",
    "Message",
    "Nack",
    "PaynotifyClientError",
    "Reject",
    "SubscribeFuture",
    "Subscriber",
    "SubscriberAuthError",
    "SubscriberError",
    "SubscriberStateError",
]
