"""Each family's latent space: its layout, how its VAE decodes it, and cheap previews of it.

A pipeline asked for ``output_type="latent"`` returns its latents in the form its denoiser works on: for the
UNet families and SD3 an image-shaped tensor (batch, channels, height/8, width/8); for Flux the 2x2 patches
packed into tokens (batch, patches, channels*4), which ``spatial`` unpacks. Decoding undoes the scaling the
VAE was trained with (``scaling_factor``, ``shift_factor``, or per-channel ``latents_mean``/``latents_std``)
and, for SDXL's VAE in half precision, runs in float32 as diffusers' SDXL pipeline does (it overflows in
float16).

Previews: a linear map from the latent channels to RGB (a matrix product per latent pixel, no weights, no
VAE call), with the factors ComfyUI publishes per latent space; or a tiny autoencoder (TAESD, TAESDXL,
TAESD3, TAEF1) that decodes sharper previews at a few milliseconds each. The latent space is the VAE's: a
family sdbot has no table entry for gets linear previews when its VAE is one of the known ones (Z-Image, for
one, uses Flux's), and none otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import DiffusionPipeline
from PIL import Image

from sdbot.inference.families import Family, FamilyProfile, Size

LINEAR_PREVIEW_UPSCALE = 4  # latents are 1/8 of the image: linear previews come out at half the final size


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


def spatial(latents: torch.Tensor, profile: FamilyProfile, size: Size, vae_scale_factor: int) -> torch.Tensor:
    """The latents as (batch, channels, height, width): packed ones (Flux) unpacked from their 2x2 patches."""
    if not profile.packed_latents:
        return latents
    batch, _, packed_channels = latents.shape
    rows = size.height // (vae_scale_factor * 2)
    columns = size.width // (vae_scale_factor * 2)
    channels = packed_channels // 4
    patches = latents.view(batch, rows, columns, channels, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return patches.reshape(batch, channels, rows * 2, columns * 2)


@torch.no_grad()
def decode(vae: torch.nn.Module, latents: torch.Tensor, *, upcast: bool) -> torch.Tensor:
    """Spatial latents -> images in [-1, 1], undoing the VAE's latent scaling. ``upcast``: decode in float32
    when the VAE is in float16 and says it must (``force_upcast``: SDXL's VAE overflows in half precision)."""
    config = vae.config
    mean, std = config.get("latents_mean"), config.get("latents_std")
    if mean is not None and std is not None:
        shape = (1, len(mean), 1, 1)
        mean_t = torch.tensor(mean).view(shape).to(latents.device, latents.dtype)
        std_t = torch.tensor(std).view(shape).to(latents.device, latents.dtype)
        latents = latents * std_t / config.scaling_factor + mean_t
    else:
        latents = latents / config.scaling_factor + (config.get("shift_factor") or 0.0)
    dtype = vae.dtype
    upcast = upcast and dtype == torch.float16 and bool(config.get("force_upcast"))
    if upcast:
        vae.to(torch.float32)
    try:
        return vae.decode(latents.to(vae.dtype), return_dict=False)[0]
    finally:
        if upcast:
            vae.to(dtype)


def decode_to_images(
    pipe: DiffusionPipeline, profile: FamilyProfile, latents: torch.Tensor, size: Size
) -> list[Image.Image]:
    """A pipeline's ``output_type="latent"`` output -> its images, as the pipeline itself decodes them."""
    images = decode(
        pipe.vae,
        spatial(latents, profile, size, pipe.vae_scale_factor),
        upcast=profile.family is Family.SDXL,
    )
    return pipe.image_processor.postprocess(images, output_type="pil")


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """Images in [-1, 1] (batch, 3, height, width) -> PIL images."""
    pixels = ((images.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return [Image.fromarray(frame) for frame in pixels.permute(0, 2, 3, 1).cpu().numpy()]


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
