"""The fuzz run's figures, summed over the session and printed at its end (see `conftest.py`).

Every fuzz test counts each input it tries under a surface ("http", "parser", "grpc", ...) and
what became of it, and counts the failures the suite exists to find:

    crashes                an unexpected exception: a 503 UNKNOWN_EXCEPTION or 500, a dropped or
                           hung connection for a complete request, an undocumented exception from
                           pure code, a gRPC status outside the documented ones
    unexpected 5xx         any 5xx but the documented 503 PROCESS_FAIL (hub states)
    stored from rejected   a row in the hub's store (or a delivery) caused by a rejected request
    accepted unsigned      a 200 SUCCESS for a request that was not validly signed

A test still fails on the first such input (with the input in its message); the figures say how
much was tried around it. `PAYNOTIFY_FUZZ_EXAMPLES=N` runs every property with N examples instead
of its default (sized so that the folder stays well under 90 s inside `make test`), and
`PAYNOTIFY_FUZZ_REPORT=FILE` also writes the figures to FILE as JSON.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings

__all__ = ["EXAMPLES_ENV", "FIGURES", "REPORT_ENV", "Figures", "examples", "fuzz_settings"]

EXAMPLES_ENV = "PAYNOTIFY_FUZZ_EXAMPLES"
REPORT_ENV = "PAYNOTIFY_FUZZ_REPORT"
# The first few failures are kept verbatim for the summary.
_KEEP_FAILURES = 20


@dataclass
class Figures:
    inputs: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    crashes: int = 0
    unexpected_5xx: int = 0
    stored_from_rejected: int = 0
    accepted_unsigned: int = 0
    failures: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def tried(self, surface: str, outcome: str, count: int = 1) -> None:
        self.inputs[surface] += count
        self.outcomes[f"{surface}: {outcome}"] += count

    def failed(self, kind: str, description: str) -> None:
        """Count one failure of `kind` (an attribute above) and keep its description."""
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.failures) < _KEEP_FAILURES:
            self.failures.append(f"{kind}: {description[:500]}")

    @property
    def total(self) -> int:
        return sum(self.inputs.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "inputs_tried": self.total,
            "inputs_by_surface": dict(sorted(self.inputs.items())),
            "crashes": self.crashes,
            "unexpected_5xx": self.unexpected_5xx,
            "stored_from_rejected": self.stored_from_rejected,
            "accepted_unsigned": self.accepted_unsigned,
            "outcomes": dict(sorted(self.outcomes.items())),
            "failures": self.failures,
            "seconds": round(time.monotonic() - self.started, 1),
            "examples_setting": os.environ.get(EXAMPLES_ENV, "default"),
        }

    def summary_lines(self) -> list[str]:
        surfaces = ", ".join(f"{name} {n}" for name, n in sorted(self.inputs.items()))
        lines = [
            f"inputs tried: {self.total} ({surfaces})",
            f"crashes: {self.crashes}   unexpected 5xx: {self.unexpected_5xx}   "
            f"stored from rejected: {self.stored_from_rejected}   "
            f"accepted unsigned: {self.accepted_unsigned}",
            f"examples per property: {os.environ.get(EXAMPLES_ENV) or 'default'}",
            "outcomes:",
            *(f"  {n:7d}  {name}" for name, n in sorted(self.outcomes.items())),
        ]
        if self.failures:
            lines += ["failures (first ones):", *(f"  {f}" for f in self.failures)]
        return lines

    def write_report(self) -> None:
        target = os.environ.get(REPORT_ENV)
        if target:
            Path(target).write_text(json.dumps(self.as_dict(), indent=2) + "\n")


FIGURES = Figures()


def examples(default: int) -> int:
    """`default`, or the number of examples PAYNOTIFY_FUZZ_EXAMPLES asks for."""
    raw = os.environ.get(EXAMPLES_ENV, "").strip()
    if not raw:
        return default
    try:
        return max(1, int(raw))
    except ValueError:
        raise ValueError(f"{EXAMPLES_ENV}={raw!r}: expected a number of examples") from None


def fuzz_settings(default_examples: int) -> settings:
    """Hypothesis settings for a fuzz property: no per-example deadline (network round trips)."""
    return settings(
        max_examples=examples(default_examples),
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )
