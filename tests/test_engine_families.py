"""One engine holding a tiny model of every family: each request names its model; text to image, variation
and upscale, previews, safety and PNG parameters per family; the memory budgets parking and dropping the
least recently used models."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdbot.errors import InvalidRequest
from sdbot.inference.canvas import pan_canvas
from sdbot.inference.engine import DiffusersEngine, load_engine
from sdbot.inference.families import Family, TextEncoder
from sdbot.inference.loading import model_size
from sdbot.inference.memory import Residence
from sdbot.inference.pngmeta import read_parameters
from sdbot.inference.types import EngineRequest, ModelInfo, Operation, Progress, default_model
from sdbot.library import ModelEntry, ModelLibrary
from sdbot.params import JobParams, PanDirection
from tests.conftest import tiny_settings
from tests.engines import generate

SIZE = 64
FAMILIES = ["sd1", "sd2", "sdxl", "sd3", "flux-schnell", "flux-dev", "zimage"]


def params(model: str, prompt: str = "a photo of a red cat", **fields: object) -> JobParams:
    return JobParams(
        prompt, **{"steps": 3, "width": SIZE, "height": SIZE, "seed": 1, "model": model, **fields}
    )


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


@pytest.fixture(scope="module")
def library(tiny_family: Callable[[str], Path]) -> ModelLibrary:
    return ModelLibrary(tuple(ModelEntry(name, str(tiny_family(name))) for name in FAMILIES), "sd1")


@pytest.fixture(scope="module")
def engine(library: ModelLibrary, tiny_safety_checker: Callable[[bool], Path]) -> DiffusersEngine:
    """Every family in one engine; the models without a checker of their own get the tiny standalone one."""
    settings = tiny_settings(library["sd1"].source, safety_checker=str(tiny_safety_checker(False)))
    return load_engine(settings, library)


def test_the_engine_names_each_model_with_its_profile(engine: DiffusersEngine) -> None:
    assert list(engine.models) == FAMILIES and default_model(engine) == "sd1"
    labels = {name: info.profile.label for name, info in engine.models.items()}
    assert labels == {
        "sd1": "SD 1.x",
        "sd2": "SD 2.x",
        "sdxl": "SDXL",
        "sd3": "SD 3.x",
        "flux-schnell": "Flux.1 schnell",
        "flux-dev": "Flux.1 dev",
        "zimage": "ZImage",
    }
    assert all(info.checked for info in engine.models.values())
    for info in engine.models.values():
        assert ModelInfo.from_dict(info.to_dict()) == info


def test_a_family_without_a_table_entry_takes_its_pipelines_own_defaults(engine: DiffusersEngine) -> None:
    profile = engine.models["zimage"].profile
    assert (profile.family, profile.pipeline) == (Family.OTHER, "ZImagePipeline")
    assert (profile.default_steps, profile.default_guidance, profile.uses_guidance) == (50, 5.0, True)
    assert (profile.negative_prompt, profile.prompt_tokens, profile.text_encoder) == (
        True,
        512,
        TextEncoder.LLM,
    )
    assert (profile.latent_channels, profile.packed_latents, profile.size_multiple) == (16, False, 16)
    assert profile.image_to_image and profile.inpaint


@pytest.mark.parametrize("model", FAMILIES)
def test_text_to_image_per_family_is_reproducible_and_says_its_model(
    engine: DiffusersEngine, model: str
) -> None:
    [first] = generate(engine, [params(model, seed=42)])
    [again] = generate(engine, [params(model, seed=42)])
    [other] = generate(engine, [params(model, seed=43)])
    image = first.images[0]
    assert image.image.size == (SIZE, SIZE) and first.nsfw == [False]
    assert np.array_equal(pixels(image.image), pixels(again.images[0].image))
    assert not np.array_equal(pixels(image.image), pixels(other.images[0].image))
    written = read_parameters(image.png)
    assert (written.model, written.seed, written.steps) == (model, 42, 3)


@pytest.mark.parametrize("model", FAMILIES)
def test_variation_and_upscale_per_family(engine: DiffusersEngine, model: str) -> None:
    [source] = generate(engine, [params(model, seed=3)])
    picture = source.images[0].image
    variation = EngineRequest(params(model, steps=4, seed=11, strength=0.6), picture)
    [varied] = engine.run(Operation.VARIATION, [variation])
    assert varied.images[0].image.size == (SIZE, SIZE)
    assert not np.array_equal(pixels(varied.images[0].image), pixels(picture))
    upscale = EngineRequest(params(model, steps=4, width=2 * SIZE, height=2 * SIZE, strength=0.3), picture)
    [upscaled] = engine.run(Operation.UPSCALE, [upscale])
    assert upscaled.images[0].image.size == (2 * SIZE, 2 * SIZE)
    assert read_parameters(upscaled.images[0].png).model == model


@pytest.mark.parametrize("model", FAMILIES)
def test_pan_per_family_paints_with_its_inpainting_pipeline_and_keeps_the_picture(
    engine: DiffusersEngine, model: str
) -> None:
    [source] = generate(engine, [params(model, seed=3)])
    picture = source.images[0].image
    profile = engine.models[model].profile
    canvas = pan_canvas(picture.size, PanDirection.RIGHT, profile.size_multiple)
    request = params(model, width=canvas[0], height=canvas[1], strength=1.0, pan=PanDirection.RIGHT)
    [panned] = engine.run(Operation.OUTPAINT, [EngineRequest(request, picture)])
    out = panned.images[0].image
    assert out.size == canvas == (SIZE + SIZE // 2, SIZE)
    band = 8  # the seam repainted to blend, at this size
    assert np.array_equal(pixels(out)[:, : SIZE - band], pixels(picture)[:, : SIZE - band])
    assert read_parameters(panned.images[0].png).extra["Outpaint"] == "pan right"


@pytest.mark.parametrize("model", FAMILIES)
def test_previews_per_family_come_at_half_size(engine: DiffusersEngine, model: str) -> None:
    previews: list[list[Image.Image]] = []

    def on_progress(progress: Progress) -> None:
        if progress.make_previews is not None:
            previews.append(progress.make_previews())

    generate(
        engine,
        [params(model, steps=6), params(model, "a blue dog", steps=6, count=2)],
        on_progress=on_progress,
    )
    assert previews
    for shown in previews:
        assert [preview.size for preview in shown] == [(SIZE // 2, SIZE // 2)] * 2


def test_a_batch_never_mixes_models(engine: DiffusersEngine) -> None:
    with pytest.raises(ValueError, match="must share model"):
        generate(engine, [params("sd1"), params("sdxl")])


def test_options_a_family_cannot_honour_are_refused_with_a_reason(engine: DiffusersEngine) -> None:
    with pytest.raises(InvalidRequest, match=r"flux-schnell \(Flux.1 schnell\) takes no negative prompt"):
        generate(engine, [params("flux-schnell", negative_prompt="blurry")])
    with pytest.raises(InvalidRequest, match="width must be a multiple of 16"):
        generate(engine, [params("sd3", width=72)])
    generate(engine, [params("sdxl", width=72, steps=1)])  # a UNet family takes multiples of 8
    with pytest.raises(InvalidRequest, match="no model 'sd9' here; the models are sd1, sd2"):
        generate(engine, [params("sd9")])


def test_a_request_naming_no_model_runs_the_default(engine: DiffusersEngine) -> None:
    [named] = generate(engine, [params("sd1", seed=5)])
    [unnamed] = generate(engine, [params(None, seed=5)])  # type: ignore[arg-type]
    assert np.array_equal(pixels(named.images[0].image), pixels(unnamed.images[0].image))
    assert read_parameters(unnamed.images[0].png).model == "sd1"


def test_a_family_without_its_own_checker_is_flagged_by_the_standalone_one(
    library: ModelLibrary, tiny_safety_checker: Callable[[bool], Path]
) -> None:
    sdxl = library["sdxl"]
    settings = tiny_settings(sdxl.source, safety_checker=str(tiny_safety_checker(True)))
    flagging = load_engine(settings, ModelLibrary((sdxl,), "sdxl"))
    [result] = generate(flagging, [params("sdxl", count=2)])
    assert result.nsfw == [True, True]
    assert pixels(result.images[0].image).max() > 0  # the pixels are kept for the server's policy


# --- the memory budgets -----------------------------------------------------------------------------------


@pytest.fixture
def two_models(library: ModelLibrary, engine: DiffusersEngine) -> tuple[ModelLibrary, int]:
    """SD 1.x and SDXL, and a budget of bytes that holds the larger of them but not both."""
    pair = ModelLibrary((library["sd1"], library["sdxl"]), "sd1")
    return pair, max(model_size(engine.runner(name).model) for name in pair.names)


def test_a_gpu_budget_for_one_model_parks_the_least_recently_used(
    engine: DiffusersEngine, two_models: tuple[ModelLibrary, int]
) -> None:
    pair, budget = two_models
    tight = load_engine(tiny_settings(pair["sd1"].source, gpu_memory=budget, safety_checker=None), pair)
    assert (tight.residence("sd1"), tight.residence("sdxl")) == (Residence.DEVICE, Residence.PARKED)
    [sdxl] = generate(tight, [params("sdxl", seed=9)])
    assert (tight.residence("sd1"), tight.residence("sdxl")) == (Residence.PARKED, Residence.DEVICE)
    assert sdxl.timings.switch > 0
    [again] = generate(tight, [params("sdxl", seed=9)])
    assert again.timings.switch == 0
    [sd1] = generate(tight, [params("sd1", seed=9)])
    assert tight.residence("sdxl") is Residence.PARKED
    for result, model in ((sdxl, "sdxl"), (sd1, "sd1")):
        [unbounded] = generate(engine, [params(model, seed=9)])
        assert np.array_equal(pixels(result.images[0].image), pixels(unbounded.images[0].image))


def test_past_the_cpu_budget_a_model_is_dropped_and_loaded_again_when_needed(
    engine: DiffusersEngine, two_models: tuple[ModelLibrary, int]
) -> None:
    pair, budget = two_models
    settings = tiny_settings(pair["sd1"].source, gpu_memory=budget, cpu_memory=1, safety_checker=None)
    tight = load_engine(settings, pair)
    assert tight.residence("sdxl") is Residence.DROPPED
    [sdxl] = generate(tight, [params("sdxl", seed=4)])
    assert (tight.residence("sd1"), tight.residence("sdxl")) == (Residence.DROPPED, Residence.DEVICE)
    [unbounded] = generate(engine, [params("sdxl", seed=4)])
    assert np.array_equal(pixels(sdxl.images[0].image), pixels(unbounded.images[0].image))
    assert tight.models["sdxl"].profile == engine.models["sdxl"].profile  # known while it was dropped
