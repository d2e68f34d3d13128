"""Pure pieces of the hub: configuration, flags, delivery ids, conversion, the error table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from paynotify.v1 import hub_pb2, notification_pb2
from paynotify_cli.main import build_parser
from paynotify_hub.cli import build_config
from paynotify_hub.config import HubConfig, parse_group
from paynotify_hub.convert import new_notification, notify_type_texts, result_status_letter
from paynotify_hub.domain import GroupSpec, RetryPolicy
from paynotify_hub.errors import (
    ConfigError,
    InvalidArgument,
    NotFound,
    ShuttingDown,
    StoreDown,
)
from paynotify_hub.member import format_delivery_id, parse_delivery_id
from paynotify_hub.status import status_code_for
from tests.hubkit import make_notification

BILLING = (GroupSpec("billing"),)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("billing", GroupSpec("billing", True)),
        ("billing:required", GroupSpec("billing", True)),
        ("audit:best-effort", GroupSpec("audit", False)),
        (
            "pos:required:OFFLINE_PAYMENT_CODE+PAYMENT_RESULT",
            GroupSpec("pos", True, frozenset({"OFFLINE_PAYMENT_CODE", "PAYMENT_RESULT"})),
        ),
        (
            "a.b-c_1:best-effort:PAYMENT_PENDING",
            GroupSpec("a.b-c_1", False, frozenset({"PAYMENT_PENDING"})),
        ),
    ],
)
def test_parse_group(text: str, expected: GroupSpec) -> None:
    assert parse_group(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Billing", "invalid group name"),
        ("", "invalid group name"),
        ("-x", "invalid group name"),
        ("x" * 64, "invalid group name"),
        ("billing:mandatory", "invalid group mode"),
        ("billing:required:payment_result", "invalid notifyType"),
    ],
)
def test_parse_group_rejects_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_group(text)


def test_config_needs_a_group_and_unique_names() -> None:
    with pytest.raises(ConfigError, match="at least one group"):
        HubConfig(groups=())
    with pytest.raises(ConfigError, match="more than once"):
        HubConfig(groups=(GroupSpec("a"), GroupSpec("a", False)))


def test_retention_below_24_hours_is_refused() -> None:
    with pytest.raises(ConfigError, match="at least 24 hours"):
        HubConfig(groups=BILLING, retention=23 * 3600)
    assert HubConfig(groups=BILLING, retention=24 * 3600).retention == 86400


@pytest.mark.parametrize(
    "overrides",
    [
        {"listen": "nope"},
        {"listen": "host:99999"},
        {"metrics_listen": ":x"},
        {"poll_interval": 0},
        {"retry": RetryPolicy(min_backoff=5, max_backoff=1)},
        {"retry": RetryPolicy(max_attempts=0)},
        {"min_ack_deadline": 10, "default_ack_deadline": 5},
        {"default_max_in_flight": 2000},
    ],
)
def test_invalid_settings_are_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        HubConfig(groups=BILLING, **overrides)  # type: ignore[arg-type]


def test_flags_build_the_config() -> None:
    args = build_parser().parse_args(
        [
            "hub", "--listen", "127.0.0.1:6000", "--store", "sqlite:////tmp/x.db",
            "--group", "billing", "--group", "audit:best-effort:PAYMENT_RESULT",
            "--max-attempts", "3", "--min-backoff", "0.5", "--max-backoff", "9",
            "--ack-deadline", "20", "--max-in-flight", "8", "--retention-hours", "48",
            "--metrics-listen", "127.0.0.1:0",
        ]
    )  # fmt: skip
    config = build_config(args)
    assert config.listen == "127.0.0.1:6000"
    assert config.store_url == "sqlite:////tmp/x.db"
    assert config.groups == (
        GroupSpec("billing"),
        GroupSpec("audit", False, frozenset({"PAYMENT_RESULT"})),
    )
    assert config.retry == RetryPolicy(min_backoff=0.5, max_backoff=9, max_attempts=3)
    assert (config.default_ack_deadline, config.default_max_in_flight) == (20, 8)
    assert config.retention == 48 * 3600
    assert config.metrics_listen == "127.0.0.1:0"


def test_groups_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYNOTIFY_GROUP", "billing,audit:best-effort")
    config = build_config(build_parser().parse_args(["hub"]))
    assert [g.name for g in config.groups] == ["billing", "audit"]
    assert config.listen == "0.0.0.0:50051" and config.store_url == "sqlite:///data/hub.db"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "declare at least one group"),
        (["--group", "billing", "--retention-hours", "1"], "at least 24 hours"),
    ],
)
def test_hub_command_refuses_bad_configuration(
    tmp_path: Path, args: list[str], message: str
) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "paynotify_cli.main",
            "hub",
            "--store",
            f"sqlite:///{tmp_path}/h.db",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2
    assert message in done.stderr


def test_bad_group_flag_is_a_usage_error() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["hub", "--group", "Bad Name"])


def test_delivery_ids_round_trip_and_malformed_ones_parse_to_none() -> None:
    assert parse_delivery_id(format_delivery_id(42, "ab12")) == (42, "ab12")
    assert parse_delivery_id("42.a.b") == (42, "a.b")
    assert parse_delivery_id(f"{2**63 - 1}.t") == (2**63 - 1, "t")
    for bad in (
        "",
        "42",
        "42.",
        ".x",
        "x.y",
        "-1.x",
        "\uff11\uff12.x",
        "9" * 30 + ".x",
        "9664321968244322304.0",  # 19 digits, above 2**63 - 1: SQLite cannot bind it
        f"{2**63}.x",
        "0.x",
        "1." + "x" * 200,
    ):
        assert parse_delivery_id(bad) is None, bad


def test_identity_and_payload_of_a_notification() -> None:
    n = make_notification("P1", payment_request_id="R1", status="F")
    new = new_notification(n)
    assert new.identity == "PAYMENT_RESULT|P1|F"
    assert (new.notify_type, new.payment_id, new.payment_request_id) == (
        "PAYMENT_RESULT",
        "P1",
        "R1",
    )
    assert notification_pb2.PaymentNotification.FromString(new.payload) == n
    no_result = make_notification(
        "", payment_request_id="R2", notify_type="OFFLINE_PAYMENT_CODE", status=""
    )
    assert result_status_letter(no_result) == ""
    assert new_notification(no_result).identity == "OFFLINE_PAYMENT_CODE|R2|"


def test_member_type_filter_uses_notify_type_texts() -> None:
    assert notify_type_texts([notification_pb2.NOTIFY_TYPE_PAYMENT_RESULT]) == {"PAYMENT_RESULT"}
    with pytest.raises(InvalidArgument):
        notify_type_texts([notification_pb2.NOTIFY_TYPE_UNSPECIFIED])
    with pytest.raises(InvalidArgument):
        notify_type_texts([99])


def test_one_table_maps_domain_errors_to_status_codes() -> None:
    assert status_code_for(InvalidArgument("x")) == grpc.StatusCode.INVALID_ARGUMENT
    assert status_code_for(NotFound("x")) == grpc.StatusCode.NOT_FOUND
    assert status_code_for(ShuttingDown("x")) == grpc.StatusCode.UNAVAILABLE
    assert status_code_for(StoreDown("x")) == grpc.StatusCode.UNAVAILABLE
    assert hub_pb2.PUBLISH_OUTCOME_REJECTED  # the enum the servicer answers bad input with
