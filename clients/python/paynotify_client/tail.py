"""`paynotify tail`: subscribe to a group, print each notification as one JSON line, ack it.

The lines go to stdout (one JSON object each, flushed at once), logs go to stderr. A line holds
the notification as the hub typed it and the body exactly as Alipay sent it: this is an operator's
view, not a log, so customer ids in it are not masked. SIGINT or SIGTERM closes cleanly (exit 0);
a hub that refuses the subscription (e.g. an undeclared group, a wrong token) exits 1, bad flags
exit 2.

Against a hub with TLS and tokens: `--tls-ca ca.pem [--tls-cert me.pem --tls-key me.key]
--token-file billing.token` (or the token in PAYNOTIFY_TOKEN; `--token` on the command line is
visible to every user of the machine in `ps`).

With only paynotify-client installed: `python -m paynotify_client.tail --group NAME ...`.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import IO, Any

import grpc
from google.protobuf import json_format

from paynotify.v1 import notification_pb2
from paynotify_client.credentials import CredentialsError, read_token_file, tls_credentials
from paynotify_client.errors import SubscriberError
from paynotify_client.flow import DEFAULT_MAX_IN_FLIGHT, FlowControl
from paynotify_client.message import Message
from paynotify_client.subscriber import DEFAULT_ACK_DEADLINE, Subscriber

__all__ = [
    "DEFAULT_HUB",
    "add_arguments",
    "add_tls_arguments",
    "channel_settings",
    "main",
    "message_to_json",
    "run",
]

logger = logging.getLogger(__name__)

DEFAULT_HUB = "127.0.0.1:50051"
CLOSE_TIMEOUT = 10.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `paynotify tail`."""
    parser.add_argument("--hub", default=DEFAULT_HUB, metavar="ADDR", help=f"default {DEFAULT_HUB}")
    parser.add_argument(
        "--group", required=True, metavar="NAME", help="a group declared on the hub"
    )
    parser.add_argument("--client-id", default=None, help="this member's name in the hub's logs")
    parser.add_argument(
        "--max-in-flight",
        type=int,
        default=DEFAULT_MAX_IN_FLIGHT,
        metavar="N",
        help=f"deliveries held at once (default {DEFAULT_MAX_IN_FLIGHT})",
    )
    parser.add_argument(
        "--ack-deadline",
        type=float,
        default=DEFAULT_ACK_DEADLINE,
        metavar="SECONDS",
        help=f"lease of each delivery (default {DEFAULT_ACK_DEADLINE:g})",
    )
    parser.add_argument(
        "--notify-type",
        action="append",
        default=[],
        metavar="TYPE",
        help="only this notifyType, e.g. PAYMENT_RESULT (repeatable; default all)",
    )
    parser.add_argument(
        "--count",
        type=int,
        default=0,
        metavar="N",
        help="exit after printing N notifications (default 0: until interrupted)",
    )
    parser.add_argument(
        "--no-ack",
        action="store_true",
        help="print without acking: the hub redelivers them after the ack deadline",
    )
    parser.add_argument(
        "--token",
        default=None,
        help="the group's subscriber token; prefer --token-file or PAYNOTIFY_TOKEN",
    )
    add_tls_arguments(parser)


def add_tls_arguments(parser: argparse.ArgumentParser) -> None:
    """--tls, --tls-ca, --tls-cert, --tls-key, --tls-server-name and --token-file."""
    add = parser.add_argument
    add("--tls", action="store_true", help="connect over TLS, trusting the system's CAs")
    add("--tls-ca", default=None, metavar="FILE", help="connect over TLS; the hub's CA (PEM)")
    add("--tls-cert", default=None, metavar="FILE", help="mutual TLS: client certificate (PEM)")
    add("--tls-key", default=None, metavar="FILE", help="mutual TLS: client private key (PEM)")
    add(
        "--tls-server-name",
        default=None,
        metavar="NAME",
        help="the name the hub's certificate carries, when it differs from --hub's host",
    )
    add("--token-file", default=None, metavar="FILE", help="read the token from FILE")


