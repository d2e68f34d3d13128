"""The bridge over real HTTP (waitress on a loopback port) against a real hub: replies, rejections,
health, metrics and logs. Every rejected request must leave the hub's store untouched."""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from paynotify_bridge.config import KeySource
from paynotify_bridge.signature import generate_key_pair, load_private_key, sign
from paynotify_bridge.simulator import with_overrides
from tests.bridge.conftest import (
    CLIENT_ID,
    NOTIFY_PATH,
    SOON,
    SUCCESS_BODY,
    Bridge,
    BridgeFactory,
    Keys,
    Reply,
    http_request,
    sample_body,
    store_counts,
    subscribed,
)
from tests.hubkit import ThreadedHub, hub_in_thread

SUCCESS_SAMPLE = sample_body("payment_result_success")
FX_SAMPLE = sample_body("payment_result_instore_fx")


def assert_rejected(reply: Reply, status: int, code: str) -> None:
    assert reply.status == status, reply
    assert reply.headers["content-type"] == "application/json"
    assert reply.result["resultStatus"] == "F"
    assert reply.result["resultCode"] == code
    assert reply.result["resultMessage"]
    assert b"SUCCESS" not in reply.body


def assert_still_serving(bridge: Bridge, hub: ThreadedHub) -> None:
    """The bridge answers, and a good notification still goes all the way through."""
    assert bridge.get("/healthz").status == 200
    with subscribed(hub.address):
        reply = bridge.notify(with_overrides(SUCCESS_SAMPLE, {"paymentId": "AFTER-REJECTIONS"}))
    assert reply.status == 200
    assert reply.body == SUCCESS_BODY


def test_acknowledged_notification_gets_the_exact_success_bytes(
    bridge: Bridge, hub: ThreadedHub
) -> None:
    with subscribed(hub.address) as subscriber:
        reply = bridge.notify(SUCCESS_SAMPLE)
        assert subscriber.next().raw_json == SUCCESS_SAMPLE
    assert reply.status == 200
    assert reply.body == SUCCESS_BODY
    assert reply.headers["content-type"] == "application/json"
    assert len(reply.headers["x-request-id"]) == 32
    assert store_counts(hub) == (1, 1)


def test_an_f_payment_is_acknowledged_too(bridge: Bridge, hub: ThreadedHub) -> None:
    with subscribed(hub.address):
        reply = bridge.notify(sample_body("payment_result_failed"))
    assert reply.body == SUCCESS_BODY


def test_query_string_is_not_signed(bridge: Bridge, hub: ThreadedHub) -> None:
    with subscribed(hub.address):
        reply = bridge.notify(SUCCESS_SAMPLE, target=NOTIFY_PATH + "?source=alipay")
    assert reply.body == SUCCESS_BODY


def test_the_path_is_verified_as_it_arrived(bridge: Bridge, hub: ThreadedHub) -> None:
    encoded = "/alipay/%6Eotify"  # routes to /alipay/notify, but Alipay signed these bytes
    with subscribed(hub.address):
        assert bridge.notify(SUCCESS_SAMPLE, target=encoded).body == SUCCESS_BODY
        decoded = bridge.notify(SUCCESS_SAMPLE, target=encoded, path=NOTIFY_PATH)
    assert_rejected(decoded, 401, "INVALID_SIGNATURE")


def test_chunked_body_is_read_whole(bridge: Bridge, hub: ThreadedHub) -> None:
    with subscribed(hub.address) as subscriber:
        reply = bridge.notify(FX_SAMPLE, chunked=True)
        assert subscriber.next().raw_json == FX_SAMPLE
    assert reply.body == SUCCESS_BODY


def test_request_ids_come_from_the_injected_generator_or_the_caller(
    make_bridge: BridgeFactory, hub: ThreadedHub
) -> None:
    ids = iter(["rid-1", "rid-2"])
    bridge = make_bridge(hub.address, request_ids=lambda: next(ids))
    assert bridge.get("/healthz").headers["x-request-id"] == "rid-1"
    reply = bridge.notify(b"{}", headers={"X-Request-Id": "lb-7f3a", "Content-Type": "text/plain"})
    assert reply.headers["x-request-id"] == "lb-7f3a"
    bad = bridge.notify(b"{}", headers={"X-Request-Id": "a b\tc", "Content-Type": "text/plain"})
    assert bad.headers["x-request-id"] == "rid-2"


