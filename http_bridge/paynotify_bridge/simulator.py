"""`paynotify send-test`: act as Alipay: sign a notification, POST it, follow its retry schedule.

Each attempt is signed afresh with the current Request-Time (ISO 8601, milliseconds and offset) and
sent with the three headers Alipay sends. One line per attempt is printed to stdout:

    attempt 1: HTTP 503 {"result":{"resultCode":"PROCESS_FAIL","resultStatus":"U",...}}

The exit status is 0 once an attempt got SUCCESS, 1 otherwise. With `--retries` the attempts follow
Alipay's schedule (0s, 2m, 10m, 10m, 1h, 2h, 6h, 15h), each interval divided by `--time-scale`.
The retry loop is pure (`send_with_retries` with an injected sender and sleep) so it is testable
without a network or a clock.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import rsa

from paynotify_bridge.devkeys import (
    DEFAULT_DEV_KEYS_FOLDER,
    DEV_CLIENT_ID,
    DEV_KEY_VERSION,
    PRIVATE_KEY_NAME,
)
from paynotify_bridge.signature import KeyLoadError, load_private_key, sign

__all__ = [
    "ALIPAY_RETRY_DELAYS",
    "DEFAULT_SAMPLE",
    "DEFAULT_URL",
    "Attempt",
    "HttpSender",
    "RetrySchedule",
    "add_arguments",
    "builtin_samples",
    "is_success",
    "load_sample",
    "request_time_now",
    "run",
    "send_with_retries",
    "with_overrides",
]

logger = logging.getLogger(__name__)

DEFAULT_URL: Final = "http://127.0.0.1:8080/alipay/notify"
DEFAULT_SAMPLE: Final = "payment_result_success"
DEFAULT_TIMEOUT: Final = 10.0
# Seconds before each of Alipay's 8 sends (spec: 0s, 2m, 10m, 10m, 1h, 2h, 6h, 15h).
ALIPAY_RETRY_DELAYS: Final = (0.0, 120.0, 600.0, 600.0, 3600.0, 7200.0, 21600.0, 54000.0)
SUCCESS_RESULT: Final = {"resultCode": "SUCCESS", "resultStatus": "S", "resultMessage": "success"}
SAMPLES_PACKAGE: Final = "paynotify_bridge"


@dataclass(frozen=True)
class RetrySchedule:
    """The waits before each attempt: Alipay's, or a single immediate one, compressed by a scale."""

    delays: tuple[float, ...] = ALIPAY_RETRY_DELAYS
    time_scale: float = 1.0

    def __post_init__(self) -> None:
        if not self.delays:
            raise ValueError("a schedule needs at least one attempt")
        if self.time_scale <= 0:
            raise ValueError("--time-scale must be positive")

    @classmethod
    def once(cls) -> RetrySchedule:
        return cls(delays=(0.0,))

    def waits(self) -> Iterator[float]:
        """Seconds to sleep before each attempt, in order."""
        for delay in self.delays:
            yield delay / self.time_scale


@dataclass(frozen=True)
class Attempt:
    """One POST: its HTTP status and body, or the transport error when no reply came."""

    number: int
    status: int | None
    body: bytes = b""
    error: str = ""

    @property
    def succeeded(self) -> bool:
        return self.status == 200 and is_success(self.body)

    def describe(self) -> str:
        if self.status is None:
            return f"attempt {self.number}: no reply ({self.error})"
        text = self.body.decode("utf-8", "replace").strip()
        return f"attempt {self.number}: HTTP {self.status} {text}"


Sender = Callable[[int], Attempt]


def is_success(body: bytes) -> bool:
    """Whether a reply body is Alipay's SUCCESS acknowledgement."""
    try:
        return bool(json.loads(body) == {"result": SUCCESS_RESULT})
    except ValueError:
        return False


def send_with_retries(
    sender: Sender,
    schedule: RetrySchedule,
    sleep: Callable[[float], None],
    on_attempt: Callable[[Attempt], None] = lambda attempt: None,
) -> list[Attempt]:
    """Send per `schedule` until an attempt gets SUCCESS or the schedule runs out."""
    attempts: list[Attempt] = []
    for number, wait in enumerate(schedule.waits(), start=1):
        if wait > 0:
            logger.info("waiting %.3gs before attempt %d", wait, number)
            sleep(wait)
        attempt = sender(number)
        attempts.append(attempt)
        on_attempt(attempt)
        if attempt.succeeded:
            break
    return attempts


def request_time_now() -> str:
    """Now, as Alipay writes Request-Time: local offset and milliseconds."""
    return datetime.now().astimezone().isoformat(timespec="milliseconds")


