"""Alipay's notifyPayment body (raw bytes) -> `paynotify.v1.PaymentNotification`.

Lenient where the spec asks: a scalar documented as a string may arrive as a JSON number (kept as
its exact text) or a boolean ("true"/"false"); ``null`` counts as absent; unknown fields are ignored
here and survive in ``raw_json``, which is the body byte for byte.

Strict where it matters, each failure a `MalformedBody` whose ``.field`` is the JSON path:

- UTF-8 only; a leading byte order mark is rejected (RFC 8259 §8.1: senders must not add one, and
  Alipay does not); the top level is an object; ``NaN``/``Infinity`` are not JSON.
- A key repeated inside an object this module types (the top level, amounts, result, quotes,
  pspCustomerInfo) is rejected: two JSON parsers could read two different notifications from one
  signed body. Repeats inside untyped values (paymentResultInfo, unknown fields) are left alone.
- notifyType and paymentRequestId are required and non-empty; ids are at most 64 characters.
- Amounts: currency is three ASCII capitals, value 1 to 16 ASCII digits (a JSON integer made only
  of digits is accepted as its text; fractions, signs and exponents are not). Never a float.
- Times are ISO 8601 with seconds and a UTC offset ("Z" or ±hh:mm); a time without an offset is
  rejected, since the instant it names would be a guess.
- Numbers keep their exact text: ``"quotePrice": 0.064622`` becomes ``"0.064622"``.

Error reasons never echo personal data and at most a short prefix of any value.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any, NoReturn

from paynotify.v1 import notification_pb2 as pb
from paynotify_bridge.errors import MalformedBody

__all__ = ["MAX_ID_LENGTH", "MAX_RESULT_MESSAGE_LENGTH", "parse_notification"]

MAX_ID_LENGTH = 64
MAX_RESULT_MESSAGE_LENGTH = 256
MAX_AMOUNT_DIGITS = 16

_NOTIFY_TYPES = {
    "PAYMENT_RESULT": pb.NOTIFY_TYPE_PAYMENT_RESULT,
    "OFFLINE_PAYMENT_CODE": pb.NOTIFY_TYPE_OFFLINE_PAYMENT_CODE,
    "PAYMENT_PENDING": pb.NOTIFY_TYPE_PAYMENT_PENDING,
}
_RESULT_STATUSES = {"S": pb.RESULT_STATUS_S, "F": pb.RESULT_STATUS_F, "U": pb.RESULT_STATUS_U}
_AMOUNTS = {
    "actualPaymentAmount": "actual_payment_amount",
    "customsDeclarationAmount": "customs_declaration_amount",
    "grossSettlementAmount": "gross_settlement_amount",
}
_QUOTES = {"paymentQuote": "payment_quote", "settlementQuote": "settlement_quote"}
_TOP_LEVEL_KEYS = frozenset(
    {
        "notifyType",
        "result",
        "paymentRequestId",
        "paymentId",
        "paymentAmount",
        "paymentCreateTime",
        "paymentTime",
        "pspCustomerInfo",
        "paymentActionForm",
        "paymentResultInfo",
        "acquirerReferenceNo",
        "paymentMethodType",
        "metadata",
        *_AMOUNTS,
        *_QUOTES,
    }
)
_AMOUNT_KEYS = frozenset({"currency", "value"})
_AMOUNT_SHAPE = "{currency, value}"
_RESULT_KEYS = frozenset({"resultCode", "resultStatus", "resultMessage"})
_PSP_FIELDS = (
    ("pspName", "psp_name"),
    ("pspCustomerId", "psp_customer_id"),
    ("displayCustomerId", "display_customer_id"),
)
_PSP_KEYS = frozenset(key for key, _ in _PSP_FIELDS)
_QUOTE_KEYS = frozenset(
    {
        "quoteId",
        "quoteCurrencyPair",
        "quotePrice",
        "quoteStartTime",
        "quoteExpiryTime",
        "guaranteed",
    }
)

_CURRENCY = re.compile(r"[A-Z]{3}")
_DIGITS = re.compile(r"[0-9]+")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_DATE_TIME = (
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:[.,]([0-9]{1,9}))?"
)
_ZONED = re.compile(_DATE_TIME + r"(?:([Zz])|([+-])([0-9]{2}):?([0-9]{2}))")
_NAIVE = re.compile(_DATE_TIME)
# _ZONED with hours, minutes, seconds and offsets kept in range, and the date as one group for
# date.fromisoformat, which checks the rest (year 0, month 13, February 30th). A time that only
# _ZONED matches is not a valid date and time.
_VALID_ZONED = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt]([01][0-9]|2[0-3]):([0-5][0-9]):([0-5][0-9])"
    r"(?:[.,]([0-9]{1,9}))?(?:[Zz]|([+-])([01][0-9]|2[0-3]):?([0-5][0-9]))"
)
_EPOCH_DAY = date(1970, 1, 1).toordinal()
# Faster than int() for the regex's two-digit groups, whose ranges it has checked.
_TWO_DIGITS = {f"{n:02d}": n for n in range(60)}
_MINUTE_SECONDS = {text: n * 60 for text, n in _TWO_DIGITS.items()}
_HOUR_SECONDS = {text: n * 3600 for text, n in _TWO_DIGITS.items() if n < 24}
# google.protobuf.Timestamp's range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
_MIN_SECONDS = -62_135_596_800
_MAX_SECONDS = 253_402_300_799
_TIME_EXAMPLE = "e.g. 2020-01-01T12:01:00+08:30"


@dataclass(frozen=True, slots=True)
class _Number:
    """A JSON number, kept as the exact text Alipay sent (never an int or a float)."""

    text: str


class _Object(dict[str, object]):
    """A JSON object that remembers which keys it saw more than once."""

    duplicates: frozenset[str] = frozenset()


def parse_notification(body: bytes) -> pb.PaymentNotification:
    """Type Alipay's notification body; raise `MalformedBody` naming the field at fault."""
    root = _load(body)
    try:
        return _notification(root, body)
    except RecursionError:
        raise MalformedBody("body nests JSON too deeply") from None


