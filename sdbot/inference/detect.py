"""A loaded pipeline's family profile, and the sibling pipelines (image to image, inpainting) its family has.

The family follows from the pipeline's class, the way diffusers' ``auto_pipeline.py`` maps a class to its
siblings; within a class the config tells variants apart: Flux's ``guidance_embeds`` (dev embeds the guidance
scale, schnell is distilled to ignore it), SD 2.x's OpenCLIP conditioning (linear projections or 1024-wide
cross-attention in its UNet) and its scheduler's ``v_prediction`` (the 768-pixel models; the 512-pixel base
models predict noise). A family without a table entry gets its defaults from its pipeline's call signature.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from dataclasses import replace
from enum import StrEnum

from diffusers import DiffusionPipeline
from diffusers.pipelines.auto_pipeline import (
    AUTO_IMAGE2IMAGE_PIPELINES_MAPPING,
    AUTO_INPAINT_PIPELINES_MAPPING,
    _get_task_class,
)

from sdbot.inference import families
from sdbot.inference.families import CLIP_TOKENS, Family, FamilyProfile
from sdbot.inference.sources import pipeline_family

SD2_CROSS_ATTENTION = 1024  # OpenCLIP ViT-H's width (SD 2.x shares SD 1.x's pipeline, told apart by config)


class Task(StrEnum):
    """A pipeline made on a text-to-image pipeline's components."""

    IMAGE_TO_IMAGE = "image_to_image"
    INPAINT = "inpaint"


_TASK_MAPPINGS: dict[Task, OrderedDict[str, type[DiffusionPipeline]]] = {
    Task.IMAGE_TO_IMAGE: AUTO_IMAGE2IMAGE_PIPELINES_MAPPING,
    Task.INPAINT: AUTO_INPAINT_PIPELINES_MAPPING,
}


def sibling_class(pipe: DiffusionPipeline, task: Task) -> type[DiffusionPipeline] | None:
    """The pipeline class of ``pipe``'s family for ``task``, or None where the family has none."""
    return _get_task_class(_TASK_MAPPINGS[task], type(pipe).__name__, throw_error_if_not_exist=False)


def profile_from_pipeline(pipe: DiffusionPipeline) -> FamilyProfile:
    """The profile of a loaded text-to-image pipeline."""
    profile = _table_profile(pipe) or _signature_profile(pipe)
    return replace(
        profile,
        latent_channels=_latent_channels(pipe),
        image_to_image=sibling_class(pipe, Task.IMAGE_TO_IMAGE) is not None,
        inpaint=sibling_class(pipe, Task.INPAINT) is not None,
        pipeline=type(pipe).__name__,
    )


def _table_profile(pipe: DiffusionPipeline) -> FamilyProfile | None:
    match pipeline_family(type(pipe).__name__):
        case Family.SD1:
            unet = pipe.unet.config
            if not (unet.use_linear_projection or unet.cross_attention_dim == SD2_CROSS_ATTENTION):
                return families.SD1
            v_prediction = pipe.scheduler.config.get("prediction_type") == "v_prediction"
            return families.SD2 if v_prediction else families.SD2_BASE
        case Family.SDXL:
            return families.SDXL
        case Family.SD3:
            return families.SD3
        case Family.FLUX:
            return families.FLUX_DEV if pipe.transformer.config.guidance_embeds else families.FLUX_SCHNELL
    return None


def _signature_profile(pipe: DiffusionPipeline) -> FamilyProfile:
    """Defaults from the pipeline's own ``__call__`` signature (the values its authors chose), and the
    latent layout from its transformer: one whose input is four times the VAE's channels packs 2x2 patches."""
    parameters = inspect.signature(type(pipe).__call__).parameters

    def default(name: str) -> object:
        parameter = parameters.get(name)
        return None if parameter is None else parameter.default

    guidance_parameter = "guidance_scale"
    if default("guidance_scale") is None and "true_cfg_scale" in parameters:
        # Qwen-Image: its guidance_scale is for guidance-distilled models
        guidance_parameter = "true_cfg_scale"
    guidance = default(guidance_parameter)
    steps = default("num_inference_steps")
    tokens = default("max_sequence_length")
    tokenizer = getattr(pipe, "tokenizer", None)
    channels = _latent_channels(pipe)
    denoiser = getattr(pipe, "transformer", None)
    return families.other_profile(
        type(pipe).__name__.removesuffix("Pipeline"),
        default_steps=steps if isinstance(steps, int) else families.SD3.default_steps,
        default_guidance=float(guidance) if isinstance(guidance, int | float) else 0.0,
        negative_prompt="negative_prompt" in parameters,
        prompt_tokens=tokens
        if isinstance(tokens, int)
        else getattr(tokenizer, "model_max_length", CLIP_TOKENS),
        latent_channels=channels,
        packed_latents=denoiser is not None and denoiser.config.get("in_channels") == 4 * channels,
        image_to_image=False,
        inpaint=False,
        guidance_parameter=guidance_parameter,
    )


def _latent_channels(pipe: DiffusionPipeline) -> int:
    config = pipe.vae.config  # the video-style VAEs (Qwen-Image, Wan) call it ``z_dim``
    return int(config.get("latent_channels") or config.get("z_dim") or 0)
