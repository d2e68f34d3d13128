"""bench.ab: the medians it reports, and the process that holds one side's pipeline (a real hub,
subscriber and bridge; wrk is not needed for either)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.ab import ROOT, Round, hold_command, read_ready, summarize
from bench.bodies import ensure_corpus, read_record
from bench.pipeline import post_raw

BOUND = 120.0


def round_(side: str, rps: float, p99: float, hub_us: float) -> Round:
    return Round(side, rps, p99 / 2, p99, 0, 0, {"hub": hub_us, "wrk": 50.0})


def test_medians_of_each_side_and_the_rounds_b_was_ahead() -> None:
    rounds = [
        round_("A", 100, 10, 900),
        round_("B", 120, 9, 800),
        round_("B", 90, 12, 850),
        round_("A", 95, 11, 950),
        round_("A", 300, 30, 1000),  # a fast moment of the machine: the median ignores it
        round_("B", 110, 8, 700),
    ]
    summary = summarize(rounds)
    assert summary["A"]["ok_rps"] == 100 and summary["B"]["ok_rps"] == 110
    assert summary["A"]["p99_ms"] == 11 and summary["B"]["p99_ms"] == 9
    assert summary["B"]["cpu_us_per_request"] == {"hub": 800, "wrk": 50.0}
    # n-th load of A against the n-th of B: 120 > 100, 90 < 95, 110 < 300
    assert (summary["b_ahead"], summary["pairs"]) == (1, 3)


def test_a_held_pipeline_answers_success_and_stops_when_its_input_closes(tmp_path: Path) -> None:
    corpus = ensure_corpus(tmp_path / "cache", 20, processes=1)
    cmd = hold_command(sys.executable, "T", 2, corpus)
    env = dict(os.environ, TMPDIR=str(tmp_path))  # where the side keeps its store and logs
    hold = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert hold.stdin is not None
        ready = read_ready(hold, BOUND)
        assert ready is not None, f"no READY line; exit code {hold.poll()}"
        assert sorted(ready["pids"]) == ["bridge", "hub", "subscriber"]
        assert len(ready["pids"]["subscriber"]) == 2
        status, body = post_raw(ready["url"], read_record(corpus, ready["cursor"]))
        assert status == 200 and b'"resultStatus":"S"' in body, body
        hold.stdin.close()
        assert hold.wait(BOUND) == 0
        for pid in (pid for pids in ready["pids"].values() for pid in pids):
            with pytest.raises(ProcessLookupError):  # every process it started is gone
                os.kill(pid, 0)
        assert not list(tmp_path.glob("paynotify-ab-*"))  # and so is its store
    finally:
        if hold.poll() is None:
            hold.kill()
            hold.wait()
