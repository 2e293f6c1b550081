"""bench/e2e.py keeps running: the whole bot through the loopback Discord, in its smallest configuration.

It runs as users run it (a subprocess), and its figures are only checked for being there and well formed:
speed targets are the benchmark's to report, never a test's to assert.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAST_LINE = re.compile(
    r"e2e_ratio=(?P<ratio>\S+) ack_p99_ms=(?P<ack>\S+) lag_p99_ms=(?P<lag>\S+) rss_growth_mb=(?P<rss>\S+)"
)


def run_bench(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / "e2e.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_e2e_bench_runs_jobs_through_the_bot_and_prints_its_figures() -> None:
    done = run_bench("--users", "2", "--jobs", "2", "--rounds", "1", "--rss-jobs", "0")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    match = LAST_LINE.fullmatch(lines[-1])
    assert match is not None, lines[-1]
    ratio, ack, lag = (float(match[name]) for name in ("ratio", "ack", "lag"))
    assert ratio > 0 and ack > 0 and lag >= 0
    assert math.isnan(float(match["rss"]))  # --rss-jobs 0: not measured, and said so
    assert any(line.startswith("4 jobs (2 users x 2)") for line in lines)
