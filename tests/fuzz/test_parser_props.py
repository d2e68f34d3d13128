"""The pure parser and verifier under hostile input, beyond tests/bridge/test_parse.py and
test_signature.py (which cover arbitrary bytes and JSON values, JSON-level field replacements,
garbage headers as Python text): here byte-level mutations of the samples with raw tokens, deep
nesting anywhere, Content-Type strings as waitress hands them, raw request targets as bytes, and
how long a hostile Signature header takes. Only the documented error types may come out.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paynotify.v1 import notification_pb2 as pb
from paynotify_bridge.app import check_content_type, signed_path
from paynotify_bridge.errors import (
    MalformedBody,
    SignatureRejected,
    UnsupportedMediaType,
)
from paynotify_bridge.parse import MAX_ID_LENGTH, parse_notification
from paynotify_bridge.signature import (
    VerifiedRequest,
    Verifier,
    parse_signature_header,
    sign,
    signed_content,
)
from tests.bridge.conftest import CLIENT_ID, Keys
from tests.fuzz.bodies import SAMPLES, Mutation, apply, mutations, nest
from tests.fuzz.figures import FIGURES, fuzz_settings

# What waitress hands the app: header values and targets are bytes decoded as latin-1.
latin1_text = st.text(st.characters(max_codepoint=0xFF), max_size=80)


def parse_or_reject(body: bytes) -> pb.PaymentNotification | None:
    """Parse `body`; only MalformedBody may come out, and what parses is fit for the hub."""
    try:
        parsed = parse_notification(body)
    except MalformedBody as error:
        FIGURES.tried("parser", "MalformedBody")
        assert error.status == 400 and isinstance(error.field, str) and error.reason
        return None
    except Exception as exc:
        FIGURES.failed("crashes", f"parse_notification raised {type(exc).__name__}: {body[:200]!r}")
        raise
    FIGURES.tried("parser", "parsed")
    assert parsed.raw_json == body
    again = pb.PaymentNotification.FromString(parsed.SerializeToString())  # valid UTF-8 throughout
    assert again == parsed
    assert parsed.notify_type_text and parsed.payment_request_id
    assert len(parsed.payment_request_id) <= MAX_ID_LENGTH >= len(parsed.payment_id)
    value = parsed.payment_amount.value
    assert value.isascii() and value.isdigit() and len(value) <= 16
    assert parsed.payment_amount.minor_units == int(value)
    return parsed


@fuzz_settings(400)
@given(sample=st.sampled_from(sorted(SAMPLES)), steps=st.lists(mutations, min_size=1, max_size=6))
def test_byte_mutated_samples_raise_only_malformed_body(sample: str, steps: list[Mutation]) -> None:
    parse_or_reject(apply(SAMPLES[sample], steps))


TYPED_AND_NOT = ["notifyType", "result", "paymentAmount", "paymentQuote", "pspCustomerInfo",
                 "metadata", "paymentResultInfo", "paymentActionForm", "unknownField"]  # fmt: skip


@fuzz_settings(150)
@given(
    key=st.sampled_from(TYPED_AND_NOT),
    depth=st.one_of(st.integers(1, 1200), st.integers(1, 40_000)),
    arrays=st.booleans(),
)
def test_deep_nesting_anywhere_raises_only_malformed_body(
    key: str, depth: int, arrays: bool
) -> None:
    parse_or_reject(nest(SAMPLES["payment_result_success"], key, depth, arrays=arrays))


@fuzz_settings(500)
@given(value=st.one_of(latin1_text, st.sampled_from(["application/json", "application/json;"])))
def test_content_types_raise_only_unsupported_media_type(value: str) -> None:
    try:
        check_content_type(value)
    except UnsupportedMediaType as error:
        FIGURES.tried("parser", "UnsupportedMediaType")
        assert error.status == 415
        assert len(error.reason) < 200  # quotes a short prefix at most
        return
    FIGURES.tried("parser", "content type accepted")
    assert value.lower().lstrip().startswith("application/json")


raw_targets = st.binary(max_size=80).map(lambda b: b"/" + b.replace(b" ", b"").replace(b"\r", b""))


@fuzz_settings(400)
@given(target=raw_targets, query=st.binary(max_size=20))
def test_signed_path_is_the_raw_target_byte_for_byte(target: bytes, query: bytes) -> None:
    """Whatever bytes the path holds, the signed content carries exactly those bytes."""
    path_bytes = target.split(b"?", 1)[0].split(b"#", 1)[0]
    env = {"REQUEST_URI": (target + b"?" + query).decode("latin-1")}
    path = signed_path(env)
    content = signed_content("POST", path, "c", "t", b"")
    FIGURES.tried("verifier", "signed path")
    assert content == b"POST " + path_bytes + b"\nc.t."


@fuzz_settings(60)
@given(
    target=raw_targets,
    request_time=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1),
    body=st.binary(max_size=300),
)
def test_a_request_signed_over_its_raw_bytes_verifies(
    alipay_keys: Keys, target: bytes, request_time: str, body: bytes
) -> None:
    """Alipay signs the path as sent; the bridge rebuilds exactly those bytes from WSGI's
    latin-1 text (ASCII header values: that is what Alipay sends)."""
    path = signed_path({"REQUEST_URI": target.decode("latin-1")})
    header = _sign_raw(alipay_keys, target, request_time, body)
    headers = {"Client-Id": CLIENT_ID, "Request-Time": request_time, "Signature": header}
    verifier = Verifier({"1": alipay_keys.private_key.public_key()}, [CLIENT_ID])
    FIGURES.tried("verifier", "verified")
    assert verifier.verify("POST", path, headers, body) == VerifiedRequest(
        CLIENT_ID, request_time, "1"
    )


def _sign_raw(keys: Keys, target: bytes, request_time: str, body: bytes) -> str:
    path = target.split(b"?", 1)[0].split(b"#", 1)[0].decode("utf-8", "surrogateescape")
    return sign(keys.private_key, "POST", path, CLIENT_ID, request_time, body)


@fuzz_settings(300)
@given(
    names=st.lists(
        st.sampled_from(["Client-Id", "CLIENT-ID", "Request-Time", "Signature"]), max_size=5
    ),
    values=st.lists(latin1_text, min_size=5, max_size=5),
    target=raw_targets,
    body=st.binary(max_size=100),
)
def test_latin1_headers_raise_only_signature_rejected(
    alipay_keys: Keys, names: list[str], values: list[str], target: bytes, body: bytes
) -> None:
    headers: dict[str, str] = dict(zip(names, values, strict=False))
    verifier = Verifier({None: alipay_keys.private_key.public_key()}, [CLIENT_ID, *values])
    path = signed_path({"REQUEST_URI": target.decode("latin-1")})
    with pytest.raises(SignatureRejected):
        verifier.verify("POST", path, headers, body)
    FIGURES.tried("verifier", "SignatureRejected")


# -- time ------------------------------------------------------------------------------------------

# What waitress lets through: a header block of up to 256 KiB.
_MAX_HEADER_BYTES = 256 * 1024


def _many_fields(size: int) -> str:
    """`algorithm=RSA256,f0=,f1=,...,signature=AAAA` of about `size` characters."""
    fields: list[str] = []
    length = 0
    while length < size - 40:
        fields.append(f"f{len(fields)}=")
        length += len(fields[-1]) + 1
    return "algorithm=RSA256," + ",".join(fields) + ",signature=AAAA"


def _best_time(header: str, tries: int = 3) -> float:
    best = float("inf")
    for _ in range(tries):
        started = time.perf_counter()
        with contextlib.suppress(SignatureRejected):  # unknown fields are ignored: may parse
            parse_signature_header(header)
        best = min(best, time.perf_counter() - started)
    return best


def test_a_huge_signature_header_is_judged_in_linear_time() -> None:
    """BUG: `_split_fields` re-slices the rest of the header for every field, so a header of
    many `name=` fields costs time quadratic in its length: ~0.8 s of CPU (holding the GIL) for
    one unauthenticated 230 KB request (waitress allows 256 KiB of headers), and six such
    clients slow every valid request of the bridge from 4 ms to ~1 s. Expected: linear.

    Measured as a ratio, so that a busy machine does not decide it: four times the length must
    cost about four times as long (quadratic: sixteen), or little enough not to matter."""
    big = _MAX_HEADER_BYTES - 30 * 1024
    t_small, t_big = _best_time(_many_fields(big // 4)), _best_time(_many_fields(big))
    FIGURES.tried("verifier", "huge Signature header", 6)
    assert t_big < 0.03 or t_big < 8 * t_small, (
        f"{big // 1024} KiB of fields took {t_big:.3f}s, a quarter of it {t_small:.3f}s"
    )


@pytest.mark.parametrize("size", [1_000, 10_000, 100_000])
def test_signature_headers_of_any_shape_are_rejected_quickly(size: int) -> None:
    shapes: dict[str, Any] = {
        "one long value": "algorithm=RSA256,keyVersion=" + "1" * size + ",signature=AAAA",
        "one long signature": "algorithm=RSA256,keyVersion=1,signature=" + "%2B" * (size // 3),
        "commas": "algorithm=RSA256," + "," * size + "signature=AAAA",
        "equals": "=" * size,
    }
    for shape, header in shapes.items():
        started = time.perf_counter()
        with contextlib.suppress(SignatureRejected):
            parse_signature_header(header)
        FIGURES.tried("verifier", "long Signature header")
        assert time.perf_counter() - started < 0.1, shape
