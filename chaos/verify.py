"""The figures of a run: what Alipay was told, held against the store and the members' logs.

Definitions (docs/chaos.md explains how to read them):
    lost        a notification answered SUCCESS whose delivery to some required group (that wants
                its notifyType) is not acked or dead in the store at the end, or is missing
    violations  a SUCCESS reply sent before the store recorded every required group's ack (or dead
                letter): the settle event's time is later than the reply, or there is none; and a
                SUCCESS for a dead letter that no member of that group ever received
    redelivered deliveries beyond the first of one notification to one group (at least once)
    nacks-unseen  nacks the store recorded that no callback made: the client library nacks what
                arrives while it closes (each one an attempt spent unseen)
    post-ack    a delivery to a group after the hub confirmed that group's ack (log), or a lease the
                store recorded after the settle event: never allowed
    anomalies   an ack the hub confirmed that the store does not hold, a receipt whose attempt the
                store never leased, an ack with no recorded receipt, a dead letter no member of
                its group ever received (no member here ever rejects: only a redelivery loop
                exhausts 20 attempts unseen), an HTTP status other than 200/503 (or a 200 that is
                not SUCCESS): bugs, printed with evidence
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from chaos.alipay import EXHAUSTED, UNFINISHED, Stream
from chaos.evidence import LogEvent, StoreSnapshot
from chaos.topology import GroupPlan

__all__ = ["Figures", "GroupFigures", "compute_figures", "judge", "percentile"]

EXAMPLES = 8


@dataclass
class GroupFigures:
    group: str
    required: bool
    rows: int = 0  # deliveries in the store for the run's notifications
    acked: int = 0
    dead: int = 0
    unsettled: int = 0  # pending or leased at the end
    store_attempts: int = 0  # leases the store made
    received: int = 0  # deliveries the members' callbacks got
    distinct: int = 0  # notifications received at least once
    redelivered_notifications: int = 0  # received more than once
    redeliveries: int = 0  # received - distinct
    unseen_leases: int = 0  # leases that never reached a callback (lost with a stream)
    post_ack_deliveries: int = 0
    dead_unseen: int = 0  # dead letters no member of the group ever received
    nacks: int = 0  # nacks the store recorded
    nacks_unseen: int = 0  # of which no callback made (the library nacked, e.g. while closing)
    expired: int = 0  # leases whose ack deadline passed
    released: int = 0  # leases whose stream ended


@dataclass
class Figures:
    label: str
    distinct: int = 0
    duplicate_streams: int = 0
    http_requests: int = 0
    replies: dict[str, int] = field(default_factory=dict)
    acknowledged: int = 0  # distinct notifications answered SUCCESS at least once
    not_acknowledged: int = 0  # schedule exhausted without SUCCESS
    unfinished: int = 0  # still retrying when the run's time bound hit
    lost: int = 0
    violations: int = 0
    success_unseen: int = 0
    groups: list[GroupFigures] = field(default_factory=list)
    ack_time: dict[str, float] = field(default_factory=dict)  # p50/p90/p99/max, real seconds
    attempts_to_success: dict[str, int] = field(default_factory=dict)
    time_scale: float = 1.0
    faults: dict[str, int] = field(default_factory=dict)
    crashes_in_callback: int = 0  # crash lines in the members' logs
    fault_errors: list[str] = field(default_factory=list)
    healthy_at_end: bool = False
    health_detail: str = ""
    anomalies: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    duration: float = 0.0
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def example(self, what: str, text: str) -> None:
        bucket = self.examples.setdefault(what, [])
        if len(bucket) < EXAMPLES:
            bucket.append(text)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def compute_figures(
    label: str,
    streams: Sequence[Stream],
    store: StoreSnapshot,
    logs: Sequence[LogEvent],
    groups: Sequence[GroupPlan],
) -> Figures:
    fig = Figures(label)
    _sending(fig, streams)
    _promise(fig, streams, store, logs, groups)
    _deliveries(fig, streams, store, logs, groups)
    return fig


# -- what Alipay saw ------------------------------------------------------------------------------


def _reply_class(status: int | None, success: bool, error: str) -> str:
    if success:
        return "200 SUCCESS"
    if status is None:
        return f"no reply ({error.partition(':')[0] or 'error'})"
    return f"HTTP {status}"


def _sending(fig: Figures, streams: Sequence[Stream]) -> None:
    by_payment: dict[str, list[Stream]] = defaultdict(list)
    replies: Counter[str] = Counter()
    for stream in streams:
        by_payment[stream.notification.payment_id].append(stream)
        for attempt in stream.attempts:
            replies[_reply_class(attempt.status, attempt.success, attempt.error)] += 1
            if not attempt.success and attempt.status not in (None, 503):
                fig.example(
                    "unexpected HTTP reply",
                    f"{stream.notification.payment_id}: "
                    f"HTTP {attempt.status} on attempt {attempt.number}",
                )
    fig.distinct = len(by_payment)
    fig.duplicate_streams = sum(1 for s in streams if s.duplicate)
    fig.http_requests = sum(replies.values())
    fig.replies = dict(sorted(replies.items()))
    unexpected = sum(
        n
        for k, n in replies.items()
        if k not in ("200 SUCCESS", "HTTP 503") and k[:8] != "no reply"
    )
    if unexpected:
        fig.anomalies["unexpected HTTP replies"] = unexpected
    times, attempts_needed = [], []
    for payment_streams in by_payment.values():
        first = min((a.started for s in payment_streams for a in s.attempts), default=None)
        successes = [s.success_at for s in payment_streams if s.success_at is not None]
        if successes and first is not None:
            fig.acknowledged += 1
            times.append(min(successes) - first)
            attempts_needed.append(min(len(s.attempts) for s in payment_streams if s.success_at))
        elif any(s.outcome == UNFINISHED for s in payment_streams):
            fig.unfinished += 1
        elif all(s.outcome == EXHAUSTED for s in payment_streams):
            fig.not_acknowledged += 1
    for q in (50, 90, 99):
        fig.ack_time[f"p{q}"] = percentile(times, q)
    fig.ack_time["max"] = max(times, default=math.nan)
    fig.attempts_to_success = dict(
        sorted(Counter(f"{n}" for n in attempts_needed).items(), key=lambda kv: int(kv[0]))
    )


# -- the one promise -----------------------------------------------------------------------------


def _required_for(notify_type: str, groups: Iterable[GroupPlan]) -> list[str]:
    return [g.name for g in groups if g.required and g.wants(notify_type)]


def _promise(
    fig: Figures,
    streams: Sequence[Stream],
    store: StoreSnapshot,
    logs: Sequence[LogEvent],
    groups: Sequence[GroupPlan],
) -> None:
    received = {(e.group, e.payment_id) for e in logs if e.event == "recv"}
    lost: set[str] = set()
    early: set[str] = set()  # SUCCESS before the settle was stored
    unseen: set[str] = set()  # SUCCESS for a dead letter its group never received
    for stream in streams:
        n = stream.notification
        row = store.notifications.get(n.payment_id)
        for attempt in (a for a in stream.attempts if a.success):
            if row is None:
                lost.add(n.payment_id)
                early.add(n.payment_id)
                fig.example("violation", f"{n.payment_id}: SUCCESS but not in the store")
                continue
            for group in _required_for(n.notify_type, groups):
                key = (row.id, group)
                delivery = store.deliveries.get(key)
                settled = store.settle_time(key)
                if delivery is None or delivery.state not in ("acked", "dead"):
                    lost.add(n.payment_id)
                    state = delivery.state if delivery else "missing"
                    fig.example("lost", f"{n.payment_id} (id {row.id}): {group} is {state}")
                if settled is None or settled > attempt.ended:
                    early.add(n.payment_id)
                    fig.example(
                        "violation",
                        f"{n.payment_id} (id {row.id}): SUCCESS at "
                        f"{attempt.ended:.3f}, {group} settled at {settled}",
                    )
                elif (
                    delivery is not None
                    and delivery.state == "dead"
                    and (group, n.payment_id) not in received
                ):
                    unseen.add(n.payment_id)
                    fig.example(
                        "success unseen", f"{n.payment_id}: dead in {group}, never received by it"
                    )
    fig.lost = len(lost)
    fig.success_unseen = len(unseen)
    fig.violations = len(early | unseen)


# -- deliveries per group ------------------------------------------------------------------------


def _deliveries(
    fig: Figures,
    streams: Sequence[Stream],
    store: StoreSnapshot,
    logs: Sequence[LogEvent],
    groups: Sequence[GroupPlan],
) -> None:
    ours = {s.notification.payment_id for s in streams}
    ids = {row.id: pid for pid, row in store.notifications.items() if pid in ours}
    recv = [
        e
        for e in logs
        if e.event == "recv" and e.notification_id.isdigit() and int(e.notification_id) in ids
    ]
    by_delivery = {e.delivery_id: e for e in recv}
    confirmed_ok = [e for e in logs if e.event == "res" and e.kind == "ack" and e.status == "ok"]
    acked_attempt: dict[tuple[int, str], int] = {}
    for res in confirmed_ok:
        origin = by_delivery.get(res.delivery_id)
        if origin is not None:
            key = (int(origin.notification_id), origin.group)
            acked_attempt[key] = min(acked_attempt.get(key, origin.attempt), origin.attempt)
    fig.crashes_in_callback = sum(1 for e in logs if e.event == "crash")
    callback_nacks = Counter(
        e.group
        for e in logs
        if e.event == "nack" and e.notification_id.isdigit() and int(e.notification_id) in ids
    )
    anomalies: Counter[str] = Counter()
    for plan in groups:
        figures = _group_figures(
            fig, plan, store, ids, recv, acked_attempt, anomalies, callback_nacks
        )
        fig.groups.append(figures)
    for name, count in anomalies.items():
        fig.anomalies[name] = fig.anomalies.get(name, 0) + count


def _group_figures(
    fig: Figures,
    plan: GroupPlan,
    store: StoreSnapshot,
    ids: dict[int, str],
    recv: Sequence[LogEvent],
    acked_attempt: dict[tuple[int, str], int],
    anomalies: Counter[str],
    callback_nacks: Counter[str],
) -> GroupFigures:
    g = GroupFigures(plan.name, plan.required)
    got: Counter[int] = Counter()
    attempts_seen: dict[int, set[int]] = defaultdict(set)
    for e in recv:
        if e.group == plan.name:
            nid = int(e.notification_id)
            got[nid] += 1
            attempts_seen[nid].add(e.attempt)
    g.nacks = sum(n for (nid, group), n in store.nacks.items() if group == plan.name and nid in ids)
    g.nacks_unseen = max(0, g.nacks - callback_nacks[plan.name])
    for (nid, group, kind), count in store.lease_ends.items():
        if group == plan.name and nid in ids:
            g.expired += count if kind == "expired" else 0
            g.released += count if kind == "released" else 0
    for (nid, group), row in store.deliveries.items():
        if group != plan.name or nid not in ids:
            continue
        g.rows += 1
        g.store_attempts += row.attempts
        g.acked += row.state == "acked"
        g.dead += row.state == "dead"
        g.unsettled += row.state not in ("acked", "dead")
        g.unseen_leases += max(0, row.attempts - got[nid])
        post = store.leases_after_settle.get((nid, group), 0)
        first_ok = acked_attempt.get((nid, group))
        if first_ok is not None:
            post = max(post, sum(1 for a in attempts_seen[nid] if a > first_ok))
            if row.state != "acked":
                anomalies["ack confirmed by the hub but not in the store"] += 1
                fig.example(
                    "anomaly", f"{ids[nid]} ({group}): ack confirmed, store says {row.state}"
                )
        if post:
            g.post_ack_deliveries += post
            fig.example("post-ack delivery", f"{ids[nid]} ({group}): {post} after the ack")
        beyond = [a for a in attempts_seen[nid] if a > row.attempts]
        if beyond:
            anomalies["receipt of an attempt the store never leased"] += len(beyond)
            fig.example(
                "anomaly",
                f"{ids[nid]} ({group}): received attempt {max(beyond)}, store has {row.attempts}",
            )
        if row.state == "dead" and got[nid] == 0:
            g.dead_unseen += 1
            anomalies["dead letter no member of its group ever received"] += 1
            fig.example(
                "anomaly",
                f"{ids[nid]} ({group}): dead after {row.attempts} attempts, never received",
            )
        if row.state == "acked" and got[nid] == 0:
            anomalies["acked with no receipt in the members' logs"] += 1
            fig.example("anomaly", f"{ids[nid]} ({group}): acked, never received")
    g.received = sum(got.values())
    g.distinct = len(got)
    g.redelivered_notifications = sum(1 for n in got.values() if n > 1)
    g.redeliveries = g.received - g.distinct
    return g


def judge(fig: Figures) -> None:
    """Fill `fig.failures`: the one promise first, then anything else that is a bug."""
    checks = [
        (fig.lost > 0, f"lost = {fig.lost}"),
        (fig.violations > 0, f"violations = {fig.violations}"),
        (
            fig.healthy_at_end and fig.not_acknowledged > 0,
            f"{fig.not_acknowledged} notification(s) never acknowledged although the system was "
            "healthy at the end",
        ),
        (sum(g.post_ack_deliveries for g in fig.groups) > 0, "deliveries after a confirmed ack"),
        (bool(fig.anomalies), f"anomalies: {fig.anomalies}"),
        (bool(fig.fault_errors), f"fault injection errors: {len(fig.fault_errors)}"),
        (not fig.faults, "no fault was injected"),
        (not fig.healthy_at_end, f"not healthy at the end: {fig.health_detail}"),
    ]
    fig.failures = [text for failed, text in checks if failed]