# -- decoding --------------------------------------------------------------------------------


def _load(body: bytes) -> _Object:
    if not body:
        _fail("body is empty: expected a JSON object")
    if body.startswith(b"\xef\xbb\xbf"):
        _fail("body starts with a UTF-8 byte order mark: send JSON without one (RFC 8259 §8.1)")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        reason = f"body is not valid UTF-8 (first bad byte at offset {exc.start})"
        raise MalformedBody(reason) from None
    try:
        value = _decode(text)
    except json.JSONDecodeError as exc:
        reason = f"body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        raise MalformedBody(reason) from None
    except RecursionError:
        raise MalformedBody("body nests JSON too deeply") from None
    if not isinstance(value, _Object):
        _fail(f"body must be a JSON object, got {_kind(value)}")
    return value


def _decode(text: str) -> object:
    # One decoder for every body (json.loads would build one per call). This frame also keeps
    # the stack as deep as json.loads did, so the nesting that still decodes is unchanged.
    return _DECODER.decode(text)


def _constant(text: str) -> NoReturn:
    _fail(f"body is not valid JSON: {text} is not a JSON number")


def _object(pairs: list[tuple[str, object]]) -> _Object:
    obj = _Object(pairs)
    if len(obj) != len(pairs):
        counts = Counter(key for key, _ in pairs)
        obj.duplicates = frozenset(key for key, n in counts.items() if n > 1)
    return obj


_DECODER = json.JSONDecoder(
    parse_int=_Number, parse_float=_Number, parse_constant=_constant, object_pairs_hook=_object
)


# -- the notification ------------------------------------------------------------------------
# Fields are checked in a fixed order (the first fault found is the one reported) and gathered
# as keyword arguments: one constructor call fills the message. The hot path tests exact types
# and builds no field path; paths and reasons are only put together once a value is at fault.


