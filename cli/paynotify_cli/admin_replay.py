"""`paynotify replay`: deliver again, attempts reset, due at once.

    paynotify replay --group billing --notification-id 42     one dead letter
    paynotify replay --group billing --since 2026-11-25T08:00:00Z
        every notification of the group first received since then, whatever its state
        (acknowledged ones too): for a service that lost its own data. Also --since 2h.

Asks before acting when stdin is a terminal; elsewhere `--yes` is required (exit 2 without).
Exit 1 when nothing was replayed (not a dead letter, nothing since then, not confirmed).
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from paynotify.v1 import admin_pb2
from paynotify_cli.admin import (
    EXIT_BAD_USAGE,
    EXIT_NOT_FOUND,
    EXIT_OK,
    AdminCallError,
    Hub,
    add_common_arguments,
    error_exit,
    parse_since,
    print_json,
)

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument(
        "--group", required=True, metavar="NAME", help="a group declared on the hub"
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--notification-id", metavar="N", help="one dead letter (see paynotify dead-letters)"
    )
    target.add_argument(
        "--since",
        metavar="TIME",
        help="every notification first received since TIME: ISO 8601 with an offset "
        "(2026-11-25T08:00:00Z) or a span ago (30m, 2h, 7d)",
    )
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")


def run(args: argparse.Namespace) -> int:
    request = admin_pb2.ReplayRequest(group=args.group)
    if args.notification_id is not None:
        request.notification_id = args.notification_id
        question = f"Replay dead letter {args.notification_id} of group {args.group}?"
    else:
        try:
            since = parse_since(args.since)
        except ValueError as exc:
            print(f"paynotify replay: {exc}", file=sys.stderr)
            return EXIT_BAD_USAGE
        request.since.CopyFrom(_timestamp(since))
        question = (
            f"Replay EVERY notification of group {args.group} first received since "
            f"{since.astimezone(UTC).isoformat()}, acknowledged ones too?"
        )
    if not args.yes:
        confirmed = _confirm(question)
        if confirmed is None:
            print("paynotify replay: not a terminal: pass --yes to replay", file=sys.stderr)
            return EXIT_BAD_USAGE
        if not confirmed:
            print("nothing replayed")
            return EXIT_NOT_FOUND
    try:
        hub = Hub.from_args(args)
        with hub.stub() as stub:
            response = hub.call(stub.Replay, request)
    except AdminCallError as exc:
        return error_exit(exc)
    if args.json:
        print_json({"group": args.group, "replayed": response.replayed})
    else:
        print(f"replayed {response.replayed} delivery(ies) of group {args.group}")
    return EXIT_OK if response.replayed else EXIT_NOT_FOUND


def _timestamp(at: datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(at.astimezone(UTC))
    return t


def _confirm(question: str) -> bool | None:
    """The operator's answer, or None when nobody can answer (stdin is not a terminal)."""
    if not sys.stdin.isatty():
        return None
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")
