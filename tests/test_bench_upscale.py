"""bench/upscale.py stays runnable: its ``--tiny`` run prints a case line and a parseable last line."""

from __future__ import annotations

from tests.benches import fields, run_bench


def test_tiny_run_prints_each_tile_and_a_machine_readable_last_line() -> None:
    lines = run_bench("upscale.py", "--tiny", "--size", "64", "--tiles", "32", timeout=120)
    assert "64px -> 128px, tile 32:" in lines[0]
    figures = fields(lines[-1])
    assert set(figures) == {"tile32_peak_mib", "tile32_s"}
    assert float(figures["tile32_s"]) > 0
