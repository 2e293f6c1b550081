"""ESRGAN-family upscaler files through spandrel: tiny random RRDBNets in Real-ESRGAN's key layout, saved as
``.safetensors`` and ``.pth`` and loaded through the users' loading code.

spandrel imports torchvision, which the main suite's CPU build of torch cannot import: these run in
``.venv-esrgan`` (``scripts/test-esrgan``, called by ``scripts/test``), never skipped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sdbot.config import DEFAULT_UPSCALER
from sdbot.errors import ModelLoadFailed
from sdbot.inference.upscalers import NetworkUpscaler, load_upscaler
from tests.tiny_upscalers import save_tiny_esrgan

pytestmark = pytest.mark.esrgan

CPU = torch.device("cpu")


def load(path: Path, dtype: torch.dtype = torch.float32) -> NetworkUpscaler:
    upscaler = load_upscaler(str(path), CPU, dtype, default=DEFAULT_UPSCALER)
    assert isinstance(upscaler, NetworkUpscaler)
    return upscaler


def noise(size: tuple[int, int]) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_an_esrgan_file_is_detected_and_brought_to_2x(tmp_path: Path, suffix: str) -> None:
    upscaler = load(save_tiny_esrgan(tmp_path / f"4x-Tiny{suffix}"))
    assert (upscaler.name, upscaler.scale) == ("4x-Tiny", 4)
    picture = upscaler.upscale(noise((56, 40)), 2)
    assert picture.size == (112, 80) and picture.mode == "RGB"


def test_tiles_with_enough_context_match_spandrels_own_pass(tmp_path: Path) -> None:
    import spandrel

    path = save_tiny_esrgan(tmp_path / "2x-Tiny.safetensors", scale=2)
    upscaler = load(path)
    upscaler.tile, upscaler.context = 24, 24  # wider than the tiny net's receptive field
    source = noise((64, 48))
    descriptor = spandrel.ModelLoader().load_from_file(path).eval()
    pixels = torch.from_numpy(np.array(source)).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        whole = descriptor(pixels)[0].mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    tiled = np.asarray(upscaler.upscale(source, 2), dtype=np.int16)
    assert np.abs(tiled - whole.astype(np.int16)).max() <= 1


def test_half_precision_is_used_where_the_architecture_supports_it(tmp_path: Path) -> None:
    upscaler = load(save_tiny_esrgan(tmp_path / "4x-Tiny.safetensors"), torch.bfloat16)
    assert upscaler.dtype == torch.bfloat16
    assert upscaler.upscale(noise((32, 32)), 2).size == (64, 64)


def test_a_restoration_model_is_refused_as_an_upscaler(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadFailed, match="ESRGAN model for restoration, not an upscaler"):
        load(save_tiny_esrgan(tmp_path / "1x-Denoise.safetensors", scale=1))


def test_a_file_of_no_known_architecture_is_refused(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "mystery.safetensors"
    save_file({"weights.0": torch.zeros(4, 4)}, str(path))
    with pytest.raises(ModelLoadFailed, match="could not load upscaler"):
        load(path)
