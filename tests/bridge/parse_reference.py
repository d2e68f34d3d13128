# Frozen pre-optimisation copy of http_bridge/paynotify_bridge/parse.py, kept verbatim as the
# reference for the differential test tests/bridge/test_parse_equivalence.py. Never edit it to
# follow parse.py: the test proves that the optimised parser behaves exactly like this one.
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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import NoReturn

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
_RESULT_KEYS = frozenset({"resultCode", "resultStatus", "resultMessage"})
_PSP_KEYS = frozenset({"pspName", "pspCustomerId", "displayCustomerId"})
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
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
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
        value = json.loads(
            text,
            parse_int=_Number,
            parse_float=_Number,
            parse_constant=_constant,
            object_pairs_hook=_object,
        )
    except json.JSONDecodeError as exc:
        reason = f"body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        raise MalformedBody(reason) from None
    except RecursionError:
        raise MalformedBody("body nests JSON too deeply") from None
    if not isinstance(value, _Object):
        _fail(f"body must be a JSON object, got {_kind(value)}")
    return value


def _constant(text: str) -> NoReturn:
    _fail(f"body is not valid JSON: {text} is not a JSON number")


def _object(pairs: list[tuple[str, object]]) -> _Object:
    obj = _Object(pairs)
    if len(obj) != len(pairs):
        counts = Counter(key for key, _ in pairs)
        obj.duplicates = frozenset(key for key, n in counts.items() if n > 1)
    return obj


# -- the notification ------------------------------------------------------------------------


def _notification(root: _Object, body: bytes) -> pb.PaymentNotification:
    _no_duplicates(root, "", _TOP_LEVEL_KEYS)
    msg = pb.PaymentNotification(raw_json=body)
    notify_type = _required_text(root, "", "notifyType")
    msg.notify_type = _NOTIFY_TYPES.get(notify_type, pb.NOTIFY_TYPE_UNSPECIFIED)
    msg.notify_type_text = notify_type
    msg.payment_request_id = _required_text(root, "", "paymentRequestId", MAX_ID_LENGTH)
    msg.payment_id = _text(root, "", "paymentId", MAX_ID_LENGTH) or ""
    msg.payment_amount.CopyFrom(_required_amount(root, "", "paymentAmount"))
    _set_result(msg, root)
    _set_times(msg, root)
    _set_psp_customer_info(msg, root)
    _set_amounts_and_quotes(msg, root)
    msg.payment_action_form = _text_or_json(root, "paymentActionForm")
    msg.payment_result_info_json = _json_text(root, "paymentResultInfo")
    msg.metadata = _text_or_json(root, "metadata")
    msg.acquirer_reference_no = _text(root, "", "acquirerReferenceNo") or ""
    msg.payment_method_type = _text(root, "", "paymentMethodType") or ""
    return msg


def _set_result(msg: pb.PaymentNotification, root: _Object) -> None:
    result = _optional_object(root, "", "result", _RESULT_KEYS)
    if result is None:
        return
    msg.result.result_code = _text(result, "result", "resultCode", MAX_ID_LENGTH) or ""
    msg.result.result_status = _result_status(result)
    msg.result.result_message = (
        _text(result, "result", "resultMessage", MAX_RESULT_MESSAGE_LENGTH) or ""
    )


def _result_status(result: _Object) -> pb.ResultStatus.ValueType:
    value = result.get("resultStatus")
    status = _RESULT_STATUSES.get(value) if isinstance(value, str) else None
    if status is None:
        got = "nothing" if value is None else _describe(value)
        _fail(f"result.resultStatus must be S, F or U, got {got}", "result.resultStatus")
    return status


def _set_times(msg: pb.PaymentNotification, root: _Object) -> None:
    for key, target in (
        ("paymentCreateTime", msg.payment_create_time),
        ("paymentTime", msg.payment_time),
    ):
        parsed = _date_time(root, "", key)
        if parsed is not None:
            target.CopyFrom(parsed)


def _set_psp_customer_info(msg: pb.PaymentNotification, root: _Object) -> None:
    info = _optional_object(root, "", "pspCustomerInfo", _PSP_KEYS)
    if info is None:
        return
    psp = msg.psp_customer_info
    psp.SetInParent()
    psp.psp_name = _text(info, "pspCustomerInfo", "pspName", MAX_ID_LENGTH) or ""
    psp.psp_customer_id = _text(info, "pspCustomerInfo", "pspCustomerId", MAX_ID_LENGTH) or ""
    psp.display_customer_id = (
        _text(info, "pspCustomerInfo", "displayCustomerId", MAX_ID_LENGTH) or ""
    )


def _set_amounts_and_quotes(msg: pb.PaymentNotification, root: _Object) -> None:
    for key, attr in _AMOUNTS.items():
        amount = _amount(root, "", key)
        if amount is not None:
            getattr(msg, attr).CopyFrom(amount)
    for key, attr in _QUOTES.items():
        quote = _quote(root, key)
        if quote is not None:
            getattr(msg, attr).CopyFrom(quote)  # marks presence, also for an empty {}


# -- amounts, quotes, times ------------------------------------------------------------------


def _required_amount(obj: _Object, prefix: str, key: str) -> pb.Amount:
    amount = _amount(obj, prefix, key)
    if amount is None:
        _fail(f"{_path(prefix, key)} is required", _path(prefix, key))
    return amount


