"""bench/lora.py stays runnable: a short run prints its figures and the parseable last line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_short_run_prints_the_queues_and_the_switch_figures() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "lora.py"), "--jobs", "2", "--rounds", "1", "--steps", "1"],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [dict(pair.split("=", 1) for pair in line.split()) for line in done.stdout.strip().splitlines()]
    assert lines[0]["loras"] == "2" and lines[0]["jobs"] == "2"
    assert all(
        float(lines[1][key]) > 0 for key in ("plain_ips", "after_ips", "alternating_ips", "lora_load_ms")
    )
    assert list(lines[-1]) == ["lora_ratio", "lora_switch_ms"]
    assert 0 < float(lines[-1]["lora_ratio"]) < 3 and float(lines[-1]["lora_switch_ms"]) > 0
