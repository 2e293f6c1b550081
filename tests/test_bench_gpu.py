"""bench/gpu.py stays runnable: its ``--tiny`` run on the CPU prints every case (SD 1.x, SDXL, Flux, a model
switch) and a parseable last line, and the full-size pieces it builds only on a GPU (configs, offline
tokenizer) are checked here on the CPU."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

from sdbot.errors import ModelLoadFailed
from tests.benches import ROOT, fields, run_bench

SCRIPT = ROOT / "bench" / "gpu.py"
CASE_KEYS = [
    "case",
    "model",
    "batch",
    "ms_per_step",
    "images_per_s",
    "switch_ms",
    "peak_vram_mib",
    "vs_notebook",
    "fraction_of_peak",
    "load_s",
    "reps_s",
]
SUMMARY_KEYS = [
    "notebook_ips",
    "sdbot_ips",
    "compiled_ips",
    "batch4_ips",
    "batch4_compiled_ips",
    "speedup",
    "best_fraction_of_peak",
    "sdxl_ips",
    "flux_ips",
    "switch_ms",
    "lora_ips",
    "lora_ratio",
    "lora_switch_ms",
]
SD15_CASES = ["notebook", "sdbot", "batch4", "compiled", "batch4_compiled"]
# the cases not compared with the notebook
OTHER_CASES = ["lora", "sdxl", "sdxl_batch4", "flux", "flux_batch4", "switch"]


@pytest.fixture(scope="module")
def gpu_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _restore_torch_threads() -> Iterator[None]:
    """``main(["--tiny", ...])`` sets one torch thread for its process: give the test session its own back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_tiny_run_prints_every_case_and_a_parseable_summary() -> None:
    lines = run_bench("gpu.py", "--tiny", "--peak-tflops", "1")
    header = fields(lines[0])
    assert header["model"] == "tiny" and header["size"] == "64x64" and header["steps"] == "4"
    assert float(header["work_per_image_tflop"]) > 0

    cases = {case["case"]: case for case in map(fields, lines[1:-1])}
    assert list(cases) == SD15_CASES + OTHER_CASES
    for name, case in cases.items():
        assert list(case) == CASE_KEYS
        assert case["batch"] == ("4" if "batch4" in name else "1")
        assert float(case["ms_per_step"]) > 0 and float(case["images_per_s"]) > 0
        assert case["peak_vram_mib"] == "n/a"  # a CPU has no VRAM to report
        assert len(case["reps_s"].split(",")) == 2
    for name in SD15_CASES:
        assert float(cases[name]["fraction_of_peak"]) > 0 and cases[name]["switch_ms"] == "n/a"
    for name in OTHER_CASES:  # the notebook and the peak's work per image are SD 1.5's
        assert cases[name]["vs_notebook"] == cases[name]["fraction_of_peak"] == "n/a"
    assert cases["notebook"]["vs_notebook"] == "1.000"
    assert float(cases["sdbot"]["vs_notebook"]) > 0
    assert [cases[name]["model"] for name in ("sdbot", "sdxl", "flux_batch4", "switch")] == [
        "sd15",
        "sdxl",
        "flux-schnell",
        "sdxl+flux-schnell",
    ]
    assert float(cases["switch"]["switch_ms"]) >= 0  # on a CPU device a switch moves nothing: about 0 ms
    assert cases["lora"]["model"] == "sd15" and float(cases["lora"]["switch_ms"]) > 0

    summary = fields(lines[-1])
    assert list(summary) == SUMMARY_KEYS
    values = {key: float(value) for key, value in summary.items()}
    assert values["sdbot_ips"] == pytest.approx(float(cases["sdbot"]["images_per_s"]), rel=1e-3)
    assert values["speedup"] == pytest.approx(values["sdbot_ips"] / values["notebook_ips"], rel=1e-2)
    best = max(float(cases[name]["fraction_of_peak"]) for name in SD15_CASES)
    assert values["best_fraction_of_peak"] == pytest.approx(best, rel=1e-3)
    assert values["sdxl_ips"] == pytest.approx(float(cases["sdxl"]["images_per_s"]), rel=1e-3)
    assert values["switch_ms"] == pytest.approx(float(cases["switch"]["switch_ms"]), abs=0.1)
    assert values["lora_ratio"] == pytest.approx(values["lora_ips"] / values["sdbot_ips"], rel=1e-2)
    assert values["lora_switch_ms"] == pytest.approx(float(cases["lora"]["switch_ms"]), abs=0.1)


