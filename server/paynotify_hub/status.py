"""The one table from the hub's domain errors to gRPC status codes (see `paynotify_hub.errors`)."""

from __future__ import annotations

import grpc

from paynotify_hub.errors import (
    ConfigError,
    HubError,
    InvalidArgument,
    NotFound,
    ShuttingDown,
    StoreDown,
    Unavailable,
)

__all__ = ["STATUS_CODES", "status_code_for"]

# Most specific first: the first matching class wins.
STATUS_CODES: tuple[tuple[type[HubError], grpc.StatusCode], ...] = (
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (ConfigError, grpc.StatusCode.FAILED_PRECONDITION),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (ShuttingDown, grpc.StatusCode.UNAVAILABLE),
    (StoreDown, grpc.StatusCode.UNAVAILABLE),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
)


def status_code_for(error: HubError) -> grpc.StatusCode:
    """The status a client sees for `error`; INTERNAL for a HubError the table does not name."""
    for error_type, code in STATUS_CODES:
        if isinstance(error, error_type):
            return code
    return grpc.StatusCode.INTERNAL
