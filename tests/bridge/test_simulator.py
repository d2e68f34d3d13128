"""The Alipay simulator's pure core: schedule, retry loop (injected sleep), samples, overrides."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from paynotify_bridge import simulator
from paynotify_bridge.simulator import (
    ALIPAY_RETRY_DELAYS,
    Attempt,
    RetrySchedule,
    builtin_samples,
    is_success,
    load_sample,
    request_time_now,
    send_with_retries,
    with_overrides,
)
from paynotify_cli.main import main
from tests.bridge.conftest import SHARED_SAMPLES, SUCCESS_BODY

U_BODY = b'{"result":{"resultCode":"PROCESS_FAIL","resultStatus":"U","resultMessage":"later"}}'


def test_alipays_schedule() -> None:
    assert ALIPAY_RETRY_DELAYS == (0, 120, 600, 600, 3600, 7200, 21600, 54000)
    # "up to 8 times within 24 hours" is approximate: these intervals add up to 24h22m.
    assert sum(ALIPAY_RETRY_DELAYS) == 24 * 3600 + 22 * 60


def test_time_scale_divides_every_wait() -> None:
    assert list(RetrySchedule(time_scale=600).waits()) == [d / 600 for d in ALIPAY_RETRY_DELAYS]
    assert list(RetrySchedule.once().waits()) == [0.0]


@pytest.mark.parametrize("scale", [0.0, -1.0])
def test_time_scale_must_be_positive(scale: float) -> None:
    with pytest.raises(ValueError, match="time-scale"):
        RetrySchedule(time_scale=scale)


class ScriptedSender:
    """Answers each attempt with the next scripted (status, body)."""

    def __init__(self, *replies: tuple[int | None, bytes]) -> None:
        self.replies = list(replies)
        self.calls: list[int] = []

    def __call__(self, number: int) -> Attempt:
        self.calls.append(number)
        status, body = self.replies[min(len(self.calls), len(self.replies)) - 1]
        if status is None:
            return Attempt(number, None, error="ConnectionRefusedError")
        return Attempt(number, status, body)


def test_retries_follow_the_schedule_and_stop_at_success() -> None:
    sender = ScriptedSender((503, U_BODY), (None, b""), (503, U_BODY), (200, SUCCESS_BODY))
    slept: list[float] = []
    attempts = send_with_retries(sender, RetrySchedule(time_scale=60), slept.append)
    assert sender.calls == [1, 2, 3, 4]
    assert [a.succeeded for a in attempts] == [False, False, False, True]
    assert slept == [2.0, 10.0, 10.0]  # no sleep before the first send


def test_retries_give_up_after_eight_sends() -> None:
    sender = ScriptedSender((503, U_BODY))
    slept: list[float] = []
    attempts = send_with_retries(sender, RetrySchedule(), slept.append)
    assert len(attempts) == 8
    assert slept == list(ALIPAY_RETRY_DELAYS[1:])
    assert not any(a.succeeded for a in attempts)


def test_only_the_exact_success_reply_counts() -> None:
    assert is_success(SUCCESS_BODY)
    assert is_success(
        b'{"result": {"resultStatus":"S","resultCode":"SUCCESS","resultMessage":"success"}}'
    )
    assert not is_success(U_BODY)
    assert not is_success(b"SUCCESS")
    assert not Attempt(1, 500, SUCCESS_BODY).succeeded
    assert Attempt(1, 200, SUCCESS_BODY).succeeded


def test_attempt_lines() -> None:
    assert Attempt(2, 503, U_BODY + b"\n").describe() == f"attempt 2: HTTP 503 {U_BODY.decode()}"
    assert Attempt(3, None, error="timeout").describe() == "attempt 3: no reply (timeout)"


def test_request_time_is_iso8601_with_milliseconds_and_offset() -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d", request_time_now())


def test_builtin_samples_are_the_specs_byte_for_byte() -> None:
    samples = builtin_samples()
    assert sorted(samples) == [
        "offline_payment_code",
        "payment_result_failed",
        "payment_result_instore_fx",
        "payment_result_success",
    ]
    if not SHARED_SAMPLES.is_dir():
        pytest.skip(f"{SHARED_SAMPLES} is not here to compare with")
    for name, body in samples.items():
        assert body == (SHARED_SAMPLES / f"{name}.json").read_bytes(), name


def test_load_sample_by_name_or_file(tmp_path: Path) -> None:
    assert load_sample("payment_result_failed") == builtin_samples()["payment_result_failed"]
    own = tmp_path / "mine.json"
    own.write_bytes(b'{"notifyType":"PAYMENT_RESULT"}')
    assert load_sample(str(own)) == own.read_bytes()
    with pytest.raises(ValueError, match="payment_result_success"):
        load_sample("nope")


def test_overrides_change_only_the_named_values() -> None:
    body = builtin_samples()["payment_result_instore_fx"]
    changed = with_overrides(body, {"paymentId": "P-1", "paymentRequestId": 'R"2'})
    assert json.loads(changed) == {
        **json.loads(body),
        "paymentId": "P-1",
        "paymentRequestId": 'R"2',
    }
    # every other byte as it was: the JSON number keeps its exact text
    assert b'"quotePrice":0.064622' in changed
    assert changed.replace(b'"P-1"', b"").replace(b'"R\\"2"', b"") == body.replace(
        b'"202003021940108001001885I0204368838"', b""
    ).replace(b'"20200303074500020000036648"', b"")


def test_an_absent_field_is_added() -> None:
    assert json.loads(with_overrides(b'{"a":1}', {"paymentId": "P"})) == {"paymentId": "P", "a": 1}


def test_send_test_without_a_key_explains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    assert main(["send-test", "--url", "http://127.0.0.1:9/alipay/notify"]) == 2
    assert "--private-key" in capsys.readouterr().err


def test_send_test_reports_no_reply(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], alipay_keys: object
) -> None:
    key = alipay_keys.private_path  # type: ignore[attr-defined]
    code = main(
        ["send-test", "--url", "http://127.0.0.1:9/alipay/notify", "--private-key", str(key)]
    )
    assert code == 1
    [line] = capsys.readouterr().out.splitlines()
    assert line.startswith("attempt 1: no reply (")


def test_dev_key_default_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    from paynotify_bridge.devkeys import DEFAULT_DEV_KEYS_FOLDER, ensure_dev_keys

    keys = ensure_dev_keys(DEFAULT_DEV_KEYS_FOLDER)
    assert keys.private_path.stat().st_mode & 0o777 == 0o600
    assert simulator._private_key_path(None) == keys.private_path
