"""The bridge's errors, each carrying the HTTP status it maps to and a reason a person can act on.

::

    BridgeError                         .status, .reason (str(exc) == reason), .result_code
    ├── RequestRejected                 4xx: the request is refused, nothing is published
    │   ├── SignatureRejected           401
    │   │   ├── MissingHeader           .header: "Client-Id", "Request-Time" or "Signature"
    │   │   ├── MalformedSignatureHeader
    │   │   ├── UnsupportedAlgorithm    algorithm is not RSA256
    │   │   ├── UnknownClientId         Client-Id is not in the allowlist
    │   │   ├── UnknownKeyVersion       no public key configured for the keyVersion
    │   │   └── BadSignature            the signature does not match the request
    │   ├── MalformedBody               400, .field: JSON path ("paymentAmount.value", "" = body)
    │   ├── UnsupportedMediaType        415
    │   └── BodyTooLarge                413
    └── PublishFailed                   503: not acknowledged, Alipay will send it again
        ├── HubUnavailable
        └── NotAcknowledged

    ValueError
    └── KeyLoadError                    configuration: a key file that is not a usable RSA key

Reasons never hold keys, signatures, bodies or customer ids: they reach logs and Alipay's replies.
`result_code` is the Alipay-style code for the reply's ``result.resultCode``; `result_status` its
``resultStatus`` ("F" for a refused request, "U" when Alipay should retry).
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "BadSignature",
    "BodyTooLarge",
    "BridgeError",
    "HubUnavailable",
    "KeyLoadError",
    "MalformedBody",
    "MalformedSignatureHeader",
    "MissingHeader",
    "NotAcknowledged",
    "PublishFailed",
    "RequestRejected",
    "SignatureRejected",
    "UnknownClientId",
    "UnknownKeyVersion",
    "UnsupportedAlgorithm",
    "UnsupportedMediaType",
]


class BridgeError(Exception):
    """Base of every error the bridge maps to an HTTP reply."""

    status: ClassVar[int] = 500
    result_code: ClassVar[str] = "UNKNOWN_EXCEPTION"
    result_status: ClassVar[str] = "U"
    default_reason: ClassVar[str] = "internal error in the bridge"

    def __init__(self, reason: str | None = None) -> None:
        self.reason: str = reason if reason is not None else self.default_reason
        super().__init__(self.reason)

    def __str__(self) -> str:
        return self.reason


class RequestRejected(BridgeError):
    """The request is refused as it stands (4xx); nothing is published."""

    status = 400
    result_code = "PARAM_ILLEGAL"
    result_status = "F"
    default_reason = "request rejected"


class SignatureRejected(RequestRejected):
    """The request is not proven to come from Alipay (401)."""

    status = 401
    result_code = "INVALID_SIGNATURE"
    default_reason = "signature rejected"


class MissingHeader(SignatureRejected):
    """A header the signature needs is absent or empty."""

    def __init__(self, header: str, reason: str | None = None) -> None:
        self.header: str = header
        super().__init__(reason or f"the {header} header is missing or empty")


class MalformedSignatureHeader(SignatureRejected):
    default_reason = (
        "the Signature header is malformed: expected "
        "'algorithm=RSA256,keyVersion=<n>,signature=<url-encoded base64>'"
    )


class UnsupportedAlgorithm(SignatureRejected):
    default_reason = "the Signature header names an unsupported algorithm: only RSA256 is accepted"


class UnknownClientId(SignatureRejected):
    result_code = "INVALID_CLIENT"
    default_reason = "the Client-Id header is not in the allowlist (--client-id)"


class UnknownKeyVersion(SignatureRejected):
    result_code = "KEY_NOT_FOUND"
    default_reason = (
        "no Alipay public key is configured for the Signature's keyVersion (--alipay-public-key)"
    )


class BadSignature(SignatureRejected):
    default_reason = (
        "the signature does not match the request: check the Alipay public key and that the "
        "body, path, Client-Id and Request-Time reach the bridge unchanged"
    )


class MalformedBody(RequestRejected):
    """The body is not a notification this bridge can type; `.field` is the JSON path at fault."""

    default_reason = "the body is not a valid notification"

    def __init__(self, reason: str | None = None, field: str = "") -> None:
        self.field: str = field
        super().__init__(reason)


class UnsupportedMediaType(RequestRejected):
    status = 415
    result_code = "MEDIA_TYPE_NOT_ACCEPTABLE"
    default_reason = "Content-Type must be application/json"


class BodyTooLarge(RequestRejected):
    status = 413
    default_reason = "the body is larger than the bridge accepts"


class PublishFailed(BridgeError):
    """The notification was not acknowledged by the required services (503; Alipay retries)."""

    status = 503
    result_code = "PROCESS_FAIL"
    result_status = "U"
    default_reason = "the notification is not acknowledged yet; Alipay will send it again"


class HubUnavailable(PublishFailed):
    default_reason = "the notification hub is unreachable; Alipay will send it again"


class NotAcknowledged(PublishFailed):
    default_reason = (
        "the required services did not acknowledge the notification before the deadline; "
        "Alipay will send it again"
    )


class KeyLoadError(ValueError):
    """A key file or string is not a usable RSA key (a configuration error, not a request error)."""
