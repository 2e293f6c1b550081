"""LoRAs, embeddings, samplers and long or weighted prompts through the engine, on tiny SD 1.x, SDXL and Flux
models: what each changes in the image, that nothing of a batch reaches the next, what the PNGs say."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from diffusers import AutoPipelineForText2Image
from PIL import Image

from sdbot.errors import InvalidRequest
from sdbot.inference.engine import DiffusersEngine, load_engine
from sdbot.inference.extras import WEIGHTS_DROPPED
from sdbot.inference.pngmeta import read_parameters
from sdbot.inference.samplers import DIFFUSION_SAMPLERS, FLOW_SAMPLERS, find_sampler
from sdbot.inference.types import EngineRequest, Operation
from sdbot.library import ModelEntry, ModelLibrary
from sdbot.params import JobParams
from tests.conftest import tiny_settings
from tests.engines import generate
from tests.tiny_loras import save_diffusers_lora, save_embedding, save_kohya_lora

MODELS = ("sd1", "sdxl", "flux-schnell")
LONG = "a red cat on the mat, " * 30  # 300 tokens of the tiny CLIP tokenizer


def params(model: str, prompt: str = "a red cat", **fields: object) -> JobParams:
    return JobParams(prompt, **{"steps": 2, "width": 64, "height": 64, "seed": 1, "model": model, **fields})


def image(engine: DiffusersEngine, request: JobParams) -> np.ndarray:
    [result] = generate(engine, [request])
    return pixels(result.images[0].image)


def pixels(picture: Image.Image) -> np.ndarray:
    return np.asarray(picture, dtype=np.int16)


@pytest.fixture(scope="module")
def folders(
    tiny_family: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """A LoRA folder (for SD 1.x: kohya and diffusers files; for SDXL: kohya) and an embeddings folder."""
    loras, embeddings = tmp_path_factory.mktemp("loras"), tmp_path_factory.mktemp("embeddings")
    sd1 = AutoPipelineForText2Image.from_pretrained(tiny_family("sd1"))
    save_kohya_lora(sd1, loras / "ink.safetensors", seed=1, metadata={"modelspec.trigger_phrase": "inky"})
    save_diffusers_lora(sd1, loras / "styles" / "grain.safetensors", seed=2)
    save_kohya_lora(
        AutoPipelineForText2Image.from_pretrained(tiny_family("sdxl")), loras / "xl.safetensors", seed=3
    )
    save_embedding(embeddings / "badhands.safetensors", 32, 2, seed=4)
    save_embedding(embeddings / "xlneg.safetensors", 32, 2, seed=5, second_width=48)
    return loras, embeddings


@pytest.fixture(scope="module")
def engine(tiny_family: Callable[[str], Path], folders: tuple[Path, Path]) -> DiffusersEngine:
    library = ModelLibrary(tuple(ModelEntry(name, str(tiny_family(name))) for name in MODELS), "sd1")
    loras, embeddings = folders
    settings = tiny_settings(
        library["sd1"].source, safety_checker=None, lora_dir=loras, embeddings_dir=embeddings
    )
    return load_engine(settings, library)


def test_a_lora_changes_the_image_and_nothing_of_it_reaches_a_later_batch(engine: DiffusersEngine) -> None:
    before = image(engine, params("sd1", "a (red:1.3) cat"))
    [result] = generate(
        engine, [params("sd1", "a (red:1.3) cat", loras=(("ink", 1.0), ("styles/grain", 0.5)))]
    )
    assert np.abs(pixels(result.images[0].image) - before).mean() > 3
    written = read_parameters(result.images[0].png)
    assert written.prompt == "a (red:1.3) cat"
    assert [(lora.name, lora.weight) for lora in written.loras] == [("ink", 1.0), ("styles/grain", 0.5)]
    assert all(len(lora.hash) == 12 for lora in written.loras)
    assert np.array_equal(image(engine, params("sd1", "a (red:1.3) cat", loras=(("ink", 0.0),))), before)
    assert np.abs(image(engine, params("sd1", "a (red:1.3) cat")) - before).max() <= 1


def test_sdxl_takes_its_loras_embeddings_and_long_prompts(engine: DiffusersEngine) -> None:
    plain = image(engine, params("sdxl"))
    assert np.abs(image(engine, params("sdxl", loras=(("xl", 1.0),))) - plain).mean() > 3
    [result] = generate(engine, [params("sdxl", negative_prompt="xlneg")])
    assert not np.array_equal(
        pixels(result.images[0].image), image(engine, params("sdxl", negative_prompt="xl neg"))
    )
    assert read_parameters(result.images[0].png).embeddings.keys() == {"xlneg"}
    assert not np.array_equal(
        image(engine, params("sdxl", LONG + "blue dog")), image(engine, params("sdxl", LONG + "red cat"))
    )
    with pytest.raises(InvalidRequest, match="the LoRA ink is for sd1 models"):
        generate(engine, [params("sdxl", loras=(("ink", 1.0),))])


def test_requests_of_different_prompt_lengths_share_a_batch_and_keep_their_own_images(
    engine: DiffusersEngine,
) -> None:
    long, short = (
        params("sd1", LONG + "blue dog", seed=3),
        params("sd1", "a red cat", negative_prompt="badhands"),
    )
    together = generate(engine, [long, short])
    for request, result in zip((long, short), together, strict=True):
        assert np.abs(pixels(result.images[0].image) - image(engine, request)).max() <= 2
    assert read_parameters(together[1].images[0].png).embeddings.keys() == {"badhands"}


@pytest.mark.parametrize(
    ("model", "samplers"), [("sd1", DIFFUSION_SAMPLERS), ("flux-schnell", FLOW_SAMPLERS)]
)
def test_each_sampler_makes_an_image_and_the_png_names_it_as_the_web_ui_does(
    engine: DiffusersEngine, model: str, samplers: tuple
) -> None:
    info = engine.models[model]
    assert info.samplers == tuple(sampler.name for sampler in samplers)
    own = image(engine, params(model, steps=3))
    for sampler in samplers:
        [result] = generate(engine, [params(model, steps=3, sampler=sampler.name)])
        written = read_parameters(result.images[0].png)
        assert (written.sampler, written.schedule_type) == (sampler.label, sampler.schedule_type)
        assert find_sampler(written.sampler, written.schedule_type, scheduler=sampler.scheduler) == sampler
        assert result.images[0].image.size == (64, 64)
    assert np.array_equal(image(engine, params(model, steps=3)), own)  # the model's own scheduler is intact


def test_a_t5_model_reads_the_plain_prompt_within_its_window_and_says_so(engine: DiffusersEngine) -> None:
    [weighted] = generate(engine, [params("flux-schnell", "a (red:1.5) cat BREAK on a mat")])
    assert weighted.notes == (WEIGHTS_DROPPED,)
    assert np.array_equal(
        pixels(weighted.images[0].image), image(engine, params("flux-schnell", "a red cat on a mat"))
    )
    assert generate(engine, [params("flux-schnell")])[0].notes == ()
    window = engine.models["flux-schnell"].profile.prompt_tokens
    with pytest.raises(
        InvalidRequest, match=rf"the prompt has \d+ tokens; Flux.1 schnell models read at most {window}"
    ):
        generate(engine, [params("flux-schnell", "a red cat on the mat " * 24)])


def test_batches_never_mix_lora_sets_or_samplers(engine: DiffusersEngine) -> None:
    one, other = (
        params("sd1", loras=(("ink", 1.0), ("styles/grain", 0.5))),
        params("sd1", loras=(("ink", 1.0),)),
    )
    same = params("sd1", "a blue dog", loras=(("styles/grain", 0.5), ("ink", 1.0)))  # another order
    assert one.batch_key() == same.batch_key()
    for mixed in (other, params("sd1"), params("sd1", loras=one.loras, sampler="Euler")):
        with pytest.raises(ValueError, match="share model, LoRAs, sampler"):
            engine.run(Operation.GENERATE, [EngineRequest(one), EngineRequest(mixed)])
