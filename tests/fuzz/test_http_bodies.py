"""Hostile bodies over real HTTP: a waitress bridge, a hub on SQLite, an acking subscriber.

Each body goes out validly signed (so the parser is reached and a well-formed one is stored and
answered SUCCESS) and in unsigned or wrongly signed variants (which must stop at the signature).
Every reply is checked by `FuzzTarget.check` (see httpkit.py): no crash, no 5xx but the documented
503, Alipay-shaped rejections with a message to act on, nothing stored from a rejected request.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.bridge.conftest import NOTIFY_PATH
from tests.fuzz.bodies import (
    FIELD_PATHS,
    HOSTILE_BODIES,
    SAMPLES,
    WRONG_TYPES,
    Mutation,
    apply,
    mutations,
    set_raw,
)
from tests.fuzz.figures import fuzz_settings
from tests.fuzz.httpkit import FuzzTarget, RawReply, RawRequest, http_bytes, notify_headers

SIGNINGS = ["signed", "signed", "signed", "unsigned", "wrong-body", "unknown-client"]


def send_body(target: FuzzTarget, body: bytes, signing: str, label: str) -> RawReply:
    data = http_bytes(NOTIFY_PATH, notify_headers(target, body, signing=signing), body)
    request = RawRequest(data, f"{label} ({signing})", signed=signing == "signed", body=body)
    return target.check(request)


@fuzz_settings(220)
@given(
    sample=st.sampled_from(sorted(SAMPLES)),
    steps=st.lists(mutations, min_size=1, max_size=4),
    signing=st.sampled_from(SIGNINGS),
)
def test_mutated_samples_over_http(
    fuzz_target: FuzzTarget, sample: str, steps: list[Mutation], signing: str
) -> None:
    body = apply(SAMPLES[sample], steps)
    send_body(fuzz_target, body, signing, f"{sample} mutated by {steps!r:.300}")


def test_every_field_with_every_wrong_type_over_http(fuzz_target: FuzzTarget) -> None:
    """Each documented field, top-level and nested, as every JSON kind: signed, so parsed.
    (The in-store FX sample, which has a quote and pspCustomerInfo to replace inside.)"""
    sample = "payment_result_instore_fx"
    for path in FIELD_PATHS:
        for kind, raw in WRONG_TYPES.items():
            body = set_raw(SAMPLES[sample], path, raw)
            send_body(fuzz_target, body, "signed", f"{sample}: {path} as {kind}")
    fuzz_target.assert_still_serving("AFTER-WRONG-TYPES")


def test_hostile_bodies_over_http(fuzz_target: FuzzTarget) -> None:
    """Deep nesting, huge numbers, NaN/Infinity, duplicate keys, surrogates, BOM, bad UTF-8..."""
    for name, body in sorted(HOSTILE_BODIES.items()):
        for signing in ("signed", "unsigned", "wrong-body"):
            send_body(fuzz_target, body, signing, name)
    fuzz_target.assert_still_serving("AFTER-HOSTILE-BODIES")


def test_samples_are_still_accepted_afterwards(fuzz_target: FuzzTarget) -> None:
    """The spec's samples as they are: every one answered SUCCESS after all the garbage."""
    for name, body in sorted(SAMPLES.items()):
        reply = send_body(fuzz_target, body, "signed", f"sample {name}")
        assert reply.status == 200, reply
    fuzz_target.assert_still_serving("AFTER-BODY-FUZZ")