def _notification(root: _Object, body: bytes) -> pb.PaymentNotification:
    if root.duplicates:
        _no_duplicates(root, "", _TOP_LEVEL_KEYS)
    get = root.get
    notify_type = _required_text(get("notifyType"), "notifyType")
    fields: dict[str, Any] = {
        "raw_json": body,
        "notify_type": _NOTIFY_TYPES.get(notify_type, pb.NOTIFY_TYPE_UNSPECIFIED),
        "notify_type_text": notify_type,
        "payment_request_id": _required_text(
            get("paymentRequestId"), "paymentRequestId", MAX_ID_LENGTH
        ),
    }
    if (value := get("paymentId")) is not None:
        fields["payment_id"] = _text(value, "paymentId", "", MAX_ID_LENGTH)
    if (value := get("paymentAmount")) is None:
        _fail("paymentAmount is required", "paymentAmount")
    fields["payment_amount"] = _amount(value, "paymentAmount")
    for key, name, convert in _OPTIONAL_FIELDS:
        if (value := get(key)) is not None:
            fields[name] = convert(value, key)
    return pb.PaymentNotification(**fields)


def _result(value: object, key: str) -> dict[str, Any]:
    result = _typed_object(value, "", key, _RESULT_KEYS)
    fields: dict[str, Any] = {}
    if (code := result.get("resultCode")) is not None:
        fields["result_code"] = _text(code, "resultCode", key, MAX_ID_LENGTH)
    status = result.get("resultStatus")
    number = _RESULT_STATUSES.get(status) if type(status) is str else None
    if number is None:
        got = "nothing" if status is None else _describe(status)
        _fail(f"result.resultStatus must be S, F or U, got {got}", "result.resultStatus")
    fields["result_status"] = number
    if (message := result.get("resultMessage")) is not None:
        fields["result_message"] = _text(message, "resultMessage", key, MAX_RESULT_MESSAGE_LENGTH)
    return fields


def _psp_customer_info(value: object, key: str) -> dict[str, Any]:
    info = _typed_object(value, "", key, _PSP_KEYS)
    fields: dict[str, Any] = {}  # present, also for an empty {}
    for json_key, name in _PSP_FIELDS:
        if (text := info.get(json_key)) is not None:
            fields[name] = _text(text, json_key, key, MAX_ID_LENGTH)
    return fields


# -- amounts, quotes, times ------------------------------------------------------------------


def _amount(value: object, key: str) -> dict[str, Any]:
    amount = _typed_object(value, "", key, _AMOUNT_KEYS, _AMOUNT_SHAPE)
    currency = amount.get("currency")
    if type(currency) is not str or not _CURRENCY.fullmatch(currency):
        currency = _currency(currency, f"{key}.currency")
    digits = amount.get("value")
    if not (
        type(digits) is str
        and len(digits) <= MAX_AMOUNT_DIGITS
        and digits.isascii()
        and digits.isdigit()
    ):
        digits = _minor_units(digits, f"{key}.value")
    return {"currency": currency, "value": digits, "minor_units": int(digits)}


def _currency(value: object, path: str) -> str:
    if value is None:
        _fail(f"{path} is required (an ISO 4217 code such as USD)", path)
    if not isinstance(value, str) or not _CURRENCY.fullmatch(value):
        _fail(f"{path} must be 3 ASCII capital letters (ISO 4217), got {_describe(value)}", path)
    return value


def _minor_units(value: object, path: str) -> str:
    if value is None:
        _fail(f"{path} is required (a string of digits in minor units)", path)
    text = value.text if isinstance(value, _Number) else value
    if not isinstance(text, str):
        _fail(f"{path} must be a string of 1 to 16 ASCII digits, got {_kind(value)}", path)
    if _DIGITS.fullmatch(text) and len(text) <= MAX_AMOUNT_DIGITS:
        return text
    _fail(
        f"{path} must be 1 to {MAX_AMOUNT_DIGITS} ASCII digits (minor units), got {_flaw(text)}",
        path,
    )


def _flaw(text: str) -> str:
    """What is wrong with an amount's text, without echoing it."""
    if not text:
        return "an empty string"
    bad = next((c for c in text if not ("0" <= c <= "9")), None)
    if bad is None:
        return f"{len(text)} digits"
    return f"{len(text)} characters incl. {bad!r}"


