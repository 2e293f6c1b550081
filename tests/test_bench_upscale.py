"""bench/upscale.py stays runnable: its ``--tiny`` run prints a case line and a parseable last line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_tiny_run_prints_each_tile_and_a_machine_readable_last_line() -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "upscale.py"), "--tiny", "--size", "64", "--tiles", "32"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    lines = run.stdout.strip().splitlines()
    assert "64px -> 128px, tile 32:" in lines[0]
    figures = dict(pair.split("=") for pair in lines[-1].split())
    assert set(figures) == {"tile32_peak_mib", "tile32_s"}
    assert float(figures["tile32_s"]) > 0
