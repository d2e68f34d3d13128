"""The fault-injection suite, shortened (`make chaos` runs the full one; docs/chaos.md).

Real processes on loopback: `paynotify hub`, `paynotify bridge`, subscriber members
(`chaos.subscriber_proc`), and the Alipay simulator on a compressed retry schedule, while hubs are
killed with SIGKILL, members crash inside their callbacks, streams drop and bridges die. The one
promise must hold: nothing that got SUCCESS is lost, and SUCCESS never comes before the store holds
every required group's ack. PostgreSQL restarts only with PAYNOTIFY_TEST_PG_RESTART=1.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos.config import preset
from chaos.harness import run_mode
from chaos.report import render
from chaos.verify import Figures
from tests.pg import postgres_dsn_or_skip

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def _kinds_injected(fig: Figures) -> set[str]:
    return {key.split(" (")[0] for key, count in fig.faults.items() if count}


def _assert_promise_kept(fig: Figures) -> None:
    report = render(fig)
    print(report)
    assert fig.lost == 0, report
    assert fig.violations == 0, report
    assert sum(fig.faults.values()) > 0, report
    assert {"hub-kill", "subscriber-crash"} <= _kinds_injected(fig), report
    assert fig.passed, report


def test_one_hub_on_sqlite_keeps_the_promise_under_faults(tmp_path: Path) -> None:
    fig = run_mode(preset("short", "sqlite"), tmp_path / "sqlite", out=print)

    _assert_promise_kept(fig)


@pytest.mark.postgres
def test_two_hubs_on_postgresql_keep_the_promise_under_faults(tmp_path: Path) -> None:
    dsn = postgres_dsn_or_skip()
    settings = preset("short", "postgres", postgres_dsn=dsn)

    fig = run_mode(settings, tmp_path / "postgres", out=print)

    _assert_promise_kept(fig)
    if settings.pg_restart:
        assert "pg-restart" in _kinds_injected(fig), render(fig)
