"""bench/scale.py stays runnable: a short run with real workers behind a real redis-server prints every mode
and the parseable last line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.redis_server import redis_server_binary

ROOT = Path(__file__).resolve().parents[1]


def test_a_short_run_prints_each_mode_and_the_scale_figures() -> None:
    redis_server_binary()  # skips (fails in CI) without one
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "scale.py"), "--jobs", "4", "--rounds", "1", "--steps", "2"],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines[-6].startswith("simulated engine (no model)")
    assert [line.split(":")[0].strip() for line in lines[-5:-2]] == ["local", "1 worker", "2 workers"]
    figures = dict(pair.split("=", 1) for pair in lines[-1].split())
    assert list(figures) == ["scale_2x", "remote_overhead", "requeue_s"]
    assert float(figures["scale_2x"]) > 0 and 0 < float(figures["requeue_s"]) < 60
