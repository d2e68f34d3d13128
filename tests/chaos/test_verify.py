"""The chaos checker itself: it must see a lost notification, an early SUCCESS, a dead letter nobody
saw, a confirmed ack the store forgot and a delivery after an ack. Pure: no process, no store."""

from __future__ import annotations

from chaos.alipay import SUCCESS, AttemptRecord, Notification, Stream
from chaos.evidence import DeliveryRow, LogEvent, NotificationRow, StoreSnapshot
from chaos.topology import DEFAULT_GROUPS
from chaos.verify import Figures, compute_figures, judge

NOTE = Notification(0, "P0", "payment_result_success", "PAYMENT_RESULT", b"{}")
REQUIRED = ("billing", "ledger")


def _stream(success_at: float = 10.0) -> Stream:
    attempt = AttemptRecord(1, 0, success_at - 0.1, success_at, 200, True)
    return Stream(0, NOTE, False, 0.0, (0.0,), [attempt], SUCCESS)


def _store(states: dict[str, str], settled_at: float = 9.0) -> StoreSnapshot:
    store = StoreSnapshot()
    store.notifications["P0"] = NotificationRow(1, "P0", "PAYMENT_RESULT", 1)
    for group, state in states.items():
        store.deliveries[(1, group)] = DeliveryRow(state, 1, settled_at)
        if state in ("acked", "dead"):
            store.settled_at[(1, group)] = settled_at
    return store


def _seen(*groups: str, acked: bool = True) -> list[LogEvent]:
    events = []
    for group in groups:
        d = f"1.{group}"
        events.append(LogEvent("recv", group, f"{group}-1", 8.0, d, "1", "P0", 1))
        if acked:
            events.append(LogEvent("res", group, f"{group}-1", 8.5, d, kind="ack", status="ok"))
    return events


def _figures(store: StoreSnapshot, logs: list[LogEvent], success_at: float = 10.0) -> Figures:
    fig = compute_figures("test", [_stream(success_at)], store, logs, DEFAULT_GROUPS)
    fig.faults, fig.healthy_at_end = {"hub-kill": 1}, True
    judge(fig)
    return fig


def test_a_clean_run_passes() -> None:
    store = _store({"billing": "acked", "ledger": "acked", "audit": "acked"})

    fig = _figures(store, _seen("billing", "ledger", "audit"))

    assert (fig.lost, fig.violations, fig.anomalies, fig.failures) == (0, 0, {}, [])
    assert fig.acknowledged == 1


def test_success_with_a_required_group_still_pending_is_lost_and_a_violation() -> None:
    store = _store({"billing": "acked", "ledger": "pending", "audit": "pending"})

    fig = _figures(store, _seen("billing"))

    assert (fig.lost, fig.violations) == (1, 1)
    assert not fig.passed


def test_success_before_the_ack_was_stored_is_a_violation() -> None:
    store = _store({"billing": "acked", "ledger": "acked"}, settled_at=10.5)

    fig = _figures(store, _seen("billing", "ledger"), success_at=10.0)

    assert (fig.lost, fig.violations) == (0, 1)


def test_success_for_a_dead_letter_no_member_received_is_a_violation() -> None:
    store = _store({"billing": "acked", "ledger": "dead"})

    fig = _figures(store, _seen("billing"))

    assert (fig.lost, fig.success_unseen, fig.violations) == (0, 1, 1)
    assert fig.anomalies == {"dead letter no member of its group ever received": 1}


def test_a_confirmed_ack_the_store_lost_and_a_delivery_after_the_ack_are_caught() -> None:
    store = _store({"billing": "acked", "ledger": "acked", "audit": "pending"})
    store.deliveries[(1, "audit")] = DeliveryRow("leased", 2, None)
    logs = [*_seen("billing", "ledger", "audit"),
            LogEvent("recv", "audit", "audit-1", 9.0, "1.again", "1", "P0", 2)]  # fmt: skip

    fig = _figures(store, logs)

    audit = next(g for g in fig.groups if g.group == "audit")
    assert audit.post_ack_deliveries == 1
    assert fig.anomalies == {"ack confirmed by the hub but not in the store": 1}
    assert not fig.passed and fig.violations == 0


def test_redeliveries_before_the_ack_are_counted_not_failed() -> None:
    store = _store({"billing": "acked", "ledger": "acked", "audit": "acked"})
    store.deliveries[(1, "billing")] = DeliveryRow("acked", 2, 9.0)
    first = LogEvent("recv", "billing", "billing-2", 7.0, "1.first", "1", "P0", 1)

    fig = _figures(store, [first, *_seen("billing", "ledger", "audit")])

    billing = next(g for g in fig.groups if g.group == "billing")
    assert (billing.received, billing.distinct, billing.redeliveries) == (2, 1, 1)
    assert fig.passed, fig.failures
