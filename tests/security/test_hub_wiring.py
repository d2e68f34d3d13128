"""How create_server wires the admin service: registered, started and stopped with the hub."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from paynotify_hub import server as server_module
from tests.hubkit import running_hub


async def test_the_admin_service_starts_and_stops_with_the_hub(tmp_path: Path) -> None:
    async with running_hub(tmp_path) as hub:
        admin = hub.hub.admin
        assert admin is not None
        registry = hub.hub.metrics.registry
        deadline = time.monotonic() + 5
        while registry.get_sample_value("paynotify_hub_queue_depth", {"group": "billing"}) is None:
            assert time.monotonic() < deadline, "the admin gauges never refreshed"
            await asyncio.sleep(0.05)


class _StuckAdmin:
    """An admin service whose close never ends (as a refresh loop that missed its cancel)."""

    def start(self) -> None:
        pass

    async def close(self) -> None:
        await asyncio.Event().wait()


async def test_a_stuck_admin_close_does_not_hold_the_hubs_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(server_module, "ADMIN_CLOSE_TIMEOUT", 0.2)
    async with running_hub(tmp_path) as hub:
        real = hub.hub.admin
        assert real is not None
        await real.close()
        hub.hub.admin = _StuckAdmin()  # type: ignore[assignment]
        started = time.monotonic()
        with caplog.at_level(logging.WARNING):
            await asyncio.wait_for(hub.stop(), 10)
        assert time.monotonic() - started < 5
    assert "admin gauges did not stop" in caplog.text
