"""Tiny LoRA and textual-inversion files for the tiny pipelines, written the way their trainers write them.

``save_kohya_lora`` writes kohya's format (what the web UI and most shared LoRAs use: ``lora_unet_*`` and
``lora_te_*`` keys with ``lora_down``/``lora_up``/``alpha``); ``save_diffusers_lora`` writes diffusers' own
through ``save_lora_weights`` (``unet.*``/``text_encoder.*`` keys with ``lora_A``/``lora_B``). Both put
random low-rank updates on every attention projection of the UNet and the text encoder(s), scaled so that
a tiny image changes visibly at weight 1. Each ``seed`` gives different updates.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import DiffusionPipeline
from safetensors.torch import save_file

RANK = 4
SCALE = 0.3


def _updates(
    model: torch.nn.Module, generator: torch.Generator, rank: int = RANK
) -> dict[str, tuple[torch.Tensor, ...]]:
    """Module name -> (down, up) for each attention projection of ``model``."""
    updates = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and "attn" in name:
            down = torch.randn(rank, module.in_features, generator=generator) * SCALE
            up = torch.randn(module.out_features, rank, generator=generator) * SCALE
            updates[name] = (down, up)
    return updates


def _encoders(pipe: DiffusionPipeline) -> dict[str, torch.nn.Module]:
    """The pipeline's text encoders by attribute name (``text_encoder``, and SDXL's ``text_encoder_2``)."""
    names = ("text_encoder", "text_encoder_2")
    return {name: getattr(pipe, name) for name in names if getattr(pipe, name, None) is not None}


def save_kohya_lora(
    pipe: DiffusionPipeline,
    path: Path,
    *,
    seed: int,
    metadata: dict[str, str] | None = None,
    rank: int = RANK,
) -> Path:
    generator = torch.Generator().manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    encoders = list(_encoders(pipe).values())
    # kohya calls SD's one text encoder ``te`` and SDXL's two ``te1`` and ``te2``, and names their modules
    # by the transformers-4 path, with its ``text_model`` level (transformers 5 keeps it only in SDXL's
    # second encoder)
    prefixes = (
        ["lora_te_text_model"] if len(encoders) == 1 else ["lora_te1_text_model", "lora_te2_text_model"]
    )
    state: dict[str, torch.Tensor] = {}
    for prefix, model in [("lora_unet", pipe.unet), *zip(prefixes, encoders, strict=True)]:
        for name, (down, up) in _updates(model, generator, rank).items():
            key = f"{prefix}_{name.removeprefix('text_model.').replace('.', '_')}"
            state[f"{key}.lora_down.weight"] = down
            state[f"{key}.lora_up.weight"] = up
            state[f"{key}.alpha"] = torch.tensor(float(rank))
    save_file(state, str(path), metadata=metadata)
    return path


def save_diffusers_lora(pipe: DiffusionPipeline, path: Path, *, seed: int) -> Path:
    generator = torch.Generator().manual_seed(seed)

    def layers(model: torch.nn.Module) -> dict[str, torch.Tensor]:
        state = {}
        for name, (down, up) in _updates(model, generator).items():
            state[f"{name}.lora_A.weight"] = down
            state[f"{name}.lora_B.weight"] = up
        return state

    encoders = {f"{name}_lora_layers": layers(encoder) for name, encoder in _encoders(pipe).items()}
    type(pipe).save_lora_weights(
        path.parent, unet_lora_layers=layers(pipe.unet), weight_name=path.name, **encoders
    )
    return path


def save_embedding(
    path: Path, width: int, vectors: int, *, seed: int, second_width: int | None = None
) -> Path:
    """A textual-inversion file as the web UI saves one (``emb_params``), or SDXL's ``clip_l``/``clip_g``
    pair when ``second_width`` is given."""
    generator = torch.Generator().manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    if second_width is None:
        state = {"emb_params": torch.randn(vectors, width, generator=generator)}
    else:
        state = {
            "clip_l": torch.randn(vectors, width, generator=generator),
            "clip_g": torch.randn(vectors, second_width, generator=generator),
        }
    save_file(state, str(path))
    return path
