"""Settings of one chaos run (one mode) and two presets: `full` (`make chaos`), `short` (tests).

The time scale follows from `schedule_span`: Alipay's 24 h 22 min of retries (0s, 2m, 10m, 10m, 1h,
2h, 6h, 15h) are compressed into that many real seconds.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Final

from paynotify_bridge.simulator import ALIPAY_RETRY_DELAYS

__all__ = [
    "DEFAULT_DSN",
    "ENV_DSN",
    "ENV_PG_RESTART",
    "MODES",
    "MODE_PRESETS",
    "PRESETS",
    "RunSettings",
    "preset",
]

MODES: Final = ("sqlite", "postgres")
ENV_DSN: Final = "PAYNOTIFY_TEST_POSTGRES_DSN"
ENV_PG_RESTART: Final = "PAYNOTIFY_TEST_PG_RESTART"
DEFAULT_DSN: Final = "postgresql://postgres@127.0.0.1:5432/test"


@dataclass(frozen=True)
class RunSettings:
    """Everything one mode's run needs; times in real seconds."""

    mode: str
    notifications: int
    send_window: float  # distinct notifications first sent evenly over this long
    schedule_span: float  # Alipay's whole retry schedule compressed into this long
    fault_window: float  # faults start within this long after sending starts
    fault_interval: tuple[float, float]
    max_faults: int
    max_seconds: float  # then the notifications still waiting get one last attempt
    duplicate_fraction: float = 0.25
    duplicate_delay: float = 10.0
    fault_kinds: tuple[str, ...] = ()  # empty: every kind the mode supports
    pg_restart: bool = False
    pg_restarts: int = 2
    workers: int = 48
    publish_timeout: float = 2.0
    ack_deadline: float = 2.0
    seed: int = 1
    postgres_dsn: str = DEFAULT_DSN
    hub_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode {self.mode!r}: use one of {', '.join(MODES)}")
        if self.notifications < 1 or self.send_window <= 0 or self.schedule_span <= 0:
            raise ValueError("notifications, send window and schedule span must be positive")
        if not 0 <= self.duplicate_fraction <= 1:
            raise ValueError("the duplicate fraction is between 0 and 1")
        low, high = self.fault_interval
        if not 0 < low <= high:
            raise ValueError("fault interval: 0 < MIN <= MAX")

    @property
    def time_scale(self) -> float:
        return sum(ALIPAY_RETRY_DELAYS) / self.schedule_span

    @property
    def multi_hub(self) -> bool:
        return self.mode == "postgres"

    @property
    def hubs(self) -> int:
        return 2 if self.multi_hub else 1

    @property
    def bridges(self) -> int:
        return 2 if self.multi_hub else 1

    @property
    def kinds(self) -> tuple[str, ...]:
        """The fault kinds this run injects."""
        wanted = self.fault_kinds or (
            "hub-kill",
            "subscriber-crash",
            "subscriber-restart",
            "bridge-kill",
            "pg-restart",
        )
        allowed_pg = self.multi_hub and self.pg_restart
        return tuple(k for k in wanted if k != "pg-restart" or allowed_pg)


PRESETS: Final[dict[str, dict[str, object]]] = {
    # `make chaos`: about 4 minutes per mode.
    "full": {
        "notifications": 3000,
        "send_window": 150.0,
        "schedule_span": 240.0,
        "fault_window": 150.0,
        "fault_interval": (3.0, 6.0),
        "max_faults": 60,
        "max_seconds": 200.0,
        "workers": 64,
    },
    # Inside `make test`: well under a minute per mode.
    "short": {
        "notifications": 200,
        "send_window": 15.0,
        "schedule_span": 40.0,
        "fault_window": 17.0,
        "fault_interval": (1.0, 2.5),
        "max_faults": 20,
        "max_seconds": 30.0,
        "workers": 32,
        "pg_restarts": 1,
        "duplicate_delay": 5.0,
    },
}


# Per mode: two hubs on PostgreSQL on a shared two-core machine did not keep up with 25 requests
# a second even without faults (p50 28 s); 2000 over the same window leave them headroom.
# Its ack round trips also reached seconds (each ack its own transaction), so members there ask
# for 5 s leases: with 2 s, a quarter of the acks came back STALE and were redelivered.
MODE_PRESETS: Final[dict[tuple[str, str], dict[str, object]]] = {
    ("full", "postgres"): {"notifications": 2000, "ack_deadline": 5.0},
    ("short", "postgres"): {"notifications": 150, "ack_deadline": 5.0},
}


def preset(name: str, mode: str, **overrides: object) -> RunSettings:
    """The preset's settings for `mode`, with `overrides` (None values ignored)."""
    values: dict[str, object] = {
        "mode": mode,
        **PRESETS[name],
        **MODE_PRESETS.get((name, mode), {}),
    }
    values["postgres_dsn"] = os.environ.get(ENV_DSN) or DEFAULT_DSN
    values["pg_restart"] = os.environ.get(ENV_PG_RESTART) == "1"
    values.update({k: v for k, v in overrides.items() if v is not None})
    names = {f.name for f in dataclasses.fields(RunSettings)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown settings: {', '.join(unknown)}")
    return RunSettings(**values)  # type: ignore[arg-type]
