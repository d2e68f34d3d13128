"""`paynotify run`: hub and bridge together on the embedded SQLite store, for a first look.

It creates a data folder with a development key pair (playing Alipay's key), starts
`paynotify hub` with one required group and `paynotify bridge` pointing at it as two child
processes, prints what a newcomer types next, and stops both on Ctrl-C / SIGTERM. Not a production
supervisor: run the hub and the bridge as their own services there (docs/deployment.md).
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Final

from paynotify_bridge.config import ConfigError, parse_listen
from paynotify_bridge.devkeys import DEV_CLIENT_ID, DEV_KEY_VERSION, ensure_dev_keys

__all__ = ["add_arguments", "child_commands", "run"]

DEFAULT_DATA: Final = Path("data")
DEFAULT_GROUP: Final = "orders"
DEFAULT_HUB: Final = "127.0.0.1:50051"
DEFAULT_BRIDGE: Final = "127.0.0.1:8080"
STOP_TIMEOUT: Final = 15.0
# How long the hub and the bridge get to start listening before `run` gives up.
START_TIMEOUT: Final = 30.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--data", type=Path, default=DEFAULT_DATA, help=f"data folder (default ./{DEFAULT_DATA})")
    add("--group", default=DEFAULT_GROUP, help=f"the required group (default {DEFAULT_GROUP})")
    add("--hub-listen", default=DEFAULT_HUB, help=f"hub address (default {DEFAULT_HUB})")
    add("--listen", default=DEFAULT_BRIDGE, help=f"bridge address (default {DEFAULT_BRIDGE})")
    add("--publish-timeout", default="5", help="seconds a request waits for acks (default 5)")


def child_commands(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The `paynotify hub` and `paynotify bridge` command lines `run` starts."""
    keys = ensure_dev_keys(args.data / "dev-keys")
    me = [sys.executable, "-m", "paynotify_cli.main", "--log-level", args.log_level]
    hub = [
        *me, "hub", "--listen", args.hub_listen,
        "--store", f"sqlite:///{args.data / 'hub.db'}", "--group", f"{args.group}:required",
    ]  # fmt: skip
    bridge = [
        *me, "bridge", "--listen", args.listen, "--hub", args.hub_listen,
        "--alipay-public-key", f"{DEV_KEY_VERSION}={keys.public_path}",
        "--client-id", DEV_CLIENT_ID, "--publish-timeout", str(args.publish_timeout),
    ]  # fmt: skip
    return hub, bridge


def _banner(args: argparse.Namespace) -> str:
    keys = args.data / "dev-keys"
    return (
        f"paynotify is running (data in {args.data.resolve()}, development keys in {keys})\n"
        f"  hub     {args.hub_listen}  store sqlite:///{args.data / 'hub.db'}, "
        f"required group '{args.group}'\n"
        f"  bridge  http://{args.listen}/alipay/notify  (Client-Id {DEV_CLIENT_ID})\n"
        "In another terminal, subscribe:\n"
        f"  .venv/bin/paynotify tail --hub {args.hub_listen} --group {args.group}\n"
        "and in a third, act as Alipay:\n"
        f"  .venv/bin/paynotify send-test --url http://{args.listen}/alipay/notify "
        "--sample payment_result_success\n"
        "Ctrl-C stops both.\n"
    )


def _wait_listening(
    children: Sequence[subprocess.Popen[bytes]],
    addresses: Sequence[str],
    stopping: Callable[[], bool],
) -> bool:
    """Until every address accepts a TCP connection (True), or a child exits, `stopping()`, or
    START_TIMEOUT passes (False): the banner is only printed once what it names is up."""
    deadline = time.monotonic() + START_TIMEOUT
    waiting = list(addresses)
    while waiting and time.monotonic() < deadline:
        if stopping() or any(child.poll() is not None for child in children):
            return False
        if _accepts(waiting[0]):
            waiting.pop(0)
        else:
            time.sleep(0.1)
    return not waiting


def _accepts(address: str) -> bool:
    try:
        host, port = parse_listen(address)
    except ConfigError:
        return False  # the child refuses it too, and exits saying why
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # a wildcard: reach it locally
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _stop(children: Sequence[subprocess.Popen[bytes]]) -> None:
    for child in reversed(children):  # the bridge first, so nothing new reaches the hub
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def run(args: argparse.Namespace) -> int:
    hub_cmd, bridge_cmd = child_commands(args)
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    children = [subprocess.Popen(hub_cmd)]
    try:
        children.append(subprocess.Popen(bridge_cmd))
        if not _wait_listening(children, (args.hub_listen, args.listen), lambda: stopping):
            if not stopping:
                print(
                    f"paynotify run: the hub and the bridge did not both listen on "
                    f"{args.hub_listen} and {args.listen} within {START_TIMEOUT:g}s "
                    "(is a port taken? see their messages above)",
                    file=sys.stderr,
                )
            return 1 if not stopping else 0
        print(_banner(args), flush=True)
        while not stopping and all(child.poll() is None for child in children):
            time.sleep(0.2)
    finally:
        _stop(children)
    failed = [child.args for child in children if child.returncode not in (0, None)]
    if failed and not stopping:
        print(f"paynotify run: a process exited unexpectedly: {failed[0]!r}", file=sys.stderr)
        return 1
    return 0
