"""The optimised parser against its frozen pre-optimisation copy (`parse_reference.py`).

Every body must give the same outcome from both: byte-identical protobuf, or a `MalformedBody`
with the same reason and the same field path. Bodies are the spec samples edited at the JSON
level (values of every type, numbers in strings, odd times, offsets and amounts, unicode and
lone surrogates, missing, extra and repeated keys) and at the byte level, the fuzz suite's
hostile bodies, and nesting right around the depth where Python's recursion limit bites.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from paynotify.v1 import notification_pb2 as pb
from paynotify_bridge.errors import MalformedBody
from paynotify_bridge.parse import parse_notification
from tests.bridge import parse_reference, spec_samples
from tests.fuzz.bodies import HOSTILE_BODIES

SAMPLES = spec_samples()

Outcome = tuple[Any, ...]


def outcome(parse: Callable[[bytes], pb.PaymentNotification], body: bytes) -> Outcome:
    try:
        parsed = parse(body)
    except MalformedBody as error:
        shown = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
        return ("rejected", type(error), error.reason, error.field, type(shown))
    except Exception as exc:  # must not happen, but then it must happen alike
        return ("raised", type(exc), str(exc))
    return ("parsed", parsed.SerializeToString())


def assert_same(body: bytes) -> Outcome:
    expected = outcome(parse_reference.parse_notification, body)
    assert outcome(parse_notification, body) == expected, body[:300]
    return expected


# -- a body as JSON members, so that keys can repeat and numbers keep their text ---------------


class Raw(str):
    """JSON text written verbatim (a number as sent, or any hand-made token)."""


class Members(list[tuple[str, Any]]):
    """A JSON object as its members in order; a key may appear more than once."""


def load(body: bytes) -> Any:
    return json.loads(body, object_pairs_hook=Members, parse_int=Raw, parse_float=Raw)


def dump(value: Any, ascii_only: bool) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, Members):
        members = (f"{dump(k, ascii_only)}:{dump(v, ascii_only)}" for k, v in value)
        return "{" + ",".join(members) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dump(v, ascii_only) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only)


def member(obj: Members, key: str) -> Any:
    return next((v for k, v in obj if k == key), None)


def edit(root: Members, step: tuple[Any, ...]) -> None:
    kind, path = step[0], step[1]
    *parents, key = path.split(".")
    obj = root
    for parent in parents:
        child = member(obj, parent)
        if not isinstance(child, Members):
            child = Members()
            obj[:] = [(k, v) for k, v in obj if k != parent] + [(parent, child)]
        obj = child
    if kind == "set":
        at = next((i for i, (k, _) in enumerate(obj) if k == key), len(obj))
        obj[at : at + 1] = [(key, step[2])]
    elif kind == "delete":
        obj[:] = [(k, v) for k, v in obj if k != key]
    elif kind == "repeat":
        at = step[3] % (len(obj) + 1)
        obj.insert(at, (key, step[2]))
    elif kind == "reverse":
        obj.reverse()


# -- values ------------------------------------------------------------------------------------

TOP_LEVEL = [
    "notifyType", "result", "paymentRequestId", "paymentId", "paymentAmount", "paymentCreateTime",
    "paymentTime", "pspCustomerInfo", "paymentActionForm", "paymentResultInfo",
    "acquirerReferenceNo", "paymentMethodType", "metadata", "actualPaymentAmount",
    "customsDeclarationAmount", "grossSettlementAmount", "paymentQuote", "settlementQuote",
    "unknownField", "",
]  # fmt: skip
AMOUNTS = ["paymentAmount", "actualPaymentAmount", "customsDeclarationAmount",
           "grossSettlementAmount"]  # fmt: skip
QUOTES = ["paymentQuote", "settlementQuote"]
QUOTE_KEYS = ["quoteId", "quoteCurrencyPair", "quotePrice", "quoteStartTime", "quoteExpiryTime",
              "guaranteed", "extra"]  # fmt: skip
NESTED = [
    *(f"{a}.{k}" for a in AMOUNTS for k in ("currency", "value", "extra")),
    *(f"result.{k}" for k in ("resultCode", "resultStatus", "resultMessage", "extra")),
    *(f"pspCustomerInfo.{k}" for k in ("pspName", "pspCustomerId", "displayCustomerId", "x")),
    *(f"{q}.{k}" for q in QUOTES for k in QUOTE_KEYS),
    *("paymentResultInfo.a", "metadata.a", "unknownField.a"),
]
PATHS = TOP_LEVEL + NESTED

NUMBER_TEXTS = ["0", "-0", "0.064622", "1.0", "1e2", "1E+2", "-1.5e-3", "1e999999", "0.1",
                "12.50", "9" * 16, "9" * 17, "1" + "0" * 400]  # fmt: skip
numbers = st.one_of(
    st.integers(-(10**20), 10**20).map(str),
    st.sampled_from(NUMBER_TEXTS),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
).map(Raw)
ODD_TEXTS = [
    "", "S", "F", "U", "s", "true", "FALSE", "True", "yes", "USD", "usd", "U$D", "PAYMENT_RESULT",
    "PAYMENT_PENDING", "OFFLINE_PAYMENT_CODE", "+1.5", ".5", "5.", "1e5", "-0.0", "1_000", "0x10",
    "\uff11\uff12\uff13", "\u0661\u0662", " 12", "12 ", "x" * 64, "x" * 65, "\xe9" * 64,
    "\xe9" * 65, "y" * 256, "y" * 257, "\U0001f600" * 40, "a\x00b", "\u2028",
]  # fmt: skip
texts = st.one_of(
    st.text(max_size=20),
    st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=2),
    st.text(alphabet="0123456789", max_size=18),
    st.from_regex(r"[A-Za-z]{2,4}", fullmatch=True),
    st.sampled_from(ODD_TEXTS),
)
ZONES = ["Z", "z", "", "+00:00", "-00:00", "+23:59", "-23:59", "+24:00", "+00:01", "-00:01"]


@st.composite
def times(draw: st.DrawFn) -> str:
    year = draw(st.one_of(st.integers(0, 9999), st.sampled_from([1, 1969, 1970, 2000, 9999])))
    width = draw(st.sampled_from([4, 4, 4, 2, 5]))
    month, day = draw(st.integers(0, 13)), draw(st.integers(0, 32))
    hour, minute = draw(st.integers(0, 24)), draw(st.integers(0, 60))
    second = draw(st.integers(0, 61))
    separator = draw(st.sampled_from(["T", "T", "t", " "]))
    digits = draw(st.text("0123456789", min_size=1, max_size=10))
    fraction = draw(st.sampled_from(["", "", "." + digits, "," + digits]))
    sign = draw(st.sampled_from("+-"))
    off_h, off_m = draw(st.integers(0, 25)), draw(st.integers(0, 60))
    zone = draw(
        st.sampled_from([f"{sign}{off_h:02d}:{off_m:02d}", f"{sign}{off_h:02d}{off_m:02d}", *ZONES])
    )
    date = f"{year:0{width}d}-{month:02d}-{day:02d}"
    return f"{date}{separator}{hour:02d}:{minute:02d}:{second:02d}{fraction}{zone}"


scalars = st.one_of(st.none(), st.booleans(), numbers, texts, times())
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(
            st.tuples(st.sampled_from(["a", "b", "currency", "value", ""]), inner), max_size=3
        ).map(Members),
    ),
    max_leaves=6,
)
amounts = st.builds(
    lambda currency, value: Members([("currency", currency), ("value", value)]),
    st.one_of(st.sampled_from(["USD", "JPY", "CNY"]), texts),
    st.one_of(st.text("0123456789", min_size=1, max_size=17), numbers, texts),
)
values = st.one_of(scalars, times(), json_values, amounts, st.builds(Members))
steps = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(PATHS), values),
    st.tuples(st.just("delete"), st.sampled_from(PATHS)),
    st.tuples(st.just("repeat"), st.sampled_from(PATHS), values, st.integers(0, 20)),
    st.tuples(st.just("reverse"), st.sampled_from(["", *AMOUNTS, *QUOTES, "result"])),
)
# After the JSON edits: the body as bytes, maybe spoiled at the byte level.
finishes = st.one_of(
    st.just(("none",)),
    st.just(("bom",)),
    st.tuples(st.just("truncate"), st.integers(0, 2000)),
    st.tuples(
        st.just("insert"),
        st.integers(0, 2000),
        st.sampled_from([b" ", b"\n", b",", b"}", b"\xff", b"NaN", b"\\ud800", b"\x00"]),
    ),
    st.just(("pretty",)),
)


def finish(text: str, how: tuple[Any, ...]) -> bytes:
    body = text.encode("utf-8", "surrogatepass")
    if how[0] == "bom":
        return b"\xef\xbb\xbf" + body
    if how[0] == "truncate":
        return body[: how[1] % (len(body) + 1)]
    if how[0] == "insert":
        at = how[1] % (len(body) + 1)
        return body[:at] + how[2] + body[at:]
    if how[0] == "pretty":
        return json.dumps(json.loads(body), indent=2, ensure_ascii=False).encode()
    return body


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sample=st.sampled_from(sorted(SAMPLES)),
    edits=st.lists(steps, max_size=6),
    ascii_only=st.booleans(),
    how=finishes,
)
def test_edited_samples_give_the_same_outcome(
    sample: str, edits: list[tuple[Any, ...]], ascii_only: bool, how: tuple[Any, ...]
) -> None:
    root = load(SAMPLES[sample])
    for step in edits:
        edit(root, step)
    text = dump(root, ascii_only)
    if how[0] == "pretty" and ("\\ud" in text or any("\ud800" <= c <= "\udfff" for c in text)):
        how = ("none",)  # json.dumps cannot re-encode a lone surrogate as UTF-8
    event(assert_same(finish(text, how))[0])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sample=st.sampled_from(sorted(SAMPLES)),
    path=st.sampled_from(
        [
            "paymentCreateTime",
            "paymentTime",
            "paymentQuote.quoteStartTime",
            "settlementQuote.quoteExpiryTime",
        ]
    ),
    text=times(),
)
def test_times_give_the_same_outcome(sample: str, path: str, text: str) -> None:
    root = load(SAMPLES[sample])
    edit(root, ("set", path, text))
    event(assert_same(dump(root, True).encode())[0])


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_samples_give_the_same_notification(name: str) -> None:
    assert assert_same(SAMPLES[name])[0] == "parsed"


@pytest.mark.parametrize("name", sorted(HOSTILE_BODIES))
def test_hostile_bodies_give_the_same_outcome(name: str) -> None:
    assert_same(HOSTILE_BODIES[name])


EDGE_TIMES = [
    "1970-01-01T00:00:00Z",
    "1970-01-01T00:00:00.000000000Z",
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00+00:01",
    "0001-01-01T00:00:00-00:01",
    "9999-12-31T23:59:59Z",
    "9999-12-31T23:59:59-00:01",
    "9999-12-31T23:59:59+23:59",
    "2000-02-29T00:00:00Z",
    "1900-02-29T00:00:00Z",
    "2024-02-29T24:00:00Z",
    "2020-01-01T23:59:60Z",
    "2020-12-31T00:00Z",
    "2020-01-01T12:01:00.123456789+08:30",
    "2020-01-01T12:01:00,5-08:00",
    "2020-01-01t12:01:00z",
    "2020-01-01T12:01:00+0830",
    "2020-01-01T12:01:00+08",
    "2020-01-01T12:01:00+23:60",
    "2020-01-01T12:01:00+24:00",
    "0000-12-31T23:59:59Z",
    "1969-12-31T23:59:59.999999999Z",
]


@pytest.mark.parametrize("text", EDGE_TIMES)
@pytest.mark.parametrize("path", ["paymentTime", "paymentQuote.quoteExpiryTime"])
def test_edge_times_give_the_same_outcome(path: str, text: str) -> None:
    root = load(SAMPLES["payment_result_instore_fx"])
    edit(root, ("set", path, text))
    assert_same(dump(root, True).encode())


def nested(key: str, depth: int, arrays: bool, leaf: str) -> bytes:
    opening, closing = ("[" * depth, "]" * depth) if arrays else ('{"a":' * depth, "}" * depth)
    base = SAMPLES["payment_result_success"].decode().rstrip()[:-1]
    return f'{base},"{key}":{opening}{leaf}{closing}}}'.encode()


@pytest.mark.parametrize("leaf", ["1", '"x"', "{}", '{"a":1,"a":2}', "null", "1.5"])
@pytest.mark.parametrize("arrays", [True, False])
@pytest.mark.parametrize("key", ["metadata", "paymentResultInfo", "unknownField", "paymentAmount"])
def test_nesting_at_the_recursion_limit_gives_the_same_outcome(
    key: str, arrays: bool, leaf: str
) -> None:
    """Where a deep value stops parsing depends on the frames each parser stacks per level."""

    def too_deep(depth: int) -> bool:
        result = outcome(parse_reference.parse_notification, nested(key, depth, arrays, leaf))
        return result[0] == "rejected" and "too deeply" in result[2]

    low, high = 1, 5000  # the reference finds `high` levels too deep, `low` not
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if too_deep(middle) else (middle, high)
    for depth in range(max(1, low - 3), high + 4):
        assert_same(nested(key, depth, arrays, leaf))
