"""`python -m chaos.run`: the fault-injection suite (`make chaos`; docs/chaos.md).

    python -m chaos.run                          # full: SQLite (1 hub), then PostgreSQL (2 hubs)
    python -m chaos.run --mode sqlite --preset short
    python -m chaos.run --pg-restart             # also restart PostgreSQL in the multi-hub run

Exit status: 0 when every mode run passed, 1 when one failed (lost, violations, anomalies, ...),
2 for bad flags or a setup that could not start.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType

from chaos.config import ENV_PG_RESTART, MODES, PRESETS, RunSettings, preset
from chaos.faults import FAULT_KINDS
from chaos.harness import SetupError, run_mode
from chaos.report import render, save
from chaos.verify import Figures

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    description = (__doc__ or "").splitlines()[0]
    parser = argparse.ArgumentParser(prog="python -m chaos.run", description=description)
    add = parser.add_argument
    add("--mode", choices=[*MODES, "both"], default="both")
    add("--preset", choices=sorted(PRESETS), default="full")
    add("--notifications", type=int, help="distinct notifications per mode")
    add(
        "--duplicates",
        type=float,
        dest="duplicate_fraction",
        help="share of notifications Alipay also sends a second time (0..1)",
    )
    add("--send-window", type=float, help="seconds over which the first sends are spread")
    add(
        "--schedule-span",
        type=float,
        help="real seconds Alipay's 24 h retry schedule is compressed into",
    )
    add("--fault-interval", type=_pair, help="MIN,MAX seconds between faults")
    add("--max-faults", type=int)
    add("--max-seconds", type=float, help="time bound of the sending phase per mode")
    add(
        "--faults",
        type=_kinds,
        dest="fault_kinds",
        help=f"comma-separated fault kinds (default all: {','.join(FAULT_KINDS)})",
    )
    add(
        "--pg-restart",
        action="store_true",
        default=None,
        help=f"restart PostgreSQL in the multi-hub run (also {ENV_PG_RESTART}=1)",
    )
    add(
        "--require-postgres",
        action="store_true",
        help="fail (instead of skipping) when PostgreSQL is not reachable",
    )
    add("--postgres-dsn")
    add("--seed", type=int)
    add(
        "--hub-arg",
        action="append",
        dest="hub_args",
        metavar="FLAG",
        help="extra flag for every `paynotify hub` (repeatable; e.g. --hub-arg=--max-attempts=3)",
    )
    add("--workdir", type=Path, help="where logs and stores go (default: a temporary folder)")
    add("--keep", action="store_true", help="keep the workdir even when every run passed")
    add("--json", type=Path, help="also write the figures as JSON here")
    return parser


def _pair(text: str) -> tuple[float, float]:
    low, _, high = text.partition(",")
    return float(low), float(high or low)


def _kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in FAULT_KINDS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown fault kind(s): {', '.join(unknown)}")
    return kinds


def _settings(args: argparse.Namespace, mode: str) -> RunSettings:
    names = (
        "notifications",
        "duplicate_fraction",
        "send_window",
        "schedule_span",
        "fault_interval",
        "max_faults",
        "max_seconds",
        "fault_kinds",
        "pg_restart",
        "postgres_dsn",
        "seed",
    )
    values = {n: getattr(args, n) for n in names}
    values["hub_args"] = tuple(args.hub_args) if args.hub_args else None
    return preset(args.preset, mode, **values)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through every finally: children are killed


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    modes = list(MODES) if args.mode == "both" else [args.mode]
    try:
        runs = [_settings(args, mode) for mode in modes]
    except ValueError as exc:
        print(f"chaos: {exc}", file=sys.stderr)
        return 2
    root = args.workdir or Path(tempfile.mkdtemp(prefix="paynotify-chaos-"))
    figures: list[Figures] = []
    status = 0
    for settings in runs:
        try:
            fig = run_mode(settings, root / settings.mode)
        except SetupError as exc:
            if settings.multi_hub and not args.require_postgres and "PostgreSQL" in str(exc):
                print(f"== chaos run: {settings.mode} -- SKIPPED: {exc}")
                continue
            print(f"chaos: {settings.mode} could not start: {exc}", file=sys.stderr)
            status = 2
            continue
        figures.append(fig)
        print(render(fig), flush=True)
        status = max(status, 0 if fig.passed else 1)
    if args.json:
        save(figures, args.json)
    save(figures, root / "figures.json")
    if status == 0 and not args.keep and args.workdir is None:
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"logs, stores and figures.json kept in {root}")
    return status


if __name__ == "__main__":
    sys.exit(main())
