"""A bridge given several hub addresses keeps answering SUCCESS when one of the hubs dies."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.hubkit import hub_process
from tests.multinode.checks import delivered_after_stored_ack, wait_until_all_acked
from tests.multinode.ledger import Ledger
from tests.multinode.nodes import Keys, bridge_process, notification_body, send_once
from tests.multinode.pgcluster import PgSchema

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def test_a_bridge_with_two_hubs_fails_over_when_one_is_killed(
    tmp_path: Path, pg: PgSchema, keys: Keys
) -> None:
    (tmp_path / "hub1").mkdir()
    (tmp_path / "hub2").mkdir()
    with (
        hub_process(tmp_path / "hub1", store_url=pg.url) as hub1,
        hub_process(tmp_path / "hub2", store_url=pg.url) as hub2,
        bridge_process(tmp_path, [hub1.address, hub2.address], keys, publish_timeout=5) as bridge,
    ):
        ledger = Ledger(ack_deadline=2.0)
        specs = [(hub1.address, "billing", "b@hub1"), (hub2.address, "billing", "b@hub2")]
        with ledger.members(specs):
            url = bridge.notify_url
            before = [send_once(url, keys, notification_body(f"FO-A{i:02d}")) for i in range(10)]
            assert [a.succeeded for a in before] == [True] * 10, [a.describe() for a in before]

            # Requests in flight while hub 1 dies, and after.
            def send(i: int) -> tuple[float, bool, str]:
                attempt = send_once(url, keys, notification_body(f"FO-B{i:02d}"))
                return time.monotonic(), attempt.succeeded, attempt.describe()

            with ThreadPoolExecutor(4) as pool:
                futures = [pool.submit(send, i) for i in range(60)]
                futures[12].result(30)
                killed_at = time.monotonic()
                hub1.kill()
                results = [f.result(30) for f in futures]
            failed = [text for _, ok, text in results if not ok]
            after_kill = sum(1 for at, _, _ in results if at > killed_at)
            print(f"\n{len(results)} sent while hub 1 was killed ({after_kill} answered after)")
            assert not failed, failed
            assert after_kill >= 20
            assert hub2.process is not None and hub2.process.poll() is None
            # The store is the judge: an ack may have landed with its confirmation lost in hub 1.
            expected = {("billing", f"FO-B{i:02d}") for i in range(60)}
            wait_until_all_acked(pg, ledger, expected, timeout=10)
        assert not ledger.duplicates_after_ack()
        assert not delivered_after_stored_ack(pg, ledger)


def test_a_hub_stopped_gracefully_leaves_waiting_requests_to_the_other_hub(
    tmp_path: Path, pg: PgSchema, keys: Keys
) -> None:
    """A rolling restart: SIGTERM one hub while requests wait on it for acks. Another hub can answer
    them (the notification is stored, Publish is idempotent), so they should still get SUCCESS."""
    (tmp_path / "hub1").mkdir()
    (tmp_path / "hub2").mkdir()
    with (
        hub_process(tmp_path / "hub1", "--shutdown-grace", "2", store_url=pg.url) as hub1,
        hub_process(tmp_path / "hub2", store_url=pg.url) as hub2,
        bridge_process(tmp_path, [hub1.address, hub2.address], keys, publish_timeout=5) as bridge,
    ):
        ledger = Ledger(ack_deadline=5.0, ack_delay=0.5)  # a subscriber that takes its time
        with ledger.members([(hub2.address, "billing", "b@hub2")]):
            url = bridge.notify_url

            def send(i: int) -> tuple[float, bool, str]:
                attempt = send_once(url, keys, notification_body(f"TERM-{i:02d}"))
                return time.monotonic(), attempt.succeeded, attempt.describe()

            with ThreadPoolExecutor(8) as pool:
                futures = [pool.submit(send, i) for i in range(40)]
                futures[8].result(30)
                stopped_at = time.monotonic()
                hub1.terminate()
                results = [f.result(30) for f in futures]
            assert hub1.wait(20) == 0
            failed = [text for _, ok, text in results if not ok]
            print(f"\n{len(failed)} of {len(results)} answered non-SUCCESS around the SIGTERM")
            assert sum(1 for at, _, _ in results if at > stopped_at) >= 20
            assert not failed, failed


FROZEN_BOUND = 35.0  # seconds a frozen hub may keep getting a share of the requests


def test_a_frozen_hub_is_left_out_of_the_rotation(tmp_path: Path, pg: PgSchema, keys: Keys) -> None:
    """A hub that stops answering without closing its connections (SIGSTOP here; a host that lost
    power or a network partition in production) must not keep half of Alipay's requests: the
    bridge has to notice (keepalive pings) and send everything to the other hub."""
    (tmp_path / "hub1").mkdir()
    (tmp_path / "hub2").mkdir()
    with (
        hub_process(tmp_path / "hub1", store_url=pg.url) as hub1,
        hub_process(tmp_path / "hub2", store_url=pg.url) as hub2,
        bridge_process(tmp_path, [hub1.address, hub2.address], keys, publish_timeout=2) as bridge,
    ):
        ledger = Ledger(ack_deadline=2.0)
        with ledger.members([(hub2.address, "billing", "b@hub2")]):
            for i in range(4):
                attempt = send_once(bridge.notify_url, keys, notification_body(f"FZ-A{i}"))
                assert attempt.succeeded, attempt.describe()
            os.kill(hub1.pid, signal.SIGSTOP)
            frozen_at = time.monotonic()
            failures: list[float] = []
            try:
                streak, sent = 0, 0
                while streak < 10:  # ten SUCCESS in a row: the frozen hub is out of the rotation
                    waited = time.monotonic() - frozen_at
                    assert waited < FROZEN_BOUND, (
                        f"after {waited:.0f}s the frozen hub still gets requests: "
                        f"{len(failures)} of {sent} answered 503 after the publish timeout"
                    )
                    attempt = send_once(bridge.notify_url, keys, notification_body(f"FZ-B{sent}"))
                    sent += 1
                    streak = streak + 1 if attempt.succeeded else 0
                    if not attempt.succeeded:
                        failures.append(time.monotonic() - frozen_at)
            finally:
                os.kill(hub1.pid, signal.SIGCONT)
            left_out = max(failures, default=0.0)
            print(f"\nfrozen hub left out after {left_out:.1f}s ({len(failures)} answers 503)")
