"""Preview images of a generation in progress, made from the latents between denoising steps.

By default a linear map from the latent channels to RGB: a matrix product per latent pixel, no weights and
no VAE call, so previews cost nothing next to a denoising step. The factors are the least-squares fits
ComfyUI publishes per latent space. When the admin names tiny autoencoders (``SDBOT_PREVIEW_DECODER``: TAESD,
TAESDXL, TAESD3, TAEF1) they decode sharper previews at a few milliseconds each. Both take spatial latents
(``sdbot.inference.latents.spatial`` unpacks Flux's). The latent space is the VAE's: a family sdbot has no
table entry for gets linear previews when its VAE is one of the known ones (Z-Image, for one, uses Flux's),
and none otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from PIL import Image

from sdbot.inference.families import Family, FamilyProfile
from sdbot.inference.latents import decode, to_pil

LINEAR_PREVIEW_UPSCALE = 4  # latents are 1/8 of the image: linear previews come out at half the final size


class PreviewMaker(Protocol):
    def __call__(self, latents: torch.Tensor) -> list[Image.Image]: ...


@dataclass(frozen=True)
class LatentFormat:
    """A VAE's latent space: its scaling (which identifies it) and its least-squares fit to RGB (rows: latent
    channels; columns: R, G, B; plus a bias), from ComfyUI's ``latent_formats.py``."""

    scaling_factor: float
    rgb_factors: tuple[tuple[float, float, float], ...]
    rgb_bias: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def channels(self) -> int:
        return len(self.rgb_factors)


SD_FORMAT = LatentFormat(
    scaling_factor=0.18215,
    rgb_factors=(
        (0.3512, 0.2297, 0.3227),
        (0.3250, 0.4974, 0.2350),
        (-0.2829, 0.1762, 0.2721),
        (-0.2120, -0.2616, -0.7177),
    ),
)
SDXL_FORMAT = LatentFormat(
    scaling_factor=0.13025,
    rgb_factors=(
        (0.3651, 0.4232, 0.4341),
        (-0.2533, -0.0042, 0.1068),
        (0.1076, 0.1111, -0.0362),
        (-0.3165, -0.2492, -0.2188),
    ),
    rgb_bias=(0.1084, -0.0175, -0.0011),
)
SD3_FORMAT = LatentFormat(
    scaling_factor=1.5305,
    rgb_factors=(
        (-0.0922, -0.0175, 0.0749),
        (0.0311, 0.0633, 0.0954),
        (0.1994, 0.0927, 0.0458),
        (0.0856, 0.0339, 0.0902),
        (0.0587, 0.0272, -0.0496),
        (-0.0006, 0.1104, 0.0309),
        (0.0978, 0.0306, 0.0427),
        (-0.0042, 0.1038, 0.1358),
        (-0.0194, 0.0020, 0.0669),
        (-0.0488, 0.0130, -0.0268),
        (0.0922, 0.0988, 0.0951),
        (-0.0278, 0.0524, -0.0542),
        (0.0332, 0.0456, 0.0895),
        (-0.0069, -0.0030, -0.0810),
        (-0.0596, -0.0465, -0.0293),
        (-0.1448, -0.1463, -0.1189),
    ),
    rgb_bias=(0.2394, 0.2135, 0.1925),
)
FLUX_FORMAT = LatentFormat(
    scaling_factor=0.3611,
    rgb_factors=(
        (-0.0346, 0.0244, 0.0681),
        (0.0034, 0.0210, 0.0687),
        (0.0275, -0.0668, -0.0433),
        (-0.0174, 0.0160, 0.0617),
        (0.0859, 0.0721, 0.0329),
        (0.0004, 0.0383, 0.0115),
        (0.0405, 0.0861, 0.0915),
        (-0.0236, -0.0185, -0.0259),
        (-0.0245, 0.0250, 0.1180),
        (0.1008, 0.0755, -0.0421),
        (-0.0515, 0.0201, 0.0011),
        (0.0428, -0.0012, -0.0036),
        (0.0817, 0.0765, 0.0749),
        (-0.1264, -0.0522, -0.1103),
        (-0.0280, -0.0881, -0.0499),
        (-0.1262, -0.0982, -0.0778),
    ),
    rgb_bias=(-0.0329, -0.0718, -0.0851),
)
FAMILY_FORMATS = {
    Family.SD1: SD_FORMAT,
    Family.SD2: SD_FORMAT,
    Family.SDXL: SDXL_FORMAT,
    Family.SD3: SD3_FORMAT,
    Family.FLUX: FLUX_FORMAT,
}
# The tiny autoencoder trained on each family's latent space (``SDBOT_PREVIEW_DECODER``).
TINY_DECODERS = {
    Family.SD1: "madebyollin/taesd",
    Family.SD2: "madebyollin/taesd",
    Family.SDXL: "madebyollin/taesdxl",
    Family.SD3: "madebyollin/taesd3",
    Family.FLUX: "madebyollin/taef1",
}


def latent_format(profile: FamilyProfile, vae_config: dict) -> LatentFormat | None:
    """The latent format of a model: its family's, or for another family the known one its VAE has."""
    if profile.family in FAMILY_FORMATS:
        return FAMILY_FORMATS[profile.family]
    return next(
        (
            known
            for known in FAMILY_FORMATS.values()
            if known.channels == profile.latent_channels
            and known.scaling_factor == vae_config.get("scaling_factor")
        ),
        None,
    )


class LinearPreview:
    """Spatial latents -> RGB by a latent format's fixed matrix, enlarged to half the final size."""

    def __init__(self, latent_format: LatentFormat) -> None:
        self._factors = torch.tensor(latent_format.rgb_factors)
        self._bias = torch.tensor(latent_format.rgb_bias)

    def __call__(self, latents: torch.Tensor) -> list[Image.Image]:
        factors = self._factors.to(latents.device, torch.float32)
        bias = self._bias.to(latents.device, torch.float32)
        rgb = torch.einsum("nchw,cr->nrhw", latents.float(), factors) + bias[:, None, None]
        return [_enlarge(image) for image in to_pil(rgb)]


class TinyDecoderPreview:
    """Spatial latents -> RGB through a tiny autoencoder (``AutoencoderTiny``: TAESD, TAESDXL, TAESD3, TAEF1),
    at full size. The tiny decoders are trained on the pipeline's scaled latents: their own config scales by
    1 and shifts by 0."""

    def __init__(self, decoder: torch.nn.Module) -> None:
        self._decoder = decoder

    @torch.no_grad()
    def __call__(self, latents: torch.Tensor) -> list[Image.Image]:
        parameter = next(self._decoder.parameters())
        return to_pil(decode(self._decoder, latents.to(parameter.device, parameter.dtype), upcast=False))


def _enlarge(image: Image.Image) -> Image.Image:
    return image.resize(
        (image.width * LINEAR_PREVIEW_UPSCALE, image.height * LINEAR_PREVIEW_UPSCALE),
        Image.Resampling.BILINEAR,
    )


def preview_interval(total_steps: int) -> int:
    """Steps between previews: about five previews per run, at least one step apart."""
    return max(1, round(total_steps / 6))
