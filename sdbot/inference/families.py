"""What differs between model families, as plain data: one ``FamilyProfile`` per loaded model.

Everything above the engine (the services, the cogs, validation, the CLI) reads sizes, defaults, prompt
windows and capabilities from a model's profile instead of holding SD 1.x constants. A profile is made of
primitives so that it crosses the engine process's pipe and a Redis wire as JSON (``to_dict``/``from_dict``).

This module imports neither torch nor diffusers: the bot process reads profiles and never loads torch. The
engine derives a loaded model's profile in ``sdbot.inference.detect`` (from the pipeline's class and
config: Flux's guidance embedding tells dev from schnell, SD 2's v-prediction its 768-pixel models from the
512-pixel base); the figures here are the families' published defaults (model cards and diffusers' own
pipeline defaults).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from typing import Any, NamedTuple

from sdbot.params import Limits


class Family(StrEnum):
    """A model family: one architecture and latent space, sharing sizes, defaults and previews."""

    SD1 = "sd1"
    SD2 = "sd2"
    SDXL = "sdxl"
    SD3 = "sd3"
    FLUX = "flux"
    # Any other text-to-image family diffusers' auto pipelines load (Flux.2, Qwen-Image, Z-Image, ...): its
    # defaults come from its pipeline's own call signature (see ``sdbot.inference.detect``).
    OTHER = "other"


class TextEncoder(StrEnum):
    """The text encoder whose window bounds a prompt: CLIP (77 tokens), T5, or a language model."""

    CLIP = "clip"
    T5 = "t5"
    LLM = "llm"


class Size(NamedTuple):
    """Width and height in pixels (a tuple, so a list in JSON)."""

    width: int
    height: int

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"


CLIP_TOKENS = 77

SD1_SIZES = (
    Size(512, 512),
    Size(768, 512),
    Size(512, 768),
    Size(640, 512),
    Size(512, 640),
    Size(896, 512),
    Size(512, 896),
)
SD2_SIZES = (
    Size(768, 768),
    Size(960, 640),
    Size(640, 960),
    Size(896, 768),
    Size(768, 896),
    Size(1024, 576),
    Size(576, 1024),
)
# The aspect buckets SDXL was trained on (about one megapixel each); SD3 and Flux use the same set.
MEGAPIXEL_SIZES = (
    Size(1024, 1024),
    Size(1152, 896),
    Size(896, 1152),
    Size(1216, 832),
    Size(832, 1216),
    Size(1344, 768),
    Size(768, 1344),
)


@dataclass(frozen=True)
class FamilyProfile:
    """A model's family and what follows from it. Every field is a primitive (or a tuple of them).

    ``size_multiple``: width and height must be multiples of it (8 for UNets over 8x latents; 16 where a
    transformer takes 2x2 patches of the latents, as SD3 and Flux do). ``uses_guidance``: False where the
    model ignores the guidance scale (Flux schnell, turbo models). ``negative_prompt``: False where the model
    has no unconditional branch to steer (Flux's guidance is distilled). ``prompt_tokens``: the window of the
    longest text encoder (CLIP's 77, or the T5's ``max_sequence_length``); ``text_encoder`` says which.
    ``packed_latents``: the pipeline's latents are 2x2 patches packed into tokens (Flux), to unpack before
    decoding or previewing. ``guidance_parameter``: the pipeline argument the guidance scale goes to
    (Qwen-Image calls its classifier-free guidance ``true_cfg_scale``). ``pipeline``: the text-to-image
    pipeline class, when derived from a loaded one.
    """

    family: Family
    label: str
    native_size: Size
    size_presets: tuple[Size, ...]
    size_multiple: int
    default_steps: int
    default_guidance: float
    uses_guidance: bool
    negative_prompt: bool
    prompt_tokens: int
    text_encoder: TextEncoder
    latent_channels: int
    packed_latents: bool
    image_to_image: bool
    inpaint: bool
    guidance_parameter: str = "guidance_scale"
    pipeline: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: enums as their values, sizes as ``[width, height]`` (lists after a JSON round trip)."""
        data = asdict(self)
        data["family"] = self.family.value
        data["text_encoder"] = self.text_encoder.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FamilyProfile:
        """The inverse of ``to_dict``, also after a JSON round trip (which turns tuples into lists)."""
        return cls(
            **{
                **data,
                "family": Family(data["family"]),
                "text_encoder": TextEncoder(data["text_encoder"]),
                "native_size": Size(*data["native_size"]),
                "size_presets": tuple(Size(*size) for size in data["size_presets"]),
            }
        )


SD1 = FamilyProfile(
    family=Family.SD1,
    label="SD 1.x",
    native_size=Size(512, 512),
    size_presets=SD1_SIZES,
    size_multiple=8,
    default_steps=30,
    default_guidance=7.5,
    uses_guidance=True,
    negative_prompt=True,
    prompt_tokens=CLIP_TOKENS,
    text_encoder=TextEncoder.CLIP,
    latent_channels=4,
    packed_latents=False,
    image_to_image=True,
    inpaint=True,
)
# SD 2.0-v and 2.1: v-prediction at 768 pixels. The 512-pixel base models predict noise, as SD 1.x does.
SD2 = replace(SD1, family=Family.SD2, label="SD 2.x", native_size=Size(768, 768), size_presets=SD2_SIZES)
SD2_BASE = replace(SD1, family=Family.SD2, label="SD 2.x base")
SDXL = replace(
    SD1,
    family=Family.SDXL,
    label="SDXL",
    native_size=Size(1024, 1024),
    size_presets=MEGAPIXEL_SIZES,
    default_guidance=6.0,
)
SD3 = replace(
    SDXL,
    family=Family.SD3,
    label="SD 3.x",
    size_multiple=16,
    default_steps=28,
    default_guidance=4.5,
    prompt_tokens=256,
    text_encoder=TextEncoder.T5,
    latent_channels=16,
)
FLUX_SCHNELL = replace(
    SD3,
    family=Family.FLUX,
    label="Flux.1 schnell",
    default_steps=4,
    default_guidance=0.0,
    uses_guidance=False,
    negative_prompt=False,
    packed_latents=True,
)
FLUX_DEV = replace(
    FLUX_SCHNELL,
    label="Flux.1 dev",
    default_steps=28,
    default_guidance=3.5,
    uses_guidance=True,
    prompt_tokens=512,
)


def other_profile(
    label: str,
    *,
    default_steps: int,
    default_guidance: float,
    negative_prompt: bool,
    prompt_tokens: int,
    latent_channels: int,
    packed_latents: bool,
    image_to_image: bool,
    inpaint: bool,
    guidance_parameter: str,
) -> FamilyProfile:
    """A profile for a family sdbot has no table entry for: the megapixel sizes, 16-pixel multiples (the
    newer families are all patched transformers), a language-model prompt window, and what its pipeline says.
    A guidance default of 0 or 1 means the model is guidance-distilled: it ignores the scale."""
    return replace(
        SD3,
        family=Family.OTHER,
        label=label,
        default_steps=default_steps,
        default_guidance=default_guidance,
        uses_guidance=default_guidance > 1,
        negative_prompt=negative_prompt,
        prompt_tokens=prompt_tokens,
        text_encoder=TextEncoder.LLM,
        latent_channels=latent_channels,
        packed_latents=packed_latents,
        image_to_image=image_to_image,
        inpaint=inpaint,
        guidance_parameter=guidance_parameter,
    )


def model_limits(profile: FamilyProfile, limits: Limits, name: str) -> Limits:
    """``limits`` (the engine's or a server's) narrowed by what model ``name`` of ``profile`` can do: its
    size multiple, and whether it honours a negative prompt (``check_params`` then refuses one)."""
    return replace(
        limits,
        size_multiple=max(limits.size_multiple, profile.size_multiple),
        negative_prompt=limits.negative_prompt and profile.negative_prompt,
        model=f"{name} ({profile.label})",
    )