class HttpSender:
    """Signs and POSTs one body to one URL; each call is one attempt with a fresh Request-Time."""

    def __init__(
        self,
        url: str,
        private_key: rsa.RSAPrivateKey,
        client_id: str,
        body: bytes,
        *,
        key_version: str | None = DEV_KEY_VERSION,
        timeout: float = DEFAULT_TIMEOUT,
        request_time: Callable[[], str] = request_time_now,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"--url {url!r}: expected http(s)://HOST[:PORT]/PATH")
        self._parts = parts
        self._private_key = private_key
        self._client_id = client_id
        self._body = body
        self._key_version = key_version
        self._timeout = timeout
        self._request_time = request_time

    def __call__(self, number: int) -> Attempt:
        connection = self._connect()
        try:
            connection.request("POST", self._target(), self._body, self._headers())
            response = connection.getresponse()
            return Attempt(number, response.status, response.read())
        except (OSError, http.client.HTTPException) as exc:
            return Attempt(number, None, error=f"{type(exc).__name__}: {exc}")
        finally:
            connection.close()

    def _connect(self) -> http.client.HTTPConnection:
        host, port = self._parts.hostname or "", self._parts.port
        if self._parts.scheme == "https":
            return http.client.HTTPSConnection(host, port, timeout=self._timeout)
        return http.client.HTTPConnection(host, port, timeout=self._timeout)

    def _target(self) -> str:
        path = self._parts.path or "/"
        return f"{path}?{self._parts.query}" if self._parts.query else path

    def _headers(self) -> dict[str, str]:
        # Alipay signs the path without the query string (see app.signed_path).
        request_time = self._request_time()
        path = self._parts.path or "/"
        signature = sign(
            self._private_key,
            "POST",
            path,
            self._client_id,
            request_time,
            self._body,
            key_version=self._key_version,
        )
        return {
            "Content-Type": "application/json; charset=UTF-8",
            "Client-Id": self._client_id,
            "Request-Time": request_time,
            "Signature": signature,
        }


def builtin_samples() -> dict[str, bytes]:
    """The samples shipped with the bridge, by name (file stem)."""
    folder = resources.files(SAMPLES_PACKAGE) / "samples"
    return {
        entry.name.removesuffix(".json"): entry.read_bytes()
        for entry in folder.iterdir()
        if entry.name.endswith(".json")
    }


def load_sample(name_or_file: str) -> bytes:
    """A built-in sample by name, or the bytes of a file, exactly as they are."""
    samples = builtin_samples()
    if name_or_file in samples:
        return samples[name_or_file]
    path = Path(name_or_file)
    if path.is_file():
        return path.read_bytes()
    names = ", ".join(sorted(samples))
    raise ValueError(f"--sample {name_or_file!r}: neither a file nor a built-in sample ({names})")


def with_overrides(body: bytes, overrides: dict[str, str]) -> bytes:
    """`body` with top-level string fields replaced, every other byte left as it was."""
    text = body.decode("utf-8")
    for key, value in overrides.items():
        text = _replace_field(text, key, json.dumps(value, ensure_ascii=False))
    return text.encode("utf-8")


def _replace_field(text: str, key: str, encoded: str) -> str:
    pattern = re.compile(r'("' + re.escape(key) + r'"\s*:\s*)"(?:[^"\\]|\\.)*"')

    def replaced(match: re.Match[str]) -> str:
        return match.group(1) + encoded

    text, count = pattern.subn(replaced, text, count=1)
    if count:
        return text
    head, brace, tail = text.partition("{")  # absent: add it as the first field
    return f'{head}{brace}"{key}":{encoded},{tail}'


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--url", default=DEFAULT_URL, help=f"the bridge's notify URL (default {DEFAULT_URL})")
    add(
        "--private-key",
        metavar="FILE",
        help=f"the key playing Alipay's (default: {DEFAULT_DEV_KEYS_FOLDER / PRIVATE_KEY_NAME})",
    )
    add("--client-id", default=DEV_CLIENT_ID, help=f"Client-Id header (default {DEV_CLIENT_ID})")
    add("--key-version", default=DEV_KEY_VERSION, help="keyVersion in the Signature header")
    add(
        "--sample",
        default=DEFAULT_SAMPLE,
        metavar="NAME|FILE",
        help=f"a built-in sample ({', '.join(sorted(builtin_samples()))}) or a JSON file",
    )
    add("--payment-id", help="replace paymentId (to send a distinct notification)")
    add("--payment-request-id", help="replace paymentRequestId")
    add("--retries", action="store_true", help="follow Alipay's retry schedule until SUCCESS")
    add("--time-scale", type=float, default=1.0, metavar="N", help="divide every wait by N")
    add("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS", help="per request")


def run(args: argparse.Namespace) -> int:
    try:
        sender = _sender_from_args(args)
        schedule = (
            RetrySchedule(time_scale=args.time_scale) if args.retries else RetrySchedule.once()
        )
    except (ValueError, OSError, KeyLoadError) as exc:
        print(f"paynotify send-test: {exc}", file=sys.stderr)
        return 2
    attempts = send_with_retries(
        sender, schedule, time.sleep, on_attempt=lambda a: print(a.describe(), flush=True)
    )
    return 0 if attempts and attempts[-1].succeeded else 1


def _sender_from_args(args: argparse.Namespace) -> HttpSender:
    overrides = {
        key: value
        for key, value in (
            ("paymentId", args.payment_id),
            ("paymentRequestId", args.payment_request_id),
        )
        if value
    }
    body = with_overrides(load_sample(args.sample), overrides)
    key = load_private_key(_private_key_path(args.private_key).read_bytes())
    return HttpSender(
        args.url,
        key,
        args.client_id,
        body,
        key_version=args.key_version or None,
        timeout=args.timeout,
    )


def _private_key_path(given: str | None) -> Path:
    if given:
        return Path(given)
    default = DEFAULT_DEV_KEYS_FOLDER / PRIVATE_KEY_NAME
    if not default.is_file():
        raise ValueError(
            f"no --private-key given and no development key at {default} "
            "(start `paynotify run` once in this folder, or pass --private-key FILE)"
        )
    return default
