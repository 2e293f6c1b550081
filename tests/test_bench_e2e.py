"""bench/e2e.py keeps running: the whole bot through the loopback Discord, in its smallest configuration.

It runs as users run it (a subprocess), and its figures are only checked for being there and well formed:
speed targets are the benchmark's to report, never a test's to assert.
"""

from __future__ import annotations

import math
import re

from tests.benches import run_bench

LAST_LINE = re.compile(
    r"e2e_ratio=(?P<ratio>\S+) ack_p99_ms=(?P<ack>\S+) lag_p99_ms=(?P<lag>\S+) rss_growth_mb=(?P<rss>\S+)"
)


def test_e2e_bench_runs_jobs_through_the_bot_and_prints_its_figures() -> None:
    options = ("--users", "2", "--jobs", "2", "--rounds", "1", "--rss-jobs", "0")
    lines = run_bench("e2e.py", *options, timeout=120)
    match = LAST_LINE.fullmatch(lines[-1])
    assert match is not None, lines[-1]
    ratio, ack, lag = (float(match[name]) for name in ("ratio", "ack", "lag"))
    assert ratio > 0 and ack > 0 and lag >= 0
    assert math.isnan(float(match["rss"]))  # --rss-jobs 0: not measured, and said so
    assert any(line.startswith("4 jobs (2 users x 2)") for line in lines)
