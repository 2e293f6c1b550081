"""Running a benchmark as a user does (``python bench/<script>`` from the repository's root), for the tests
that keep each benchmark runnable. They check that the figures are there and well formed: speed targets
are the benchmarks' to report, never a test's to assert."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_bench(script: str, *args: str, timeout: float = 240) -> list[str]:
    """Run ``bench/<script>`` with ``args`` (offline, as the development machines are); its printed lines."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()


def fields(line: str) -> dict[str, str]:
    """A printed line's ``key=value`` pairs."""
    return dict(pair.split("=", 1) for pair in line.split())
