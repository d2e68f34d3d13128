"""nginx with the shipped deploy/nginx/paynotify.conf before two bridges and two hubs on PostgreSQL.

Alipay is played by the simulator's own code: signing, and Alipay's retry schedule 600 times faster.
Midway one bridge and one hub are killed with SIGKILL. Every notification must end acknowledged with
SUCCESS, and no group may receive again a notification whose ack the hub had confirmed to it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from paynotify_bridge.simulator import Attempt
from tests.hubkit import free_port, hub_process
from tests.multinode.checks import (
    delivered_after_stored_ack,
    success_before_seen,
    wait_until_all_acked,
)
from tests.multinode.ledger import Ledger
from tests.multinode.nginx import (
    SHIPPED_SITE,
    directives,
    find_nginx_or_skip,
    prepare_nginx,
    render_site,
)
from tests.multinode.nodes import (
    NOTIFY_PATH,
    Keys,
    bridge_process,
    notification_body,
    send_until_success,
)
from tests.multinode.pgcluster import PgSchema

GROUPS = ("billing", "audit")
NOTIFICATIONS = 200
SENDERS = 16
TIME_SCALE = 600.0  # Alipay's 2 min, 10 min, ... become 0.2 s, 1 s, ...
ACK_DEADLINE = 3.0


def test_the_shipped_site_renders_for_loopback_with_every_proxy_setting(tmp_path: Path) -> None:
    shipped = SHIPPED_SITE.read_text()
    rendered = render_site(shipped, ["127.0.0.1:1001", "127.0.0.1:1002"], "127.0.0.1:1000")
    for prefix in ("proxy_", "client_", "location", "keepalive", "return"):
        assert directives(rendered, prefix) == directives(shipped, prefix), prefix
    assert directives(rendered, "server 127.0.0.1:100") == [
        "server 127.0.0.1:1001 max_fails=1 fail_timeout=5s;",
        "server 127.0.0.1:1002 max_fails=1 fail_timeout=5s;",
    ]
    assert directives(rendered, "listen") == ["listen 127.0.0.1:1000;"]
    assert not directives(rendered, "ssl_") and not directives(rendered, "server_name")
    nginx = prepare_nginx(tmp_path, ["127.0.0.1:1001", "127.0.0.1:1002"], find_nginx_or_skip())
    checked = nginx.test_config()
    assert checked.returncode == 0, checked.stderr


@pytest.mark.slow
@pytest.mark.postgres
def test_through_nginx_every_notification_ends_in_success_when_a_bridge_and_a_hub_die(
    tmp_path: Path, pg: PgSchema, keys: Keys
) -> None:
    binary = find_nginx_or_skip()
    for name in ("hub1", "hub2"):
        (tmp_path / name).mkdir()
    ports = [free_port(), free_port()]
    upstreams = [f"127.0.0.1:{port}" for port in ports]
    nginx = prepare_nginx(tmp_path / "nginx", upstreams, binary)
    with (
        hub_process(tmp_path / "hub1", groups=GROUPS, store_url=pg.url) as hub1,
        hub_process(tmp_path / "hub2", groups=GROUPS, store_url=pg.url) as hub2,
    ):
        hubs = [hub1.address, hub2.address]
        with (
            bridge_process(tmp_path, hubs, keys, name="bridge1", port=ports[0]) as bridge1,
            bridge_process(tmp_path, hubs, keys, name="bridge2", port=ports[1]) as bridge2,
        ):
            nginx.start()
            try:
                ledger = Ledger(ack_deadline=ACK_DEADLINE)
                named = (("hub1", hub1), ("hub2", hub2))
                specs = [(h.address, g, f"{g}@{name}") for name, h in named for g in GROUPS]
                with ledger.members(specs):
                    results, killed_at = _send_all_and_kill_midway(
                        nginx.url(NOTIFY_PATH), keys, kill=[bridge1.kill, hub1.kill]
                    )
                    expected = {(g, pid) for g in GROUPS for pid in results}
                    wait_until_all_acked(pg, ledger, expected, timeout=ACK_DEADLINE + 10)
                assert bridge2.alive() and hub2.process is not None and hub2.process.poll() is None
            finally:
                nginx.stop()
    access_log = (tmp_path / "nginx" / "access.log").read_text()
    late = delivered_after_stored_ack(pg, ledger)
    _report(results, killed_at, ledger, access_log, late)

    failed = {pid: attempts[-1].describe() for pid, (attempts, _) in results.items()
              if not attempts[-1].succeeded}  # fmt: skip
    assert not failed, failed
    # Never SUCCESS for what no member of each required group had received yet.
    success_at = {pid: at for pid, (_, at) in results.items()}
    early = success_before_seen(success_at, ledger, GROUPS)
    assert not early, f"SUCCESS before a group received it: {early}"
    assert not ledger.duplicates_after_ack(), ledger.duplicates_after_ack()
    assert not late, late
    states = pg.rows(
        "SELECT d.group_name, d.state, count(*) FROM deliveries d GROUP BY 1, 2 ORDER BY 1, 2"
    )
    assert states == [("audit", "acked", NOTIFICATIONS), ("billing", "acked", NOTIFICATIONS)]


def _send_all_and_kill_midway(
    url: str, keys: Keys, kill: list[object]
) -> tuple[dict[str, tuple[list[Attempt], float]], float]:
    """Each notification follows Alipay's schedule; after half got a first answer, kill."""
    answered = threading.Semaphore(0)

    def on_attempt(attempt: Attempt) -> None:
        if attempt.number == 1:
            answered.release()

    def alipay(payment_id: str) -> tuple[list[Attempt], float]:
        attempts = send_until_success(
            url, keys, notification_body(payment_id), time_scale=TIME_SCALE, on_attempt=on_attempt
        )
        return attempts, time.time()

    payment_ids = [f"LB-{i:03d}" for i in range(NOTIFICATIONS)]
    with ThreadPoolExecutor(SENDERS) as pool:
        futures = {pid: pool.submit(alipay, pid) for pid in payment_ids}
        for _ in range(NOTIFICATIONS // 2):
            assert answered.acquire(timeout=60), "no progress before the kill"
        killed_at = time.monotonic()
        for action in kill:
            action()  # type: ignore[operator]
        # Alipay's schedule compressed 600x: 5 sends take about 8 s, plus each send's wait.
        results = {pid: future.result(timeout=120) for pid, future in futures.items()}
    return results, killed_at


def _report(
    results: dict[str, tuple[list[Attempt], float]],
    killed_at: float,
    ledger: Ledger,
    access_log: str,
    late: list[str],
) -> None:
    attempts = [a for attempts, _ in results.values() for a in attempts]
    statuses = Counter(str(a.status) if a.status is not None else "no reply" for a in attempts)
    succeeded = sum(1 for attempts, _ in results.values() if attempts[-1].succeeded)
    retried = sum(1 for attempts, _ in results.values() if len(attempts) > 1)
    most = max(len(attempts) for attempts, _ in results.values())
    upstream_retries = sum(1 for line in access_log.splitlines() if ", " in line)
    print(
        f"\nnginx: sent {len(results)} notifications, SUCCESS {succeeded}, "
        f"HTTP attempts {len(attempts)} {dict(statuses)}, "
        f"notifications that needed retries {retried} (most attempts {most}), "
        f"requests nginx passed to a second bridge {upstream_retries}, "
        f"duplicates-after-ack {len(ledger.duplicates_after_ack())} (confirmed acks), "
        f"{len(late)} (acks in the store), "
        f"redeliveries-before-ack {ledger.redeliveries_before_ack()}, "
        f"deliveries per member {dict(Counter(d.member for d in ledger.of()))}"
    )
