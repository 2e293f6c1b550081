"""A tiny SDXL pipeline: two CLIP text encoders of different widths (the second with a pooled projection and
ten layers), a UNet with SDXL's text-time embedding, the four-channel VAE with SDXL's scaling factor.

The second encoder's ten layers and the two widths are what a single ``.safetensors`` file needs:
diffusers recognises an SDXL checkpoint by the tenth layer of the second encoder, and tells the two
encoders apart by their widths.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

from tests.tiny_models import parts
from tests.tiny_models.text import clip_text_encoder, clip_tokenizer

TEXT_WIDTHS = (32, 48)
SECOND_ENCODER_LAYERS = 10
TIME_EMBED_DIM = 8


def build_sdxl(folder: Path) -> Path:
    """Save a tiny SDXL pipeline (no safety checker, as SDXL ships none) into ``folder``."""
    first, second = TEXT_WIDTHS
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=128,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_EMBED_DIM,
        # six size/crop numbers, each embedded, plus the second encoder's pooled projection
        projection_class_embeddings_input_dim=6 * TIME_EMBED_DIM + second,
        cross_attention_dim=first + second,
        norm_num_groups=8,
    )
    pipe = StableDiffusionXLPipeline(
        vae=parts.vae(4, scaling_factor=0.13025),
        text_encoder=clip_text_encoder(first, 2),
        text_encoder_2=clip_text_encoder(second, SECOND_ENCODER_LAYERS, projection=True, hidden_act="gelu"),
        tokenizer=clip_tokenizer(),
        tokenizer_2=clip_tokenizer(),
        unet=unet,
        scheduler=EulerDiscreteScheduler(**parts.UNET_SCHEDULE, steps_offset=1, timestep_spacing="leading"),
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    return Path(folder)
