"""bench/scale.py stays runnable: a short run with real workers behind a real redis-server prints every mode
and the parseable last line."""

from __future__ import annotations

from tests.benches import fields, run_bench
from tests.redis_server import redis_server_binary


def test_a_short_run_prints_each_mode_and_the_scale_figures() -> None:
    redis_server_binary()  # skips (fails in CI) without one
    lines = run_bench("scale.py", "--jobs", "4", "--rounds", "1", "--steps", "2")
    assert lines[-6].startswith("simulated engine (no model)")
    assert [line.split(":")[0].strip() for line in lines[-5:-2]] == ["local", "1 worker", "2 workers"]
    figures = fields(lines[-1])
    assert list(figures) == ["scale_2x", "remote_overhead", "requeue_s"]
    assert float(figures["scale_2x"]) > 0 and 0 < float(figures["requeue_s"]) < 60
