"""Tiny SD3 and Flux pipelines: diffusion transformers over 16-channel latents, conditioned on CLIP and T5.

SD3: ``SD3Transformer2DModel`` (2x2 patches), two CLIP encoders with pooled projections and a T5. Flux:
``FluxTransformer2DModel`` over packed latents (each 2x2 patch of the 16 latent channels is one 64-wide
token), one CLIP encoder (pooled) and a T5; the "dev" variant embeds the guidance scale, "schnell" does not.
Their VAEs have SD3's and Flux's scaling and shift factors, and no quant convolutions, as the real ones.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)

from tests.tiny_models import parts
from tests.tiny_models.text import clip_text_encoder, clip_tokenizer, t5_encoder, t5_tokenizer

LATENT_CHANNELS = 16
TEXT_WIDTH = 32


def build_sd3(folder: Path) -> Path:
    """Save a tiny SD3 pipeline into ``folder``."""
    t5_tokens = t5_tokenizer()
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=128,
        patch_size=2,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=TEXT_WIDTH,
        pooled_projection_dim=2 * TEXT_WIDTH,  # both CLIP encoders' pooled outputs, side by side
        pos_embed_max_size=96,
    )
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=parts.vae(LATENT_CHANNELS, scaling_factor=1.5305, shift_factor=0.0609, quant_conv=False),
        text_encoder=clip_text_encoder(TEXT_WIDTH, 2, projection=True, hidden_act="gelu"),
        tokenizer=clip_tokenizer(),
        text_encoder_2=clip_text_encoder(TEXT_WIDTH, 2, projection=True, hidden_act="gelu"),
        tokenizer_2=clip_tokenizer(),
        text_encoder_3=t5_encoder(TEXT_WIDTH, len(t5_tokens)),
        tokenizer_3=t5_tokens,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    return Path(folder)


def build_flux(folder: Path, *, guidance: bool = False) -> Path:
    """Save a tiny Flux pipeline into ``folder``: "schnell"-like, or "dev"-like with ``guidance=True``."""
    t5_tokens = t5_tokenizer()
    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4 * LATENT_CHANNELS,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=TEXT_WIDTH,
        pooled_projection_dim=TEXT_WIDTH,
        guidance_embeds=guidance,
        axes_dims_rope=(4, 4, 8),
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    pipe = FluxPipeline(
        transformer=transformer,
        scheduler=scheduler,
        vae=parts.vae(LATENT_CHANNELS, scaling_factor=0.3611, shift_factor=0.1159, quant_conv=False),
        text_encoder=clip_text_encoder(TEXT_WIDTH, 2, hidden_act="gelu"),
        tokenizer=clip_tokenizer(),
        text_encoder_2=t5_encoder(TEXT_WIDTH, len(t5_tokens)),
        tokenizer_2=t5_tokens,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    return Path(folder)
