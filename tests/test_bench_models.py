"""bench/models.py stays runnable: a short run prints both modes and the parseable last line. ``run_bench``
runs any CPU benchmark so."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_bench(script: str, *args: str) -> list[dict[str, str]]:
    """Run ``bench/<script>`` with ``args``; each printed line as its ``key=value`` pairs."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [dict(pair.split("=", 1) for pair in line.split()) for line in done.stdout.strip().splitlines()]


def test_a_short_run_prints_each_mode_and_the_switch_figures() -> None:
    lines = run_bench("models.py", "--jobs", "4", "--rounds", "1", "--steps", "2")
    assert lines[0]["models"] == "2xsdxl-tiny" and lines[0]["jobs"] == "4"
    modes = {fields["mode"]: fields for fields in lines[1:-1]}
    assert list(modes) == ["parked", "dropped"]
    for fields in modes.values():
        assert int(fields["switches"]) == 3  # the alternating queue of four switches three times
        assert float(fields["one_model_ips"]) > 0 and float(fields["two_model_ips"]) > 0
    assert list(lines[-1]) == ["switch_ms", "two_model_ratio"]
    assert lines[-1]["switch_ms"] == modes["dropped"]["switch_ms"]
    assert float(lines[-1]["switch_ms"]) > 0 and 0 < float(lines[-1]["two_model_ratio"]) < 2
