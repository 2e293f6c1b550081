"""Which family a single checkpoint file belongs to, from its tensor names and shapes alone.

A ``.safetensors`` file starts with a JSON header listing every tensor's name and shape: reading it costs
milliseconds and loads no weights, so the bot can name a file's family before the engine loads it, and the
engine can pick the family's ``from_single_file``. Two layouts are recognised: the original one the model's
authors and the community publish (LDM's ``model.diffusion_model.``/``first_stage_model.`` for the UNet
families, ``joint_blocks`` for SD3, ``double_blocks`` for Flux, with or without the text encoders and VAE),
and a diffusers transformer saved as one file (Flux and SD3 denoisers shared without the rest).

No torch here (``safetensors`` reads the header with its NumPy frontend, which loads nothing).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from safetensors import safe_open

from sdbot.errors import ModelLoadFailed
from sdbot.inference.families import Family

SINGLE_FILE_SUFFIXES = (".safetensors", ".sft", ".ckpt")  # a model in one file, not a diffusers folder

LDM_UNET = "model.diffusion_model."
LDM_VAE = "first_stage_model."
OPEN_CLIP_WIDTH_SD2 = 1024  # SD 2.x conditions on OpenCLIP ViT-H (1024 wide); SD 1.x on CLIP ViT-L (768)

Shapes = Mapping[str, Sequence[int]]


@dataclass(frozen=True)
class CheckpointLayout:
    """What a single file holds. ``denoiser_only``: only the UNet or transformer, so the text encoders and
    VAE come from the model's config folder or repo. ``guidance_embeds``: a Flux that embeds the guidance
    scale (dev), not a distilled one that ignores it (schnell)."""

    family: Family
    denoiser_only: bool
    guidance_embeds: bool = False


def read_tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's name and shape from a ``.safetensors`` header, without loading a weight."""
    with safe_open(str(path), framework="numpy") as handle:
        return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118


def detect_checkpoint(path: Path) -> CheckpointLayout:
    """The family and layout of a ``.safetensors`` checkpoint. Raises ``ModelLoadFailed`` for a file that is
    not a safetensors checkpoint, or not one of a family sdbot loads from a single file."""
    try:
        shapes = read_tensor_shapes(path)
    except Exception as error:  # safetensors raises its own error types for a bad header
        raise ModelLoadFailed(f"{path.name}: not a readable .safetensors file ({error})") from error
    return detect_layout(shapes, path.name)


def detect_layout(shapes: Shapes, name: str) -> CheckpointLayout:
    """The family and layout of a checkpoint given its tensor names and shapes (``name`` is for messages)."""
    keys = set(shapes)
    denoiser = {key.removeprefix(LDM_UNET) for key in keys}
    has_vae = any(key.startswith((LDM_VAE, "vae.")) for key in keys)
    if {"single_stream_modulation.lin.weight", "distilled_guidance_layer.in_proj.weight"} & denoiser:
        raise ModelLoadFailed(
            f"{name}: Flux.2 or Chroma checkpoints load from a diffusers folder or repo only"
        )
    if "double_blocks.0.img_attn.norm.key_norm.scale" in denoiser:
        return CheckpointLayout(Family.FLUX, not has_vae, "guidance_in.in_layer.weight" in denoiser)
    if {"single_transformer_blocks.0.attn.to_k.weight", "x_embedder.weight"} <= denoiser:
        return CheckpointLayout(
            Family.FLUX, True, "time_text_embed.guidance_embedder.linear_1.weight" in denoiser
        )
    if "joint_blocks.0.context_block.adaLN_modulation.1.bias" in denoiser:
        return CheckpointLayout(Family.SD3, not has_vae)
    if {"transformer_blocks.0.ff_context.net.0.proj.weight", "pos_embed.proj.weight"} <= denoiser:
        return CheckpointLayout(Family.SD3, True)
    if LDM_UNET + "input_blocks.0.0.weight" in keys:
        return CheckpointLayout(_unet_family(shapes, keys, name), not has_vae)
    raise ModelLoadFailed(
        f"{name}: not a checkpoint of a family sdbot loads from one file (SD 1.x, SD 2.x, SDXL, SD3, Flux)"
    )


def _unet_family(shapes: Shapes, keys: set[str], name: str) -> Family:
    in_channels = shapes[LDM_UNET + "input_blocks.0.0.weight"][1]
    if in_channels != 4:
        raise ModelLoadFailed(
            f"{name}: its UNet takes {in_channels} input channels (an inpainting or instruct model), "
            "not a text-to-image one"
        )
    if LDM_UNET + "label_emb.0.0.weight" in keys:
        if any(key.startswith("conditioner.embedders.0.model.") for key in keys):
            raise ModelLoadFailed(f"{name}: an SDXL refiner refines images; it cannot make them from text")
        return Family.SDXL
    cross_attention = shapes.get(LDM_UNET + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight")
    if "cond_stage_model.model.token_embedding.weight" in keys or (
        cross_attention is not None and cross_attention[-1] == OPEN_CLIP_WIDTH_SD2
    ):
        return Family.SD2
    return Family.SD1
