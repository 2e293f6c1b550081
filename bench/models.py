"""Model switching on the CPU: what a switch costs, and a queue alternating two models against a queue of one.

Two tiny SDXL pipelines (the same architecture, as two fine-tunes of one family are, so that only the
switching differs) in one engine whose budget holds one of them on the device at a time. Each mode runs
``--jobs`` text-to-image jobs alternating between the two models, and the same number on one model, in
paired rounds (one-model queue, then alternating; the one model is brought onto the device untimed first, so
the one-model queue never switches and the alternating one switches ``jobs - 1`` times), and compares their
images/s:

- ``parked``: the CPU budget holds the other model, so a switch moves models between the device and CPU
  memory. On a CPU device a move is bookkeeping only: this is the manager's own overhead (on a GPU,
  ``bench/gpu.py``'s switch case measures the copies).
- ``dropped``: a CPU budget of nothing, so a switch drops the other model and loads this one again from
  disk: what a switch costs when models do not fit in RAM.

Each mode's line gives the median switch (``Timings.switch`` of the calls that switched) and the ratio of
the alternating queue's images/s to the one-model queue's. The last line is the dropped mode's:
``switch_ms=<x> two_model_ratio=<y>``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# ``python bench/models.py`` puts bench/ first on the path, where bench/queue.py would shadow the standard
# module: search the repository root instead.
sys.path[:] = [str(ROOT)] + [entry for entry in sys.path if Path(entry or ".").resolve() != ROOT / "bench"]


from bench.tinybench import parse_queue_args, quiet_single_thread  # noqa: E402
from sdbot.config import Settings  # noqa: E402
from sdbot.inference.engine import DiffusersEngine, load_engine  # noqa: E402
from sdbot.inference.loading import model_size  # noqa: E402
from sdbot.inference.types import EngineRequest, Operation  # noqa: E402
from sdbot.library import ModelEntry, ModelLibrary  # noqa: E402
from sdbot.params import JobParams  # noqa: E402
from tests.tiny_models.sdxl import build_sdxl  # noqa: E402

MODES = {"parked": None, "dropped": 1}  # CPU budget in bytes (None: unbounded; 1: holds nothing)
# The tiny models' own precision and device; no safety checker (the hub's would be downloaded for nothing).
SETTINGS = Settings(device="cpu", dtype="float32", safety_checker=None)


def run_queue(
    engine: DiffusersEngine, models: Sequence[str], steps: int, size: int
) -> tuple[float, list[float]]:
    """Run one job per entry of ``models`` in order; the seconds taken and the switches' seconds."""
    switches = []
    started = time.perf_counter()
    for index, model in enumerate(models):
        params = JobParams("a photo of a cat", steps=steps, width=size, height=size, seed=index, model=model)
        [result] = engine.run(Operation.GENERATE, [EngineRequest(params)])
        if result.timings.switch > 0:
            switches.append(result.timings.switch)
    return time.perf_counter() - started, switches


def measure(
    library: ModelLibrary, budget: int, parked: int | None, args: argparse.Namespace
) -> dict[str, str]:
    engine = load_engine(replace(SETTINGS, gpu_memory=budget, cpu_memory=parked), library)
    names = library.names
    one_model = [names[0]] * args.jobs
    alternating = [names[index % 2] for index in range(args.jobs)]
    run_queue(engine, alternating[:2], args.steps, args.size)  # warm-up: both models have run once
    one_seconds, alternating_seconds, switches = [], [], []
    for _ in range(args.rounds):
        run_queue(engine, one_model[:1], args.steps, args.size)  # untimed: the one model onto the device
        one_seconds.append(run_queue(engine, one_model, args.steps, args.size)[0])
        seconds, switched = run_queue(engine, alternating, args.steps, args.size)
        alternating_seconds.append(seconds)
        switches.extend(switched)
    one_model_ips = args.jobs / statistics.median(one_seconds)
    two_model_ips = args.jobs / statistics.median(alternating_seconds)
    return {
        "switch_ms": f"{statistics.median(switches) * 1000:.2f}",
        "switches": str(len(switches)),
        "one_model_ips": f"{one_model_ips:.2f}",
        "two_model_ips": f"{two_model_ips:.2f}",
        "two_model_ratio": f"{two_model_ips / one_model_ips:.3f}",
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_queue_args(__doc__.splitlines()[0], argv, "paired rounds per mode")
    quiet_single_thread()
    with tempfile.TemporaryDirectory(prefix="sdbot-bench-models-") as tmp:
        entries = tuple(ModelEntry(name, str(build_sdxl(Path(tmp, name)))) for name in ("xl-a", "xl-b"))
        library = ModelLibrary(entries, "xl-a")
        unbounded = load_engine(SETTINGS, library)
        budget = model_size(unbounded.runner("xl-a").model)  # one model fits the device, two do not
        del unbounded
        print(
            f"models=2xsdxl-tiny model_mib={budget / 2**20:.1f} jobs={args.jobs} rounds={args.rounds} "
            f"steps={args.steps} size={args.size}x{args.size}",
            flush=True,
        )
        figures = {}
        for mode, parked in MODES.items():
            figures[mode] = measure(library, budget, parked, args)
            print(f"mode={mode} " + " ".join(f"{k}={v}" for k, v in figures[mode].items()), flush=True)
    dropped = figures["dropped"]
    print(f"switch_ms={dropped['switch_ms']} two_model_ratio={dropped['two_model_ratio']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
