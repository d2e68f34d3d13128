"""The benchmark's verdicts: a ratio is taken against the baseline measured next to its point,
and a baseline that moved during the run is flagged (pure code: no processes)."""

from __future__ import annotations

from bench.measure import Point
from bench.report import Results, render, repeat_name
from bench.wrk import WrkResult


def point(name: str, ok_rps: float, kind: str = "pipeline", label: str = "pipeline") -> Point:
    seconds = 10.0
    success = int(ok_rps * seconds)
    wrk = WrkResult(
        connections=16, duration_s=seconds, requests=success, success=success, non_success_200=0,
        statuses={}, socket_errors={}, latency_ms={"p50": 5.0, "p99": 9.0}, wraps=0, late=0,
        max_lag_ms=0.0, consumed=success, cpu_s=0.1,
    )  # fmt: skip
    return Point(name, label, kind, wrk, {"bridge": 100.0, "hub": 100.0}, 0.0)


def verdict(results: Results, target_point: str) -> dict[str, object]:
    return next(v for v in results.verdicts() if v["point"] == target_point)


def test_without_a_pair_the_ratio_uses_the_first_baseline() -> None:
    results = Results({})
    results.add(point("bare@16", 1000, "bare", "bare limit"))
    results.add(point("pipeline@16", 600))
    v = verdict(results, "pipeline@16")
    assert (v["baseline"], v["value"], v["verdict"]) == ("bare@16", 0.6, "PASS")
    assert v["caveats"] == []


def test_a_paired_baseline_is_used_and_a_drift_is_flagged() -> None:
    results = Results({})
    results.add(point("bare@16", 1000, "bare", "bare limit"))
    results.add(point("pipeline@16", 300))
    results.add(point("bare@16 after pipeline@16", 500, "bare", "bare limit"))
    results.pairs["pipeline@16"] = "bare@16 after pipeline@16"
    v = verdict(results, "pipeline@16")
    # 300 / 500, not 300 / 1000: the machine was half as fast when the pipeline was measured.
    assert (v["baseline"], v["value"], v["verdict"]) == ("bare@16 after pipeline@16", 0.6, "PASS")
    assert v["caveats"] == ["bare@16 moved -50% during the run"]
    table = render(results)
    assert "bare limit, next to it" in table
    assert "60.0%" in table


def test_a_small_drift_is_not_a_caveat() -> None:
    results = Results({})
    results.add(point("bare@16", 1000, "bare", "bare limit"))
    results.add(point("duplicate@16", 700, "duplicate", "duplicates"))
    results.add(point("bare@16 after duplicate@16", 900, "bare", "bare limit"))
    results.pairs["duplicate@16"] = "bare@16 after duplicate@16"
    v = verdict(results, "duplicate@16")
    assert v["value"] == round(700 / 900, 4)
    assert v["verdict"] == "MISS"
    assert v["caveats"] == []


def test_postgres_is_compared_with_the_sqlite_pipeline_next_to_it() -> None:
    results = Results({})
    results.add(point("pipeline@16", 800))
    results.add(point("pipeline@16 before postgres", 400))
    results.add(point("postgres@16", 260, "postgres", "pipeline, PostgreSQL"))
    results.pairs["postgres@16"] = "pipeline@16 before postgres"
    v = verdict(results, "postgres@16")
    assert (v["value"], v["verdict"]) == (0.65, "PASS")
    assert v["caveats"] == ["pipeline@16 moved -50% during the run"]


def test_a_missing_point_is_not_run() -> None:
    results = Results({})
    results.add(point("bare@16", 1000, "bare", "bare limit"))
    assert verdict(results, "fanout16@16")["verdict"] == "NOT RUN"


def test_repeated_points_are_judged_by_the_median_of_their_ratios() -> None:
    """--repeat 3: each measurement against the bare point right after it; the verdict takes the
    median ratio, and the table shows every measurement with its neighbour."""
    results = Results({})
    results.add(point("bare@16", 1000, "bare", "bare limit"))
    for index, (rps, bare) in enumerate([(700, 1000), (900, 1000), (850, 1000)]):
        name = repeat_name("duplicate@16", index)
        results.add(point(name, rps, "duplicate", "duplicates"))
        results.add(point(f"bare@16 after {name}", bare, "bare", "bare limit"))
        results.pairs[name] = f"bare@16 after {name}"
    assert [p.name for p in results.repeats("duplicate@16")] == [
        "duplicate@16", "duplicate@16 #2", "duplicate@16 #3"
    ]  # fmt: skip
    v = verdict(results, "duplicate@16")
    assert v["repeats"] == [0.7, 0.9, 0.85]
    assert (v["value"], v["verdict"]) == (0.85, "PASS")  # the first alone (70%) would miss
    table = render(results)
    assert "duplicates, byte for byte #3" in table
    assert table.count("bare limit, next to it") == 3
    assert "median of 3: 70.0%, 90.0%, 85.0%" in table


def test_a_single_measurement_has_no_repeats() -> None:
    results = Results({})
    results.add(point("pipeline@16", 600))
    results.add(point("bare@16 after pipeline@16", 1000, "bare", "bare limit"))
    results.pairs["pipeline@16"] = "bare@16 after pipeline@16"
    v = verdict(results, "pipeline@16")
    assert "repeats" not in v and v["value"] == 0.6