def channel_settings(
    args: argparse.Namespace,
) -> tuple[grpc.ChannelCredentials | None, str | None, list[tuple[str, str | int]]]:
    """(TLS credentials or None, token or None, channel options) from the flags of
    `add_tls_arguments` (and `--token`); raises CredentialsError for a bad file or combination."""
    if args.tls_ca is None and (args.tls_cert or args.tls_key or args.tls_server_name):
        raise CredentialsError("--tls-cert, --tls-key and --tls-server-name need --tls-ca")
    credentials = tls_credentials(args.tls_ca, args.tls_cert, args.tls_key) if args.tls_ca else None
    token = read_token_file(args.token_file) if args.token_file else getattr(args, "token", None)
    options: list[tuple[str, str | int]] = []
    if args.tls_server_name:
        options.append(("grpc.ssl_target_name_override", args.tls_server_name))
    return credentials, token, options


def message_to_json(message: Message) -> str:
    """One line: delivery facts, the typed notification (without raw_json) and the raw body."""
    notification = notification_pb2.PaymentNotification()
    notification.CopyFrom(message.notification)
    notification.ClearField("raw_json")
    first = message.first_received_at
    line: dict[str, Any] = {
        "delivery_id": message.delivery_id,
        "notification_id": message.notification_id,
        "attempt": message.attempt,
        "alipay_send_count": message.alipay_send_count,
        "first_received_at": first.isoformat() if first else None,
        "notification": json_format.MessageToDict(notification, preserving_proto_field_name=True),
        "raw_json": message.raw_json.decode("utf-8", errors="replace"),
    }
    return json.dumps(line, ensure_ascii=False, separators=(",", ":"))


class _Printer:
    """The callback: prints, acks, and says when `count` lines are out."""

    def __init__(self, out: IO[str], count: int, ack: bool, done: threading.Event) -> None:
        self._out = out
        self._left = count if count > 0 else -1
        self._ack = ack
        self._done = done
        self._lock = threading.Lock()

    def __call__(self, message: Message) -> None:
        with self._lock:
            if self._left == 0 or self._done.is_set():
                message.nack(0.0)  # not ours to print: hand it on at once
                return
            self._print(message)
            if self._ack:
                message.ack()
            self._left -= 1
            if self._left == 0:
                self._done.set()

    def _print(self, message: Message) -> None:
        try:
            self._out.write(message_to_json(message) + "\n")
            self._out.flush()
        except BrokenPipeError:
            self._done.set()
            raise  # nacked: nobody saw it


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler: Callable[[int, Any], None] = lambda signum, frame: stop.set()  # noqa: E731
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run(args: argparse.Namespace) -> int:
    """Run `paynotify tail` until `--count` lines, a signal, or a refusal; the exit status."""
    max_in_flight = min(args.count, args.max_in_flight) if args.count > 0 else args.max_in_flight
    try:
        credentials, token, options = channel_settings(args)
        subscriber = Subscriber(
            args.hub,
            args.group,
            client_id=args.client_id,
            flow_control=FlowControl(max_in_flight=max_in_flight),
            ack_deadline=args.ack_deadline,
            notify_types=args.notify_type,
            channel_credentials=credentials,
            token=token,
            channel_options=options,
        )
    except ValueError as exc:
        print(f"paynotify tail: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    with _stop_on_signals(stop):
        future = subscriber.subscribe(_Printer(sys.stdout, args.count, not args.no_ack, stop))
        future.add_done_callback(lambda _: stop.set())
        while not stop.wait(0.2):
            pass
        subscriber.close(CLOSE_TIMEOUT)
    error = future.exception(timeout=0)
    if isinstance(error, SubscriberError):
        print(f"paynotify tail: {error}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m paynotify_client.tail`: the same command without the `paynotify` package."""
    parser = argparse.ArgumentParser(prog="python -m paynotify_client.tail", description=__doc__)
    add_arguments(parser)
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
