"""Tiny SD 1.x and SD 2.x pipelines.

SD 1.x: a UNet with cross-attention to one CLIP text encoder, the four-channel VAE and (optionally) the SD
safety checker, as ``CompVis/stable-diffusion-v1-4`` ships. SD 2.x: the same layout with SD 2's markers, so
that it is told apart the way the real one is: linear projections in the UNet's transformers, a GELU text
encoder, a v-prediction scheduler and a 96-latent (768-pixel) sample size; like Stability's SD 2 repos it
ships no safety checker.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import DDIMScheduler, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel

from tests.tiny_models import parts
from tests.tiny_models.text import clip_text_encoder, clip_tokenizer

TEXT_DIM = 32


def build_tiny_model(folder: Path, *, nsfw: bool | None = False) -> Path:
    """Save a tiny SD 1.x pipeline into ``folder`` and return it.

    ``nsfw=True``: the safety checker flags every image; ``False``: none; ``None``: no checker at all.
    """
    safety_checker, feature_extractor = (None, None) if nsfw is None else parts.safety_checker(flag_all=nsfw)
    pipe = StableDiffusionPipeline(
        vae=parts.vae(4, scaling_factor=0.18215),
        text_encoder=clip_text_encoder(TEXT_DIM, 2),
        tokenizer=clip_tokenizer(),
        unet=_unet(sample_size=8, linear_projection=False),
        scheduler=PNDMScheduler(
            **parts.UNET_SCHEDULE, skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1
        ),
        safety_checker=safety_checker,
        feature_extractor=feature_extractor,
        requires_safety_checker=nsfw is not None,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    return Path(folder)


def build_sd2(folder: Path) -> Path:
    """Save a tiny SD 2.x (768, v-prediction) pipeline into ``folder``, without a safety checker."""
    pipe = StableDiffusionPipeline(
        vae=parts.vae(4, scaling_factor=0.18215),
        text_encoder=clip_text_encoder(TEXT_DIM, 2, hidden_act="gelu"),
        tokenizer=clip_tokenizer(),
        unet=_unet(sample_size=96, linear_projection=True),
        scheduler=DDIMScheduler(
            **parts.UNET_SCHEDULE,
            clip_sample=False,
            set_alpha_to_one=False,
            steps_offset=1,
            prediction_type="v_prediction",
        ),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    return Path(folder)


def _unet(*, sample_size: int, linear_projection: bool) -> UNet2DConditionModel:
    torch.manual_seed(0)
    return UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=8,
        norm_num_groups=8,
        use_linear_projection=linear_projection,
    )
