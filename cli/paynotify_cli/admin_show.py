"""`paynotify show ID`: one notification by paymentId or paymentRequestId: every Alipay receipt,
every delivery, every attempt (who held it, how and when it ended) and every replay.

Customer ids are masked and the raw body is left out unless `--unmasked`. Exit 1 when nothing
matches.
"""

from __future__ import annotations

import argparse
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from paynotify.v1 import admin_pb2, hub_pb2, notification_pb2
from paynotify_bridge.masking import mask_display_id, mask_id
from paynotify_cli.admin import (
    EXIT_OK,
    AdminCallError,
    Hub,
    add_common_arguments,
    age_text,
    error_exit,
    masked_notification,
    message_dict,
    print_json,
    time_text,
)

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("id", metavar="ID", help="a paymentId or a paymentRequestId")
    parser.add_argument(
        "--limit", type=int, default=0, metavar="N", help="at most N notifications (default 20)"
    )
    parser.add_argument(
        "--unmasked",
        action="store_true",
        help="show customer ids and the raw body as received (personal data)",
    )


def run(args: argparse.Namespace) -> int:
    request = admin_pb2.ShowRequest(id=args.id, limit=max(0, args.limit))
    try:
        hub = Hub.from_args(args)
        with hub.stub() as stub:
            response = hub.call(stub.Show, request)
    except AdminCallError as exc:
        return error_exit(exc)
    if args.json:
        print_json([_as_json(n, args.unmasked) for n in response.notifications])
    else:
        for i, n in enumerate(response.notifications):
            if i:
                print()
            _print(n, args.unmasked)
    return EXIT_OK


def _as_json(n: admin_pb2.NotificationDetail, unmasked: bool) -> dict[str, Any]:
    data = message_dict(n)
    data["notification"] = masked_notification(n.notification, unmasked=unmasked)
    return data


def _state(value: int) -> str:
    return hub_pb2.DeliveryState.Name(value).removeprefix("DELIVERY_STATE_").lower()  # type: ignore[arg-type]


def _kind(value: int) -> str:
    return admin_pb2.HistoryKind.Name(value).removeprefix("HISTORY_KIND_").lower()  # type: ignore[arg-type]


def _print(n: admin_pb2.NotificationDetail, unmasked: bool) -> None:
    p = n.notification
    print(f"notification {n.notification_id}  {n.identity}")
    print(f"  paymentId {p.payment_id or '-'}  paymentRequestId {p.payment_request_id or '-'}")
    amount = f"{p.payment_amount.currency} {p.payment_amount.value}".strip()
    print(f"  amount {amount or '-'}{_customer(p, unmasked)}")
    print(
        f"  first received {time_text(n.first_received_at)}, last {time_text(n.last_received_at)}"
        f", sent by Alipay {n.alipay_send_count} time{'s' if n.alipay_send_count != 1 else ''}"
    )
    if unmasked and p.raw_json:
        print(f"  body {p.raw_json.decode('utf-8', 'replace')}")
    print("  receipts:")
    for r in n.receipts:
        print(
            f"    {time_text(r.received_at)}  client {r.client_id or '-'}"
            f"  Request-Time {r.request_time or '-'}  request {r.request_id or '-'}"
        )
    print("  deliveries:")
    for d in n.deliveries:
        _print_delivery(d, _seconds(n.first_received_at))


def _customer(p: notification_pb2.PaymentNotification, unmasked: bool) -> str:
    if not p.HasField("psp_customer_info"):
        return ""
    info = p.psp_customer_info
    customer = info.psp_customer_id if unmasked else mask_id(info.psp_customer_id)
    display = info.display_customer_id if unmasked else mask_display_id(info.display_customer_id)
    return f"  psp {info.psp_name or '-'} customer {customer or '-'} ({display or '-'})"


def _print_delivery(d: admin_pb2.DeliveryDetail, first_received: float | None) -> None:
    state = _state(d.state)
    line = f"    {d.group}: {state}, {d.attempts} attempt{'s' if d.attempts != 1 else ''}"
    if d.state == hub_pb2.DELIVERY_STATE_PENDING:
        line += f", due {time_text(d.due_at)}"
    elif d.state == hub_pb2.DELIVERY_STATE_LEASED:
        line += f" by {d.lease_member_id}, lease until {time_text(d.lease_expires_at)}"
    elif d.state == hub_pb2.DELIVERY_STATE_ACKED:
        line += f", acked {time_text(d.acked_at)}"
        if first_received is not None:
            line += f" ({age_text(_seconds(d.acked_at) - first_received)} after the first receipt)"
    elif d.state == hub_pb2.DELIVERY_STATE_DEAD:
        line += f", dead since {time_text(d.dead_at)}: {d.dead_reason}"
    print(line)
    leased_at: float | None = None
    for event in d.history:
        print(f"      {time_text(event.at)}  {_event_text(event, leased_at)}")
        leased_at = _seconds(event.at) if event.kind == admin_pb2.HISTORY_KIND_LEASED else None


def _seconds(t: Timestamp) -> float:
    return t.seconds + t.nanos / 1e9


def _event_text(e: admin_pb2.HistoryEvent, leased_at: float | None) -> str:
    kind = _kind(e.kind)
    if e.kind == admin_pb2.HISTORY_KIND_LEASED:
        return f"#{e.attempt} leased to {e.member_id}, until {time_text(e.lease_expires_at)}"
    if e.kind == admin_pb2.HISTORY_KIND_REPLAYED:
        return f"replayed after {e.attempt} attempts: {e.detail}"
    text = f"#{e.attempt} {kind} by {e.member_id or '-'}"
    if leased_at is not None:
        text += f" after {age_text(max(0.0, _seconds(e.at) - leased_at))}"
    if e.state == hub_pb2.DELIVERY_STATE_PENDING:
        text += f", due again {time_text(e.due_at)}"
    elif e.state == hub_pb2.DELIVERY_STATE_DEAD:
        text += f", dead letter: {e.detail}"
    return text
