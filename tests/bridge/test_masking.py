"""Masks for personal data, and the one summary of a notification that logs may carry."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paynotify.v1 import notification_pb2 as pb
from paynotify_bridge.masking import MASK, mask_display_id, mask_email, mask_id, safe_summary
from paynotify_bridge.parse import parse_notification
from tests.bridge import spec_samples

SAMPLES = spec_samples()


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("20885028136924G7", "20****G7"),
        ("2088502813", "20****13"),
        ("208850281", "****"),
        ("abc", "****"),
        ("a", "****"),
        ("", ""),
    ],
)
def test_mask_id(value: str, masked: str) -> None:
    assert mask_id(value) == masked


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("buy*@alitest.com", "b****@alitest.com"),
        ("buyer.name@example.org", "b****@example.org"),
        ("a@b", "a****@b"),
        ("@alitest.com", "@a****om"),
        ("no-at-sign-here-0123", "no****23"),
    ],
)
def test_mask_email(value: str, masked: str) -> None:
    assert mask_email(value) == masked


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("buy*@alitest.com", "b****@alitest.com"),
        ("138****1234", "13****34"),
        ("13800001234", "13****34"),
        ("jo", "****"),
        ("", ""),
    ],
)
def test_mask_display_id(value: str, masked: str) -> None:
    assert mask_display_id(value) == masked


@given(st.text(max_size=80))
def test_masks_never_reveal_more_than_four_characters(value: str) -> None:
    for masked in (mask_id(value), mask_display_id(value)):
        local = masked.rpartition("@")[0] if "@" in value else masked
        assert len(local.replace(MASK, "")) <= 4
        if len(value) >= 5 and set(value) != {"*"} and "@" not in value:
            assert value not in masked


def test_safe_summary_of_the_instore_sample_masks_customer_ids() -> None:
    summary = safe_summary(parse_notification(SAMPLES["payment_result_instore_fx"]))
    assert summary == {
        "notify_type": "PAYMENT_RESULT",
        "payment_request_id": "20200303074500020000036648",
        "payment_id": "202003021940108001001885I0204368838",
        "amount": "JPY 200",
        "result_status": "S",
        "result_code": "SUCCESS",
        "psp_name": "ALIPAYCN",
        "psp_customer_id": "20****G7",
        "display_customer_id": "b****@alitest.com",
    }
    text = repr(summary)
    assert "20885028136924G7" not in text
    assert "buy*" not in text


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_safe_summary_never_holds_the_body(name: str) -> None:
    notification = parse_notification(SAMPLES[name])
    summary = safe_summary(notification)
    assert all(isinstance(v, str) for v in summary.values())
    text = repr(summary)
    assert SAMPLES[name].decode() not in text
    assert "paymentActionForm" not in text and "2810000000000000" not in text


def test_safe_summary_without_result_or_psp() -> None:
    summary = safe_summary(parse_notification(SAMPLES["offline_payment_code"]))
    assert summary == {
        "notify_type": "OFFLINE_PAYMENT_CODE",
        "payment_request_id": "pay_demo_0002",
        "payment_id": "20200101234567890133",
        "amount": "USD 1000",
    }


def test_safe_summary_of_an_unknown_or_empty_notification() -> None:
    assert safe_summary(pb.PaymentNotification())["notify_type"] == "NOTIFY_TYPE_UNSPECIFIED"
    assert safe_summary(pb.PaymentNotification())["amount"] == ""


def test_safe_summary_keys_fit_in_logging_extra() -> None:
    summary = safe_summary(parse_notification(SAMPLES["payment_result_instore_fx"]))
    reserved = set(vars(logging.LogRecord("n", logging.INFO, "p", 1, "m", None, None)))
    assert not set(summary) & (reserved | {"message", "asctime"})
    logging.getLogger("test").info("notification", extra=summary)
