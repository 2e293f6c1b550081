"""GPU speed benchmark: sdbot's engine against the diffusers notebook recipe, on the SD 1.5 architecture.

Builds Stable Diffusion v1.5 (UNet 320/640/1280/1280 with cross-attention 768, the SD VAE, the CLIP ViT-L/14
text encoder, the safety checker) with random weights from the configs in ``bench/configs/sd15`` (nothing is
downloaded; random weights cost the same compute as trained ones), saves it as a diffusers folder and loads it
the way users do. In one run, at 512x512 and 50 steps, it measures:

- ``notebook``: the recipe users copy from the diffusers notebook: ``StableDiffusionPipeline`` with fp16
  weights, moved to the GPU, called under ``torch.autocast("cuda")`` with default settings, one image;
- ``sdbot``: ``load_engine`` with sdbot's default settings, one request (with the progress and cancel
  callbacks the worker passes);
- ``compiled``: the same with ``compile=True`` (``load_engine`` runs its own warm-up);
- ``batch4`` and ``batch4_compiled``: four requests in one ``engine.run`` call, as the queue batches
  them;
- ``sdxl``/``sdxl_batch4`` and ``flux``/``flux_batch4``: sdbot's engine on full-size SDXL (1024x1024, 30
  steps) and Flux.1 schnell (1024x1024, 4 steps) with random weights (``bench/full_models.py``), checked by
  the standalone safety checker as sdbot checks them;
- ``switch``: both in one engine whose GPU budget (``SDBOT_GPU_MEMORY``) holds one of them, called
  alternately (1024x1024, 4 steps each): every call first parks the other model in CPU memory and brings its
  own back; ``switch_ms`` is the median of what that took (``Timings.switch``);
- ``lora``: SD 1.5 in sdbot's engine with two kohya-format LoRAs (rank 16, every attention projection of the
  UNet and text encoder), one request per call alternating between them (both loaded in the warm-up, as the
  engine keeps recently used LoRAs): its images/s against ``sdbot``'s is what LoRAs cost a queue that
  switches on every job, and ``switch_ms`` is the median LoRA switch (``Timings.loras``).

For each it prints ms per step (wall time of a call over its steps), images/s, peak VRAM, and for the SD 1.5
cases the ratio to the notebook and the fraction of the hardware limit: images/s times the work per image
(the UNet's CFG steps plus one VAE decode, counted with torch's FLOP counter on the real architecture: about
1.6 TFLOP a step and 2.5 TFLOP a decode at 512x512) over the GPU's dense fp16/bf16 peak. The last line is
machine-readable.

``load_s`` is the seconds to load (for the compiled engine, including its compile warm-up; the batch-4 shape
compiles in the case's own warm-up call). ``--tiny`` runs the same cases on the tests' tiny models (SD 1.x,
SDXL, Flux schnell) on a CPU in seconds (CI runs it so the script never rots). On a GPU: ``python
bench/gpu.py``; in a short session, the cases without compile first (``--only notebook,sdbot,batch4``), then
``--only compiled,batch4_compiled``, then ``--only sdxl,sdxl_batch4,flux,flux_batch4,switch`` (Flux needs
about 40 GB of GPU memory and 35 GB of disk for its saved folder).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# ``python bench/gpu.py`` puts bench/ first on the path, where a sibling script named like a standard module
# (bench/queue.py) would shadow it: search the repository root instead.
sys.path[:] = [str(ROOT)] + [entry for entry in sys.path if Path(entry or ".").resolve() != ROOT / "bench"]

import torch  # noqa: E402
from diffusers import (  # noqa: E402
    AutoencoderKL,
    PNDMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker  # noqa: E402
from diffusers.utils import logging as diffusers_logging  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402
from transformers import CLIPConfig, CLIPImageProcessor, CLIPTextConfig, CLIPTextModel, CLIPTokenizer  # noqa: E402
from transformers.convert_slow_tokenizer import bytes_to_unicode  # noqa: E402
from transformers.utils import logging as transformers_logging  # noqa: E402

from bench.full_models import FULL_BUILDERS  # noqa: E402
from sdbot.config import Settings  # noqa: E402
from sdbot.inference.engine import DiffusersEngine, load_engine  # noqa: E402
from sdbot.inference.types import EngineRequest, Operation, Progress, default_model  # noqa: E402
from sdbot.library import ModelEntry, ModelLibrary  # noqa: E402
from sdbot.params import JobParams  # noqa: E402
from tests.tiny_loras import save_kohya_lora  # noqa: E402

CONFIGS = ROOT / "bench" / "configs" / "sd15"
SD15_CASES = ("notebook", "sdbot", "batch4", "compiled", "batch4_compiled")
CASES = (*SD15_CASES, "lora", "sdxl", "sdxl_batch4", "flux", "flux_batch4", "switch")
LORA_RANK = 16
PROMPTS = (
    "a photo of an astronaut riding a horse on mars",
    "a watercolor painting of a lighthouse at dawn",
    "a red fox in fresh snow, telephoto",
    "an isometric pixel art castle",
)
# Dense (no sparsity) fp16/bf16 tensor-core peak in TFLOP/s, from the vendor's data sheets. Matched as a
# substring of the lower-cased device name, in this order ("h100 pcie" before "h100", "a100" before "a10").
PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("h100 pcie", 756.0),
    ("h100 nvl", 835.0),
    ("h100", 989.0),
    ("h200", 989.0),
    ("a100", 312.0),
    ("l40s", 362.0),
    ("l40", 181.0),
    ("l4", 121.0),
    ("a10g", 125.0),
    ("a10", 125.0),
    ("rtx 4090", 165.0),
    ("rtx 3090", 71.0),
    ("v100", 125.0),
    ("t4", 65.0),
)


@dataclass(frozen=True)
class Plan:
    """What one run measures: where, at what size, how often."""

    device: torch.device
    size: int
    steps: int
    reps: int
    peak_tflops: float | None
    tiny: bool


@dataclass(frozen=True)
class FamilyBench:
    """A family case: the model (a ``tests.tiny_models`` name with ``--tiny``, else a ``bench/full_models``
    one), and its size and steps at full size."""

    model: str
    size: int
    steps: int


FAMILY_BENCHES = {
    "sdxl": FamilyBench("sdxl", 1024, 30),
    "flux": FamilyBench("flux-schnell", 1024, 4),
}


@dataclass(frozen=True)
class Measurement:
    case: str
    batch: int
    seconds: list[float]  # wall time of each timed call
    peak_vram_bytes: int | None
    load_seconds: float
    model: str = "sd15"
    steps: int | None = None  # None: the plan's
    switch_seconds: tuple[float, ...] = ()  # the timed calls' model switches

    @property
    def call_seconds(self) -> float:
        return statistics.median(self.seconds)

    @property
    def images_per_second(self) -> float:
        return self.batch / self.call_seconds


# --- the model -----------------------------------------------------------------------------------------


def build_sd15(folder: Path, device: torch.device) -> Path:
    """Save SD 1.5 with random weights into ``folder``: fp16 on a GPU (the notebook's ``revision="fp16"``).

    The weights are initialised on ``device`` (seconds on a GPU, where a CPU takes a minute for 1.3 B
    parameters) and freed again before anything is measured.
    """
    text_config = _read_json(CONFIGS / "text_encoder" / "config.json")
    with torch.device(device):
        torch.manual_seed(0)
        pipe = StableDiffusionPipeline(
            vae=AutoencoderKL.from_config(AutoencoderKL.load_config(CONFIGS / "vae")),
            text_encoder=CLIPTextModel(CLIPTextConfig(**text_config)),
            tokenizer=build_clip_tokenizer(text_config["vocab_size"]),
            unet=UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(CONFIGS / "unet")),
            scheduler=PNDMScheduler.from_config(PNDMScheduler.load_config(CONFIGS / "scheduler")),
            safety_checker=StableDiffusionSafetyChecker(
                CLIPConfig(**_read_json(CONFIGS / "safety_checker" / "config.json"))
            ),
            feature_extractor=CLIPImageProcessor(
                **_read_json(CONFIGS / "feature_extractor" / "preprocessor_config.json")
            ),
            requires_safety_checker=True,
        )
    pipe.to(dtype=torch.float16 if device.type == "cuda" else torch.float32)
    pipe.save_pretrained(folder, safe_serialization=True)
    del pipe
    _free_memory(device)
    return folder


def build_clip_tokenizer(vocab_size: int) -> CLIPTokenizer:
    """CLIP's byte-level BPE layout at CLIP's size, written offline (the real vocabulary is not reachable).

    As in CLIP: 256 byte tokens, the same 256 ending a word (``</w>``), merges up to ``vocab_size - 2``, then
    ``<|startoftext|>`` and ``<|endoftext|>`` as the last two ids. Which pairs are merged changes the ids a
    prompt gets, never the compute: the pipeline pads every prompt to 77 tokens.
    """
    alphabet = list(bytes_to_unicode().values())
    tokens = alphabet + [char + "</w>" for char in alphabet]
    pairs = list(itertools.islice(itertools.product(alphabet, alphabet), vocab_size - 2 - len(tokens)))
    tokens += [first + second for first, second in pairs] + ["<|startoftext|>", "<|endoftext|>"]
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file, merges_file = Path(tmp, "vocab.json"), Path(tmp, "merges.txt")
        vocab_file.write_text(json.dumps({token: i for i, token in enumerate(tokens)}), encoding="utf-8")
        merges_file.write_text(
            "#version: 0.2\n" + "".join(f"{first} {second}\n" for first, second in pairs), encoding="utf-8"
        )
        settings = _read_json(CONFIGS / "tokenizer" / "tokenizer_config.json")
        return CLIPTokenizer(str(vocab_file), str(merges_file), **settings)


def build_tiny(folder: Path) -> Path:
    """The tests' tiny SD pipeline (with a safety checker that flags nothing), for ``--tiny``."""
    from tests.tiny_models import build_tiny_model

    return build_tiny_model(folder, nsfw=False)


def build_family(name: str, folder: Path, plan: Plan) -> Path:
    """The model of a family case: the tests' tiny one with ``--tiny``, else full size in sdbot's precision
    for it on a GPU (float16 for SDXL, bfloat16 for Flux)."""
    model = FAMILY_BENCHES[name].model
    if plan.tiny:
        from tests.tiny_models import TINY_FAMILIES

        return TINY_FAMILIES[model](folder)
    dtype = torch.bfloat16 if name == "flux" else torch.float16
    built = FULL_BUILDERS[model](folder, plan.device, dtype, build_clip_tokenizer)
    _free_memory(plan.device)
    return built


def build_checker(folder: Path, plan: Plan) -> Path:
    """The standalone safety checker the family cases are checked by: the tests' tiny one with ``--tiny``,
    else SD's (CLIP ViT-L/14 vision) with random weights, laid out as its hub repo is."""
    if plan.tiny:
        from tests.tiny_models.parts import save_standalone_checker

        return save_standalone_checker(folder, flag_all=False)
    with torch.device(plan.device):
        checker = StableDiffusionSafetyChecker(
            CLIPConfig(**_read_json(CONFIGS / "safety_checker" / "config.json"))
        )
    checker.to(torch.float16).save_pretrained(folder, safe_serialization=True)
    CLIPImageProcessor(
        **_read_json(CONFIGS / "feature_extractor" / "preprocessor_config.json")
    ).save_pretrained(folder)
    return folder


def step_and_decode_flops(folder: Path, size: int) -> tuple[float, float]:
    """FLOPs of one CFG step of the UNet (batch 2) and of one VAE decode for the model saved in ``folder``.

    Counted by torch's FLOP counter on meta tensors: exact for the architecture and size, and free.
    """
    unet_config = UNet2DConditionModel.load_config(folder / "unet")
    vae_config = AutoencoderKL.load_config(folder / "vae")
    with torch.device("meta"), torch.no_grad():
        unet = UNet2DConditionModel.from_config(unet_config)
        vae = AutoencoderKL.from_config(vae_config)
        latent_side = size // 2 ** (len(vae.config.block_out_channels) - 1)
        latents = torch.empty(2, unet.config.in_channels, latent_side, latent_side)
        text = torch.empty(2, 77, unet.config.cross_attention_dim)
        with FlopCounterMode(display=False) as unet_counter:
            unet(latents, torch.tensor([500, 500]), encoder_hidden_states=text)
        with FlopCounterMode(display=False) as vae_counter:
            vae.decode(latents[:1])
    return float(unet_counter.get_total_flops()), float(vae_counter.get_total_flops())


# --- the cases -----------------------------------------------------------------------------------------


def measure(case: str, batch: int, run: Callable[[], None], plan: Plan, load_seconds: float) -> Measurement:
    """One warm-up call, then ``plan.reps`` timed, synchronised calls; peak VRAM is the timed calls'."""
    run()
    _synchronize(plan.device)
    if plan.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(plan.device)
    seconds = []
    for _ in range(plan.reps):
        started = time.perf_counter()
        run()
        _synchronize(plan.device)
        seconds.append(time.perf_counter() - started)
    peak = torch.cuda.max_memory_allocated(plan.device) if plan.device.type == "cuda" else None
    return Measurement(case, batch, seconds, peak, load_seconds)


def measure_notebook(folder: Path, plan: Plan) -> Measurement:
    """The notebook recipe: fp16 weights, ``.to("cuda")``, ``autocast``, default settings, one image."""
    started = time.perf_counter()
    dtype = torch.float16 if plan.device.type == "cuda" else torch.float32
    pipe = StableDiffusionPipeline.from_pretrained(folder, torch_dtype=dtype).to(plan.device)
    pipe.set_progress_bar_config(disable=True)
    load_seconds = time.perf_counter() - started

    def run() -> None:
        with torch.autocast(plan.device.type):
            output = pipe(PROMPTS[0], height=plan.size, width=plan.size, num_inference_steps=plan.steps)
        _expect_images("notebook", len(output.images), 1)

    return measure("notebook", 1, run, plan, load_seconds)


def measure_engine(
    folder: Path, plan: Plan, *, compiled: bool, cases: Sequence[str]
) -> Iterator[Measurement]:
    """Load sdbot's engine once (defaults, or ``compile=True``) and run the batch-1 and batch-4 cases on it.

    Yields each case as it is measured, so a run cut short still printed what it finished.
    """
    single_case, batch_case = ("compiled", "batch4_compiled") if compiled else ("sdbot", "batch4")
    if single_case not in cases and batch_case not in cases:
        return
    started = time.perf_counter()
    engine = load_engine(Settings(model=str(folder), device=plan.device.type, compile=compiled))
    load_seconds = time.perf_counter() - started
    for case, batch in ((single_case, 1), (batch_case, 4)):
        if case in cases:
            call = _engine_call(engine, batch, plan.size, plan.steps)
            yield measure(case, batch, call, plan, load_seconds)


def measure_lora(folder: Path, tmp: Path, plan: Plan) -> Measurement:
    """SD 1.5 with two LoRAs, calls alternating between them (see the module's docstring)."""
    started = time.perf_counter()
    engine = load_engine(Settings(model=str(folder), device=plan.device.type, lora_dir=tmp / "loras"))
    load_seconds = time.perf_counter() - started
    pipe = engine.runner(default_model(engine)).model.text_to_image
    for seed, name in enumerate(("a", "b")):
        save_kohya_lora(pipe, tmp / "loras" / f"{name}.safetensors", seed=seed, rank=LORA_RANK)
    switches: list[float] = []
    calls = [
        _engine_call(engine, 1, plan.size, plan.steps, loras=((name, 0.8),), switches=switches)
        for name in "ab"
    ]
    for call in calls:  # both loaded before the timed calls
        call()
    switches.clear()
    alternating = itertools.cycle(calls)
    measured = measure("lora", 1, lambda: next(alternating)(), plan, load_seconds)
    timed = switches[1:]  # the warm-up call's is not one of the timed calls'
    return replace(measured, switch_seconds=tuple(timed))


def measure_family(
    name: str, folder: Path, checker: Path, plan: Plan, cases: Sequence[str]
) -> Iterator[Measurement]:
    """sdbot's engine on one family's model (checked by the standalone checker in ``checker``), at batch 1 and
    batch 4, in the family's size and steps (the plan's with ``--tiny``)."""
    bench = FAMILY_BENCHES[name]
    size, steps = _family_size_and_steps(bench, plan)
    started = time.perf_counter()
    library = ModelLibrary((ModelEntry(bench.model, str(folder)),), bench.model)
    engine = load_engine(Settings(device=plan.device.type, safety_checker=str(checker)), library)
    load_seconds = time.perf_counter() - started
    for case, batch in ((name, 1), (f"{name}_batch4", 4)):
        if case in cases:
            call = _engine_call(engine, batch, size, steps, bench.model)
            yield replace(measure(case, batch, call, plan, load_seconds), model=bench.model, steps=steps)


def measure_switch(folders: dict[str, Path], checker: Path, plan: Plan) -> Measurement:
    """SDXL and Flux schnell in one engine with room on the GPU for one: calls alternate between them, so each
    first parks the other model in CPU memory and brings its own back."""
    steps = FAMILY_BENCHES["flux"].steps if not plan.tiny else plan.steps
    size = FAMILY_BENCHES["flux"].size if not plan.tiny else plan.size
    entries = tuple(ModelEntry(FAMILY_BENCHES[case].model, str(folders[case])) for case in ("sdxl", "flux"))
    names = [entry.name for entry in entries]
    library = ModelLibrary(entries, names[0])
    budget = max(_weights_on_disk(folders[case]) for case in folders)  # one fits, both do not
    started = time.perf_counter()
    settings = Settings(device=plan.device.type, safety_checker=str(checker), gpu_memory=budget)
    engine = load_engine(settings, library)
    load_seconds = time.perf_counter() - started
    switches: list[float] = []
    # the second model first: it waits in CPU memory after loading, so every call switches
    calls = itertools.cycle([_engine_call(engine, 1, size, steps, name, switches) for name in names[::-1]])
    measured = measure("switch", 1, lambda: next(calls)(), plan, load_seconds)
    timed = switches[1:]  # the warm-up call's switch is not one of the timed calls'
    if len(timed) != plan.reps or not all(timed):
        raise RuntimeError(f"switch: expected a model switch in each of {plan.reps} calls, got {timed}")
    return replace(measured, model="+".join(names), steps=steps, switch_seconds=tuple(timed))


def _engine_call(
    engine: DiffusersEngine,
    batch: int,
    size: int,
    steps: int,
    model: str = "",
    switches: list[float] | None = None,
    loras: tuple[tuple[str, float], ...] = (),
) -> Callable[[], None]:
    """One ``engine.run`` call of ``batch`` requests of ``model`` (with ``loras``), with the callbacks the job
    worker passes; each call's switch (seconds: the model's, or with ``loras`` the LoRAs') goes to
    ``switches``."""
    requests = [
        EngineRequest(
            JobParams(
                prompt=PROMPTS[i],
                steps=steps,
                width=size,
                height=size,
                seed=1000 + i,
                model=model,
                loras=loras,
            )
        )
        for i in range(batch)
    ]
    reported: list[Progress] = []

    def on_progress(progress: Progress) -> None:
        reported.append(progress)
        if progress.make_previews is not None:  # the worker renders the previews it forwards: count them all
            progress.make_previews()

    def run() -> None:
        reported.clear()
        results = engine.run(Operation.GENERATE, requests, on_progress, should_cancel=lambda: False)
        _expect_images("sdbot", sum(len(result.images) for result in results), batch)
        if not reported or reported[-1].step != reported[-1].total:
            raise RuntimeError("sdbot: the engine did not report progress up to its last step")
        if switches is not None:
            timings = results[0].timings
            switches.append(timings.loras if loras else timings.switch)

    return run


def _family_size_and_steps(bench: FamilyBench, plan: Plan) -> tuple[int, int]:
    return (plan.size, plan.steps) if plan.tiny else (bench.size, bench.steps)


def _weights_on_disk(folder: Path) -> int:
    """Bytes of a saved model's weights (its safetensors files hold them in the precision it loads in)."""
    return sum(path.stat().st_size for path in folder.rglob("*.safetensors"))


# --- reporting -----------------------------------------------------------------------------------------


def peak_tflops_for(device: torch.device, override: float | None) -> float | None:
    """The device's dense fp16/bf16 peak: ``--peak-tflops`` if given, else looked up by the GPU's name."""
    if override is not None:
        return override
    return peak_tflops_by_name(torch.cuda.get_device_name(device)) if device.type == "cuda" else None


def peak_tflops_by_name(name: str) -> float | None:
    """The first entry of ``PEAK_TFLOPS`` whose key is part of the GPU's name, or None for an unknown GPU."""
    lowered = name.lower()
    return next((tflops for key, tflops in PEAK_TFLOPS if key in lowered), None)


def case_line(m: Measurement, notebook: Measurement | None, plan: Plan, flops_per_image: float) -> str:
    """One ``key=value`` line for a measured case (the notebook and the hardware's peak are SD 1.5's)."""
    sd15 = m.case in SD15_CASES
    fields = {
        "case": m.case,
        "model": m.model,
        "batch": m.batch,
        "ms_per_step": f"{m.call_seconds / (m.steps or plan.steps) * 1000:.2f}",
        "images_per_s": f"{m.images_per_second:.4f}",
        "switch_ms": _number(
            statistics.median(m.switch_seconds) * 1000 if m.switch_seconds else None, "{:.1f}"
        ),
        "peak_vram_mib": _number(None if m.peak_vram_bytes is None else m.peak_vram_bytes / 2**20, "{:.0f}"),
        "vs_notebook": _number(
            m.images_per_second / notebook.images_per_second if sd15 and notebook else None, "{:.3f}"
        ),
        "fraction_of_peak": _number(fraction_of_peak(m, plan, flops_per_image) if sd15 else None, "{:.4f}"),
        "load_s": f"{m.load_seconds:.1f}",
        "reps_s": ",".join(f"{s:.3f}" for s in m.seconds),
    }
    return " ".join(f"{key}={value}" for key, value in fields.items())


def summary_line(measurements: list[Measurement], plan: Plan, flops_per_image: float) -> str:
    """The machine-readable last line; ``n/a`` for cases not run (or a peak not known)."""
    ips = {m.case: m.images_per_second for m in measurements}
    switches = {m.case: m.switch_seconds for m in measurements}
    sdbot, base = ips.get("sdbot"), ips.get("notebook")
    fractions = [
        f
        for m in measurements
        if m.case in SD15_CASES and (f := fraction_of_peak(m, plan, flops_per_image)) is not None
    ]
    summary = {
        "notebook_ips": _number(base, "{:.4f}"),
        "sdbot_ips": _number(sdbot, "{:.4f}"),
        "compiled_ips": _number(ips.get("compiled"), "{:.4f}"),
        "batch4_ips": _number(ips.get("batch4"), "{:.4f}"),
        "batch4_compiled_ips": _number(ips.get("batch4_compiled"), "{:.4f}"),
        "speedup": _number(sdbot and base and sdbot / base, "{:.3f}"),
        "best_fraction_of_peak": _number(max(fractions, default=None), "{:.4f}"),
        "sdxl_ips": _number(ips.get("sdxl"), "{:.4f}"),
        "flux_ips": _number(ips.get("flux"), "{:.4f}"),
        "switch_ms": _median_ms(switches.get("switch")),
        "lora_ips": _number(ips.get("lora"), "{:.4f}"),
        "lora_ratio": _number(ips.get("lora") and sdbot and ips["lora"] / sdbot, "{:.3f}"),
        "lora_switch_ms": _median_ms(switches.get("lora")),
    }
    return " ".join(f"{key}={value}" for key, value in summary.items())


def _median_ms(seconds: Sequence[float] | None) -> str:
    return _number(statistics.median(seconds) * 1000 if seconds else None, "{:.1f}")


def fraction_of_peak(m: Measurement, plan: Plan, flops_per_image: float) -> float | None:
    """Achieved FLOP/s (images/s times the work per image) over the device's peak."""
    if not plan.peak_tflops:
        return None
    return m.images_per_second * flops_per_image / (plan.peak_tflops * 1e12)


def _number(value: float | None, template: str) -> str:
    return "n/a" if value is None else template.format(value)


# --- helpers -------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _expect_images(case: str, got: int, wanted: int) -> None:
    if got != wanted:
        raise RuntimeError(f"{case}: expected {wanted} images from one call, got {got}")


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tests' tiny model on the CPU, 64x64, 4 steps")
    parser.add_argument("--only", default=",".join(CASES), help=f"a comma-separated subset of {CASES}")
    parser.add_argument("--steps", type=int, help="denoising steps (default 50; 4 with --tiny)")
    parser.add_argument("--size", type=int, help="image side in pixels (default 512; 64 with --tiny)")
    parser.add_argument("--reps", type=int, help="timed calls per case after one warm-up (default 3; 2 tiny)")
    parser.add_argument(
        "--peak-tflops", type=float, help="the device's dense fp16/bf16 TFLOP/s (default: by name)"
    )
    parser.add_argument("--device", help="torch device (default cuda; cpu with --tiny)")
    args = parser.parse_args(argv)
    args.only = [case.strip() for case in args.only.split(",") if case.strip()]
    unknown = sorted(set(args.only) - set(CASES))
    if unknown or not args.only:
        parser.error(f"--only takes a comma-separated subset of {','.join(CASES)} (got {','.join(unknown)})")
    for name in ("steps", "size", "reps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be at least 1")
    if args.size is not None and args.size % 8:
        parser.error("--size must be a multiple of 8")
    return args


def measure_families(tmp: Path, plan: Plan, cases: Sequence[str]) -> Iterator[Measurement]:
    """The family cases and the switch case, each model built once (and freed before the next is built
    when the switch case does not need it)."""
    wanted = [name for name in FAMILY_BENCHES if {name, f"{name}_batch4"} & set(cases)]
    switch = "switch" in cases
    if not wanted and not switch:
        return
    checker = build_checker(tmp / "checker", plan)
    folders: dict[str, Path] = {}
    for name in FAMILY_BENCHES:
        if name in wanted or switch:
            folders[name] = build_family(name, tmp / name, plan)
        if name in wanted:
            yield from measure_family(name, folders[name], checker, plan, cases)
            _free_memory(plan.device)
    if switch:
        yield measure_switch(folders, checker, plan)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    diffusers_logging.disable_progress_bar()  # loading and saving bars would bury the figures
    transformers_logging.disable_progress_bar()
    device = torch.device(args.device or ("cpu" if args.tiny else "cuda"))
    if args.tiny:
        # Tiny tensors gain nothing from a second thread, and on a busy CI box its barrier waits made calls
        # 5-20x slower and erratic.
        torch.set_num_threads(1)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA GPU here; use --tiny (or --device cpu)", file=sys.stderr)
        return 2
    plan = Plan(
        device=device,
        size=args.size or (64 if args.tiny else 512),
        steps=args.steps or (4 if args.tiny else 50),
        reps=args.reps or (2 if args.tiny else 3),
        peak_tflops=peak_tflops_for(device, args.peak_tflops),
        tiny=args.tiny,
    )
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    with tempfile.TemporaryDirectory(prefix="sdbot-bench-") as tmp:
        started = time.perf_counter()
        folder = Path(tmp, "model")
        if plan.tiny:
            build_tiny(folder)
        elif set(args.only) & set(SD15_CASES):
            build_sd15(folder, device)
        unet_step, vae_decode = step_and_decode_flops(folder if plan.tiny else CONFIGS, plan.size)
        flops_per_image = plan.steps * unet_step + vae_decode
        print(
            f"device={device_name.replace(' ', '_')} model={'tiny' if plan.tiny else 'sd15'} "
            f"size={plan.size}x{plan.size} steps={plan.steps} reps={plan.reps} "
            f"peak_tflops={_number(plan.peak_tflops, '{:g}')} unet_cfg_step_tflop={unet_step / 1e12:.4g} "
            f"vae_decode_tflop={vae_decode / 1e12:.4g} work_per_image_tflop={flops_per_image / 1e12:.4g} "
            f"build_s={time.perf_counter() - started:.1f} torch={torch.__version__}",
            flush=True,
        )
        measurements: list[Measurement] = []
        failed = False
        groups: list[tuple[str, Callable[[], Iterable[Measurement]]]] = [
            ("notebook", lambda: [measure_notebook(folder, plan)] if "notebook" in args.only else []),
            ("sdbot", lambda: measure_engine(folder, plan, compiled=False, cases=args.only)),
            ("compiled", lambda: measure_engine(folder, plan, compiled=True, cases=args.only)),
            ("lora", lambda: [measure_lora(folder, Path(tmp), plan)] if "lora" in args.only else []),
            ("families", lambda: measure_families(Path(tmp), plan, args.only)),
        ]
        for name, group in groups:
            try:
                for m in group():
                    measurements.append(m)
                    notebook = measurements[0] if measurements[0].case == "notebook" else None
                    print(case_line(m, notebook, plan, flops_per_image), flush=True)
            except Exception as error:  # a broken case must not cost a short GPU session the other figures
                failed = True
                print(f"group={name} error={type(error).__name__} (traceback on stderr)", flush=True)
                traceback.print_exc()
            _free_memory(device)  # the pipeline or engine went with the group's frame
    print(summary_line(measurements, plan, flops_per_image), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
