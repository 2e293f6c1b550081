"""Full-size SDXL and Flux.1 schnell with random weights, for bench/gpu.py's family cases.

The architectures come from the configs in ``bench/configs/sdxl`` and ``bench/configs/flux-schnell`` (as
their hub repos publish them); nothing is downloaded, and random weights cost the same compute as trained
ones. Each component is built on the device directly in its precision (no float32 copy of Flux's 12 B
transformer on the way), then the pipeline is saved as a diffusers folder that sdbot loads as users do.
Tokenizers: CLIP's layout at CLIP's size (the caller's ``clip_tokenizer``); for the T5, the tests' small
Unigram tokenizer: its ids fit T5's vocabulary, and the pipeline pads every prompt to its window, so which
ids a prompt gets changes nothing of the compute.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
)

from tests.tiny_models.text import t5_tokenizer

CONFIGS = Path(__file__).resolve().parent / "configs"

ClipTokenizerFactory = Callable[[int], CLIPTokenizer]


def build_sdxl(
    folder: Path, device: torch.device, dtype: torch.dtype, clip_tokenizer: ClipTokenizerFactory
) -> Path:
    """Save SDXL base (UNet 2.6 B, CLIP ViT-L and OpenCLIP ViT-bigG, the SDXL VAE) into ``folder``."""
    configs = CONFIGS / "sdxl"
    first, second = _json(configs / "text_encoder"), _json(configs / "text_encoder_2")
    with _building(device, dtype):
        pipe = StableDiffusionXLPipeline(
            vae=AutoencoderKL.from_config(AutoencoderKL.load_config(configs / "vae")),
            text_encoder=CLIPTextModel(CLIPTextConfig(**first)),
            text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**second)),
            tokenizer=clip_tokenizer(first["vocab_size"]),
            tokenizer_2=clip_tokenizer(second["vocab_size"]),
            unet=UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(configs / "unet")),
            scheduler=EulerDiscreteScheduler.from_config(
                EulerDiscreteScheduler.load_config(configs / "scheduler")
            ),
        )
    return _save(pipe, folder)


def build_flux_schnell(
    folder: Path, device: torch.device, dtype: torch.dtype, clip_tokenizer: ClipTokenizerFactory
) -> Path:
    """Save Flux.1 schnell (transformer 11.9 B, CLIP ViT-L, T5 v1.1 XXL, the 16-channel VAE) in ``folder``."""
    configs = CONFIGS / "flux-schnell"
    clip = _json(configs / "text_encoder")
    scheduler_config = FlowMatchEulerDiscreteScheduler.load_config(configs / "scheduler")
    with _building(device, dtype):
        pipe = FluxPipeline(
            transformer=FluxTransformer2DModel.from_config(
                FluxTransformer2DModel.load_config(configs / "transformer")
            ),
            scheduler=FlowMatchEulerDiscreteScheduler.from_config(scheduler_config),
            vae=AutoencoderKL.from_config(AutoencoderKL.load_config(configs / "vae")),
            text_encoder=CLIPTextModel(CLIPTextConfig(**clip)),
            tokenizer=clip_tokenizer(clip["vocab_size"]),
            text_encoder_2=T5EncoderModel(T5Config(**_json(configs / "text_encoder_2"))),
            tokenizer_2=t5_tokenizer(),
        )
    return _save(pipe, folder)


FULL_BUILDERS = {"sdxl": build_sdxl, "flux-schnell": build_flux_schnell}


@contextlib.contextmanager
def _building(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """Modules made inside are made on ``device`` in ``dtype`` (seeded: every run builds the same)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            torch.manual_seed(0)
            yield
    finally:
        torch.set_default_dtype(previous)


def _save(pipe: torch.nn.Module, folder: Path) -> Path:
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def _json(folder: Path) -> dict[str, object]:
    return json.loads((folder / "config.json").read_text(encoding="utf-8"))
