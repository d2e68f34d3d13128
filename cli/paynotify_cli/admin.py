"""What the operator's commands share: flags, calling the hub's HubAdmin service, exit codes,
time and duration formats, masking customer ids.

Exit codes (every command):
    0  done
    1  not found, or nothing to do (no such notification, not a dead letter, nothing replayed,
       replay not confirmed)
    2  bad usage (argparse's own, or a request the hub calls invalid)
    3  hub unreachable or not answering in time (also: the hub's store is down, retry later)
    4  the hub refused or failed the request otherwise (no or wrong admin token, internal error)

Beyond loopback the hub wants its admin token (`--admin-token-file`, or PAYNOTIFY_ADMIN_TOKEN) and
usually TLS (`--tls-ca`, and `--tls-cert/--tls-key` for mutual TLS).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, TypeVar

import grpc
from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from paynotify.v1 import admin_pb2_grpc, notification_pb2
from paynotify_bridge.masking import mask_display_id, mask_id

__all__ = [
    "DEFAULT_HUB",
    "DEFAULT_TIMEOUT",
    "EXIT_BAD_USAGE",
    "EXIT_FAILED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "AdminCallError",
    "Hub",
    "add_common_arguments",
    "age_text",
    "error_exit",
    "masked_notification",
    "parse_since",
    "print_json",
    "time_text",
]

DEFAULT_HUB = "127.0.0.1:50051"
DEFAULT_TIMEOUT = 10.0

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_BAD_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_FAILED = 4

_EXIT_CODES = {
    grpc.StatusCode.NOT_FOUND: EXIT_NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION: EXIT_NOT_FOUND,
    grpc.StatusCode.INVALID_ARGUMENT: EXIT_BAD_USAGE,
    grpc.StatusCode.UNAVAILABLE: EXIT_UNREACHABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: EXIT_UNREACHABLE,
}
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
T = TypeVar("T")


class AdminCallError(Exception):
    """A HubAdmin call failed; `exit_code` says how the command ends, the message says why."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def add_common_arguments(parser: argparse.ArgumentParser, *, json_flag: bool = True) -> None:
    parser.add_argument(
        "--hub", default=DEFAULT_HUB, metavar="ADDR", help=f"the hub (default {DEFAULT_HUB})"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"deadline of each call to the hub (default {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument(
        "--admin-token-file",
        type=Path,
        metavar="FILE",
        help="the hub's admin token, sent as authorization: Bearer (needed beyond loopback)",
    )
    parser.add_argument(
        "--admin-token", metavar="TOKEN", help="the admin token itself (prefer the file)"
    )
    parser.add_argument(
        "--tls", action="store_true", help="connect with TLS, trusting the system's CAs"
    )
    parser.add_argument("--tls-ca", type=Path, metavar="FILE", help="TLS, trusting this CA (PEM)")
    parser.add_argument(
        "--tls-cert", type=Path, metavar="FILE", help="client certificate for mutual TLS (PEM)"
    )
    parser.add_argument("--tls-key", type=Path, metavar="FILE", help="its private key (PEM)")
    if json_flag:
        parser.add_argument("--json", action="store_true", help="machine-readable JSON output")


@dataclass(frozen=True)
class Hub:
    """How to reach one hub: address, deadline per call, admin token, TLS credentials."""

    address: str
    timeout: float
    token: str = field(default="", repr=False)
    credentials: grpc.ChannelCredentials | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace, address: str | None = None) -> Hub:
        """Raises AdminCallError (bad usage) when a token or TLS file cannot be read."""
        token = args.admin_token or ""
        if args.admin_token_file is not None:
            token = _read(args.admin_token_file, "--admin-token-file").decode().strip()
        return cls(address or args.hub, args.timeout, token, _credentials(args))

    @contextmanager
    def stub(self) -> Iterator[admin_pb2_grpc.HubAdminStub]:
        if self.credentials is None:
            channel = grpc.insecure_channel(self.address)
        else:
            channel = grpc.secure_channel(self.address, self.credentials)
        with channel:
            yield admin_pb2_grpc.HubAdminStub(channel)

    def call(self, method: Callable[..., T], request: Message) -> T:
        """One unary call with a deadline; failures become AdminCallError with a clear message."""
        metadata = (("authorization", f"Bearer {self.token}"),) if self.token else ()
        try:
            return method(request, timeout=self.timeout, metadata=metadata)
        except grpc.RpcError as exc:
            raise _call_error(self.address, self.timeout, exc) from None