# -- signatures ---------------------------------------------------------------------------------


def _other_key() -> Any:
    return load_private_key(generate_key_pair()[0])


SIGNATURE_CASES: dict[str, tuple[dict[str, Any], str]] = {
    "missing Signature": ({"headers": {"Signature": None}}, "INVALID_SIGNATURE"),
    "missing Client-Id": ({"headers": {"Client-Id": None}}, "INVALID_SIGNATURE"),
    "missing Request-Time": ({"headers": {"Request-Time": None}}, "INVALID_SIGNATURE"),
    "body changed after signing": ({"tamper_body": True}, "INVALID_SIGNATURE"),
    "Request-Time changed": (
        {"headers": {"Request-Time": "2019-07-12T12:08:56.253+05:30"}},
        "INVALID_SIGNATURE",
    ),
    "signed for another path": ({"path": "/other/notify"}, "INVALID_SIGNATURE"),
    "signed by another key": ({"other_key": True}, "INVALID_SIGNATURE"),
    "unknown client id": ({"client_id": "SANDBOX_SOMEONE_ELSE"}, "INVALID_CLIENT"),
    "unknown key version": ({"key_version": "2"}, "KEY_NOT_FOUND"),
    "unsupported algorithm": (
        {"headers": {"Signature": "algorithm=RSA512,keyVersion=1,signature=AAAA"}},
        "INVALID_SIGNATURE",
    ),
    "malformed header": ({"headers": {"Signature": "garbage"}}, "INVALID_SIGNATURE"),
}


@pytest.fixture(scope="module")
def other_key() -> Any:
    return _other_key()


@pytest.mark.parametrize("case", sorted(SIGNATURE_CASES))
def test_signature_failures_are_401_and_store_nothing(
    case: str, bridge: Bridge, hub: ThreadedHub, other_key: Any
) -> None:
    options, code = SIGNATURE_CASES[case]
    options = dict(options)
    body = SUCCESS_SAMPLE
    with subscribed(hub.address) as subscriber:
        if options.pop("tamper_body", False):
            reply = _send_tampered(bridge, body)
        elif options.pop("other_key", False):
            reply = _send_signed_by(bridge, body, other_key)
        else:
            reply = bridge.notify(body, **options)
        assert_rejected(reply, 401, code)
        subscriber.assert_nothing(within=0.3)
    assert store_counts(hub) == (0, 0)
    assert bridge.metric("paynotify_bridge_requests_total", outcome="rejected_signature") == 1
    assert_still_serving(bridge, hub)


def _send_tampered(bridge: Bridge, body: bytes) -> Reply:
    from tests.bridge.conftest import signed_headers

    headers = signed_headers(bridge.keys, body)
    tampered = body.replace(b'"100"', b'"900"')
    return http_request(bridge.base, "POST", NOTIFY_PATH, tampered, headers)


def _send_signed_by(bridge: Bridge, body: bytes, key: Any) -> Reply:
    request_time = "2024-01-01T00:00:00.000+08:00"
    headers = {
        "Content-Type": "application/json",
        "Client-Id": CLIENT_ID,
        "Request-Time": request_time,
        "Signature": sign(key, "POST", NOTIFY_PATH, CLIENT_ID, request_time, body, "1"),
    }
    return http_request(bridge.base, "POST", NOTIFY_PATH, body, headers)


def test_signature_failures_are_counted_by_reason(bridge: Bridge) -> None:
    bridge.notify(SUCCESS_SAMPLE, headers={"Signature": None})
    bridge.notify(SUCCESS_SAMPLE, client_id="NOPE")
    metric = "paynotify_bridge_signature_failures_total"
    assert bridge.metric(metric, reason="missing_header") == 1
    assert bridge.metric(metric, reason="unknown_client_id") == 1


# -- bad input ----------------------------------------------------------------------------------

MAX_BODY = 4096


def _sized(size: int) -> bytes:
    """The success sample grown to exactly `size` bytes with a metadata string."""
    head = SUCCESS_SAMPLE.rstrip()[:-1] + b',"metadata":"'
    return head + b"x" * (size - len(head) - 2) + b'"}'


