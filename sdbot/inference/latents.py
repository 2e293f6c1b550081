"""Each family's latents: their layout, and how the model's VAE decodes them into images.

A pipeline asked for ``output_type="latent"`` returns its latents in the form its denoiser works on: for the
UNet families and SD3 an image-shaped tensor (batch, channels, height/8, width/8); for Flux the 2x2 patches
packed into tokens (batch, patches, channels*4), which ``spatial`` unpacks. Decoding undoes the scaling the
VAE was trained with (``scaling_factor``, ``shift_factor``, or per-channel ``latents_mean``/``latents_std``)
and, for SDXL's VAE in half precision, runs in float32 as diffusers' SDXL pipeline does (it overflows in
float16).
"""

from __future__ import annotations

import torch
from diffusers import DiffusionPipeline
from PIL import Image

from sdbot.inference.families import Family, FamilyProfile, Size


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
