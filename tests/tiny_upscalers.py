"""Tiny random-weight super-resolution models, saved the way users' files come: a Swin2SR folder (as
``save_pretrained`` writes it, like a hub repo) and ESRGAN-family files in Real-ESRGAN's key layout (as
BasicSR writes ``.pth`` files and 4x-UltraSharp ships ``.safetensors``), which spandrel detects by its keys.
"""

from __future__ import annotations

from pathlib import Path

import torch

# spandrel's RRDBNet always grows each dense block by 32 channels; the trunk's width is free.
ESRGAN_GROWTH = 32


def build_tiny_swin2sr(folder: Path, *, upscale: int = 2, seed: int = 0) -> Path:
    """A Swin2SR of two one-layer stages (embed_dim 16, window 8): a 64x64 picture in ~0.1 s on a CPU."""
    from transformers import Swin2SRConfig, Swin2SRForImageSuperResolution

    torch.manual_seed(seed)
    config = Swin2SRConfig(
        image_size=64,
        embed_dim=16,
        depths=[1, 1],
        num_heads=[2, 2],
        window_size=8,
        mlp_ratio=2.0,
        upscale=upscale,
    )
    Swin2SRForImageSuperResolution(config).eval().save_pretrained(folder)
    return folder


def tiny_esrgan_state_dict(*, scale: int = 4, width: int = 8, blocks: int = 1, seed: int = 0) -> dict:
    """An RRDBNet state dict in Real-ESRGAN's layout (``conv_first``, ``body.N.rdbM.convK``,
    ``conv_body``, ``conv_upN``, ``conv_hr``, ``conv_last``); ``scale`` 1 makes a restoration model."""
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}

    def conv(name: str, out_channels: int, in_channels: int) -> None:
        weight = torch.randn(out_channels, in_channels, 3, 3, generator=generator) * 0.05
        state[f"{name}.weight"] = weight
        state[f"{name}.bias"] = torch.zeros(out_channels)

    conv("conv_first", width, 3)
    for block in range(blocks):
        for dense in (1, 2, 3):
            prefix = f"body.{block}.rdb{dense}"
            for layer in range(1, 5):
                conv(f"{prefix}.conv{layer}", ESRGAN_GROWTH, width + (layer - 1) * ESRGAN_GROWTH)
            conv(f"{prefix}.conv5", width, width + 4 * ESRGAN_GROWTH)
    conv("conv_body", width, width)
    for step in range(1, {1: 0, 2: 1, 4: 2}[scale] + 1):
        conv(f"conv_up{step}", width, width)
    conv("conv_hr", width, width)
    conv("conv_last", 3, width)
    return state


def save_tiny_esrgan(path: Path, *, scale: int = 4) -> Path:
    """Write a tiny ESRGAN as ``.safetensors`` or ``.pth``, by ``path``'s suffix."""
    state = tiny_esrgan_state_dict(scale=scale)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path