def _amount(obj: _Object, prefix: str, key: str) -> pb.Amount | None:
    amount = _optional_object(obj, prefix, key, _AMOUNT_KEYS, "{currency, value}")
    if amount is None:
        return None
    path = _path(prefix, key)
    currency = _currency(amount.get("currency"), f"{path}.currency")
    value = _minor_units(amount.get("value"), f"{path}.value")
    return pb.Amount(currency=currency, value=value, minor_units=int(value))


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


def _quote(root: _Object, key: str) -> pb.Quote | None:
    obj = _optional_object(root, "", key, _QUOTE_KEYS)
    if obj is None:
        return None
    quote = pb.Quote(
        quote_id=_text(obj, key, "quoteId") or "",
        quote_currency_pair=_text(obj, key, "quoteCurrencyPair") or "",
        quote_price=_decimal(obj.get("quotePrice"), f"{key}.quotePrice"),
    )
    for time_key, target in (
        ("quoteStartTime", quote.quote_start_time),
        ("quoteExpiryTime", quote.quote_expiry_time),
    ):
        parsed = _date_time(obj, key, time_key)
        if parsed is not None:
            target.CopyFrom(parsed)
    guaranteed = _boolean(obj.get("guaranteed"), f"{key}.guaranteed")
    if guaranteed is not None:
        quote.guaranteed = guaranteed
    return quote


def _decimal(value: object, path: str) -> str:
    if value is None:
        return ""
    if isinstance(value, _Number):
        return value.text
    if isinstance(value, str) and _DECIMAL.fullmatch(value):
        return value
    _fail(f"{path} must be a decimal number, got {_describe(value)}", path)


def _boolean(value: object, path: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    _fail(f"{path} must be true or false, got {_describe(value)}", path)


def _date_time(obj: _Object, prefix: str, key: str) -> pb.DateTime | None:
    value = obj.get(key)
    if value is None:
        return None
    path = _path(prefix, key)
    if not isinstance(value, str):
        _fail(f"{path} must be an ISO 8601 string ({_TIME_EXAMPLE}), got {_kind(value)}", path)
    seconds, nanos = _instant(value, path)
    result = pb.DateTime(text=value)
    result.timestamp.seconds = seconds
    result.timestamp.nanos = nanos
    return result


def _instant(text: str, path: str) -> tuple[int, int]:
    """Seconds since the epoch and nanoseconds of an ISO 8601 time with offset."""
    match = _ZONED.fullmatch(text)
    if match is None:
        if _NAIVE.fullmatch(text):
            _fail(f"{path} needs a UTC offset ({_TIME_EXAMPLE}), got {_describe(text)}", path)
        _fail(
            f"{path} must be ISO 8601 with a UTC offset ({_TIME_EXAMPLE}), got {_describe(text)}",
            path,
        )
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    try:
        offset = timedelta(0) if zulu else _offset(sign, off_h, off_m)
        moment = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second),
            tzinfo=timezone(offset),
        )  # fmt: skip
    except ValueError:
        reason = f"{path} is not a valid date and time, got {_describe(text)}"
        raise MalformedBody(reason, path) from None
    seconds = (moment - _EPOCH) // timedelta(seconds=1)
    if not _MIN_SECONDS <= seconds <= _MAX_SECONDS:
        _fail(f"{path} is outside years 1 to 9999 in UTC, got {_describe(text)}", path)
    return seconds, int((fraction or "").ljust(9, "0"))


def _offset(sign: str, hours: str, minutes: str) -> timedelta:
    if int(hours) > 23 or int(minutes) > 59:
        raise ValueError("offset out of range")
    offset = timedelta(hours=int(hours), minutes=int(minutes))
    return -offset if sign == "-" else offset


# -- generic fields --------------------------------------------------------------------------


def _optional_object(
    obj: _Object, prefix: str, key: str, typed_keys: frozenset[str], shape: str = ""
) -> _Object | None:
    value = obj.get(key)
    if value is None:
        return None
    path = _path(prefix, key)
    if not isinstance(value, _Object):
        _fail(f"{path} must be an object{' ' + shape if shape else ''}, got {_kind(value)}", path)
    _no_duplicates(value, path, typed_keys)
    return value


def _no_duplicates(obj: _Object, prefix: str, typed_keys: frozenset[str]) -> None:
    repeated = sorted(obj.duplicates & typed_keys)
    if repeated:
        path = _path(prefix, repeated[0])
        _fail(f"{path} appears more than once; a signed body must be unambiguous", path)


def _required_text(obj: _Object, prefix: str, key: str, max_len: int | None = None) -> str:
    text = _text(obj, prefix, key, max_len)
    if not text:
        path = _path(prefix, key)
        _fail(f"{path} is required" + (" and must not be empty" if text == "" else ""), path)
    return text


def _text(obj: _Object, prefix: str, key: str, max_len: int | None = None) -> str | None:
    """A field documented as a string; numbers and booleans are taken as their JSON text."""
    value = obj.get(key)
    if value is None:
        return None
    path = _path(prefix, key)
    if isinstance(value, _Number):
        text = value.text
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = _encodable(value, path)
    else:
        _fail(f"{path} must be a string, got {_kind(value)}", path)
    if max_len is not None and len(text) > max_len:
        _fail(f"{path} must be at most {max_len} characters, got {len(text)}", path)
    return text


def _text_or_json(root: _Object, key: str) -> str:
    """A string as sent; an object or array as compact JSON text."""
    value = root.get(key)
    if isinstance(value, _Object | list):
        return _encodable(_compact(value), key)
    return _text(root, "", key) or ""


def _json_text(root: _Object, key: str) -> str:
    """Any value as compact JSON text (a string becomes a JSON string literal)."""
    value = root.get(key)
    return "" if value is None else _encodable(_compact(value), key)


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
