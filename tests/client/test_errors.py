"""Which stream statuses reconnect and which stop, and the error each terminal one becomes."""

from __future__ import annotations

import grpc
import pytest

from paynotify_client import (
    RETRYABLE_STATUS_CODES,
    TERMINAL_STATUS_CODES,
    GroupNotFoundError,
    HubUnsupportedError,
    InvalidSubscriptionError,
    PaynotifyClientError,
    SubscriberAuthError,
    SubscriberError,
)
from paynotify_client.errors import error_from_status, is_retryable


def test_the_two_tuples_are_disjoint() -> None:
    assert not set(RETRYABLE_STATUS_CODES) & set(TERMINAL_STATUS_CODES)


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,
    ],
)
def test_transient_statuses_are_retryable(code: grpc.StatusCode) -> None:
    assert is_retryable(code)


@pytest.mark.parametrize(
    ("code", "error_type"),
    [
        (grpc.StatusCode.NOT_FOUND, GroupNotFoundError),
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidSubscriptionError),
        (grpc.StatusCode.PERMISSION_DENIED, SubscriberAuthError),
        (grpc.StatusCode.UNAUTHENTICATED, SubscriberAuthError),
        (grpc.StatusCode.UNIMPLEMENTED, HubUnsupportedError),
    ],
)
def test_terminal_statuses_map_to_their_error(
    code: grpc.StatusCode, error_type: type[SubscriberError]
) -> None:
    assert not is_retryable(code)
    error = error_from_status(code, "group 'x' is not declared")
    assert type(error) is error_type
    assert isinstance(error, SubscriberError)
    assert isinstance(error, PaynotifyClientError)
    assert error.code is code
    assert error.details == "group 'x' is not declared"
    assert code.name in str(error)


def test_an_unlisted_status_stops_with_the_base_error() -> None:
    assert not is_retryable(grpc.StatusCode.FAILED_PRECONDITION)
    error = error_from_status(grpc.StatusCode.FAILED_PRECONDITION, None)
    assert type(error) is SubscriberError
    assert error.details == ""
    assert str(error) == "FAILED_PRECONDITION"
