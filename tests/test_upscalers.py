"""Super-resolution for Upscale (Subtle): a tiny random Swin2SR loaded through the users' loading code, the
tiles put together without a seam, and the Lanczos fallback said at start-up. (ESRGAN files through spandrel:
``tests/test_upscalers_esrgan.py``, run in the second test environment.)"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sdbot.config import DEFAULT_UPSCALER
from sdbot.errors import ModelLoadFailed
from sdbot.inference.upscalers import LanczosUpscaler, NetworkUpscaler, load_upscaler
from tests.tiny_upscalers import build_tiny_swin2sr, save_tiny_esrgan

CPU = torch.device("cpu")


def load(spec: str | Path) -> object:
    return load_upscaler(str(spec), CPU, torch.float32, default=DEFAULT_UPSCALER)


def noise(size: tuple[int, int], seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture(scope="session")
def tiny_swin2sr(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_swin2sr(tmp_path_factory.mktemp("swin2sr-x2"))


def test_swin2sr_folder_doubles_a_picture(tiny_swin2sr: Path) -> None:
    upscaler = load(tiny_swin2sr)
    assert isinstance(upscaler, NetworkUpscaler)
    assert (upscaler.name, upscaler.scale, upscaler.dtype) == (tiny_swin2sr.name, 2, torch.float32)
    picture = upscaler.upscale(noise((72, 40)), 2)
    assert picture.size == (144, 80) and picture.mode == "RGB"


def test_swin2sr_tiles_match_one_pass_over_the_whole_picture(tiny_swin2sr: Path) -> None:
    upscaler = load(tiny_swin2sr)
    assert isinstance(upscaler, NetworkUpscaler)
    source = noise((96, 80), seed=1)
    whole = np.asarray(upscaler.upscale(source, 2), dtype=np.int16)
    upscaler.tile = 32  # 3x3 tiles, each with 16 pixels of its neighbours
    tiled = np.asarray(upscaler.upscale(source, 2), dtype=np.int16)
    difference = np.abs(whole - tiled)
    assert difference.mean() < 0.5 and difference.max() <= 8  # no seam: within a few levels of 255


def test_a_4x_model_is_brought_to_2x(tmp_path: Path) -> None:
    upscaler = load(build_tiny_swin2sr(tmp_path / "swin2sr-x4", upscale=4))
    assert upscaler.upscale(noise((64, 64)), 2).size == (128, 128)


def test_tiles_are_put_back_exactly_where_they_belong() -> None:
    def nearest(pixels: torch.Tensor) -> torch.Tensor:  # a network whose output depends on each pixel only
        return torch.nn.functional.interpolate(pixels, scale_factor=3, mode="nearest")

    upscaler = NetworkUpscaler("nearest", nearest, 3, CPU, torch.float32, tile=32, context=5)
    source = noise((101, 67), seed=2)
    expected = source.resize((303, 201), Image.Resampling.NEAREST)
    assert np.array_equal(np.asarray(upscaler.upscale(source, 3)), np.asarray(expected))


def test_without_the_default_model_lanczos_stands_in_and_start_up_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="sdbot.inference.upscalers"):
        upscaler = load(DEFAULT_UPSCALER)  # the hub is offline in the tests and nothing is cached
    assert isinstance(upscaler, LanczosUpscaler)
    assert "falls back to a Lanczos resize" in caplog.text and DEFAULT_UPSCALER in caplog.text
    assert upscaler.upscale(noise((64, 48)), 2).size == (128, 96)


def test_lanczos_by_choice(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="sdbot.inference.upscalers"):
        assert isinstance(load("Lanczos"), LanczosUpscaler)
    assert "SDBOT_UPSCALER=lanczos" in caplog.text


def test_a_named_model_that_cannot_load_stops_start_up(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadFailed, match="could not load upscaler 'someone/missing-upscaler'"):
        load("someone/missing-upscaler")
    with pytest.raises(ModelLoadFailed, match="no such file"):
        load(tmp_path / "4x-UltraSharp.pth")


def test_an_esrgan_file_without_spandrel_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save_tiny_esrgan(tmp_path / "4x-tiny.safetensors")
    monkeypatch.setitem(sys.modules, "spandrel", None)  # as where the extra is not installed
    with pytest.raises(ModelLoadFailed, match=r'pip install "sdbot\[esrgan\]"'):
        load(path)
