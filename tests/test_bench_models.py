"""bench/models.py stays runnable: a short run prints both modes and the parseable last line."""

from __future__ import annotations

from tests.benches import fields, run_bench


def test_a_short_run_prints_each_mode_and_the_switch_figures() -> None:
    lines = [fields(line) for line in run_bench("models.py", "--jobs", "4", "--rounds", "1", "--steps", "2")]
    assert lines[0]["models"] == "2xsdxl-tiny" and lines[0]["jobs"] == "4"
    modes = {figures["mode"]: figures for figures in lines[1:-1]}
    assert list(modes) == ["parked", "dropped"]
    for figures in modes.values():
        assert int(figures["switches"]) == 3  # the alternating queue of four switches three times
        assert float(figures["one_model_ips"]) > 0 and float(figures["two_model_ips"]) > 0
    assert list(lines[-1]) == ["switch_ms", "two_model_ratio"]
    assert lines[-1]["switch_ms"] == modes["dropped"]["switch_ms"]
    assert float(lines[-1]["switch_ms"]) > 0 and 0 < float(lines[-1]["two_model_ratio"]) < 2
