"""The engine's single-image operations on the tiny SD pipeline: outpainting through the inpainting pipeline
(the picture's own pixels kept), and Upscale (Subtle) through a tiny random Swin2SR."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sdbot.config import DEFAULT_UPSCALER
from sdbot.errors import InvalidRequest
from sdbot.inference.canvas import pan_canvas
from sdbot.inference.engine import DiffusersEngine, load_engine
from sdbot.inference.families import SD1
from sdbot.inference.pngmeta import read_parameters
from sdbot.inference.types import EngineRequest, ModelInfo, Operation
from sdbot.inference.upscalers import load_upscaler
from sdbot.inference.validation import check_batch
from sdbot.params import JobParams, PanDirection
from tests.conftest import tiny_settings
from tests.tiny_upscalers import build_tiny_swin2sr

BAND = 8  # the seam the model repaints to blend, at these sizes


@pytest.fixture(scope="module")
def picture(tiny_engine: DiffusersEngine) -> Image.Image:
    params = JobParams("a lighthouse", steps=2, width=64, height=64, seed=3)
    [result] = tiny_engine.run(Operation.GENERATE, [EngineRequest(params)])
    return result.images[0].image


def outpaint(size: tuple[int, int], **fields: object) -> JobParams:
    return JobParams("a lighthouse", steps=2, width=size[0], height=size[1], seed=4, strength=1.0, **fields)


@pytest.mark.parametrize("direction", [PanDirection.LEFT, PanDirection.DOWN])
def test_pan_paints_the_new_part_and_keeps_the_picture(
    tiny_engine: DiffusersEngine, picture: Image.Image, direction: PanDirection
) -> None:
    canvas = pan_canvas(picture.size, direction, 8)
    request = EngineRequest(outpaint(canvas, pan=direction), picture)
    [result] = tiny_engine.run(Operation.OUTPAINT, [request])
    image = result.images[0]
    assert image.image.size == canvas and image.nsfw is False
    out, source = np.asarray(image.image), np.asarray(picture)
    if direction is PanDirection.LEFT:
        assert np.array_equal(out[:, 32 + BAND :], source[:, BAND:])
    else:
        assert np.array_equal(out[: 64 - BAND], source[: 64 - BAND])
    written = read_parameters(image.png)
    assert (written.extra["Outpaint"], written.strength, (written.width, written.height)) == (
        f"pan {direction}",
        1.0,
        canvas,
    )


def test_zoom_out_shrinks_the_picture_into_the_middle(
    tiny_engine: DiffusersEngine, picture: Image.Image
) -> None:
    [result] = tiny_engine.run(Operation.OUTPAINT, [EngineRequest(outpaint((64, 64), zoom=2.0), picture)])
    out = np.asarray(result.images[0].image)
    shrunk = np.asarray(picture.resize((32, 32), Image.Resampling.LANCZOS))
    assert np.array_equal(out[16 + BAND : 48 - BAND, 16 + BAND : 48 - BAND], shrunk[BAND:-BAND, BAND:-BAND])
    assert read_parameters(result.images[0].png).extra["Outpaint"] == "zoom 2x"


def test_outpainting_needs_a_zoom_or_a_pan_and_nothing_else_takes_one(
    tiny_engine: DiffusersEngine, picture: Image.Image
) -> None:
    with pytest.raises(ValueError, match="zoom out or pan"):
        tiny_engine.run(Operation.OUTPAINT, [EngineRequest(outpaint((96, 64)), picture)])
    with pytest.raises(ValueError, match="zoom out or pan"):
        tiny_engine.run(Operation.GENERATE, [EngineRequest(outpaint((96, 64), pan=PanDirection.LEFT))])


def test_a_family_without_inpainting_is_refused_outpainting(picture: Image.Image) -> None:
    models = {"painter": ModelInfo("painter", replace(SD1, label="No-inpaint", inpaint=False), True)}
    request = EngineRequest(outpaint((96, 64), pan=PanDirection.LEFT, model="painter"), picture)
    with pytest.raises(InvalidRequest, match=r"painter \(No-inpaint\) has no inpainting"):
        check_batch(Operation.OUTPAINT, [request], models)
    check_batch(Operation.SUPER_RESOLUTION, [EngineRequest(JobParams("x", model="painter"), picture)], models)


def test_upscale_subtle_runs_the_super_resolution_model(
    tiny_model_dir: Path, picture: Image.Image, tmp_path: Path
) -> None:
    folder = build_tiny_swin2sr(tmp_path / "swin2sr-tiny")
    engine = load_engine(tiny_settings(tiny_model_dir, upscaler=str(folder)))
    upscaler = load_upscaler(str(folder), torch.device("cpu"), torch.float32, default=DEFAULT_UPSCALER)
    params = JobParams("a lighthouse", steps=2, width=128, height=128, seed=3)
    [result] = engine.run(Operation.SUPER_RESOLUTION, [EngineRequest(params, picture)])
    image = result.images[0]
    assert image.image.size == (128, 128) and image.seed == 3 and image.nsfw is False
    assert np.array_equal(np.asarray(image.image), np.asarray(upscaler.upscale(picture, 2)))
    written = read_parameters(image.png)
    assert written.extra == {"Postprocess upscaler": "swin2sr-tiny", "Postprocess upscale by": "2"}
    assert written.strength is None and written.seed == 3
    with pytest.raises(ValueError, match="takes no strength"):
        engine.run(Operation.SUPER_RESOLUTION, [EngineRequest(JobParams("x", strength=0.3), picture)])
