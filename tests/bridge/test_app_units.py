"""Pure pieces of the bridge's transport: configuration, replies, the signed path, content types."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from paynotify_bridge import app as app_module
from paynotify_bridge import cli
from paynotify_bridge.app import check_content_type, signed_path
from paynotify_bridge.config import (
    BridgeConfig,
    ConfigError,
    KeySource,
    parse_hubs,
    parse_key_source,
    parse_listen,
)
from paynotify_bridge.errors import (
    BadSignature,
    BodyTooLarge,
    HubUnavailable,
    MalformedBody,
    MissingHeader,
    NotAcknowledged,
    UnknownClientId,
    UnknownKeyVersion,
    UnsupportedMediaType,
)
from paynotify_bridge.publisher import channel_target, service_config
from paynotify_bridge.replies import (
    SUCCESS_BODY,
    UNEXPECTED_BODY,
    error_body,
    outcome_of,
    result_body,
)

KEY = KeySource(Path("alipay.pem"))


def test_success_body_is_exactly_the_spec_json() -> None:
    assert SUCCESS_BODY == (
        b'{"result":{"resultCode":"SUCCESS","resultStatus":"S","resultMessage":"success"}}'
    )


@pytest.mark.parametrize(
    ("error", "code", "status"),
    [
        (BadSignature(), "INVALID_SIGNATURE", "F"),
        (MissingHeader("Signature"), "INVALID_SIGNATURE", "F"),
        (UnknownClientId(), "INVALID_CLIENT", "F"),
        (UnknownKeyVersion(), "KEY_NOT_FOUND", "F"),
        (MalformedBody("bad amount", field="paymentAmount.value"), "PARAM_ILLEGAL", "F"),
        (UnsupportedMediaType(), "MEDIA_TYPE_NOT_ACCEPTABLE", "F"),
        (BodyTooLarge(), "PARAM_ILLEGAL", "F"),
        (HubUnavailable(), "PROCESS_FAIL", "U"),
        (NotAcknowledged(), "PROCESS_FAIL", "U"),
    ],
)
def test_error_bodies_are_alipay_shaped(error: Exception, code: str, status: str) -> None:
    body = error_body(error)  # type: ignore[arg-type]
    assert json.loads(body) == {
        "result": {"resultCode": code, "resultStatus": status, "resultMessage": str(error)}
    }
    assert b" " not in body.split(b'"resultMessage"')[0]  # compact separators


def test_no_error_body_is_success() -> None:
    assert b"SUCCESS" not in UNEXPECTED_BODY
    assert json.loads(UNEXPECTED_BODY)["result"]["resultStatus"] == "U"


def test_result_message_is_capped_at_alipays_length() -> None:
    body = json.loads(result_body("PARAM_ILLEGAL", "F", "x" * 1000))
    assert len(body["result"]["resultMessage"]) == 256


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (BadSignature(), "rejected_signature"),
        (UnknownClientId(), "rejected_signature"),
        (MalformedBody(), "rejected_body"),
        (UnsupportedMediaType(), "rejected_media_type"),
        (BodyTooLarge(), "rejected_too_large"),
        (HubUnavailable(), "hub_unavailable"),
        (NotAcknowledged(), "pending"),
        (RuntimeError("boom"), "error"),
    ],
)
def test_outcome_labels(error: Exception, outcome: str) -> None:
    assert outcome_of(error) == outcome


# -- the signed path ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "path"),
    [
        ({"REQUEST_URI": "/alipay/notify", "PATH_INFO": "/alipay/notify"}, "/alipay/notify"),
        ({"REQUEST_URI": "/alipay/notify?a=1&b=2"}, "/alipay/notify"),
        ({"REQUEST_URI": "/alipay/%6Eotify", "PATH_INFO": "/alipay/notify"}, "/alipay/%6Eotify"),
        ({"REQUEST_URI": "http://shop.example/alipay/notify?x"}, "/alipay/notify"),
        ({"REQUEST_URI": "/go/http://x/y?z"}, "/go/http://x/y"),
        ({"REQUEST_URI": "/pay/caf\xc3\xa9"}, "/pay/caf\u00e9"),  # UTF-8 bytes as WSGI latin-1
        ({"SCRIPT_NAME": "", "PATH_INFO": "/alipay/notify"}, "/alipay/notify"),
        ({"SCRIPT_NAME": "/app", "PATH_INFO": "/a b"}, "/app/a%20b"),
    ],
)
def test_signed_path_is_the_raw_path_without_query(env: dict[str, str], path: str) -> None:
    assert signed_path(env) == path


def test_signed_path_of_invalid_utf8_cannot_be_signed() -> None:
    path = signed_path({"REQUEST_URI": "/pay/\xff"})
    with pytest.raises(UnicodeEncodeError):
        path.encode()


# -- content types ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "application/json",
        "application/json; charset=UTF-8",
        "Application/JSON;charset=utf-8",
        "application/json; charset=utf8",
    ],
)
def test_json_content_types_pass(value: str) -> None:
    check_content_type(value)


@pytest.mark.parametrize(
    "value",
    [None, "", "text/plain", "application/x-www-form-urlencoded", "application/json; charset=GBK"],
)
def test_other_content_types_are_415(value: str | None) -> None:
    with pytest.raises(UnsupportedMediaType) as info:
        check_content_type(value)
    assert info.value.status == 415


def test_accepted_content_types_are_remembered_within_a_bound() -> None:
    for i in range(100):
        check_content_type(f"application/json; x={i}")
        check_content_type(f"application/json; x={i}")  # again: remembered or parsed, accepted
    assert len(app_module._ACCEPTED_CONTENT_TYPES) <= app_module._MAX_ACCEPTED_CONTENT_TYPES
    for value in (None, "", "text/plain", "application/json; charset=GBK"):  # never remembered
        with pytest.raises(UnsupportedMediaType):
            check_content_type(value)
        with pytest.raises(UnsupportedMediaType):
            check_content_type(value)


# -- configuration ------------------------------------------------------------------------------


def test_defaults() -> None:
    config = BridgeConfig(public_keys=(KEY,), client_ids=("C",))
    assert (config.host, config.port, config.path) == ("0.0.0.0", 8080, "/alipay/notify")
    assert config.hubs == ("127.0.0.1:50051",)
    assert config.publish_timeout == 5.0
    assert config.max_body_bytes == 64 * 1024
    assert config.threads >= 16


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.0.0.0:8080", ("0.0.0.0", 8080)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("[::1]:8080", ("::1", 8080)),
        (":9000", ("0.0.0.0", 9000)),
    ],
)
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["8080", "host", "host:http", "host:70000"])
def test_parse_listen_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="--listen"):
        parse_listen(text)


def test_parse_hubs_flattens_commas_and_repeats() -> None:
    assert parse_hubs(["a:1,b:2", " c:3 ", "a:1", ""]) == ("a:1", "b:2", "c:3")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("alipay.pem", KeySource(Path("alipay.pem"))),
        ("2=keys/alipay2.pem", KeySource(Path("keys/alipay2.pem"), "2")),
        ("/etc/a=b.pem", KeySource(Path("/etc/a=b.pem"))),
    ],
)
def test_parse_key_source(text: str, expected: KeySource) -> None:
    assert parse_key_source(text) == expected


@pytest.mark.parametrize(
    ("settings", "flag"),
    [
        ({"public_keys": ()}, "--alipay-public-key"),
        ({"client_ids": ()}, "--client-id"),
        ({"public_keys": (KEY, KeySource(Path("b.pem"))), "client_ids": ("C",)}, "twice"),
        ({"hubs": ()}, "--hub"),
        ({"hubs": ("nohost",)}, "--hub"),
        ({"path": "alipay"}, "--path"),
        ({"publish_timeout": 0.0}, "--publish-timeout"),
        ({"publish_timeout": 600.0}, "--publish-timeout"),
        ({"max_body_bytes": 0}, "--max-body-bytes"),
        ({"threads": 0}, "--threads"),
    ],
)
def test_invalid_settings_name_the_flag(settings: dict[str, object], flag: str) -> None:
    base: dict[str, object] = {"public_keys": (KEY,), "client_ids": ("C",)}
    with pytest.raises(ConfigError, match=flag):
        BridgeConfig(**{**base, **settings})  # type: ignore[arg-type]


def test_insecure_mode_needs_no_keys_but_a_loopback_listen() -> None:
    config = BridgeConfig(listen="127.0.0.1:8080", insecure_skip_verification=True)
    assert config.listens_on_loopback
    with pytest.raises(ConfigError, match="insecure"):
        BridgeConfig(listen="0.0.0.0:8080", insecure_skip_verification=True)


def _parse(*flags: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(flags)


def test_flags_build_the_config(tmp_path: Path) -> None:
    args = _parse(
        "--listen", "127.0.0.1:0", "--hub", "10.0.0.1:1,10.0.0.2:2", "--hub", "10.0.0.3:3",
        "--alipay-public-key", "1=a.pem", "--alipay-public-key", "2=b.pem",
        "--client-id", "C1", "--client-id", "C2", "--publish-timeout", "3.5",
        "--max-body-bytes", "1000", "--threads", "12", "--connection-limit", "50",
    )  # fmt: skip
    config = cli.config_from_args(args)
    assert config.hubs == ("10.0.0.1:1", "10.0.0.2:2", "10.0.0.3:3")
    assert config.public_keys == (KeySource(Path("a.pem"), "1"), KeySource(Path("b.pem"), "2"))
    assert config.client_ids == ("C1", "C2")
    assert (config.publish_timeout, config.max_body_bytes) == (3.5, 1000)
    assert (config.threads, config.connection_limit) == (12, 50)


def test_unreadable_key_file_is_a_clear_config_error(tmp_path: Path) -> None:
    args = _parse("--alipay-public-key", str(tmp_path / "missing.pem"), "--client-id", "C")
    with pytest.raises(ConfigError, match=r"missing\.pem: cannot read it"):
        cli.build_verifier(cli.config_from_args(args))


def test_a_file_that_is_not_a_key_is_a_clear_config_error(tmp_path: Path) -> None:
    (tmp_path / "notakey.pem").write_text("hello")
    args = _parse("--alipay-public-key", str(tmp_path / "notakey.pem"), "--client-id", "C")
    with pytest.raises(ConfigError, match=r"notakey\.pem: not a public key"):
        cli.build_verifier(cli.config_from_args(args))


# -- the gRPC target --------------------------------------------------------------------------


def test_one_hub_uses_dns_resolution() -> None:
    assert channel_target(["hub.internal:50051"]) == "dns:///hub.internal:50051"


def test_several_hubs_become_one_static_list() -> None:
    assert channel_target(["10.0.0.1:1", "10.0.0.2:2"]) == "ipv4:10.0.0.1:1,10.0.0.2:2"
    assert channel_target(["[::1]:1", "[::2]:2"]) == "ipv6:[::1]:1,[::2]:2"
    assert channel_target(["localhost:1", "127.0.0.1:2"]) == "ipv4:127.0.0.1:1,127.0.0.1:2"


def test_mixed_families_are_refused() -> None:
    with pytest.raises(ValueError, match="mixes"):
        channel_target(["10.0.0.1:1", "[::1]:2"])


def test_service_config_retries_unavailable_round_robin() -> None:
    config = json.loads(service_config())
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    [method] = config["methodConfig"]
    assert method["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    # Only the unary Publish: PublishStream re-sends on its own (a policy on it held streams).
    assert method["name"] == [{"service": "paynotify.v1.NotificationHub", "method": "Publish"}]
