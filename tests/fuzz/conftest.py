"""Fuzz and property tests of bad input: the bridge's HTTP surface, the pure parser and verifier,
the hub's gRPC surface, slow clients. See docs/fuzzing.md.

Everything runs for real on 127.0.0.1: a hub (`tests/hubkit.py`) on a SQLite file, a bridge on
waitress (`tests/bridge/conftest.py`) with a real key pair, and a subscriber that acks, so a
validly signed, well-formed notification is answered SUCCESS. The session's figures are printed at
the end of the run (`figures.py`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

from tests.bridge.conftest import (
    Keys,
    alipay_keys,  # noqa: F401 (the session's key pair, shared with the bridge tests)
    bridge_config,
    start_bridge,
    subscribed,
)
from tests.fuzz.figures import EXAMPLES_ENV, FIGURES
from tests.fuzz.httpkit import FuzzTarget
from tests.hubkit import hub_in_thread

# Small, so "max", "max+1" and "far over" stay cheap; Alipay's bodies are a few hundred bytes.
MAX_BODY = 4096
# Seconds one fuzz test may take in a longer run.
LONG_RUN_TIMEOUT = 4 * 3600


@pytest.fixture(scope="module")
def fuzz_target(
    tmp_path_factory: pytest.TempPathFactory,
    alipay_keys: Keys,  # noqa: F811
) -> Iterator[FuzzTarget]:
    """One hub, one bridge and one acking subscriber for a whole module of fuzz tests.

    At the end: the bridge never took the unexpected-exception path, and every delivery the
    subscriber saw came from a request that was answered SUCCESS.
    """
    tmp = tmp_path_factory.mktemp("fuzz-hub")
    with contextlib.ExitStack() as stack:
        hub = stack.enter_context(hub_in_thread(tmp, groups=("billing",)))
        config = bridge_config(
            alipay_keys, [hub.address], max_body_bytes=MAX_BODY, publish_timeout=3.0
        )
        bridge = start_bridge(config, alipay_keys)
        stack.callback(bridge.stop)
        collector = stack.enter_context(subscribed(hub.address))
        target = FuzzTarget(bridge, hub, collector)
        yield target
        errors = bridge.metric("paynotify_bridge_requests_total", outcome="error")
        if errors:
            FIGURES.failed(
                "crashes", f"the bridge answered {errors:g} requests 503 UNKNOWN_EXCEPTION"
            )
        assert errors == 0, "the bridge took its unexpected-exception path"
        target.assert_deliveries_came_from_accepted_requests()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A longer run (PAYNOTIFY_FUZZ_EXAMPLES) lifts the suite's 120 s per-test timeout."""
    if not os.environ.get(EXAMPLES_ENV, "").strip():
        return
    for item in items:
        if item.nodeid.startswith("tests/fuzz/"):
            item.add_marker(pytest.mark.timeout(LONG_RUN_TIMEOUT))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FIGURES.inputs:
        return
    terminalreporter.write_sep("=", "paynotify fuzz figures (docs/fuzzing.md)")
    for line in FIGURES.summary_lines():
        terminalreporter.write_line(line)
    FIGURES.write_report()