BAD_INPUT: dict[str, tuple[bytes, dict[str, Any], int, str]] = {
    "malformed JSON": (b'{"notifyType":"PAYMENT_RESULT",', {}, 400, "PARAM_ILLEGAL"),
    "not an object": (b'["PAYMENT_RESULT"]', {}, 400, "PARAM_ILLEGAL"),
    "amount as a float": (
        SUCCESS_SAMPLE.replace(b'"value":"100"', b'"value":1.5'),
        {},
        400,
        "PARAM_ILLEGAL",
    ),
    "amount with letters": (
        SUCCESS_SAMPLE.replace(b'"value":"100"', b'"value":"1e5"'),
        {},
        400,
        "PARAM_ILLEGAL",
    ),
    "currency not three letters": (
        SUCCESS_SAMPLE.replace(b'"HKD"', b'"HKDX"'),
        {},
        400,
        "PARAM_ILLEGAL",
    ),
    "time without offset": (
        SUCCESS_SAMPLE.replace(b'"2020-01-01T12:01:01+08:30"', b'"2020-01-01T12:01:01"'),
        {},
        400,
        "PARAM_ILLEGAL",
    ),
    "missing paymentRequestId": (
        SUCCESS_SAMPLE.replace(b'"paymentRequestId":"paymentRequestId01",', b""),
        {},
        400,
        "PARAM_ILLEGAL",
    ),
    "invalid UTF-8": (
        SUCCESS_SAMPLE.replace(b"paymentRequestId01", b"paymentRequest\xff\xfe"),
        {},
        400,
        "PARAM_ILLEGAL",
    ),
    "empty body": (b"", {}, 400, "PARAM_ILLEGAL"),
    "blank body": (b"  \n", {}, 400, "PARAM_ILLEGAL"),
    "one byte too large": (_sized(MAX_BODY + 1), {}, 413, "PARAM_ILLEGAL"),
    "too large, chunked": (_sized(MAX_BODY + 100), {"chunked": True}, 413, "PARAM_ILLEGAL"),
    "wrong content type": (
        SUCCESS_SAMPLE,
        {"headers": {"Content-Type": "text/plain"}},
        415,
        "MEDIA_TYPE_NOT_ACCEPTABLE",
    ),
    "form content type": (
        SUCCESS_SAMPLE,
        {"headers": {"Content-Type": "application/x-www-form-urlencoded"}},
        415,
        "MEDIA_TYPE_NOT_ACCEPTABLE",
    ),
    "no content type": (
        SUCCESS_SAMPLE,
        {"headers": {"Content-Type": None}},
        415,
        "MEDIA_TYPE_NOT_ACCEPTABLE",
    ),
    "not UTF-8 charset": (
        SUCCESS_SAMPLE,
        {"headers": {"Content-Type": "application/json; charset=GBK"}},
        415,
        "MEDIA_TYPE_NOT_ACCEPTABLE",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_is_a_clear_4xx_and_stores_nothing(
    case: str, make_bridge: BridgeFactory, hub: ThreadedHub
) -> None:
    body, options, status, code = BAD_INPUT[case]
    bridge = make_bridge(hub.address, max_body_bytes=MAX_BODY)
    with subscribed(hub.address) as subscriber:
        reply = bridge.notify(body, **options)  # correctly signed: the body itself is at fault
        assert_rejected(reply, status, code)
        subscriber.assert_nothing(within=0.3)
    assert store_counts(hub) == (0, 0)
    assert_still_serving(bridge, hub)


def test_exactly_max_body_bytes_is_accepted(make_bridge: BridgeFactory, hub: ThreadedHub) -> None:
    bridge = make_bridge(hub.address, max_body_bytes=MAX_BODY)
    body = _sized(MAX_BODY)
    assert len(body) == MAX_BODY
    with subscribed(hub.address):
        assert bridge.notify(body).body == SUCCESS_BODY


def test_a_body_far_too_large_is_refused_before_it_is_buffered(
    make_bridge: BridgeFactory, hub: ThreadedHub
) -> None:
    bridge = make_bridge(hub.address, max_body_bytes=MAX_BODY)
    reply = bridge.notify(_sized(MAX_BODY * 10))
    assert reply.status == 413  # waitress's own limit (2x ours): plain text, still not SUCCESS
    assert store_counts(hub) == (0, 0)
    assert bridge.get("/healthz").status == 200


def test_the_hub_refusing_is_a_400(make_bridge: BridgeFactory, tmp_path: Path) -> None:
    with hub_in_thread(tmp_path, groups=("billing",), max_notification_bytes=300) as small_hub:
        bridge = make_bridge(small_hub.address)
        reply = bridge.notify(FX_SAMPLE)  # valid, but more than the hub's 300 bytes
        assert_rejected(reply, 400, "PARAM_ILLEGAL")
        assert "hub refused" in reply.result["resultMessage"]
        assert store_counts(small_hub) == (0, 0)


def test_an_unexpected_failure_is_503_u(make_bridge: BridgeFactory, hub: ThreadedHub) -> None:
    def broken_clock() -> float:
        raise RuntimeError("clock exploded")

    bridge = make_bridge(hub.address, clock=broken_clock)
    reply = bridge.notify(SUCCESS_SAMPLE)
    assert reply.status == 503
    assert reply.result["resultStatus"] == "U"
    assert reply.result["resultCode"] == "UNKNOWN_EXCEPTION"
    assert bridge.metric("paynotify_bridge_requests_total", outcome="error") == 1


def test_other_paths_and_methods_are_not_notifications(bridge: Bridge) -> None:
    assert bridge.get("/nothing-here").status == 404
    assert bridge.get(NOTIFY_PATH).status == 405


# -- health, readiness, metrics -----------------------------------------------------------------


def test_health_and_readiness_with_a_hub(bridge: Bridge) -> None:
    assert bridge.get("/healthz").status == 200
    assert bridge.get("/readyz").status == 200


def test_readiness_without_a_hub(make_bridge: BridgeFactory, dead_hub_address: str) -> None:
    bridge = make_bridge(dead_hub_address)
    assert bridge.get("/healthz").status == 200
    assert bridge.get("/readyz").status == 503


def test_metrics_count_outcomes_latency_and_send_counts(
    make_bridge: BridgeFactory, hub: ThreadedHub
) -> None:
    bridge = make_bridge(hub.address, ack_cache_size=0)  # the retry goes to the hub
    bridge.notify(SUCCESS_SAMPLE, headers={"Content-Type": "text/plain"})
    bridge.notify(SUCCESS_SAMPLE, client_id="NOPE")
    with subscribed(hub.address):
        bridge.notify(SUCCESS_SAMPLE)
        bridge.notify(SUCCESS_SAMPLE)
    text = bridge.get("/metrics").body.decode()
    assert 'paynotify_bridge_requests_total{outcome="success"} 2.0' in text
    assert 'paynotify_bridge_requests_total{outcome="rejected_media_type"} 1.0' in text
    assert 'paynotify_bridge_signature_failures_total{reason="unknown_client_id"} 1.0' in text
    assert "paynotify_bridge_publish_seconds_count 2.0" in text
    assert 'paynotify_bridge_alipay_send_count_bucket{le="1.0"} 1.0' in text
    assert 'paynotify_bridge_alipay_send_count_bucket{le="2.0"} 2.0' in text


# -- threads: waiting requests do not starve others ---------------------------------------------


def test_requests_waiting_for_acks_do_not_block_health(
    make_bridge: BridgeFactory, hub: ThreadedHub
) -> None:
    bridge = make_bridge(hub.address, threads=8, publish_timeout=3.0)
    waiting = 6
    bodies = [with_overrides(SUCCESS_SAMPLE, {"paymentId": f"WAIT-{i}"}) for i in range(waiting)]
    with ThreadPoolExecutor(waiting) as pool:
        futures = [pool.submit(bridge.notify, body) for body in bodies]
        _wait_until(lambda: store_counts(hub)[0] == waiting)  # all stored, all waiting for acks
        health = bridge.get("/healthz", timeout=SOON)
        still_waiting = sum(not f.done() for f in futures)
        replies = [f.result(timeout=SOON + 5) for f in futures]
    assert health.status == 200
    assert still_waiting == waiting
    assert {r.status for r in replies} == {503}


def _wait_until(condition: Any, timeout: float = SOON) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


# -- logs -----------------------------------------------------------------------------------------


def test_logs_hold_no_body_signature_or_customer_id(
    bridge: Bridge, hub: ThreadedHub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    signatures = []
    with subscribed(hub.address):
        for body, extra in [
            (FX_SAMPLE, {}),  # acknowledged
            (FX_SAMPLE.replace(b'"JPY"', b'"JPYX"'), {}),  # 400
            (FX_SAMPLE, {"client_id": "NOPE"}),  # 401
        ]:
            from tests.bridge.conftest import signed_headers

            headers = signed_headers(bridge.keys, body, **extra)
            signatures.append(headers["Signature"].split("signature=")[1])
            http_request(bridge.base, "POST", NOTIFY_PATH, body, headers)
    records = caplog.records
    logged = caplog.text + "".join(json.dumps(r.__dict__, default=str) for r in records)
    assert "acknowledged" in caplog.text
    assert FX_SAMPLE.decode().strip() not in logged
    assert '"pspCustomerInfo"' not in logged
    assert "20885028136924G7" not in logged
    assert "buy*@alitest.com" not in logged
    for signature in signatures:
        assert signature not in logged
    assert all(hasattr(r, "request_id") for r in records if r.name == "paynotify_bridge.app")


# -- keys, insecure mode, stopping --------------------------------------------------------------


def test_an_unversioned_key_serves_any_key_version(
    make_bridge: BridgeFactory, hub: ThreadedHub, alipay_keys: Keys
) -> None:
    bridge = make_bridge(hub.address, public_keys=(KeySource(alipay_keys.public_path),))
    with subscribed(hub.address):
        assert bridge.notify(SUCCESS_SAMPLE, key_version="7").body == SUCCESS_BODY
        assert bridge.notify(SUCCESS_SAMPLE, key_version=None).body == SUCCESS_BODY


def test_rotated_keys_are_chosen_by_key_version(
    make_bridge: BridgeFactory, hub: ThreadedHub, alipay_keys: Keys, tmp_path: Path
) -> None:
    old_private, old_public = generate_key_pair()
    (tmp_path / "old.pem").write_bytes(old_public)
    keys = (KeySource(tmp_path / "old.pem", "1"), KeySource(alipay_keys.public_path, "2"))
    bridge = make_bridge(hub.address, public_keys=keys)
    with subscribed(hub.address):
        assert bridge.notify(SUCCESS_SAMPLE, key_version="2").body == SUCCESS_BODY
        old = _send_signed_by(bridge, SUCCESS_SAMPLE, load_private_key(old_private))  # keyVersion 1
        assert old.body == SUCCESS_BODY
    assert_rejected(bridge.notify(SUCCESS_SAMPLE, key_version="1"), 401, "INVALID_SIGNATURE")


def test_insecure_mode_accepts_unsigned_requests_loudly(
    make_bridge: BridgeFactory, hub: ThreadedHub, caplog: pytest.LogCaptureFixture
) -> None:
    bridge = make_bridge(
        hub.address, insecure_skip_verification=True, public_keys=(), client_ids=()
    )
    caplog.set_level(logging.WARNING, logger="paynotify_bridge")
    unsigned = {"Signature": None, "Client-Id": None, "Request-Time": None}
    with subscribed(hub.address):
        assert bridge.notify(SUCCESS_SAMPLE, headers=unsigned).body == SUCCESS_BODY
        assert bridge.notify(SUCCESS_SAMPLE, headers=unsigned).body == SUCCESS_BODY
    assert caplog.text.count("SIGNATURE NOT VERIFIED") == 2
    assert bridge.metric("paynotify_bridge_unverified_requests_total") == 2


def test_stopping_lets_a_waiting_request_finish(
    make_bridge: BridgeFactory, hub: ThreadedHub
) -> None:
    bridge = make_bridge(hub.address, publish_timeout=2.0)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(bridge.notify, SUCCESS_SAMPLE)  # nobody acks: waits ~2 s
        _wait_until(lambda: store_counts(hub)[0] == 1)
        bridge.server.stop()
        reply = waiting.result(timeout=SOON)
    assert reply.status == 503  # answered, not cut off
    bridge.thread.join(SOON)
    assert not bridge.thread.is_alive()
    with pytest.raises(OSError):
        bridge.get("/healthz", timeout=2)