def test_cases_not_run_and_an_unknown_peak_read_not_available(gpu_bench: ModuleType) -> None:
    assert gpu_bench.parse_args(["--only", "sdbot, batch4"]).only == ["sdbot", "batch4"]
    plan = gpu_bench.Plan(device=torch.device("cpu"), size=64, steps=2, reps=2, peak_tflops=None, tiny=True)
    sdbot = gpu_bench.Measurement("sdbot", 1, [0.5, 0.25], None, 1.0)
    line = gpu_bench.case_line(sdbot, None, plan, 1e9)
    assert fields(line)["vs_notebook"] == fields(line)["fraction_of_peak"] == "n/a"
    summary = fields(gpu_bench.summary_line([sdbot], plan, 1e9))
    assert summary["sdbot_ips"] == "2.6667"  # one image per call, calls took a median 0.375 s
    assert {key for key, value in summary.items() if value == "n/a"} == set(SUMMARY_KEYS) - {"sdbot_ips"}


def test_full_size_family_configs_have_the_published_sizes() -> None:
    """SDXL's UNet has 2.57 B parameters and its second text encoder (OpenCLIP bigG) 695 M; Flux's transformer
    11.9 B and its T5 v1.1 XXL encoder 4.76 B (counted on meta tensors: nothing is allocated)."""
    from diffusers import FluxTransformer2DModel, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    from bench.full_models import CONFIGS

    def billions(module: torch.nn.Module) -> float:
        return sum(parameter.numel() for parameter in module.parameters()) / 1e9

    def config(path: Path) -> dict[str, object]:
        return json.loads((path / "config.json").read_text(encoding="utf-8"))

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config(CONFIGS / "sdxl" / "unet"))
        bigg = CLIPTextModelWithProjection(CLIPTextConfig(**config(CONFIGS / "sdxl" / "text_encoder_2")))
        flux = FluxTransformer2DModel.from_config(config(CONFIGS / "flux-schnell" / "transformer"))
        t5 = T5EncoderModel(T5Config(**config(CONFIGS / "flux-schnell" / "text_encoder_2")))
    assert billions(unet) == pytest.approx(2.567, abs=0.005)
    assert billions(bigg) == pytest.approx(0.695, abs=0.005)
    assert billions(flux) == pytest.approx(11.90, abs=0.02)
    assert billions(t5) == pytest.approx(4.76, abs=0.01)


def test_a_failing_case_is_reported_and_the_others_still_measured(
    gpu_bench: ModuleType, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_engine(settings: object) -> None:
        raise ModelLoadFailed("no such model")

    monkeypatch.setattr(gpu_bench, "load_engine", broken_engine)
    assert gpu_bench.main(["--tiny", "--only", "notebook,sdbot", "--steps", "1", "--reps", "1"]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert fields(lines[1])["case"] == "notebook"
    assert lines[2] == "group=sdbot error=ModelLoadFailed (traceback on stderr)"
    summary = fields(lines[-1])
    assert float(summary["notebook_ips"]) > 0 and summary["sdbot_ips"] == "n/a"


def test_unknown_case_is_refused_with_the_allowed_names(
    gpu_bench: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        gpu_bench.parse_args(["--only", "sdbot,turbo"])
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert "turbo" in error and "batch4_compiled" in error


def test_sd15_configs_cost_what_sd15_is_known_to_cost(gpu_bench: ModuleType) -> None:
    unet_step, vae_decode = gpu_bench.step_and_decode_flops(gpu_bench.CONFIGS, 512)
    assert unet_step / 1e12 == pytest.approx(1.6, rel=0.02)  # one CFG step (batch 2) at 512x512
    assert vae_decode / 1e12 == pytest.approx(2.5, rel=0.02)


def test_offline_tokenizer_has_clips_layout(gpu_bench: ModuleType) -> None:
    tokenizer = gpu_bench.build_clip_tokenizer(49408)
    assert len(tokenizer) == 49408
    assert tokenizer.bos_token_id == 49406 and tokenizer.eos_token_id == 49407
    ids = tokenizer("a photo of an astronaut", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77 and ids[0] == 49406 and max(ids) < 49408


def test_peak_is_looked_up_by_the_most_specific_gpu_name(gpu_bench: ModuleType) -> None:
    expected = {
        "NVIDIA H100 PCIe": 756.0,
        "NVIDIA H100 80GB HBM3": 989.0,
        "NVIDIA H200": 989.0,
        "NVIDIA A100-SXM4-80GB": 312.0,
        "NVIDIA A10G": 125.0,
        "NVIDIA L40S": 362.0,
        "NVIDIA L4": 121.0,
        "NVIDIA GeForce RTX 4090": 165.0,
        "Tesla T4": 65.0,
        "Mystery Accelerator 9000": None,
    }
    assert {name: gpu_bench.peak_tflops_by_name(name) for name in expected} == expected
