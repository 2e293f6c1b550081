"""LoRAs on the CPU: a queue alternating between two LoRAs against a queue with no LoRA, and a switch's cost.

A tiny SD 1.x model and two kohya-format LoRAs on all its attention projections (UNet and text encoder),
in the engine as the bot runs it. The queues advance a job at a time, in turn, so that a busy machine slows
them alike: a job with no LoRA on an engine that has never loaded one (``plain``), a job with no LoRA on
the engine whose adapters are loaded but off (``after``), and a job with one LoRA right after a job with
the other (``alternating``: every timed job switches). ``--rounds`` x ``--jobs`` jobs each; images/s are
from the median job. The LoRAs are loaded first, as the engine keeps recently used ones: a switch is then
``set_adapters`` only, and its cost is the median ``Timings.loras`` of the alternating jobs;
``lora_load_ms`` is a first use, which reads the file.

Last line: ``lora_ratio=<alternating / plain images/s> lora_switch_ms=<median switch>``."""

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
# ``python bench/lora.py`` puts bench/ first on the path, where bench/queue.py would shadow the standard
# module: search the repository root instead.
sys.path[:] = [str(ROOT)] + [entry for entry in sys.path if Path(entry or ".").resolve() != ROOT / "bench"]

from diffusers import StableDiffusionPipeline  # noqa: E402

from bench.tinybench import parse_queue_args, quiet_single_thread  # noqa: E402
from sdbot.config import Settings  # noqa: E402
from sdbot.inference.engine import DiffusersEngine, load_engine  # noqa: E402
from sdbot.inference.types import EngineRequest, Operation  # noqa: E402
from sdbot.library import ModelEntry, ModelLibrary  # noqa: E402
from sdbot.params import JobParams  # noqa: E402
from tests.tiny_loras import save_kohya_lora  # noqa: E402
from tests.tiny_models.sd import build_tiny_model  # noqa: E402

LORAS = ("ink", "grain")
# The tiny model's own precision and device; no safety checker (the hub's would be downloaded for nothing).
SETTINGS = Settings(device="cpu", dtype="float32", safety_checker=None)


def run_job(
    engine: DiffusersEngine, lora: str | None, seed: int, args: argparse.Namespace
) -> tuple[float, float]:
    """One text-to-image job (with ``lora`` at 0.8, or none): its seconds and its ``Timings.loras``."""
    params = JobParams(
        "a photo of a red cat",
        steps=args.steps,
        width=args.size,
        height=args.size,
        seed=seed,
        loras=() if lora is None else ((lora, 0.8),),
    )
    started = time.perf_counter()
    [result] = engine.run(Operation.GENERATE, [EngineRequest(params)])
    return time.perf_counter() - started, result.timings.loras


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_queue_args(__doc__.splitlines()[0], argv, "rounds")
    quiet_single_thread()
    with tempfile.TemporaryDirectory(prefix="sdbot-bench-lora-") as tmp:
        model = build_tiny_model(Path(tmp, "tiny-model"), nsfw=None)
        pipe = StableDiffusionPipeline.from_pretrained(model)
        for seed, name in enumerate(LORAS):
            save_kohya_lora(pipe, Path(tmp, "loras", f"{name}.safetensors"), seed=seed)
        library = ModelLibrary((ModelEntry("tiny", str(model)),), "tiny")
        plain = load_engine(SETTINGS, library)
        engine = load_engine(replace(SETTINGS, lora_dir=Path(tmp, "loras")), library)
        loads = [run_job(engine, name, 0, args)[1] for name in LORAS]  # first uses read the files
        run_job(plain, None, 0, args)  # warm-up
        # The three queues advance a job at a time, in turn, so that a busy machine slows them alike.
        plain_seconds, after_seconds, alternating_seconds, switches = [], [], [], []
        for index in range(args.rounds * args.jobs):
            plain_seconds.append(run_job(plain, None, index, args)[0])
            after_seconds.append(run_job(engine, None, index, args)[0])
            run_job(engine, LORAS[(index + 1) % 2], index, args)  # the other LoRA: the next job switches
            seconds, switch = run_job(engine, LORAS[index % 2], index, args)
            alternating_seconds.append(seconds)
            switches.append(switch)
    plain_ips, after_ips, alternating_ips = (
        1 / statistics.median(seconds) for seconds in (plain_seconds, after_seconds, alternating_seconds)
    )
    print(
        f"model=sd1-tiny loras=2 jobs={args.jobs} rounds={args.rounds} steps={args.steps} "
        f"size={args.size}x{args.size}",
        flush=True,
    )
    print(
        f"plain_ips={plain_ips:.2f} after_ips={after_ips:.2f} alternating_ips={alternating_ips:.2f} "
        f"lora_load_ms={statistics.median(loads) * 1000:.1f}",
        flush=True,
    )
    switch_ms = statistics.median(switches) * 1000
    print(f"lora_ratio={alternating_ips / plain_ips:.3f} lora_switch_ms={switch_ms:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
