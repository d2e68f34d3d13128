"""The bodies the bridge answers Alipay with, and the one table from error type to outcome.

Only `SUCCESS_BODY` tells Alipay the notification was received. Every other body is shaped like
Alipay's own `result` object, with the code, status and reason the error carries (`errors.py`: the
HTTP status, `result_code`, `result_status` F for "refused as sent", U for "send it again later"):

    error (errors.py)          HTTP  resultStatus  resultCode                  metrics outcome
    UnknownClientId            401   F             INVALID_CLIENT              rejected_signature
    UnknownKeyVersion          401   F             KEY_NOT_FOUND               rejected_signature
    other SignatureRejected    401   F             INVALID_SIGNATURE           rejected_signature
    MalformedBody              400   F             PARAM_ILLEGAL               rejected_body
    UnsupportedMediaType       415   F             MEDIA_TYPE_NOT_ACCEPTABLE   rejected_media_type
    BodyTooLarge               413   F             PARAM_ILLEGAL               rejected_too_large
    HubUnavailable             503   U             PROCESS_FAIL                hub_unavailable
    NotAcknowledged            503   U             PROCESS_FAIL                pending
    any other exception        503   U             UNKNOWN_EXCEPTION           error

An unexpected exception is answered 503/U, not 500: Alipay then simply sends the notification again,
and nothing is lost.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Final

from paynotify_bridge.errors import (
    BodyTooLarge,
    BridgeError,
    HubUnavailable,
    MalformedBody,
    NotAcknowledged,
    PublishFailed,
    RequestRejected,
    SignatureRejected,
    UnsupportedMediaType,
)

__all__ = [
    "MAX_MESSAGE_CHARS",
    "OUTCOMES",
    "SUCCESS_BODY",
    "UNEXPECTED_BODY",
    "UNEXPECTED_STATUS",
    "error_body",
    "outcome_of",
    "result_body",
]

SUCCESS_BODY: Final[bytes] = (
    b'{"result":{"resultCode":"SUCCESS","resultStatus":"S","resultMessage":"success"}}'
)

# resultMessage is at most 256 characters in Alipay's own replies.
MAX_MESSAGE_CHARS: Final = 256

# The metrics outcome of each error, looked up along the exception's MRO (most specific first).
OUTCOMES: Final[dict[type[BaseException], str]] = {
    SignatureRejected: "rejected_signature",
    MalformedBody: "rejected_body",
    UnsupportedMediaType: "rejected_media_type",
    BodyTooLarge: "rejected_too_large",
    RequestRejected: "rejected_other",
    HubUnavailable: "hub_unavailable",
    NotAcknowledged: "pending",
    PublishFailed: "publish_failed",
    BaseException: "error",
}


def outcome_of(error: BaseException) -> str:
    """The metrics outcome label for `error` ("error" for anything outside the tree)."""
    for cls in type(error).__mro__:
        label = OUTCOMES.get(cls)
        if label is not None:
            return label
    return "error"


def error_body(error: BridgeError) -> bytes:
    """The Alipay-shaped body for a failure, with the error's code, status and reason."""
    return result_body(error.result_code, error.result_status, error.reason)


@lru_cache(maxsize=256)
def result_body(result_code: str, result_status: str, message: str) -> bytes:
    """`{"result":{...}}` as compact JSON bytes, keys in the order Alipay uses."""
    result = {
        "resultCode": result_code,
        "resultStatus": result_status,
        "resultMessage": message[:MAX_MESSAGE_CHARS],
    }
    return json.dumps({"result": result}, separators=(",", ":"), ensure_ascii=False).encode()


UNEXPECTED_STATUS: Final = 503
UNEXPECTED_BODY: Final[bytes] = result_body(
    "UNKNOWN_EXCEPTION", "U", "the bridge failed unexpectedly; Alipay will send it again"
)
