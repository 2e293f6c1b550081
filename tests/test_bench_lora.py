"""bench/lora.py stays runnable: a short run prints its figures and the parseable last line."""

from __future__ import annotations

from tests.benches import fields, run_bench


def test_a_short_run_prints_the_queues_and_the_switch_figures() -> None:
    lines = [fields(line) for line in run_bench("lora.py", "--jobs", "2", "--rounds", "1", "--steps", "1")]
    assert lines[0]["loras"] == "2" and lines[0]["jobs"] == "2"
    assert all(
        float(lines[1][key]) > 0 for key in ("plain_ips", "after_ips", "alternating_ips", "lora_load_ms")
    )
    assert list(lines[-1]) == ["lora_ratio", "lora_switch_ms"]
    assert 0 < float(lines[-1]["lora_ratio"]) < 3 and float(lines[-1]["lora_switch_ms"]) > 0
