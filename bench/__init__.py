"""`make bench`: the pipeline (bridge → hub → subscribers → SUCCESS) against the bare HTTP limit.

Entry point: ``python -m bench.run`` (see bench/README.md and docs/benchmark.md).
"""
