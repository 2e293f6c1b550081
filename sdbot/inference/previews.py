"""Preview images of a generation in progress, made from the latents between denoising steps.

By default a linear map from SD 1.x's four latent channels to RGB: a matrix product per pixel, no
weights and no VAE call, so previews cost nothing next to a UNet step. When the admin names a tiny
autoencoder (TAESD, ``SDBOT_PREVIEW_DECODER``) it decodes sharper previews at a few milliseconds each.
"""

from __future__ import annotations

from typing import Protocol

import torch
from PIL import Image

# Least-squares fit of RGB on SD 1.x latents (rows: latent channels; columns: R, G, B), the factors the
# web UI and ComfyUI use for their cheap previews.
SD1_LATENT_RGB_FACTORS = (
    (0.3512, 0.2297, 0.3227),
    (0.3250, 0.4974, 0.2350),
    (-0.2829, 0.1762, 0.2721),
    (-0.2120, -0.2616, -0.7177),
)
PREVIEW_UPSCALE = 4  # latents are 1/8 of the image: previews come out at half the final size


class PreviewMaker(Protocol):
    def __call__(self, latents: torch.Tensor) -> list[Image.Image]: ...


class LinearPreview:
    """Latents -> RGB by SD 1.x's fixed 4x3 matrix."""

    def __init__(self) -> None:
        self._factors = torch.tensor(SD1_LATENT_RGB_FACTORS)

    def __call__(self, latents: torch.Tensor) -> list[Image.Image]:
        factors = self._factors.to(latents.device, torch.float32)
        rgb = torch.einsum("nchw,cr->nhwr", latents.float(), factors)
        pixels = ((rgb + 1) * 127.5).clamp(0, 255).to(torch.uint8).cpu().numpy()
        return [_enlarge(Image.fromarray(frame)) for frame in pixels]


class TinyDecoderPreview:
    """Latents -> RGB through a tiny autoencoder (``AutoencoderTiny``, e.g. ``madebyollin/taesd``)."""

    def __init__(self, decoder: torch.nn.Module) -> None:
        self._decoder = decoder

    @torch.no_grad()
    def __call__(self, latents: torch.Tensor) -> list[Image.Image]:
        parameter = next(self._decoder.parameters())
        decoded = self._decoder.decode(latents.to(parameter.device, parameter.dtype), return_dict=False)[0]
        pixels = ((decoded.float() + 1) * 127.5).clamp(0, 255).to(torch.uint8)
        frames = pixels.permute(0, 2, 3, 1).cpu().numpy()
        return [Image.fromarray(frame) for frame in frames]


def preview_interval(total_steps: int) -> int:
    """Steps between previews: about five previews per run, at least one step apart."""
    return max(1, round(total_steps / 6))


def _enlarge(image: Image.Image) -> Image.Image:
    return image.resize(
        (image.width * PREVIEW_UPSCALE, image.height * PREVIEW_UPSCALE), Image.Resampling.BILINEAR
    )
