"""Super-resolution for Upscale (Subtle): the picture at twice its size, sharpened, nothing invented.

``SDBOT_UPSCALER`` picks the model, loaded once with the engine:

- a Swin2SR hub repo or folder (the default, ``caidas/swin2SR-realworld-sr-x4-64-bsrgan-psnr``), through
  transformers, which sdbot already needs;
- an ESRGAN-family ``.pth`` or ``.safetensors`` file (4x-UltraSharp, RealESRGAN x4plus, ...) through
  ``spandrel``, the loader AUTOMATIC1111 and ComfyUI use: an extra, ``pip install "sdbot[esrgan]"``;
- ``lanczos``: no model, a plain Lanczos resize. The default model falling back to it (offline without a
  cached copy) is said at start-up; a model the operator named that cannot load stops start-up.

A network runs over tiles of ``TILE`` input pixels, each with ``TILE_CONTEXT`` pixels of its neighbours
around it so that no seam shows; only one tile's activations are on the device at a time and the result is
assembled in CPU memory, so the memory a 2048x2048 result needs is that of one tile (``bench/upscale.py``
measures it). A 4x model's output is brought to 2x with Lanczos.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from sdbot.errors import ModelLoadFailed

log = logging.getLogger(__name__)

LANCZOS = "lanczos"
ESRGAN_SUFFIXES = (".pth", ".safetensors")
TILE = 256  # input pixels per tile side
TILE_CONTEXT = 16  # input pixels of each neighbour a tile sees, cut off its output

# (1, 3, h, w) in [0, 1] -> (1, 3, h * scale, w * scale) in [0, 1], on the network's device and dtype
Network = Callable[[torch.Tensor], torch.Tensor]


class Upscaler(Protocol):
    """Enlarges a picture. ``name`` is what PNG parameters and result messages call it."""

    @property
    def name(self) -> str: ...

    def upscale(self, image: Image.Image, factor: int) -> Image.Image: ...


class LanczosUpscaler:
    """No model: a Lanczos resize."""

    name = "Lanczos"

    def upscale(self, image: Image.Image, factor: int) -> Image.Image:
        return image.convert("RGB").resize(_scaled(image.size, factor), Image.Resampling.LANCZOS)


@dataclass
class NetworkUpscaler:
    """A super-resolution network of a fixed ``scale``, run in tiles (``tile`` input pixels a side, with
    ``context`` pixels around each)."""

    name: str
    network: Network
    scale: int
    device: torch.device
    dtype: torch.dtype
    tile: int = TILE
    context: int = TILE_CONTEXT

    def upscale(self, image: Image.Image, factor: int) -> Image.Image:
        pixels = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)
        enlarged = Image.fromarray(self._run_tiles(pixels).permute(1, 2, 0).numpy())
        target = _scaled(image.size, factor)
        return enlarged if enlarged.size == target else enlarged.resize(target, Image.Resampling.LANCZOS)

    @torch.inference_mode()
    def _run_tiles(self, pixels: torch.Tensor) -> torch.Tensor:
        """``pixels`` (3, h, w) uint8 -> (3, h * scale, w * scale) uint8, assembled on the CPU."""
        _, height, width = pixels.shape
        scale, context = self.scale, self.context
        out = torch.empty((3, height * scale, width * scale), dtype=torch.uint8)
        for top in range(0, height, self.tile):
            for left in range(0, width, self.tile):
                bottom, right = min(top + self.tile, height), min(left + self.tile, width)
                # The tile with its context, clipped to the picture.
                top_c, left_c = max(0, top - context), max(0, left - context)
                bottom_c, right_c = min(height, bottom + context), min(width, right + context)
                patch = pixels[:, top_c:bottom_c, left_c:right_c].unsqueeze(0)
                patch = patch.to(self.device, self.dtype) / 255
                result = self.network(patch)[0]
                inner = result[
                    :,
                    (top - top_c) * scale : (bottom - top_c) * scale,
                    (left - left_c) * scale : (right - left_c) * scale,
                ]
                out[:, top * scale : bottom * scale, left * scale : right * scale] = (
                    inner.float().clamp(0, 1).mul(255).round().to("cpu", torch.uint8)
                )
        return out


def load_upscaler(
    spec: str, device: torch.device, dtype: torch.dtype, *, default: str, token: str | None = None
) -> Upscaler:
    """The upscaler ``SDBOT_UPSCALER`` names. ``default`` is the setting's default: when it cannot load
    (offline, not cached), Lanczos stands in and the log says so; any other model that cannot load raises
    ``ModelLoadFailed``."""
    if spec.lower() == LANCZOS:
        log.info("Upscale (Subtle) resizes with Lanczos (SDBOT_UPSCALER=lanczos)")
        return LanczosUpscaler()
    try:
        upscaler = _load_model(spec, device, dtype, token)
    except ModelLoadFailed as error:
        if spec != default:
            raise
        log.warning("%s; Upscale (Subtle) falls back to a Lanczos resize", error)
        return LanczosUpscaler()
    log.info("Upscale (Subtle) uses %s (%dx) on %s", upscaler.name, upscaler.scale, device)
    return upscaler


def _load_model(spec: str, device: torch.device, dtype: torch.dtype, token: str | None) -> NetworkUpscaler:
    path = Path(spec).expanduser()
    if path.suffix.lower() in ESRGAN_SUFFIXES:
        if not path.is_file():
            raise ModelLoadFailed(f"SDBOT_UPSCALER={spec!r}: no such file")
        return _load_spandrel(path, device, dtype)
    return _load_swin2sr(spec, device, token)


def _load_swin2sr(spec: str, device: torch.device, token: str | None) -> NetworkUpscaler:
    """A Swin2SR model through transformers. It runs in float32 whatever the engine's dtype: it is small
    (12 M parameters), tiles keep its activations small, and its attention was not trained in half
    precision."""
    from transformers import Swin2SRForImageSuperResolution

    path = Path(spec).expanduser()
    try:
        model = Swin2SRForImageSuperResolution.from_pretrained(
            str(path) if path.is_dir() else spec, token=token
        )
    except Exception as error:  # hub errors, OSError, a folder of another model: one message for all
        raise ModelLoadFailed(
            f"could not load upscaler {spec!r}: {type(error).__name__}: {_first_line(error)}"
        ) from error
    model = model.to(device).eval()

    def network(pixels: torch.Tensor) -> torch.Tensor:
        return model(pixel_values=pixels).reconstruction

    name = path.name if path.is_dir() else spec.rsplit("/", 1)[-1]
    return NetworkUpscaler(name, network, model.config.upscale, device, torch.float32)


def _load_spandrel(path: Path, device: torch.device, dtype: torch.dtype) -> NetworkUpscaler:
    """An ESRGAN-family file through spandrel (which detects the architecture from the tensor names), in
    the engine's half precision where the architecture supports it."""
    try:
        import spandrel
    except ImportError as error:
        raise ModelLoadFailed(
            f'SDBOT_UPSCALER={str(path)!r} needs spandrel: pip install "sdbot[esrgan]" ({error})'
        ) from error
    try:
        descriptor = spandrel.ModelLoader().load_from_file(path)
    except Exception as error:  # unsupported architecture, a damaged file
        raise ModelLoadFailed(
            f"could not load upscaler {str(path)!r}: {type(error).__name__}: {_first_line(error)}"
        ) from error
    if not isinstance(descriptor, spandrel.ImageModelDescriptor) or descriptor.scale < 2:
        raise ModelLoadFailed(
            f"SDBOT_UPSCALER={str(path)!r} is a {descriptor.architecture.name} model for "
            f"{descriptor.purpose.lower()}, not an upscaler"
        )
    half_ok = {torch.float16: descriptor.supports_half, torch.bfloat16: descriptor.supports_bfloat16}
    run_dtype = dtype if half_ok.get(dtype, dtype == torch.float32) else torch.float32
    descriptor.to(device, run_dtype).eval()
    return NetworkUpscaler(path.stem, descriptor, descriptor.scale, device, run_dtype)


def _scaled(size: tuple[int, int], factor: int) -> tuple[int, int]:
    return size[0] * factor, size[1] * factor


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else ""

