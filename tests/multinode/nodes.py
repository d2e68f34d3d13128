"""Bridges as processes and signed notifications sent the way Alipay (the simulator) sends them.

    with bridge_process(tmp_path, [hub1.address, hub2.address], keys, name="b1") as bridge:
        attempt = send_once(bridge.notify_url, keys, notification_body("P1"))
        bridge.kill()                                   # SIGKILL

Hubs come from `tests.hubkit.hub_process` (with a PostgreSQL `store_url`).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from paynotify_bridge.cli import LISTENING_PREFIX
from paynotify_bridge.signature import load_private_key
from paynotify_bridge.simulator import (
    Attempt,
    HttpSender,
    RetrySchedule,
    builtin_samples,
    send_with_retries,
    with_overrides,
)
from tests.hubkit import free_port

__all__ = [
    "CLIENT_ID",
    "NOTIFY_PATH",
    "BridgeProcess",
    "Keys",
    "bridge_process",
    "notification_body",
    "send_once",
    "send_until_success",
    "wait_until",
]

CLIENT_ID = "SANDBOX_MULTINODE_TEST"
NOTIFY_PATH = "/alipay/notify"
START_TIMEOUT = 20.0
SAMPLE = "payment_result_success"


@dataclass(frozen=True)
class Keys:
    """The key pair playing Alipay's."""

    private_key: rsa.RSAPrivateKey
    private_path: Path
    public_path: Path

    @classmethod
    def load(cls, private_path: Path, public_path: Path) -> Keys:
        return cls(load_private_key(private_path.read_bytes()), private_path, public_path)


def notification_body(payment_id: str) -> bytes:
    """The shipped success sample as a distinct notification (its identity is the payment id)."""
    overrides = {"paymentId": payment_id, "paymentRequestId": f"req-{payment_id}"}
    return with_overrides(builtin_samples()[SAMPLE], overrides)


def send_once(url: str, keys: Keys, body: bytes, timeout: float = 15.0) -> Attempt:
    """One signed POST, with the simulator's sender."""
    return HttpSender(url, keys.private_key, CLIENT_ID, body, timeout=timeout)(1)


def send_until_success(
    url: str,
    keys: Keys,
    body: bytes,
    *,
    time_scale: float,
    timeout: float = 15.0,
    on_attempt: Callable[[Attempt], None] = lambda attempt: None,
) -> list[Attempt]:
    """Alipay's retry schedule, compressed `time_scale` times, with the simulator's own loop."""
    sender = HttpSender(url, keys.private_key, CLIENT_ID, body, timeout=timeout)
    schedule = RetrySchedule(time_scale=time_scale)
    return send_with_retries(sender, schedule, time.sleep, on_attempt)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.05)


# -- `paynotify bridge` as a process ---------------------------------------------------------


@dataclass
class BridgeProcess:
    """`paynotify bridge` on a fixed loopback port (so a load balancer can name it beforehand)."""

    name: str
    args: list[str]
    port: int
    log_dir: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def notify_url(self) -> str:
        return self.base + NOTIFY_PATH

    @property
    def stdout_path(self) -> Path:
        return self.log_dir / f"{self.name}.out"

    @property
    def stderr_path(self) -> Path:
        return self.log_dir / f"{self.name}.err"

    def start(self) -> None:
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(self.args, stdout=out, stderr=err, env=self.env)
        pattern = re.compile(re.escape(LISTENING_PREFIX) + r" (\S+)")
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if pattern.search(self.stdout_path.read_text(errors="replace")):
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"bridge {self.name} did not start:\n{self.log()[-4000:]}")

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL, and reap it."""
        if self.alive():
            assert self.process is not None
            self.process.kill()
            self.process.wait(10)

    def terminate(self, timeout: float = 20.0) -> int:
        assert self.process is not None
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)


@contextlib.contextmanager
def bridge_process(
    log_dir: Path,
    hubs: Sequence[str],
    keys: Keys,
    *extra_args: str,
    name: str = "bridge",
    publish_timeout: float = 3.0,
    port: int | None = None,
) -> Iterator[BridgeProcess]:
    """Start `paynotify bridge` publishing to every hub in `hubs`; killed on exit."""
    port = port or free_port()
    args = [sys.executable, "-m", "paynotify_cli.main", "--log-level", "INFO", "bridge"]
    args += ["--listen", f"127.0.0.1:{port}", "--hub", ",".join(hubs)]
    args += ["--alipay-public-key", f"1={keys.public_path}", "--client-id", CLIENT_ID]
    args += ["--publish-timeout", str(publish_timeout), *extra_args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYNOTIFY_")}
    bridge = BridgeProcess(name, args, port, log_dir, env)
    bridge.start()
    try:
        yield bridge
    finally:
        bridge.kill()
