"""`paynotify dead-letters`: the dead letters, oldest notification first, with why they died.

`--json` prints each with its payload (customer ids masked, raw body left out unless
`--unmasked`). An empty list is not an error (exit 0). `paynotify show ID` tells the whole story
of one; `paynotify replay --group G --notification-id N` delivers it again.
"""

from __future__ import annotations

import argparse
from typing import Any

from paynotify.v1 import admin_pb2
from paynotify_cli.admin import (
    EXIT_OK,
    AdminCallError,
    Hub,
    add_common_arguments,
    error_exit,
    masked_notification,
    print_json,
    time_text,
)

__all__ = ["DEFAULT_LIMIT", "add_arguments", "run"]

DEFAULT_LIMIT = 50
# Pages of at most this many; --limit may span several.
_PAGE = 500
_HEADERS = ("NOTIFICATION", "GROUP", "ATTEMPTS", "DEAD SINCE", "TYPE", "PAYMENT ID", "REASON")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--group", default="", metavar="NAME", help="only this group")
    parser.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"at most N (default {DEFAULT_LIMIT}; 0: all)",
    )
    parser.add_argument(
        "--unmasked", action="store_true", help="with --json: customer ids and raw body as received"
    )


def run(args: argparse.Namespace) -> int:
    try:
        letters, more = _fetch(Hub.from_args(args), args.group, args.limit)
    except AdminCallError as exc:
        return error_exit(exc)
    if args.json:
        print_json([_as_json(d, args.unmasked) for d in letters])
        return EXIT_OK
    if not letters:
        print("no dead letters" + (f" in group {args.group}" if args.group else ""))
        return EXIT_OK
    _print_table(letters)
    if more:
        print(f"(more dead letters: raise --limit above {args.limit})")
    return EXIT_OK


def _fetch(hub: Hub, group: str, limit: int) -> tuple[list[admin_pb2.DeadLetter], bool]:
    """Up to `limit` (0: all) dead letters, and whether there are more."""
    letters: list[admin_pb2.DeadLetter] = []
    token = ""
    with hub.stub() as stub:
        while True:
            want = _PAGE if limit <= 0 else min(_PAGE, limit - len(letters))
            request = admin_pb2.ListDeadLettersRequest(
                group=group, page_size=want, page_token=token
            )
            page = hub.call(stub.ListDeadLetters, request)
            letters.extend(page.dead_letters)
            token = page.next_page_token
            if not token or (limit > 0 and len(letters) >= limit):
                return letters, bool(token)


def _as_json(d: admin_pb2.DeadLetter, unmasked: bool) -> dict[str, Any]:
    return {
        "notification_id": d.notification_id,
        "group": d.group,
        "reason": d.reason,
        "attempts": d.attempts,
        "dead_at": time_text(d.dead_at),
        "first_received_at": time_text(d.first_received_at),
        "notification": masked_notification(d.notification, unmasked=unmasked),
    }


def _print_table(letters: list[admin_pb2.DeadLetter]) -> None:
    rows = [
        (
            d.notification_id,
            d.group,
            str(d.attempts),
            time_text(d.dead_at),
            d.notification.notify_type_text or "-",
            d.notification.payment_id or d.notification.payment_request_id or "-",
            d.reason,
        )
        for d in letters
    ]
    widths = [max(len(cell) for cell in column) for column in zip(_HEADERS, *rows, strict=False)]
    for row in (_HEADERS, *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
