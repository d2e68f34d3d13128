"""Alipay's notification body -> PaymentNotification: samples exact, strict rules, lenient rules."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paynotify.v1 import notification_pb2 as pb
from paynotify_bridge.errors import MalformedBody
from paynotify_bridge.parse import parse_notification
from tests.bridge import spec_samples

SAMPLES = spec_samples()  # at collection: missing samples fail the run, never skip


def dt(text: str, seconds: int, nanos: int = 0) -> pb.DateTime:
    return pb.DateTime(timestamp=Timestamp(seconds=seconds, nanos=nanos), text=text)


def amount(currency: str, value: str) -> pb.Amount:
    return pb.Amount(currency=currency, value=value, minor_units=int(value))


# 2020-01-01T12:01:00+08:30 is 2020-01-01T03:31:00Z;
# 2020-03-02T19:11:19-08:00 is 2020-03-03T03:11:19Z.
EXPECTED = {
    "payment_result_success": pb.PaymentNotification(
        notify_type=pb.NOTIFY_TYPE_PAYMENT_RESULT,
        notify_type_text="PAYMENT_RESULT",
        result=pb.Result(
            result_code="SUCCESS", result_status=pb.RESULT_STATUS_S, result_message="success"
        ),
        payment_request_id="paymentRequestId01",
        payment_id="2020010123456789XXXX",
        payment_amount=amount("HKD", "100"),
        payment_create_time=dt("2020-01-01T12:01:00+08:30", 1577849460),
        payment_time=dt("2020-01-01T12:01:01+08:30", 1577849461),
    ),
    "payment_result_instore_fx": pb.PaymentNotification(
        notify_type=pb.NOTIFY_TYPE_PAYMENT_RESULT,
        notify_type_text="PAYMENT_RESULT",
        result=pb.Result(
            result_code="SUCCESS", result_status=pb.RESULT_STATUS_S, result_message="success."
        ),
        payment_request_id="20200303074500020000036648",
        payment_id="202003021940108001001885I0204368838",
        payment_amount=amount("JPY", "200"),
        actual_payment_amount=amount("CNY", "1292"),
        payment_create_time=dt("2020-03-02T19:11:19-08:00", 1583205079),
        payment_time=dt("2020-03-02T19:12:11-08:00", 1583205131),
        psp_customer_info=pb.PspCustomerInfo(
            psp_name="ALIPAYCN",
            psp_customer_id="20885028136924G7",
            display_customer_id="buy*@alitest.com",
        ),
        payment_quote=pb.Quote(
            quote_currency_pair="392/156", quote_price="0.064622", guaranteed=False
        ),
    ),
    "payment_result_failed": pb.PaymentNotification(
        notify_type=pb.NOTIFY_TYPE_PAYMENT_RESULT,
        notify_type_text="PAYMENT_RESULT",
        result=pb.Result(
            result_code="USER_BALANCE_NOT_ENOUGH",
            result_status=pb.RESULT_STATUS_F,
            result_message="user balance not enough",
        ),
        payment_request_id="pay_test_1106_0002",
        payment_id="20200101234567890132",
        payment_amount=amount("EUR", "8000"),
        payment_create_time=dt("2020-01-01T12:01:00+08:30", 1577849460),
    ),
    "offline_payment_code": pb.PaymentNotification(
        notify_type=pb.NOTIFY_TYPE_OFFLINE_PAYMENT_CODE,
        notify_type_text="OFFLINE_PAYMENT_CODE",
        payment_request_id="pay_demo_0002",
        payment_id="20200101234567890133",
        payment_amount=amount("USD", "1000"),
        payment_create_time=dt("2020-01-01T12:01:00+08:30", 1577849460),
        payment_action_form=(
            '{"paymentActionFormType":"PaymentCodeForm","paymentCode":"2810000000000000"}'
        ),
    ),
}


def test_every_sample_has_an_expectation() -> None:
    assert set(SAMPLES) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_sample_parses_with_every_field_exact(name: str) -> None:
    body = SAMPLES[name]
    parsed = parse_notification(body)
    assert parsed.raw_json == body  # byte for byte, trailing newline included
    expected = pb.PaymentNotification()
    expected.CopyFrom(EXPECTED[name])
    expected.raw_json = body
    assert parsed == expected
    assert pb.PaymentNotification.FromString(parsed.SerializeToString()) == expected


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_sample_times_agree_with_the_standard_library(name: str) -> None:
    parsed = parse_notification(SAMPLES[name])
    for field in (parsed.payment_create_time, parsed.payment_time):
        if field.text:
            instant = datetime.datetime.fromisoformat(field.text)
            assert field.timestamp.seconds == int(instant.timestamp())
            assert field.timestamp.nanos == 0


def test_instore_fx_sample_details() -> None:
    parsed = parse_notification(SAMPLES["payment_result_instore_fx"])
    assert parsed.payment_quote.quote_price == "0.064622"  # a JSON number, never float-rounded
    assert parsed.payment_quote.HasField("guaranteed")
    assert parsed.payment_quote.guaranteed is False
    assert parsed.HasField("psp_customer_info")
    assert not parsed.payment_quote.HasField("quote_start_time")


def test_offline_sample_has_no_result() -> None:
    parsed = parse_notification(SAMPLES["offline_payment_code"])
    assert not parsed.HasField("result")
    assert json.loads(parsed.payment_action_form)["paymentCode"] == "2810000000000000"


# -- strictness: every rule has a failing case -----------------------------------------------

BASE: dict[str, Any] = json.loads(SAMPLES["payment_result_success"])
ABSENT = object()


def body_with(**changes: Any) -> bytes:
    """The success sample with top-level fields replaced (ABSENT removes one)."""
    data = {**BASE, **changes}
    return json.dumps({k: v for k, v in data.items() if v is not ABSENT}).encode()


def with_amount(key: str = "paymentAmount", **fields: Any) -> bytes:
    value = {"currency": "USD", "value": "100", **fields}
    return body_with(**{key: {k: v for k, v in value.items() if v is not ABSENT}})


def with_quote(key: str = "paymentQuote", **fields: Any) -> bytes:
    return body_with(**{key: {"quotePrice": "1.5", "guaranteed": True, **fields}})


def with_result(**fields: Any) -> bytes:
    value = {"resultCode": "SUCCESS", "resultStatus": "S", "resultMessage": "ok", **fields}
    return body_with(result={k: v for k, v in value.items() if v is not ABSENT})


def with_psp(**fields: Any) -> bytes:
    return body_with(pspCustomerInfo={"pspName": "ALIPAYCN", **fields})


REJECTED: dict[str, tuple[bytes, str, str]] = {
    # name: (body, .field, a fragment of the reason)
    "empty body": (b"", "", "empty"),
    "whitespace body": (b"  \n", "", "not valid JSON"),
    "BOM": (b"\xef\xbb\xbf" + SAMPLES["payment_result_success"], "", "byte order mark"),
    "invalid UTF-8": (b'{"notifyType":"PAYMENT_RESULT\xff"}', "", "not valid UTF-8"),
    "overlong UTF-8": (b'{"a":"\xc0\xaf"}', "", "not valid UTF-8"),
    "UTF-8 surrogate bytes": (b'{"a":"\xed\xa0\x80"}', "", "not valid UTF-8"),
    "UTF-16 body": ('{"notifyType":"X"}'.encode("utf-16"), "", "UTF-8"),
    "syntax error": (b'{"notifyType": "PAYMENT_RESULT",\n "paymentId": }', "", "line 2 column"),
    "trailing data": (SAMPLES["payment_result_success"] + b"{}", "", "Extra data"),
    "truncated": (SAMPLES["payment_result_success"][:-10], "", "not valid JSON"),
    "single quotes": (b"{'notifyType': 'PAYMENT_RESULT'}", "", "not valid JSON"),
    "raw control char in string": (b'{"notifyType":"PAYMENT\x01RESULT"}', "", "not valid JSON"),
    "NaN": (b'{"notifyType":"PAYMENT_RESULT","x":NaN}', "", "NaN is not a JSON number"),
    "Infinity": (b'{"x":-Infinity}', "", "Infinity"),
    "top-level array": (b"[]", "", "got an array"),
    "top-level string": (b'"PAYMENT_RESULT"', "", "got a string"),
    "top-level null": (b"null", "", "got null"),
    "top-level number": (b"12", "", "got a number"),
    "deep nesting": (b'{"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "", "too deeply"),
    "notifyType missing": (body_with(notifyType=ABSENT), "notifyType", "required"),
    "notifyType null": (body_with(notifyType=None), "notifyType", "required"),
    "notifyType empty": (body_with(notifyType=""), "notifyType", "must not be empty"),
    "notifyType object": (body_with(notifyType={}), "notifyType", "must be a string"),
    "notifyType array": (body_with(notifyType=["PAYMENT_RESULT"]), "notifyType", "array"),
    "paymentRequestId missing": (
        body_with(paymentRequestId=ABSENT),
        "paymentRequestId",
        "required",
    ),
    "paymentRequestId empty": (body_with(paymentRequestId=""), "paymentRequestId", "empty"),
    "paymentRequestId 65 chars": (
        body_with(paymentRequestId="r" * 65),
        "paymentRequestId",
        "at most 64 characters, got 65",
    ),
    "paymentRequestId lone surrogate": (
        b'{"notifyType":"X","paymentRequestId":"a\\ud800"}',
        "paymentRequestId",
        "surrogate",
    ),
    "paymentId 65 chars": (body_with(paymentId="p" * 65), "paymentId", "at most 64"),
    "paymentId object": (body_with(paymentId={"id": "1"}), "paymentId", "got an object"),
    "paymentAmount missing": (body_with(paymentAmount=ABSENT), "paymentAmount", "required"),
    "paymentAmount null": (body_with(paymentAmount=None), "paymentAmount", "required"),
    "paymentAmount string": (body_with(paymentAmount="100"), "paymentAmount", "must be an object"),
    "paymentAmount array": (body_with(paymentAmount=[]), "paymentAmount", "got an array"),
    "currency missing": (with_amount(currency=ABSENT), "paymentAmount.currency", "required"),
    "currency lowercase": (with_amount(currency="usd"), "paymentAmount.currency", "3 ASCII"),
    "currency 2 letters": (with_amount(currency="US"), "paymentAmount.currency", "got 'US'"),
    "currency 4 letters": (with_amount(currency="USDD"), "paymentAmount.currency", "ISO 4217"),
    "currency non-ASCII": (with_amount(currency="ÜSD"), "paymentAmount.currency", "ASCII"),
    "currency numeric": (with_amount(currency=840), "paymentAmount.currency", "3 ASCII"),
    "currency newline": (with_amount(currency="USD\n"), "paymentAmount.currency", "3 ASCII"),
    "value missing": (with_amount(value=ABSENT), "paymentAmount.value", "required"),
    "value empty": (with_amount(value=""), "paymentAmount.value", "got an empty string"),
    "value decimal point": (
        with_amount(value="1234567890.0"),
        "paymentAmount.value",
        "must be 1 to 16 ASCII digits (minor units), got 12 characters incl. '.'",
    ),
    "value negative": (with_amount(value="-100"), "paymentAmount.value", "incl. '-'"),
    "value plus sign": (with_amount(value="+100"), "paymentAmount.value", "incl. '+'"),
    "value exponent": (with_amount(value="1e2"), "paymentAmount.value", "incl. 'e'"),
    "value spaces": (with_amount(value=" 100"), "paymentAmount.value", "incl. ' '"),
    "value fullwidth digits": (
        with_amount(value="\uff11\uff10\uff10"),
        "paymentAmount.value",
        "ASCII",
    ),
    "value 17 digits": (with_amount(value="1" * 17), "paymentAmount.value", "got 17 digits"),
    "value JSON float": (with_amount(value=1.0), "paymentAmount.value", "incl. '.'"),
    "value JSON negative": (with_amount(value=-5), "paymentAmount.value", "incl. '-'"),
    "value JSON exponent": (
        body_with(paymentAmount=ABSENT)[:-1]
        + b', "paymentAmount": {"currency": "USD", "value": 1E2}}',
        "paymentAmount.value",
        "incl. 'E'",
    ),
    "value JSON 17 digits": (with_amount(value=10**16), "paymentAmount.value", "17 digits"),
    "value boolean": (with_amount(value=True), "paymentAmount.value", "got a boolean"),
    "value object": (with_amount(value={}), "paymentAmount.value", "got an object"),
    "actualPaymentAmount value": (
        with_amount("actualPaymentAmount", value="12.92"),
        "actualPaymentAmount.value",
        "digits",
    ),
    "grossSettlementAmount currency": (
        with_amount("grossSettlementAmount", currency="eur"),
        "grossSettlementAmount.currency",
        "3 ASCII",
    ),
    "customsDeclarationAmount string": (
        body_with(customsDeclarationAmount="CNY 12"),
        "customsDeclarationAmount",
        "must be an object",
    ),
    "result array": (body_with(result=[]), "result", "must be an object"),
    "resultStatus unknown": (
        with_result(resultStatus="X"),
        "result.resultStatus",
        "result.resultStatus must be S, F or U",
    ),
    "resultStatus lowercase": (with_result(resultStatus="s"), "result.resultStatus", "S, F or U"),
    "resultStatus missing": (with_result(resultStatus=ABSENT), "result.resultStatus", "S, F or U"),
    "resultStatus number": (with_result(resultStatus=1), "result.resultStatus", "S, F or U"),
    "resultCode 65 chars": (with_result(resultCode="C" * 65), "result.resultCode", "at most 64"),
    "resultMessage 257 chars": (
        with_result(resultMessage="m" * 257),
        "result.resultMessage",
        "at most 256",
    ),
    "naive time": (
        body_with(paymentCreateTime="2020-01-01T12:01:00"),
        "paymentCreateTime",
        "needs a UTC offset",
    ),
    "naive time with millis": (
        body_with(paymentTime="2020-01-01T12:01:00.123"),
        "paymentTime",
        "needs a UTC offset",
    ),
    "date only": (body_with(paymentCreateTime="2020-01-01"), "paymentCreateTime", "ISO 8601"),
    "space separator": (
        body_with(paymentCreateTime="2020-01-01 12:01:00+08:00"),
        "paymentCreateTime",
        "ISO 8601",
    ),
    "no seconds": (
        body_with(paymentCreateTime="2020-01-01T12:01+08:00"),
        "paymentCreateTime",
        "ISO",
    ),
    "month 13": (body_with(paymentTime="2020-13-01T00:00:00Z"), "paymentTime", "not a valid date"),
    "February 30": (body_with(paymentTime="2020-02-30T00:00:00Z"), "paymentTime", "not a valid"),
    "hour 24": (body_with(paymentTime="2020-01-01T24:00:00Z"), "paymentTime", "not a valid"),
    "leap second": (body_with(paymentTime="2016-12-31T23:59:60Z"), "paymentTime", "not a valid"),
    "offset 24h": (
        body_with(paymentTime="2020-01-01T00:00:00+24:00"),
        "paymentTime",
        "not a valid",
    ),
    "offset minutes 60": (
        body_with(paymentTime="2020-01-01T00:00:00+01:60"),
        "paymentTime",
        "not a valid",
    ),
    "10 fraction digits": (
        body_with(paymentTime="2020-01-01T00:00:00.1234567890Z"),
        "paymentTime",
        "ISO 8601",
    ),
    "before year 1 in UTC": (
        body_with(paymentTime="0001-01-01T00:00:00+01:00"),
        "paymentTime",
        "outside years 1 to 9999",
    ),
    "time as epoch number": (body_with(paymentTime=1577849460), "paymentTime", "got a number"),
    "time garbage": (body_with(paymentTime="yesterday"), "paymentTime", "ISO 8601"),
    "quote time": (
        with_quote(quoteStartTime="2020-01-01T00:00:00"),
        "paymentQuote.quoteStartTime",
        "needs a UTC offset",
    ),
    "settlement quote time": (
        with_quote("settlementQuote", quoteExpiryTime="soon"),
        "settlementQuote.quoteExpiryTime",
        "ISO 8601",
    ),
    "pspCustomerInfo string": (
        body_with(pspCustomerInfo="ALIPAYCN"),
        "pspCustomerInfo",
        "must be an object",
    ),
    "pspCustomerId 65 chars": (
        with_psp(pspCustomerId="2088" * 16 + "X"),
        "pspCustomerInfo.pspCustomerId",
        "at most 64 characters, got 65",
    ),
    "displayCustomerId 65 chars": (
        with_psp(displayCustomerId="b" * 53 + "@alitest.com"),
        "pspCustomerInfo.displayCustomerId",
        "at most 64",
    ),
    "pspName array": (with_psp(pspName=["x"]), "pspCustomerInfo.pspName", "got an array"),
    "quote string": (body_with(paymentQuote="0.06"), "paymentQuote", "must be an object"),
    "quotePrice text": (with_quote(quotePrice="abc"), "paymentQuote.quotePrice", "decimal"),
    "quotePrice object": (with_quote(quotePrice={}), "paymentQuote.quotePrice", "decimal"),
    "guaranteed yes": (with_quote(guaranteed="yes"), "paymentQuote.guaranteed", "true or false"),
    "guaranteed 1": (with_quote(guaranteed=1), "paymentQuote.guaranteed", "true or false"),
    "settlementQuote guaranteed": (
        with_quote("settlementQuote", guaranteed=[]),
        "settlementQuote.guaranteed",
        "true or false",
    ),
    "duplicate notifyType": (
        b'{"notifyType":"PAYMENT_RESULT","notifyType":"PAYMENT_PENDING",'
        b'"paymentRequestId":"r","paymentAmount":{"currency":"USD","value":"1"}}',
        "notifyType",
        "more than once",
    ),
    "duplicate amount value": (
        b'{"notifyType":"PAYMENT_RESULT","paymentRequestId":"r",'
        b'"paymentAmount":{"currency":"USD","value":"1","value":"100000"}}',
        "paymentAmount.value",
        "more than once",
    ),
    "duplicate resultStatus": (
        body_with(result=ABSENT)[:-1] + b', "result": {"resultStatus": "F", "resultStatus": "S"}}',
        "result.resultStatus",
        "more than once",
    ),
}


@pytest.mark.parametrize("case", REJECTED.values(), ids=REJECTED.keys())
def test_strictness(case: tuple[bytes, str, str]) -> None:
    body, field, fragment = case
    with pytest.raises(MalformedBody) as caught:
        parse_notification(body)
    error = caught.value
    assert error.status == 400
    assert error.field == field
    assert fragment in error.reason, error.reason
    assert str(error) == error.reason
    assert len(error.reason) < 200


def test_reasons_never_echo_customer_ids_or_long_values() -> None:
    secret = "2088" * 16 + "SECRET"
    for body in (
        with_psp(pspCustomerId=secret),
        with_psp(displayCustomerId=secret + "@mail.com"),
        with_psp(pspCustomerId={"id": secret}),
        body_with(paymentRequestId=secret * 2),
    ):
        with pytest.raises(MalformedBody) as caught:
            parse_notification(body)
        assert "2088" not in caught.value.reason
    for body in (with_amount(value=secret), body_with(paymentTime=secret)):
        with pytest.raises(MalformedBody) as caught:
            parse_notification(body)
        assert "2088" * 4 not in caught.value.reason  # at most a 12-character prefix


def test_error_has_no_chained_context_holding_the_body() -> None:
    for body in (b"\xff" * 10, b'{"a": }'):
        with pytest.raises(MalformedBody) as caught:
            parse_notification(body)
        assert caught.value.__cause__ is None
        assert caught.value.__suppress_context__


def test_boundaries_are_accepted() -> None:
    parsed = parse_notification(
        body_with(
            paymentRequestId="r" * 64,
            paymentId="p" * 64,
            paymentAmount={"currency": "USD", "value": "9" * 16},
            result={"resultCode": "C" * 64, "resultStatus": "S", "resultMessage": "m" * 256},
            pspCustomerInfo={
                "pspName": "n" * 64,
                "pspCustomerId": "i" * 64,
                "displayCustomerId": "d" * 64,
            },
        )
    )
    assert parsed.payment_amount.minor_units == 9_999_999_999_999_999
    assert parsed.payment_amount.value == "9" * 16
    assert len(parsed.payment_request_id) == 64


def test_ids_count_characters_not_bytes() -> None:
    parsed = parse_notification(body_with(paymentRequestId="支" * 64))
    assert parsed.payment_request_id == "支" * 64


# -- leniency --------------------------------------------------------------------------------


def test_numbers_and_booleans_where_strings_are_documented() -> None:
    body = (
        b'{"notifyType":"PAYMENT_RESULT","paymentRequestId":20200303074500020000036648,'
        b'"paymentId":1.50,"paymentAmount":{"currency":"USD","value":100},'
        b'"result":{"resultCode":true,"resultStatus":"S","resultMessage":0},'
        b'"acquirerReferenceNo":123456789012345678901234567890,"paymentMethodType":false,'
        b'"pspCustomerInfo":{"pspName":1,"pspCustomerId":2088,"displayCustomerId":-1e5}}'
    )
    parsed = parse_notification(body)
    assert parsed.payment_request_id == "20200303074500020000036648"  # not float-rounded
    assert parsed.payment_id == "1.50"  # the exact text
    assert parsed.payment_amount == amount("USD", "100")
    assert parsed.result.result_code == "true"
    assert parsed.result.result_message == "0"
    assert parsed.acquirer_reference_no == "123456789012345678901234567890"
    assert parsed.payment_method_type == "false"
    assert parsed.psp_customer_info == pb.PspCustomerInfo(
        psp_name="1", psp_customer_id="2088", display_customer_id="-1e5"
    )


def test_amount_keeps_leading_zeros_as_sent() -> None:
    parsed = parse_notification(with_amount(value="0100"))
    assert parsed.payment_amount == pb.Amount(currency="USD", value="0100", minor_units=100)
    assert parse_notification(with_amount(value="0")).payment_amount.minor_units == 0


@pytest.mark.parametrize(
    ("text", "enum"),
    [
        ("PAYMENT_RESULT", pb.NOTIFY_TYPE_PAYMENT_RESULT),
        ("OFFLINE_PAYMENT_CODE", pb.NOTIFY_TYPE_OFFLINE_PAYMENT_CODE),
        ("PAYMENT_PENDING", pb.NOTIFY_TYPE_PAYMENT_PENDING),
        ("REFUND_RESULT", pb.NOTIFY_TYPE_UNSPECIFIED),
        ("payment_result", pb.NOTIFY_TYPE_UNSPECIFIED),
        ("SOMETHING_NEW_FROM_ALIPAY", pb.NOTIFY_TYPE_UNSPECIFIED),
    ],
)
def test_notify_type_known_and_unknown(text: str, enum: int) -> None:
    parsed = parse_notification(body_with(notifyType=text))
    assert parsed.notify_type == enum
    assert parsed.notify_type_text == text


def test_result_status_u_is_accepted() -> None:
    assert parse_notification(with_result(resultStatus="U")).result.result_status == (
        pb.RESULT_STATUS_U
    )


def test_unknown_fields_are_ignored_and_kept_in_raw_json() -> None:
    body = body_with(
        brandNewField={"nested": [1, 2.50, {"x": None}]},
        paymentAmount={"currency": "USD", "value": "1", "extra": "ignored"},
        result={"resultCode": "SUCCESS", "resultStatus": "S", "future": True},
    )
    parsed = parse_notification(body)
    assert parsed.raw_json == body
    assert json.loads(parsed.raw_json)["brandNewField"]["nested"][1] == 2.5


def test_duplicates_outside_typed_fields_are_left_alone() -> None:
    body = (
        b'{"notifyType":"PAYMENT_RESULT","paymentRequestId":"r","x":1,"x":2,'
        b'"paymentAmount":{"currency":"USD","value":"1"},'
        b'"paymentResultInfo":{"a":1,"a":2}}'
    )
    parsed = parse_notification(body)
    assert parsed.payment_result_info_json == '{"a":2}'
    assert parsed.raw_json == body


def test_null_optional_fields_count_as_absent() -> None:
    parsed = parse_notification(
        body_with(
            paymentId=None,
            result=None,
            paymentTime=None,
            pspCustomerInfo=None,
            paymentQuote=None,
            actualPaymentAmount=None,
            metadata=None,
            paymentResultInfo=None,
        )
    )
    assert parsed.payment_id == ""
    assert not parsed.HasField("result")
    assert not parsed.HasField("payment_time")
    assert not parsed.HasField("psp_customer_info")
    assert not parsed.HasField("payment_quote")
    assert not parsed.HasField("actual_payment_amount")
    assert parsed.metadata == parsed.payment_result_info_json == ""


def test_quote_fields() -> None:
    body = body_with(
        settlementQuote={
            "quoteId": "Q1",
            "quoteCurrencyPair": "USD/CNY",
            "quotePrice": "7.123400",
            "quoteStartTime": "2020-01-01T00:00:00Z",
            "quoteExpiryTime": "2020-01-01T00:10:00.5+00:00",
            "guaranteed": "TRUE",
        },
        paymentQuote={"quotePrice": 1e-7, "guaranteed": "false"},
    )
    parsed = parse_notification(body)
    assert parsed.settlement_quote == pb.Quote(
        quote_id="Q1",
        quote_currency_pair="USD/CNY",
        quote_price="7.123400",
        quote_start_time=dt("2020-01-01T00:00:00Z", 1577836800),
        quote_expiry_time=dt("2020-01-01T00:10:00.5+00:00", 1577837400, 500_000_000),
        guaranteed=True,
    )
    assert parsed.payment_quote.quote_price == "1e-07"  # json.dumps' text, kept exactly
    assert parsed.payment_quote.HasField("guaranteed") and not parsed.payment_quote.guaranteed


def test_exact_decimal_text_from_the_raw_bytes() -> None:
    raw = b'{"paymentQuote":{"quotePrice":0.0646220000000000000001,"guaranteed":true}'
    body = (
        raw
        + b',"notifyType":"X","paymentRequestId":"r",'
        + b'"paymentAmount":{"currency":"USD","value":"1"}}'
    )
    assert parse_notification(body).payment_quote.quote_price == "0.0646220000000000000001"


def test_empty_objects_are_present() -> None:
    parsed = parse_notification(body_with(pspCustomerInfo={}, settlementQuote={}))
    assert parsed.HasField("psp_customer_info")
    assert parsed.HasField("settlement_quote")
    assert not parsed.settlement_quote.HasField("guaranteed")


@pytest.mark.parametrize(
    ("text", "seconds", "nanos"),
    [
        ("2019-07-12T12:08:56.253+05:30", 1562913536, 253_000_000),
        ("2019-07-12T06:38:56Z", 1562913536, 0),
        ("2019-07-12T06:38:56z", 1562913536, 0),
        ("2019-07-12t06:38:56Z", 1562913536, 0),
        ("2019-07-12T06:38:56.123456Z", 1562913536, 123_456_000),
        ("2019-07-12T06:38:56.123456789Z", 1562913536, 123_456_789),
        ("2019-07-12T06:38:56,5Z", 1562913536, 500_000_000),
        ("2019-07-12T12:08:56+0530", 1562913536, 0),
        ("2019-07-12T06:38:56-00:00", 1562913536, 0),
        ("1969-12-31T23:59:59.5Z", -1, 500_000_000),
        ("0001-01-01T00:00:00Z", -62135596800, 0),
        ("9999-12-31T23:59:59.999999999Z", 253402300799, 999_999_999),
    ],
)
def test_time_formats(text: str, seconds: int, nanos: int) -> None:
    parsed = parse_notification(body_with(paymentTime=text))
    assert parsed.payment_time == dt(text, seconds, nanos)


def test_payment_action_form_and_metadata_as_objects_become_compact_json() -> None:
    parsed = parse_notification(
        body_with(
            paymentActionForm={"paymentCode": "281", "n": 0.10, "ok": True, "none": None},
            metadata={"order": {"lines": [1, 2]}, "note": '支付 "q"'},
            paymentResultInfo={"cardNo": "****1234", "funding": "CREDIT"},
        )
    )
    assert parsed.payment_action_form == '{"paymentCode":"281","n":0.1,"ok":true,"none":null}'
    assert parsed.metadata == '{"order":{"lines":[1,2]},"note":"支付 \\"q\\""}'
    assert json.loads(parsed.metadata)["note"] == '支付 "q"'
    assert parsed.payment_result_info_json == '{"cardNo":"****1234","funding":"CREDIT"}'


def test_compact_json_keeps_number_text() -> None:
    body = body_with(paymentAmount=ABSENT)[:-1] + (
        b', "paymentAmount": {"currency": "USD", "value": "1"},'
        b' "paymentResultInfo": {"rate": 0.10, "big": 1E+400, "neg": -0}}'
    )
    parsed = parse_notification(body)
    assert parsed.payment_result_info_json == '{"rate":0.10,"big":1E+400,"neg":-0}'


def test_strings_stay_strings() -> None:
    parsed = parse_notification(
        body_with(
            paymentActionForm='{"paymentCode":"1"}',
            metadata="plain text",
            paymentResultInfo="a string",
            acquirerReferenceNo="ACQ-1",
            paymentMethodType="ALIPAY_CN",
        )
    )
    assert parsed.payment_action_form == '{"paymentCode":"1"}'
    assert parsed.metadata == "plain text"
    assert parsed.payment_result_info_json == '"a string"'  # always JSON text
    assert parsed.acquirer_reference_no == "ACQ-1"
    assert parsed.payment_method_type == "ALIPAY_CN"


def test_pretty_printed_body_parses_and_raw_json_is_exact() -> None:
    body = json.dumps(json.loads(SAMPLES["payment_result_instore_fx"]), indent=4).encode()
    parsed = parse_notification(body)
    assert parsed.raw_json == body
    assert parsed.payment_amount == amount("JPY", "200")


def test_non_ascii_text_survives() -> None:
    parsed = parse_notification(with_result(resultMessage="余额不足 😢"))
    assert parsed.result.result_message == "余额不足 😢"
    escaped = body_with(paymentRequestId="x")[:-1] + b', "paymentMethodType": "\\ud83d\\ude00"}'
    assert parse_notification(escaped).payment_method_type == "😀"


# -- properties ------------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(st.characters(exclude_categories=()), max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def assert_parses_or_malformed(body: bytes) -> None:
    try:
        parsed = parse_notification(body)
    except MalformedBody as error:
        assert error.status == 400
        assert isinstance(error.field, str)
        return
    assert parsed.raw_json == body
    assert pb.PaymentNotification.FromString(parsed.SerializeToString()) == parsed


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_malformed_body(body: bytes) -> None:
    assert_parses_or_malformed(body)


@settings(max_examples=500, deadline=None)
@given(json_values)
def test_arbitrary_json_values_raise_only_malformed_body(value: Any) -> None:
    assert_parses_or_malformed(json.dumps(value).encode())
    assert_parses_or_malformed(
        json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    )


TYPED_KEYS = sorted(
    {
        *BASE,
        *json.loads(SAMPLES["payment_result_instore_fx"]),
        *json.loads(SAMPLES["offline_payment_code"]),
        "settlementQuote",
        "customsDeclarationAmount",
        "grossSettlementAmount",
        "acquirerReferenceNo",
        "paymentResultInfo",
        "paymentMethodType",
        "metadata",
    }
)
NESTED_KEYS = ["currency", "value", "resultStatus", "resultCode", "resultMessage", "quotePrice",
               "guaranteed", "quoteStartTime", "pspCustomerId", "displayCustomerId"]  # fmt: skip


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sample=st.sampled_from(sorted(SAMPLES)),
    replacements=st.dictionaries(st.sampled_from(TYPED_KEYS), json_values, max_size=4),
    nested=st.dictionaries(st.sampled_from(NESTED_KEYS), json_values, max_size=3),
)
def test_mutated_samples_raise_only_malformed_body(
    sample: str, replacements: dict[str, Any], nested: dict[str, Any]
) -> None:
    data = json.loads(SAMPLES[sample])
    data.update(replacements)
    for key in ("paymentAmount", "result", "paymentQuote", "pspCustomerInfo"):
        if isinstance(data.get(key), dict):
            data[key] = {**data[key], **nested}
    assert_parses_or_malformed(json.dumps(data).encode())


@settings(max_examples=300, deadline=None)
@given(
    currency=st.from_regex(r"[A-Z]{3}", fullmatch=True),
    value=st.from_regex(r"[0-9]{1,16}", fullmatch=True),
    as_number=st.booleans(),
)
def test_valid_amounts_are_kept_exactly(currency: str, value: str, as_number: bool) -> None:
    if as_number:
        value = str(int(value))  # a JSON integer has no leading zeros
    body = body_with(paymentAmount=ABSENT)[:-1] + (
        b', "paymentAmount": {"currency": "%s", "value": %s}}'
        % (currency.encode(), value.encode() if as_number else json.dumps(value).encode())
    )
    parsed = parse_notification(body)
    assert parsed.payment_amount == pb.Amount(
        currency=currency, value=value, minor_units=int(value)
    )


@settings(max_examples=300, deadline=None)
@given(
    moment=st.datetimes(
        min_value=datetime.datetime(1, 1, 2), max_value=datetime.datetime(9999, 12, 30)
    ),
    offset_minutes=st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59),
)
def test_times_agree_with_the_standard_library(
    moment: datetime.datetime, offset_minutes: int
) -> None:
    aware = moment.replace(tzinfo=datetime.timezone(datetime.timedelta(minutes=offset_minutes)))
    text = aware.isoformat()
    parsed = parse_notification(body_with(paymentTime=text)).payment_time
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    assert parsed.text == text
    assert parsed.timestamp.seconds == (aware - epoch) // datetime.timedelta(seconds=1)
    assert parsed.timestamp.nanos == aware.microsecond * 1000
