"""PostgreSQL restarted under load: the hubs reconnect by themselves, the bridge answers 503 (never
SUCCESS) meanwhile, and once Alipay's retries have gone through everything is acknowledged and
nothing that got SUCCESS is lost.

Restarts the machine's PostgreSQL cluster (`pg_ctlcluster ... main restart`), which cuts every
other client off for a moment: it runs only with PAYNOTIFY_TEST_PG_RESTART=1 (CI sets it).
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from paynotify_bridge.simulator import Attempt
from tests.hubkit import hub_process
from tests.multinode.checks import (
    delivered_after_stored_ack,
    success_before_seen,
    wait_until_all_acked,
)
from tests.multinode.ledger import Ledger
from tests.multinode.nodes import (
    Keys,
    bridge_process,
    notification_body,
    send_once,
    wait_until,
)
from tests.multinode.pgcluster import ENV_RESTART, PgSchema, restart_cluster, wait_until_ready

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.skipif(
        os.environ.get(ENV_RESTART) != "1",
        reason=f"restarts the local PostgreSQL cluster; set {ENV_RESTART}=1 to run it",
    ),
]

GROUPS = ("billing", "audit")
SENDERS = 6
MAX_NOTIFICATIONS = 600
BEFORE_RESTART = 40  # answered before the restart
AFTER_RESTART = 4.0  # seconds the first pass goes on after the restart returned
RESEND_FOR = 60.0  # Alipay's retries: bound of the second pass
ACK_DEADLINE = 3.0
# What a hub logs each time its LISTEN connection is (re)established.
LISTENER_SUBSCRIBED = "store listener subscribed"
# Short enough that requests waiting through the outage run out of time and are answered 503.
PUBLISH_TIMEOUT = 1.0


@dataclass
class FirstPass:
    """One send per notification while the database goes away and comes back."""

    url: str
    keys: Keys
    answers: dict[str, Attempt] = field(default_factory=dict)
    answered_at: dict[str, float] = field(default_factory=dict)
    success_at: dict[str, float] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    counter: itertools.count[int] = field(default_factory=itertools.count)

    def answered(self) -> int:
        with self.lock:
            return len(self.answers)

    def sender(self) -> None:
        while not self.stop.is_set() and (i := next(self.counter)) < MAX_NOTIFICATIONS:
            pid = f"PGR-{i:03d}"
            attempt = send_once(self.url, self.keys, notification_body(pid))
            with self.lock:
                self.answers[pid] = attempt
                self.answered_at[pid] = time.monotonic()
                if attempt.succeeded:
                    self.success_at[pid] = time.time()


def test_postgres_restarted_under_load(tmp_path: Path, pg: PgSchema, keys: Keys) -> None:
    for name in ("hub1", "hub2"):
        (tmp_path / name).mkdir()
    try:
        with (
            hub_process(tmp_path / "hub1", groups=GROUPS, store_url=pg.url) as hub1,
            hub_process(tmp_path / "hub2", groups=GROUPS, store_url=pg.url) as hub2,
            bridge_process(
                tmp_path, [hub1.address, hub2.address], keys, publish_timeout=PUBLISH_TIMEOUT
            ) as bridge,
        ):
            ledger = Ledger(ack_deadline=ACK_DEADLINE)
            named = (("hub1", hub1), ("hub2", hub2))
            specs = [(h.address, g, f"{g}@{name}") for name, h in named for g in GROUPS]
            with ledger.members(specs):
                first = FirstPass(bridge.notify_url, keys)
                with ThreadPoolExecutor(SENDERS) as pool:
                    senders = [pool.submit(first.sender) for _ in range(SENDERS)]
                    try:
                        deadline = time.monotonic() + 30
                        while first.answered() < BEFORE_RESTART:
                            assert time.monotonic() < deadline, "no progress before the restart"
                            time.sleep(0.05)
                        restart_started = time.monotonic()
                        restart_took = restart_cluster()
                        time.sleep(AFTER_RESTART)
                    finally:
                        first.stop.set()
                        for future in senders:
                            future.result(60)
                resent = _resend_until_success(first, bridge.notify_url, keys)
                expected = {(g, pid) for g in GROUPS for pid in first.answers}
                wait_until_all_acked(pg, ledger, expected, timeout=ACK_DEADLINE + 15)
            # Each hub's listening connection (cross-hub events) came back by itself.
            for hub in (hub1, hub2):
                wait_until(
                    lambda hub=hub: hub.log().count(LISTENER_SUBSCRIBED) >= 2,
                    30,
                    f"the store listener of {hub.address} subscribed again",
                )
            hub_logs = hub1.log() + hub2.log()
            assert hub1.process is not None and hub1.process.poll() is None, "hub 1 died"
            assert hub2.process is not None and hub2.process.poll() is None, "hub 2 died"
    finally:
        assert wait_until_ready(60), "PostgreSQL is not up again"

    late = delivered_after_stored_ack(pg, ledger)
    statuses = Counter(str(a.status) for a in first.answers.values())
    rounds = max(resent.values(), default=0)
    window = (restart_started, restart_started + restart_took + 2 * PUBLISH_TIMEOUT)
    in_window = Counter(
        str(a.status) for pid, a in first.answers.items()
        if window[0] <= first.answered_at[pid] <= window[1]
    )  # fmt: skip
    print(
        f"\nPostgreSQL restart ({restart_took:.1f}s) under load: sent {len(first.answers)}, "
        f"SUCCESS at once {sum(a.succeeded for a in first.answers.values())}, "
        f"first answers {dict(statuses)} (during the restart {dict(in_window)}), "
        f"re-sent {len(resent)} ({rounds} rounds at most), "
        f"duplicates-after-ack {len(ledger.duplicates_after_ack())} (confirmed acks), "
        f"{len(late)} (acks in the store), "
        f"redeliveries-before-ack {ledger.redeliveries_before_ack()}, "
        f"hub log lines naming the store {hub_logs.count('store')}"
    )
    assert set(statuses) <= {"200", "503"}, statuses  # 503: Alipay retries; nothing else
    assert statuses["503"] > 0, "the restart was not noticed: no request was answered 503"
    assert all(first.success_at.get(pid) for pid in first.answers), (
        "not every notification got SUCCESS"
    )
    early = success_before_seen(first.success_at, ledger, GROUPS)
    assert not early, f"SUCCESS before a group received it: {early}"
    assert not ledger.duplicates_after_ack(), ledger.duplicates_after_ack()
    assert not late, late
    # Nothing that got SUCCESS is lost: every notification is in the store, acked by every group.
    rows = pg.rows(
        "SELECT n.payment_id, d.group_name, d.state FROM notifications n "
        "JOIN deliveries d ON d.notification_id = n.id"
    )
    assert sorted(rows) == sorted((pid, g, "acked") for pid in first.answers for g in GROUPS)


def _resend_until_success(first: FirstPass, url: str, keys: Keys) -> dict[str, int]:
    """Alipay's retries, in rounds, of what has no SUCCESS yet; returns rounds per notification."""
    resent: dict[str, int] = {}
    deadline = time.monotonic() + RESEND_FOR
    while missing := sorted(pid for pid in first.answers if pid not in first.success_at):
        assert time.monotonic() < deadline, f"still no SUCCESS for {missing[:10]}"
        with ThreadPoolExecutor(SENDERS) as pool:
            attempts = dict(zip(missing, pool.map(
                lambda pid: send_once(url, keys, notification_body(pid)), missing
            ), strict=True))  # fmt: skip
        for pid, attempt in attempts.items():
            resent[pid] = resent.get(pid, 0) + 1
            assert attempt.status in (200, 503), attempt.describe()
            if attempt.succeeded:
                first.success_at[pid] = time.time()
        time.sleep(0.5)
    return resent
