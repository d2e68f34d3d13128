"""Coverage-guided fuzzing of the pure parser and verifier with atheris (see atheris_harness.py).

Optional: skipped with the reason when atheris is not installed (`pip install atheris`). It runs
in a subprocess for PAYNOTIFY_FUZZ_ATHERIS_SECONDS (default 5; 60 when PAYNOTIFY_FUZZ_EXAMPLES
asks for a longer run; at most 3600).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz.figures import EXAMPLES_ENV, FIGURES

HARNESS = Path(__file__).with_name("atheris_harness.py")
SECONDS_ENV = "PAYNOTIFY_FUZZ_ATHERIS_SECONDS"
DEFAULT_SECONDS = 5
LONG_SECONDS = 60
MAX_SECONDS = 3600

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("atheris") is None,
    reason="atheris is not installed (pip install atheris): the coverage-guided run of the "
    "parser and verifier is skipped; the hypothesis properties still ran",
)


def _seconds() -> int:
    given = os.environ.get(SECONDS_ENV, "").strip()
    if given:
        return max(1, min(int(given), MAX_SECONDS))
    return LONG_SECONDS if os.environ.get(EXAMPLES_ENV, "").strip() else DEFAULT_SECONDS


def test_atheris_finds_no_crash_in_parser_or_verifier(tmp_path: Path) -> None:
    corpus, artifacts = tmp_path / "corpus", tmp_path / "crashes"
    artifacts.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run(
        [sys.executable, str(HARNESS), "--seeds", str(corpus)], check=True, env=env, timeout=60
    )
    seconds = _seconds()
    args = [
        sys.executable, str(HARNESS), f"-max_total_time={seconds}", "-print_final_stats=1",
        "-timeout=10", "-rss_limit_mb=2048", f"-artifact_prefix={artifacts}/", str(corpus),
    ]  # fmt: skip
    done = subprocess.run(
        args, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=seconds + 120
    )
    output = done.stdout + done.stderr
    executed = re.search(r"stat::number_of_executed_units:\s*(\d+)", output)
    count = int(executed.group(1)) if executed else 0
    FIGURES.tried("atheris", "parser/verifier inputs", count)
    crashes = sorted(p.name for p in artifacts.iterdir())
    if done.returncode != 0 or crashes:
        FIGURES.failed("crashes", f"atheris: exit {done.returncode}, {crashes}")
    assert done.returncode == 0 and not crashes, output[-4000:]
    assert count > 0, output[-2000:]
