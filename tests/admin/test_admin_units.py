"""Pure pieces of the operator's tools: pairing history into attempts, page tokens, the CLI's
time parsing and formatting, masking."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from paynotify.v1 import notification_pb2
from paynotify_cli.admin import age_text, masked_notification, parse_since
from paynotify_hub.admin import Attempt, attempts_of, page_token_of, parse_page_token
from paynotify_hub.domain import DeadLetter, DeliveryEvent, DeliveryState, HistoryKind
from paynotify_hub.errors import InvalidArgument

LEASED, PENDING, DEAD = DeliveryState.LEASED, DeliveryState.PENDING, DeliveryState.DEAD


def event(
    kind: HistoryKind, at: float, attempt: int, member: str = "m", **kw: object
) -> DeliveryEvent:
    state = kw.pop("state", LEASED if kind is HistoryKind.LEASED else PENDING)
    return DeliveryEvent("g", kind, at, attempt, member, state, **kw)  # type: ignore[arg-type]


def test_attempts_pair_leases_with_their_ends_across_a_replay() -> None:
    history = [
        event(HistoryKind.LEASED, 1, 1, "m1", lease_expires_at=31),
        event(HistoryKind.EXPIRED, 31, 1, "m1", due_at=33),
        event(HistoryKind.LEASED, 40, 2, "m2", lease_expires_at=70),
        event(HistoryKind.REJECTED, 41, 2, "m2", state=DEAD, detail="bad"),
        event(HistoryKind.REPLAYED, 50, 2, "", detail="replayed"),
        event(HistoryKind.LEASED, 51, 1, "m3", lease_expires_at=81),
    ]
    assert attempts_of(history) == [
        Attempt(1, "m1", 1, 31, HistoryKind.EXPIRED, 31, PENDING),
        Attempt(2, "m2", 40, 70, HistoryKind.REJECTED, 41, DEAD, "bad"),
        Attempt(1, "m3", 51, 81),  # still held
    ]
    assert attempts_of(history)[1].duration == 1.0
    assert attempts_of(history)[2].duration is None


def test_attempts_tolerate_a_missing_lease_or_end() -> None:
    orphan_end = [event(HistoryKind.ACKED, 5, 1, "m1", state=DeliveryState.ACKED)]
    assert attempts_of(orphan_end) == [
        Attempt(1, "m1", None, None, HistoryKind.ACKED, 5, DeliveryState.ACKED)
    ]
    two_leases = [event(HistoryKind.LEASED, 1, 1), event(HistoryKind.LEASED, 2, 2)]
    assert [a.attempt for a in attempts_of(two_leases)] == [1, 2]
    assert attempts_of([]) == []


def test_page_tokens_round_trip_and_refuse_garbage() -> None:
    letter = DeadLetter(42, "billing.v2", "PAYMENT_RESULT", "r", "p", 1, "x", 0.0, 0.0, b"")
    assert parse_page_token(page_token_of(letter)) == (42, "billing.v2")
    assert parse_page_token("") == (0, "")
    for bad in ("42", "x/billing", "42/Bad Group", "/billing", "-1/billing"):
        with pytest.raises(InvalidArgument):
            parse_page_token(bad)


def test_parse_since() -> None:
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    assert parse_since("2h", now) == now - timedelta(hours=2)
    assert parse_since("90s", now) == now - timedelta(seconds=90)
    assert parse_since("1.5d", now) == now - timedelta(hours=36)
    assert parse_since("2026-11-25T08:00:00Z") == datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
    offset = parse_since("2026-11-25T16:00:00+08:00")
    assert offset.astimezone(UTC) == datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
    for bad in ("2026-11-25T08:00:00", "yesterday", "2x", ""):
        with pytest.raises(ValueError):
            parse_since(bad, now)


def test_age_text() -> None:
    assert [age_text(s) for s in (0.012, 3.25, 245, 7380, 273600)] == [
        "12ms",
        "3.2s",
        "4m05s",
        "2h03m",
        "3d04h",
    ]


def test_masked_notification() -> None:
    n = notification_pb2.PaymentNotification(payment_id="2020P1", raw_json=b'{"a": 1}')
    n.psp_customer_info.psp_customer_id = "20885028136924G7"
    n.psp_customer_info.display_customer_id = "buyer@alitest.com"
    masked = masked_notification(n)
    assert masked["psp_customer_info"] == {
        "psp_customer_id": "20****G7",
        "display_customer_id": "b****@alitest.com",
    }
    assert "raw_json" not in masked and masked["payment_id"] == "2020P1"
    raw = masked_notification(n, unmasked=True)
    assert raw["psp_customer_info"]["psp_customer_id"] == "20885028136924G7"
    assert raw["raw_json"] == '{"a": 1}'
