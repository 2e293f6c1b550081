"""Tiny components every family's test pipeline shares: the VAE, the scheduler settings of the UNet families,
and the SD safety checker (with its image processor) whose verdict a test forces.

Every VAE has four blocks, so it downsamples 8x like the real ones (with two, a 512² image means attention
over 256² latents: minutes on a CPU). The safety checker's score is cosine similarity minus its concept
weights: filling them with -10 flags every image, +10 none.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from transformers import CLIPConfig, CLIPImageProcessor

SAFETY_IMAGE_SIZE = 32
# The UNet families' noise schedule (SD 1.x, 2.x and XL all train on it).
UNET_SCHEDULE = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}


def vae(
    latent_channels: int, *, scaling_factor: float, shift_factor: float | None = None, quant_conv: bool = True
) -> AutoencoderKL:
    """A four-block VAE (8x downsampling). SD3 and Flux VAEs have 16 channels, a shift and no quant convs."""
    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=(8, 8, 16, 16),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=latent_channels,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=64,
        scaling_factor=scaling_factor,
        shift_factor=shift_factor,
        use_quant_conv=quant_conv,
        use_post_quant_conv=quant_conv,
    )


def safety_checker(*, flag_all: bool) -> tuple[StableDiffusionSafetyChecker, CLIPImageProcessor]:
    """The SD safety checker at toy size, flagging every image or none, and its image processor."""
    config = CLIPConfig(
        text_config={
            "hidden_size": 16,
            "intermediate_size": 37,
            "num_attention_heads": 2,
            "num_hidden_layers": 1,
        },
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 37,
            "num_attention_heads": 2,
            "num_hidden_layers": 1,
            "image_size": SAFETY_IMAGE_SIZE,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    torch.manual_seed(0)
    checker = StableDiffusionSafetyChecker(config)
    weight = -10.0 if flag_all else 10.0
    with torch.no_grad():
        checker.concept_embeds_weights.fill_(weight)
        checker.special_care_embeds_weights.fill_(weight)
    processor = CLIPImageProcessor(
        size={"shortest_edge": SAFETY_IMAGE_SIZE},
        crop_size={"height": SAFETY_IMAGE_SIZE, "width": SAFETY_IMAGE_SIZE},
    )
    return checker, processor


def save_standalone_checker(folder: Path, *, flag_all: bool) -> Path:
    """The checker laid out like the hub's ``CompVis/stable-diffusion-safety-checker`` repo: the model and
    its preprocessor config side by side in one folder."""
    checker, processor = safety_checker(flag_all=flag_all)
    checker.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
    return Path(folder)
