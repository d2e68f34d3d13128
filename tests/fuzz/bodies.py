"""Hostile notification bodies: byte mutations of the spec samples, JSON-level edits with raw
tokens (NaN, lone surrogates, huge numbers), deep nesting, duplicate keys, bad UTF-8.

Everything here is pure data and hypothesis strategies; `test_http_bodies.py` sends them to a
bridge, `test_parser_props.py` to the parser directly.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st

from paynotify_bridge.simulator import builtin_samples

__all__ = [
    "FIELD_PATHS",
    "HOSTILE_BODIES",
    "RAW_TOKENS",
    "SAMPLES",
    "WRONG_TYPES",
    "apply",
    "json_texts",
    "mutations",
    "set_raw",
]

SAMPLES: dict[str, bytes] = builtin_samples()

# Byte strings that break JSON, UTF-8 or the parser's rules when dropped anywhere.
RAW_TOKENS: list[bytes] = [
    b"NaN", b"Infinity", b"-Infinity", b"1e999999", b"-1e-999999", b"-0", b"9" * 400,
    b"0." + b"0" * 300 + b"1", b"\\ud800", b"\\udfff", b"\\ud800\\ud800", b"\\ud83d\\ude00",
    b"\\u0000", b"\x00", b"\xef\xbb\xbf", b"\xff", b"\xfe", b"\xc0\xaf", b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80", b"\x80", b"\xe2\x82", b'"', b"\\", b"{", b"}", b"[", b"]", b",", b":",
    b"null", b"true", b"false", b'""', b"{}", b"[]", b"\r\n", b"\t", b"\xe2\x80\xa8", b"\\u2028",
    b'"paymentRequestId":"dup",', b'"notifyType":"PAYMENT_RESULT",', b"//", b"/*", b"'",
]  # fmt: skip

# Raw JSON texts for a field's value: right-looking but wrong, wrong types, edge values.
_SPECIAL_VALUES: list[str] = [
    "NaN", "Infinity", "-Infinity", "1e999999", "1" + "0" * 5000, "-1", "0", "1.0", "1e2",
    '"\\ud800"', '"\\udc00\\ud800"', '"a\\u0000b"', '"\\u0000"', '"' + "x" * 300 + '"',
    '"\uff11\uff12\uff13"', '"\u0663"', '"12 "', '" 12"', '"+12"', '"0x10"', '"1_000"',
    '"00000000000000001"',
    '"12345678901234567"', '"usd"', '"US"', '"U$D"', '"2020-01-01T12:01:01+24:00"',
    '"2020-02-30T00:00:00Z"', '"0000-01-01T00:00:00Z"', '"9999-12-31T23:59:59-23:59"',
    '"0001-01-01T00:00:00+00:01"', '"2020-01-01T12:01:01.1234567890+08:00"',
    '"2020-01-01T12:01:01"', '"2020-01-01 12:01:01+08:00"', '"S"', '"F"', '"U"', '"s"', '""',
    '"TRUE"', '"yes"', "true", "false", "null", "[]", "{}", '{"":""}', "[[[[[]]]]]",
    '{"currency":"USD","value":"1","currency":"EUR"}', '{"value":"1"}', '{"currency":"USD"}',
]  # fmt: skip

_json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
json_texts = st.one_of(
    st.sampled_from(_SPECIAL_VALUES),
    _json_values.map(lambda v: json.dumps(v, ensure_ascii=False)),
)

_TOP_LEVEL = [
    "notifyType", "result", "paymentRequestId", "paymentId", "paymentAmount", "paymentCreateTime",
    "paymentTime", "pspCustomerInfo", "paymentActionForm", "paymentResultInfo",
    "acquirerReferenceNo", "paymentMethodType", "metadata", "actualPaymentAmount",
    "customsDeclarationAmount", "grossSettlementAmount", "paymentQuote", "settlementQuote",
    "unknownField",
]  # fmt: skip
_NESTED = [
    "paymentAmount.value", "paymentAmount.currency", "result.resultStatus", "result.resultCode",
    "result.resultMessage", "paymentQuote.quotePrice", "paymentQuote.guaranteed",
    "paymentQuote.quoteStartTime", "paymentQuote.quoteExpiryTime", "paymentQuote.quoteId",
    "pspCustomerInfo.pspCustomerId", "pspCustomerInfo.displayCustomerId",
    "actualPaymentAmount.value", "settlementQuote.quoteCurrencyPair",
]  # fmt: skip
FIELD_PATHS: list[str] = _TOP_LEVEL + _NESTED

# One raw JSON text per JSON kind: every field gets every kind in the wrong-type sweep.
WRONG_TYPES: dict[str, str] = {
    "null": "null",
    "integer": "12",
    "float": "1.5",
    "boolean": "true",
    "string": '"x"',
    "empty string": '""',
    "array": '["x"]',
    "object": '{"x":"y"}',
    "long string": '"' + "y" * 300 + '"',
}

_MARK = "@@fuzz-raw-value@@"


def set_raw(body: bytes, path: str, raw: bytes | str, *, duplicate: bool = False) -> bytes:
    """`body` (a JSON object) with the field at dotted `path` set to the raw JSON text `raw`.

    A missing parent object is created. With `duplicate`, the key is added a second time instead
    (before the existing members), so the object holds it twice.
    """
    raw_bytes = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")
    data = json.loads(body)
    *parents, key = path.split(".")
    obj = data
    for parent in parents:
        if not isinstance(obj.get(parent), dict):
            obj[parent] = {}
        obj = obj[parent]
    if duplicate:
        obj_items = list(obj.items())
        obj.clear()
        obj[_MARK + "dup"] = None
        obj.update(obj_items)
        text = json.dumps(data, ensure_ascii=False).encode()
        return text.replace(
            json.dumps(_MARK + "dup").encode() + b": null",
            json.dumps(key).encode() + b": " + raw_bytes,
        )
    obj[key] = _MARK
    text = json.dumps(data, ensure_ascii=False).encode()
    return text.replace(json.dumps(_MARK).encode(), raw_bytes, 1)


def nest(body: bytes, key: str, depth: int, *, arrays: bool = True) -> bytes:
    """`body` with field `key` wrapped in `depth` arrays (or single-key objects)."""
    opening, closing = (b"[" * depth, b"]" * depth) if arrays else (b'{"a":' * depth, b"}" * depth)
    return set_raw(body, key, opening + b"1" + closing)


# -- byte-level mutations ---------------------------------------------------------------------

Mutation = tuple[Any, ...]

_position = st.integers(min_value=0, max_value=10**6)
mutations = st.one_of(
    st.tuples(st.just("flip"), _position, st.integers(0, 7)),
    st.tuples(st.just("delete"), _position, st.integers(1, 40)),
    st.tuples(st.just("truncate"), _position),
    st.tuples(st.just("insert"), _position, st.sampled_from(RAW_TOKENS)),
    st.tuples(st.just("replace"), _position, st.integers(1, 20), st.sampled_from(RAW_TOKENS)),
    st.tuples(st.just("repeat"), _position, st.integers(1, 60)),
    st.tuples(st.just("set"), st.sampled_from(FIELD_PATHS), json_texts),
    st.tuples(st.just("duplicate-key"), st.sampled_from(FIELD_PATHS), json_texts),
    st.tuples(st.just("nest"), st.sampled_from(_TOP_LEVEL), st.integers(1, 1500), st.booleans()),
)


def apply(body: bytes, steps: Sequence[Mutation]) -> bytes:
    """Apply byte- or JSON-level mutations in order (a JSON edit of a body that is no longer
    JSON is skipped)."""
    for step in steps:
        body = _apply_one(body, step)
    return body


def _apply_one(body: bytes, step: Mutation) -> bytes:
    kind = step[0]
    at: int = step[1] % (len(body) + 1) if isinstance(step[1], int) else 0
    if kind == "flip" and body:
        at %= len(body)
        return body[:at] + bytes([body[at] ^ (1 << step[2])]) + body[at + 1 :]
    if kind == "delete":
        return body[:at] + body[at + step[2] :]
    if kind == "truncate":
        return body[:at]
    if kind == "insert":
        token: bytes = step[2]
        return body[:at] + token + body[at:]
    if kind == "replace":
        token = step[3]
        return body[:at] + token + body[at + step[2] :]
    if kind == "repeat":
        return body[:at] + body[at : at + step[2]] * 2 + body[at + step[2] :]
    try:
        if kind == "set":
            return set_raw(body, step[1], step[2])
        if kind == "duplicate-key":
            return set_raw(body, step[1], step[2], duplicate=True)
        if kind == "nest":
            return nest(body, step[1], step[2], arrays=step[3])
    except (ValueError, AttributeError, TypeError, RecursionError):
        return body  # not a JSON object any more: byte mutations only
    return body


# -- named hostile bodies -----------------------------------------------------------------------

_S = SAMPLES["payment_result_success"]
_FX = SAMPLES["payment_result_instore_fx"]


def _hostile() -> dict[str, bytes]:
    bodies = {
        "empty object": b"{}",
        "array": b"[]",
        "string": b'"PAYMENT_RESULT"',
        "number": b"1",
        "null": b"null",
        "whitespace": b" \t\r\n ",
        "NUL bytes": b"\x00" * 64,
        "UTF-16 LE": _S.decode().encode("utf-16-le"),
        "UTF-16 with BOM": _S.decode().encode("utf-16"),
        "UTF-32": _S.decode().encode("utf-32"),
        "BOM then sample": b"\xef\xbb\xbf" + _S,
        "BOM inside": _S.replace(b'"notifyType"', b'\xef\xbb\xbf"notifyType"'),
        "invalid UTF-8 byte": _S.replace(b"SUCCESS", b"SUCC\xffESS"),
        "overlong UTF-8 slash": _S.replace(b"SUCCESS", b"SUCC\xc0\xafESS"),
        "CESU-8 surrogate": _S.replace(b"SUCCESS", b"SUCC\xed\xa0\x80ESS"),
        "truncated multibyte at end": _S.rstrip()[:-1] + b',"metadata":"\xe2\x82',
        "code point above U+10FFFF": _S.replace(b"SUCCESS", b"SUCC\xf4\x90\x80\x80ESS"),
        "lone high surrogate in id": set_raw(_S, "paymentId", '"\\ud800"'),
        "lone low surrogate in id": set_raw(_S, "paymentId", '"\\udc00"'),
        "reversed pair in message": set_raw(_S, "result.resultMessage", '"\\udc00\\ud800"'),
        "lone surrogate in a key": _S.replace(b'"paymentId"', b'"payment\\ud800Id"'),
        "lone surrogate in unknown field": set_raw(_S, "unknownField", '"\\ud800"'),
        "lone surrogate in metadata object": set_raw(_S, "metadata", '{"\\ud800":"\\udfff"}'),
        "valid surrogate pair": set_raw(_S, "result.resultMessage", '"\\ud83d\\ude00"'),
        "escaped NUL in unknown field": set_raw(_S, "unknownField", '"\\u0000"'),
        "raw NUL in a string": _S.replace(b"SUCCESS", b"SUC\x00CESS"),
        "raw control character": _S.replace(b"SUCCESS", b"SUC\x01CESS"),
        "NaN amount": set_raw(_S, "paymentAmount.value", "NaN"),
        "Infinity amount": set_raw(_S, "paymentAmount.value", "Infinity"),
        "-Infinity quote": set_raw(_FX, "paymentQuote.quotePrice", "-Infinity"),
        "NaN in unknown field": set_raw(_S, "unknownField", "NaN"),
        "huge exponent amount": set_raw(_S, "paymentAmount.value", "1e999999"),
        "huge integer amount": set_raw(_S, "paymentAmount.value", "9" * 3000),
        "huge integer in metadata": set_raw(_S, "metadata", "9" * 3500),
        "huge exponent in metadata": set_raw(_S, "metadata", "1e999999999999"),
        "16-digit amount": set_raw(_S, "paymentAmount.value", '"9999999999999999"'),
        "17-digit amount": set_raw(_S, "paymentAmount.value", '"99999999999999999"'),
        "negative amount": set_raw(_S, "paymentAmount.value", "-100"),
        "fraction amount": set_raw(_S, "paymentAmount.value", "1.00"),
        "underscored amount": set_raw(_S, "paymentAmount.value", '"1_000"'),
        "non-ASCII digits": set_raw(_S, "paymentAmount.value", '"١٢٣"'),
        "deep arrays in metadata": nest(_S, "metadata", 1800),
        "deep objects in metadata": nest(_S, "metadata", 600, arrays=False),
        "deep arrays in unknown field": nest(_S, "unknownField", 1800),
        "deep arrays in paymentResultInfo": nest(_S, "paymentResultInfo", 1800),
        "deep arrays as the amount": nest(_S, "paymentAmount", 1500),
        "deep array body": b"[" * 2000 + b"]" * 2000,
        "deep object body": b'{"a":' * 600 + b"1" + b"}" * 600,
        "unclosed deep array": b"[" * 4000,
        "duplicate notifyType": set_raw(_S, "notifyType", '"REFUND_RESULT"', duplicate=True),
        "duplicate paymentId": set_raw(_S, "paymentId", '"OTHER"', duplicate=True),
        "duplicate amount value": set_raw(_S, "paymentAmount.value", '"1"', duplicate=True),
        "duplicate result status": set_raw(_S, "result.resultStatus", '"F"', duplicate=True),
        "duplicate quote price": set_raw(_FX, "paymentQuote.quotePrice", "2", duplicate=True),
        "duplicate key in metadata": set_raw(_S, "metadata", '{"a":1,"a":2}'),
        "every typed field null": _every_field(_S, "null"),
        "every typed field an array": _every_field(_S, "[]"),
        "every typed field an object": _every_field(_S, "{}"),
        "every typed field a number": _every_field(_S, "1"),
        "unicode escapes everywhere": _escaped(_S),
        "single quotes": _S.replace(b'"', b"'"),
        "trailing comma": _S.rstrip()[:-1] + b",}",
        "comment": b"/* x */" + _S,
        "two documents": _S + _S,
        "sample then garbage": _S + b"garbage",
        "line separators": _S.replace(b",", b",\xe2\x80\xa8"),
        "notifyType of 65 characters": set_raw(_S, "notifyType", '"' + "P" * 65 + '"'),
        "notifyType with a bar": set_raw(_S, "notifyType", '"PAYMENT_RESULT|X"'),
        "paymentId of 65 characters": set_raw(_S, "paymentId", '"' + "9" * 65 + '"'),
        "empty paymentRequestId": set_raw(_S, "paymentRequestId", '""'),
        "paymentActionForm that is not JSON": set_raw(_S, "paymentActionForm", '"{not json"'),
    }
    return bodies


def _every_field(body: bytes, raw: str) -> bytes:
    for key in _TOP_LEVEL:
        body = set_raw(body, key, raw)
    return body


def _escaped(body: bytes) -> bytes:
    """The body re-written with every character of every string (keys too) as a \\uXXXX escape."""
    return _escape_value(json.loads(body)).encode("ascii")


def _escape_value(value: Any) -> str:
    if isinstance(value, dict):
        members = (f"{_escape_string(k)}:{_escape_value(v)}" for k, v in value.items())
        return "{" + ",".join(members) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_escape_value(v) for v in value) + "]"
    if isinstance(value, str):
        return _escape_string(value)
    return json.dumps(value)


def _escape_string(text: str) -> str:
    units = text.encode("utf-16-be", "surrogatepass")
    return (
        '"' + "".join(f"\\u{units[i]:02x}{units[i + 1]:02x}" for i in range(0, len(units), 2)) + '"'
    )


HOSTILE_BODIES: dict[str, bytes] = _hostile()