def _read(path: Path, flag: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise AdminCallError(f"{flag} {path}: {exc.strerror or exc}", EXIT_BAD_USAGE) from None


def _credentials(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    if not (args.tls or args.tls_ca or args.tls_cert or args.tls_key):
        return None
    if (args.tls_cert is None) != (args.tls_key is None):
        raise AdminCallError("give both --tls-cert and --tls-key, or neither", EXIT_BAD_USAGE)
    return grpc.ssl_channel_credentials(
        root_certificates=_read(args.tls_ca, "--tls-ca") if args.tls_ca else None,
        private_key=_read(args.tls_key, "--tls-key") if args.tls_key else None,
        certificate_chain=_read(args.tls_cert, "--tls-cert") if args.tls_cert else None,
    )


def _call_error(address: str, timeout: float, exc: grpc.RpcError) -> AdminCallError:
    code: grpc.StatusCode = exc.code()
    detail: str = exc.details() or code.name
    exit_code = _EXIT_CODES.get(code, EXIT_FAILED)
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        detail = f"no answer within {timeout:g}s"
    elif code is grpc.StatusCode.UNAVAILABLE and "connect" in detail.lower():
        detail = f"cannot connect ({detail})"
    if exit_code in (EXIT_UNREACHABLE, EXIT_FAILED):
        return AdminCallError(f"hub {address}: {code.name.lower()}: {detail}", exit_code)
    return AdminCallError(f"hub {address}: {detail}", exit_code)


def error_exit(error: AdminCallError, out: IO[str] | None = None) -> int:
    print(f"paynotify: {error}", file=out or sys.stderr)
    return error.exit_code


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """ISO 8601 with a UTC offset (2026-11-25T08:00:00Z), or a span ago: 90s, 30m, 2h, 7d."""
    text = text.strip()
    relative = _RELATIVE.match(text)
    if relative:
        span = float(relative.group(1)) * _UNIT_SECONDS[relative.group(2)]
        return (now or datetime.now(UTC)) - timedelta(seconds=span)
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"invalid time {text!r}: use ISO 8601 such as 2026-11-25T08:00:00Z, or 30m / 2h / 7d"
        ) from None
    if at.tzinfo is None:
        raise ValueError(f"time {text!r} has no UTC offset: add Z or +08:00")
    return at


def time_text(t: Timestamp) -> str:
    """UTC, to the millisecond; "-" when unset (the zero Timestamp)."""
    if t.seconds == 0 and t.nanos == 0:
        return "-"
    at = datetime.fromtimestamp(t.seconds + t.nanos / 1e9, UTC)
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def age_text(seconds: float) -> str:
    """12ms, 3.2s, 4m05s, 2h03m, 3d04h."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def duration_seconds(d: Duration) -> float:
    return d.seconds + d.nanos / 1e9


def masked_notification(
    n: notification_pb2.PaymentNotification, *, unmasked: bool = False
) -> dict[str, Any]:
    """The notification as JSON; customer ids masked and the raw body left out, unless
    `unmasked` (then the body is included as text)."""
    data = json_format.MessageToDict(n, preserving_proto_field_name=True)
    raw = data.pop("raw_json", None)
    if unmasked:
        if raw is not None:
            data["raw_json"] = n.raw_json.decode("utf-8", "replace")
        return data
    info = data.get("psp_customer_info")
    if info:
        if "psp_customer_id" in info:
            info["psp_customer_id"] = mask_id(info["psp_customer_id"])
        if "display_customer_id" in info:
            info["display_customer_id"] = mask_display_id(info["display_customer_id"])
    return data


def print_json(value: object, out: IO[str] | None = None) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False), file=out or sys.stdout)


def message_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)