def _quote(value: object, key: str) -> dict[str, Any]:
    quote = _typed_object(value, "", key, _QUOTE_KEYS)
    fields: dict[str, Any] = {}  # present, also for an empty {}
    get = quote.get
    if (text := get("quoteId")) is not None:
        fields["quote_id"] = _text(text, "quoteId", key)
    if (text := get("quoteCurrencyPair")) is not None:
        fields["quote_currency_pair"] = _text(text, "quoteCurrencyPair", key)
    if (price := get("quotePrice")) is not None:
        fields["quote_price"] = _decimal(price, key)
    if (time := get("quoteStartTime")) is not None:
        fields["quote_start_time"] = _date_time(time, "quoteStartTime", key)
    if (time := get("quoteExpiryTime")) is not None:
        fields["quote_expiry_time"] = _date_time(time, "quoteExpiryTime", key)
    if (flag := get("guaranteed")) is not None:
        fields["guaranteed"] = flag if type(flag) is bool else _boolean(flag, f"{key}.guaranteed")
    return fields


def _decimal(value: object, key: str) -> str:
    if isinstance(value, _Number):
        return value.text
    if isinstance(value, str) and _DECIMAL.fullmatch(value):
        return value
    path = f"{key}.quotePrice"
    _fail(f"{path} must be a decimal number, got {_describe(value)}", path)


def _boolean(value: object, path: str) -> bool:
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    _fail(f"{path} must be true or false, got {_describe(value)}", path)


def _date_time(value: object, key: str, prefix: str = "") -> dict[str, Any]:
    """An ISO 8601 time with offset: its text, seconds since the epoch and nanoseconds."""
    match = _VALID_ZONED.fullmatch(value) if type(value) is str else None
    if match is None:
        _no_date_time(value, _path(prefix, key))
    day, hour, minute, second, fraction, sign, off_hours, off_minutes = match.groups()
    try:
        seconds = (date.fromisoformat(day).toordinal() - _EPOCH_DAY) * 86400
    except ValueError:
        _invalid_date_time(value, _path(prefix, key))
    seconds += _HOUR_SECONDS[hour] + _MINUTE_SECONDS[minute] + _TWO_DIGITS[second]
    if sign == "+":
        seconds -= _HOUR_SECONDS[off_hours] + _MINUTE_SECONDS[off_minutes]
    elif sign == "-":
        seconds += _HOUR_SECONDS[off_hours] + _MINUTE_SECONDS[off_minutes]
    if not _MIN_SECONDS <= seconds <= _MAX_SECONDS:
        path = _path(prefix, key)
        _fail(f"{path} is outside years 1 to 9999 in UTC, got {_describe(value)}", path)
    nanos = int(fraction.ljust(9, "0")) if fraction else 0
    return {"text": value, "timestamp": {"seconds": seconds, "nanos": nanos}}


def _no_date_time(value: object, path: str) -> NoReturn:
    if not isinstance(value, str):
        _fail(f"{path} must be an ISO 8601 string ({_TIME_EXAMPLE}), got {_kind(value)}", path)
    if _ZONED.fullmatch(value):  # the shape is right, an hour, minute or second is out of range
        _invalid_date_time(value, path)
    if _NAIVE.fullmatch(value):
        _fail(f"{path} needs a UTC offset ({_TIME_EXAMPLE}), got {_describe(value)}", path)
    _fail(
        f"{path} must be ISO 8601 with a UTC offset ({_TIME_EXAMPLE}), got {_describe(value)}",
        path,
    )


def _invalid_date_time(text: object, path: str) -> NoReturn:
    reason = f"{path} is not a valid date and time, got {_describe(text)}"
    raise MalformedBody(reason, path) from None  # no chained ValueError


# -- generic fields --------------------------------------------------------------------------


