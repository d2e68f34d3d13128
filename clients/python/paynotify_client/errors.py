"""The errors of paynotify_client, and which stream statuses are worth a reconnect.

::

    PaynotifyClientError                 anything this library raises on purpose
     ├── SubscriberStateError            misuse: subscribe() twice, or after close()
     └── SubscriberError                 the stream ended for good; .code, .details
          ├── GroupNotFoundError         NOT_FOUND: the group is not declared on the hub
          ├── InvalidSubscriptionError   INVALID_ARGUMENT: bad group name or settings
          ├── SubscriberAuthError        UNAUTHENTICATED, PERMISSION_DENIED
          └── HubUnsupportedError        UNIMPLEMENTED: not a paynotify hub, or too old

A stream that ends with a status in `RETRYABLE_STATUS_CODES` is reopened with backoff; one in
`TERMINAL_STATUS_CODES` (or any status in neither tuple) stops the subscriber, and its future's
`result()` raises the matching `SubscriberError`.
"""

from __future__ import annotations

import grpc

__all__ = [
    "RETRYABLE_STATUS_CODES",
    "TERMINAL_STATUS_CODES",
    "GroupNotFoundError",
    "HubUnsupportedError",
    "InvalidSubscriptionError",
    "PaynotifyClientError",
    "SubscriberAuthError",
    "SubscriberError",
    "SubscriberStateError",
    "error_from_status",
    "is_retryable",
]

# The hub is restarting, overloaded, or the connection broke: reopen the stream after a backoff.
# CANCELLED is here because a stream the hub (or a proxy) cancels is not the user asking to stop; a
# cancel of our own never reaches this classification.
RETRYABLE_STATUS_CODES: tuple[grpc.StatusCode, ...] = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.CANCELLED,
)

# Retrying cannot help: the configuration or the credentials are wrong.
TERMINAL_STATUS_CODES: tuple[grpc.StatusCode, ...] = (
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.UNIMPLEMENTED,
)


class PaynotifyClientError(Exception):
    """Base of every error this library raises on purpose."""


class SubscriberStateError(PaynotifyClientError):
    """The Subscriber was used out of order: `subscribe()` twice, or after `close()`."""


class SubscriberError(PaynotifyClientError):
    """The Subscribe stream ended with a status that retrying cannot fix.

    `code` is the gRPC status, `details` the hub's message (which never holds customer data).
    """

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}" if details else code.name)
        self.code = code
        self.details = details


class GroupNotFoundError(SubscriberError):
    """NOT_FOUND: the group is not declared in the hub's configuration (`--group NAME`)."""


class InvalidSubscriptionError(SubscriberError):
    """INVALID_ARGUMENT: the hub refused the group name or the stream settings."""


class SubscriberAuthError(SubscriberError):
    """UNAUTHENTICATED or PERMISSION_DENIED: the token is missing, wrong, or not allowed."""


class HubUnsupportedError(SubscriberError):
    """UNIMPLEMENTED: the server at that address is not a paynotify hub, or not this version."""


_ERROR_BY_CODE: dict[grpc.StatusCode, type[SubscriberError]] = {
    grpc.StatusCode.NOT_FOUND: GroupNotFoundError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidSubscriptionError,
    grpc.StatusCode.PERMISSION_DENIED: SubscriberAuthError,
    grpc.StatusCode.UNAUTHENTICATED: SubscriberAuthError,
    grpc.StatusCode.UNIMPLEMENTED: HubUnsupportedError,
}


def is_retryable(code: grpc.StatusCode) -> bool:
    """Whether a stream that ended with `code` should be reopened (after a backoff)."""
    return code in RETRYABLE_STATUS_CODES


def error_from_status(code: grpc.StatusCode, details: str | None) -> SubscriberError:
    """The `SubscriberError` subclass for a terminal status (the base class for unlisted ones)."""
    return _ERROR_BY_CODE.get(code, SubscriberError)(code, details or "")
