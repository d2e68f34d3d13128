"""Running a user's callback: the one rule shared by the Subscriber and the test fake."""

from __future__ import annotations

import logging
from collections.abc import Callable

from paynotify_client.message import Message

__all__ = ["Callback", "invoke"]

logger = logging.getLogger(__name__)

# Called once per delivery, on a callback thread. Its return value is ignored.
Callback = Callable[[Message], object]


def invoke(callback: Callback, message: Message, *, auto_ack: bool = False) -> Exception | None:
    """Run `callback(message)`. If it raises, log it (delivery id only, never the payload) and nack
    the message; a message it already settled stays as it was (the first settlement wins). If it
    returns without settling, the message stays leased (it may be settled later, from any thread),
    unless `auto_ack`, which acks it. Returns the exception the callback raised, if any.
    """
    try:
        callback(message)
    except Exception as exc:
        logger.exception(
            "callback raised for delivery %s (attempt %d); nacking it",
            message.delivery_id,
            message.attempt,
        )
        message.nack()
        return exc
    if auto_ack:
        message.ack()
    return None