def _typed_object(
    value: object, prefix: str, key: str, typed_keys: frozenset[str], shape: str = ""
) -> _Object:
    """`value` (not None) as an object whose typed keys each appear once."""
    if type(value) is not _Object:
        path = _path(prefix, key)
        _fail(f"{path} must be an object{' ' + shape if shape else ''}, got {_kind(value)}", path)
    if value.duplicates:
        _no_duplicates(value, _path(prefix, key), typed_keys)
    return value


def _no_duplicates(obj: _Object, prefix: str, typed_keys: frozenset[str]) -> None:
    repeated = sorted(obj.duplicates & typed_keys)
    if repeated:
        path = _path(prefix, repeated[0])
        _fail(f"{path} appears more than once; a signed body must be unambiguous", path)


def _required_text(value: object, key: str, max_len: int | None = None) -> str:
    """A top-level string field that must be there and not be empty."""
    if value is None:
        _fail(f"{key} is required", key)
    text = _text(value, key, "", max_len)
    if not text:
        _fail(f"{key} is required and must not be empty", key)
    return text


def _text(value: object, key: str, prefix: str = "", max_len: int | None = None) -> str:
    """A field documented as a string (`value` is not None); a number or a boolean is taken as
    its JSON text."""
    if type(value) is str:
        if not value.isascii():
            _encodable(value, _path(prefix, key))
        text = value
    elif type(value) is _Number:
        text = value.text
    elif type(value) is bool:
        text = "true" if value else "false"
    else:
        path = _path(prefix, key)
        _fail(f"{path} must be a string, got {_kind(value)}", path)
    if max_len is not None and len(text) > max_len:
        path = _path(prefix, key)
        _fail(f"{path} must be at most {max_len} characters, got {len(text)}", path)
    return text


def _text_or_json(value: object, key: str) -> str:
    """A string as sent; an object or array as compact JSON text (`value` is not None)."""
    if type(value) is _Object or type(value) is list:
        return _encodable(_compact(value), key)
    return _text(value, key)


def _json_text(value: object, key: str) -> str:
    """Any value (not None) as compact JSON text (a string becomes a JSON string literal)."""
    return _encodable(_compact(value), key)


# The optional top-level fields in the order they are checked: (JSON key, proto field, convert).
_OPTIONAL_FIELDS: tuple[tuple[str, str, Callable[[object, str], object]], ...] = (
    ("result", "result", _result),
    ("paymentCreateTime", "payment_create_time", _date_time),
    ("paymentTime", "payment_time", _date_time),
    ("pspCustomerInfo", "psp_customer_info", _psp_customer_info),
    *((key, name, _amount) for key, name in _AMOUNTS.items()),
    *((key, name, _quote) for key, name in _QUOTES.items()),
    ("paymentActionForm", "payment_action_form", _text_or_json),
    ("paymentResultInfo", "payment_result_info_json", _json_text),
    ("metadata", "metadata", _text_or_json),
    ("acquirerReferenceNo", "acquirer_reference_no", _text),
    ("paymentMethodType", "payment_method_type", _text),
)


def _compact(value: object) -> str:
    if isinstance(value, _Object):
        return "{" + ",".join(f"{_string(k)}:{_compact(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_compact(v) for v in value) + "]"
    if isinstance(value, _Number):
        return value.text
    if isinstance(value, str):
        return _string(value)
    if value is None:
        return "null"
    return "true" if value else "false"


def _string(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def _encodable(text: str, path: str) -> str:
    """Protobuf strings are UTF-8: a lone surrogate escape (\\ud800) cannot be carried."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            _fail(f"{path} contains an unpaired UTF-16 surrogate escape (\\ud800-\\udfff)", path)
    return text


# -- reasons ---------------------------------------------------------------------------------


def _path(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _kind(value: object) -> str:
    if isinstance(value, _Object):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, _Number):
        return "a number"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    return "null"


def _describe(value: object, limit: int = 12) -> str:
    """A short preview of a non-personal value for a reason text."""
    if isinstance(value, _Number):
        value = value.text
    elif not isinstance(value, str):
        return _kind(value)
    text = value[:limit] + ("…" if len(value) > limit else "")
    return repr(text)


def _fail(reason: str, field: str = "") -> NoReturn:
    raise MalformedBody(reason, field)
