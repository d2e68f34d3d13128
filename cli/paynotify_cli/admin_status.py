"""`paynotify status`: per group, pending, in flight, dead letters, the oldest unacknowledged age
and the connected members.

Several hubs sharing one store: `--hub A,B,C` counts from the first that answers (the numbers are
the store's) and adds up the members connected to each; a hub that does not answer is reported on
stderr, and the command fails (exit 3) only when none answers.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from paynotify.v1 import admin_pb2
from paynotify_cli.admin import (
    EXIT_OK,
    EXIT_UNREACHABLE,
    AdminCallError,
    Hub,
    add_common_arguments,
    age_text,
    duration_seconds,
    error_exit,
    print_json,
    time_text,
)

__all__ = ["add_arguments", "run"]

_HEADERS = ("GROUP", "REQUIRED", "PENDING", "IN FLIGHT", "DEAD", "OLDEST UNACKED", "MEMBERS")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.description = (
        f"{parser.description or ''}. --hub takes ADDR[,ADDR...] to add up the members of "
        "several hubs sharing one store."
    )
    parser.add_argument(
        "--group", action="append", default=[], metavar="NAME", help="only this group (repeatable)"
    )
    parser.add_argument("--members", action="store_true", help="list every connected member")


def run(args: argparse.Namespace) -> int:
    addresses = [a.strip() for a in args.hub.split(",") if a.strip()]
    answers: list[admin_pb2.StatusResponse] = []
    unreachable: list[AdminCallError] = []
    for address in addresses:
        try:
            answers.append(_status(Hub.from_args(args, address), args.group))
        except AdminCallError as exc:
            if exc.exit_code != EXIT_UNREACHABLE:
                return error_exit(exc)
            unreachable.append(exc)
    for failure in unreachable:
        print(f"paynotify: {failure}", file=sys.stderr)
    if not answers:
        return EXIT_UNREACHABLE
    merged = _merge(answers)
    if args.json:
        print_json(_as_json(merged, addresses))
    else:
        _print_table(merged, args.members)
    return EXIT_OK


def _status(hub: Hub, groups: list[str]) -> admin_pb2.StatusResponse:
    with hub.stub() as stub:
        return hub.call(stub.Status, admin_pb2.StatusRequest(groups=groups))


def _merge(answers: list[admin_pb2.StatusResponse]) -> admin_pb2.StatusResponse:
    """The first answer's counts; every answer's members."""
    merged = admin_pb2.StatusResponse()
    merged.CopyFrom(answers[0])
    for other in answers[1:]:
        by_group = {g.group: g for g in other.groups}
        for group in merged.groups:
            extra = by_group.get(group.group)
            if extra is not None:
                group.connected_members += extra.connected_members
                group.members.extend(extra.members)
    return merged


def _pending_text(g: admin_pb2.GroupStats) -> str:
    return f"{g.pending} ({g.pending_backoff} backoff)" if g.pending_backoff else str(g.pending)


def _oldest_text(g: admin_pb2.GroupStats) -> str:
    return (
        age_text(duration_seconds(g.oldest_unacked_age))
        if g.HasField("oldest_unacked_age")
        else "-"
    )


def _print_table(response: admin_pb2.StatusResponse, members: bool) -> None:
    rows = [
        (
            g.group,
            "yes" if g.required else "no",
            _pending_text(g),
            str(g.in_flight),
            str(g.dead_letters),
            _oldest_text(g),
            str(g.connected_members),
        )
        for g in response.groups
    ]
    widths = [max(len(cell) for cell in column) for column in zip(_HEADERS, *rows, strict=False)]
    print(f"hub {response.hub_id} at {time_text(response.now)}")
    for row in (_HEADERS, *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if members:
        for g in response.groups:
            for m in g.members:
                deadline = duration_seconds(m.ack_deadline)
                print(
                    f"  {g.group}: {m.member_id} in flight {m.in_flight}/{m.max_in_flight}, "
                    f"ack deadline {deadline:g}s"
                )


def _as_json(response: admin_pb2.StatusResponse, addresses: list[str]) -> dict[str, Any]:
    return {
        "hub_id": response.hub_id,
        "hubs": addresses,
        "now": time_text(response.now),
        "groups": [
            {
                "group": g.group,
                "required": g.required,
                "notify_types": list(g.notify_types),
                "pending": g.pending,
                "pending_due": g.pending_due,
                "pending_backoff": g.pending_backoff,
                "in_flight": g.in_flight,
                "dead_letters": g.dead_letters,
                "acknowledged": g.acknowledged,
                "oldest_unacked_received_at": (
                    time_text(g.oldest_unacked_received_at)
                    if g.HasField("oldest_unacked_received_at")
                    else None
                ),
                "oldest_unacked_age_seconds": (
                    duration_seconds(g.oldest_unacked_age)
                    if g.HasField("oldest_unacked_age")
                    else None
                ),
                "connected_members": g.connected_members,
                "members": [
                    {
                        "member_id": m.member_id,
                        "client_id": m.client_id,
                        "in_flight": m.in_flight,
                        "max_in_flight": m.max_in_flight,
                        "ack_deadline_seconds": duration_seconds(m.ack_deadline),
                    }
                    for m in g.members
                ],
            }
            for g in response.groups
        ],
    }
