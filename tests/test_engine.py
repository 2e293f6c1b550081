"""The diffusers engine on a real (tiny, random-weight) SD pipeline loaded through the users' loading code."""

from __future__ import annotations

import hashlib
import io
import logging
import warnings
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderTiny
from PIL import Image

from sdbot.config import Settings
from sdbot.errors import GenerationCancelled, GenerationFailed, ModelLoadFailed
from sdbot.inference.engine import DiffusersEngine, load_engine
from sdbot.inference.families import Size
from sdbot.inference.loading import resolve_placement
from sdbot.inference.pngmeta import ImageParameters, format_parameters, parse_parameters, read_parameters
from sdbot.inference.types import EngineRequest, Operation, Progress, default_model
from sdbot.params import MAX_SEED, JobParams
from tests.conftest import tiny_settings
from tests.engines import generate
from tests.tiny_models.single_file import save_single_file

SIZE = 64
STEPS = 2


def request(prompt: str = "a red cat", **fields: object) -> JobParams:
    return JobParams(prompt, **{"steps": STEPS, "width": SIZE, "height": SIZE, "seed": 1, **fields})


def from_image(source: Image.Image, scale: int = 1, **fields: object) -> EngineRequest:
    """An image-to-image request at ``scale`` times the source's size."""
    width, height = source.width * scale, source.height * scale
    return EngineRequest(request(**{"width": width, "height": height, "strength": 0.6, **fields}), source)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def assert_close(a: Image.Image, b: Image.Image) -> None:
    """Equal up to float rounding of a different batch shape: at most 2 levels of 255 per channel."""
    assert a.size == b.size
    assert np.abs(pixels(a) - pixels(b)).max() <= 2


def test_same_seed_gives_identical_pixels(tiny_engine: DiffusersEngine) -> None:
    [first] = generate(tiny_engine, [request(seed=42)])
    [second] = generate(tiny_engine, [request(seed=42)])
    [other] = generate(tiny_engine, [request(seed=43)])
    assert np.array_equal(pixels(first.images[0].image), pixels(second.images[0].image))
    assert not np.array_equal(pixels(first.images[0].image), pixels(other.images[0].image))
    assert first.images[0].image.size == (SIZE, SIZE)


def test_count_four_uses_consecutive_seeds_each_reproducible_alone(tiny_engine: DiffusersEngine) -> None:
    [batch] = generate(tiny_engine, [request(seed=100, count=4)])
    assert batch.seeds == [100, 101, 102, 103]
    for image in batch.images[1:4:2]:
        [alone] = generate(tiny_engine, [request(seed=image.seed)])
        assert_close(alone.images[0].image, image.image)


def test_seeds_wrap_past_the_largest_so_every_seed_is_valid(tiny_engine: DiffusersEngine) -> None:
    [batch] = generate(tiny_engine, [request(seed=MAX_SEED, count=2)])
    assert batch.seeds == [MAX_SEED, 0]
    [alone] = generate(tiny_engine, [request(seed=0)])
    assert_close(alone.images[0].image, batch.images[1].image)


def test_request_images_do_not_depend_on_what_else_is_in_the_batch(tiny_engine: DiffusersEngine) -> None:
    mine = request("a red cat", seed=7, count=2)
    other = request("a blue dog", negative_prompt="blurry", seed=900)
    results = generate(tiny_engine, [other, mine])
    [alone] = generate(tiny_engine, [mine])
    assert [r.seeds for r in results] == [[900], [7, 8]]
    for batched, single in zip(results[1].images, alone.images, strict=True):
        assert_close(batched.image, single.image)


def test_missing_seed_is_drawn_in_range(tiny_engine: DiffusersEngine) -> None:
    results = generate(tiny_engine, [request(seed=None), request(seed=None)])
    seeds = [r.seeds[0] for r in results]
    assert all(0 <= seed <= MAX_SEED for seed in seeds)
    assert seeds[0] != seeds[1]


def test_clean_images_are_not_flagged(tiny_engine: DiffusersEngine) -> None:
    [result] = generate(tiny_engine, [request(count=2)])
    assert tiny_engine.models[default_model(tiny_engine)].checked
    assert result.nsfw == [False, False]


def test_flagged_images_keep_their_pixels_and_carry_the_flag(
    tiny_engine: DiffusersEngine, tiny_nsfw_model_dir: Path
) -> None:
    engine = load_engine(tiny_settings(tiny_nsfw_model_dir))
    [flagged] = generate(engine, [request(seed=5, count=2)])
    [clean] = generate(tiny_engine, [request(seed=5, count=2)])
    assert flagged.nsfw == [True, True]
    for kept, original in zip(flagged.images, clean.images, strict=True):
        assert np.array_equal(pixels(kept.image), pixels(original.image))  # same weights: same pixels
        assert pixels(kept.image).max() > 0  # not blacked out


def test_model_without_safety_checker_reports_unknown_flags_and_warns(
    tiny_unchecked_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="sdbot.inference"):
        engine = load_engine(tiny_settings(tiny_unchecked_model_dir))
    assert "no safety checker" in caplog.text
    assert not engine.models[tiny_unchecked_model_dir.name].checked
    [result] = generate(engine, [request(count=2)])
    assert result.nsfw == [None, None]


def test_progress_reports_every_step_with_previews_for_each_request(tiny_engine: DiffusersEngine) -> None:
    reports: list[Progress] = []
    previews: list[list[Image.Image]] = []

    def on_progress(progress: Progress) -> None:
        reports.append(progress)
        if progress.make_previews is not None:  # rendered during the callback, from the live latents
            previews.append(progress.make_previews())

    batch = [request(steps=6), request("a blue dog", steps=6, count=2)]
    generate(tiny_engine, batch, on_progress=on_progress)
    total = reports[0].total
    assert [p.step for p in reports] == list(range(1, total + 1))
    assert all(p.total == total for p in reports)
    assert previews, "previews are offered every few steps"
    for shown in previews:
        assert len(shown) == 2  # the first image of each request
        assert all(preview.size == (SIZE // 2, SIZE // 2) for preview in shown)


def test_preview_decoder_makes_the_previews(tiny_model_dir: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    AutoencoderTiny(
        encoder_block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
    ).save_pretrained(tmp_path / "taesd")
    engine = load_engine(tiny_settings(tiny_model_dir, preview_decoder=str(tmp_path / "taesd")))
    previews: list[list[Image.Image]] = []
    generate(
        engine,
        [request(steps=4)],
        on_progress=lambda p: previews.append(p.make_previews()) if p.make_previews else None,
    )
    assert previews
    assert previews[0][0].size == (SIZE, SIZE)  # the tiny autoencoder decodes to full size


def test_cancel_stops_within_one_step(tiny_engine: DiffusersEngine) -> None:
    reports: list[Progress] = []
    with pytest.raises(GenerationCancelled, match="after step 2"):
        generate(
            tiny_engine,
            [request(steps=20)],
            on_progress=reports.append,
            should_cancel=lambda: len(reports) >= 2,
        )
    assert [p.step for p in reports] == [1, 2]


def test_cancel_before_start_runs_nothing(tiny_engine: DiffusersEngine) -> None:
    reports: list[Progress] = []
    with pytest.raises(GenerationCancelled):
        generate(tiny_engine, [request()], on_progress=reports.append, should_cancel=lambda: True)
    assert reports == []


def test_out_of_memory_is_a_generation_failure_and_the_engine_stays_usable(
    tiny_engine: DiffusersEngine,
) -> None:
    held: list[weakref.ref[torch.Tensor]] = []

    def run_out_of_memory(progress: Progress) -> None:
        activations = torch.ones(16)  # stands for the tensors the failed step held
        held.append(weakref.ref(activations))
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(GenerationFailed, match="out of GPU memory") as failed:
        generate(tiny_engine, [request()], on_progress=run_out_of_memory)
    assert failed.value.__cause__ is not None  # the traceback is kept, its frames' tensors are not
    assert held[0]() is None
    [result] = generate(tiny_engine, [request()])
    assert len(result.images) == 1


def test_png_carries_parameters_that_read_back(tiny_engine: DiffusersEngine) -> None:
    [result] = generate(tiny_engine, [request("a red cat", negative_prompt="blurry", seed=77, guidance=6.5)])
    params = read_parameters(result.images[0].png)
    assert params == ImageParameters(
        prompt="a red cat",
        negative_prompt="blurry",
        steps=STEPS,
        sampler="PLMS",
        schedule_type="Normal",
        guidance=6.5,
        seed=77,
        width=SIZE,
        height=SIZE,
        model=default_model(tiny_engine),
    )
    with Image.open(io.BytesIO(result.images[0].png)) as decoded:
        assert decoded.size == (SIZE, SIZE)


def test_parameters_text_is_automatic1111s_format_and_round_trips() -> None:
    params = ImageParameters(
        prompt="a cat,\nwearing a hat",
        negative_prompt="blurry, low quality",
        steps=30,
        sampler="Euler a",
        guidance=7.5,
        seed=4294967295,
        width=512,
        height=768,
        model="my: model, v2",
        strength=0.6,
    )
    text = format_parameters(params)
    assert text == (
        "a cat,\nwearing a hat\nNegative prompt: blurry, low quality\n"
        "Steps: 30, Sampler: Euler a, CFG scale: 7.5, Seed: 4294967295, Size: 512x768, "
        'Model: "my: model, v2", Denoising strength: 0.6'
    )
    assert parse_parameters(text) == params


def test_parameters_written_by_the_web_ui_parse() -> None:
    text = (
        "masterpiece, cat\nSteps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 123, "
        "Size: 512x512, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Version: v1.10.1"
    )
    params = parse_parameters(text)
    assert (params.prompt, params.negative_prompt, params.steps, params.seed) == (
        "masterpiece, cat",
        "",
        20,
        123,
    )
    assert params.schedule_type == "Karras"
    assert params.extra == {"Model hash": "6ce0161689", "Version": "v1.10.1"}
    with pytest.raises(ValueError, match="missing"):
        parse_parameters("just a caption")


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"steps": 0}, "Steps must be from 1 to 150"),
        ({"steps": 151}, "Steps must be from 1 to 150"),
        ({"guidance": 30.5}, "Guidance must be from 0 to 30"),
        ({"guidance": -1.0}, "Guidance must be from 0 to 30"),
        ({"width": 100}, "width must be a multiple of 8 from 64 to 2048"),
        ({"height": 4096}, "height must be a multiple of 8 from 64 to 2048"),
        ({"count": 0}, "count must be from 1 to 4"),
        ({"count": 5}, "count must be from 1 to 4"),
        ({"seed": -1}, "seed must be from 0 to 4294967295"),
        ({"prompt": "  "}, "the prompt is empty"),
    ],
)
def test_bad_parameters_are_rejected_naming_the_allowed_range(
    tiny_engine: DiffusersEngine, bad: dict[str, object], message: str
) -> None:
    fields = {"prompt": "a red cat", "steps": STEPS, "width": SIZE, "height": SIZE, **bad}
    with pytest.raises(ValueError, match=message):
        generate(tiny_engine, [JobParams(**fields)])


def test_batch_must_share_its_key(tiny_engine: DiffusersEngine) -> None:
    with pytest.raises(ValueError, match="share model, LoRAs, sampler, steps, guidance, size"):
        generate(tiny_engine, [request(), request(width=SIZE + 8)])
    with pytest.raises(ValueError, match="at least one request"):
        generate(tiny_engine, [])


def test_variation_makes_a_new_image_of_the_same_size(tiny_engine: DiffusersEngine) -> None:
    [source] = generate(tiny_engine, [request(seed=3)])
    variation = from_image(source.images[0].image, steps=4, seed=11)
    [first] = tiny_engine.run(Operation.VARIATION, [variation])
    [again] = tiny_engine.run(Operation.VARIATION, [variation])
    image = first.images[0]
    assert image.image.size == (SIZE, SIZE)
    assert first.seeds == [11] and first.nsfw == [False]
    assert not np.array_equal(pixels(image.image), pixels(source.images[0].image))
    assert np.array_equal(pixels(image.image), pixels(again.images[0].image))
    assert read_parameters(image.png).strength == pytest.approx(0.6)


def test_upscale_doubles_the_size(tiny_engine: DiffusersEngine) -> None:
    [source] = generate(tiny_engine, [request(seed=3)])
    [upscaled] = tiny_engine.run(
        Operation.UPSCALE, [from_image(source.images[0].image, 2, steps=4, seed=3, strength=0.3)]
    )
    assert upscaled.images[0].image.size == (2 * SIZE, 2 * SIZE)
    vae = tiny_engine.runner(default_model(tiny_engine)).model.text_to_image.vae
    assert not vae.use_tiling  # tiled for the upscale only
    assert read_parameters(upscaled.images[0].png).width == 2 * SIZE


def test_image_to_image_rejects_bad_strength_and_sizes(tiny_engine: DiffusersEngine) -> None:
    source = Image.new("RGB", (SIZE, SIZE))
    with pytest.raises(ValueError, match=r"strength must be from 0\.05 to 1"):
        tiny_engine.run(Operation.VARIATION, [from_image(source, steps=4, strength=1.5)])
    with pytest.raises(ValueError, match="use at least 4 steps"):
        tiny_engine.run(Operation.UPSCALE, [from_image(source, 2, steps=2, strength=0.3)])
    with pytest.raises(ValueError, match="width must be a multiple of 8 from 64 to 2048"):
        tiny_engine.run(Operation.UPSCALE, [from_image(Image.new("RGB", (1600, 64)), 2, steps=4)])
    with pytest.raises(ValueError, match="needs a source image"):
        tiny_engine.run(Operation.VARIATION, [EngineRequest(request(strength=0.6))])


def test_image_to_image_shares_the_text_to_image_weights(tiny_engine: DiffusersEngine) -> None:
    model = tiny_engine.runner(default_model(tiny_engine)).model
    txt2img, img2img = model.text_to_image, model.image_to_image
    assert img2img is not None
    assert img2img.unet is txt2img.unet
    assert img2img.vae is txt2img.vae
    assert img2img.text_encoder is txt2img.text_encoder


def test_loading_a_model_prints_no_deprecation_of_torch_dtype(tiny_model_dir: Path, tmp_path: Path) -> None:
    # diffusers 0.40 renamed ``torch_dtype`` to ``dtype`` and warns at every load given the old name.
    checkpoint = save_single_file(tiny_model_dir, tmp_path / "tiny-sd.safetensors")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_engine(tiny_settings(tiny_model_dir))
        load_engine(tiny_settings(checkpoint, model_config=str(tiny_model_dir), db_path=tmp_path / "db"))
    assert [str(w.message) for w in caught if "dtype" in str(w.message)] == []


def test_single_checkpoint_file_loads_offline_with_a_local_config(
    tiny_engine: DiffusersEngine, tiny_model_dir: Path, tmp_path: Path
) -> None:
    checkpoint = save_single_file(tiny_model_dir, tmp_path / "tiny-sd.safetensors")
    settings = tiny_settings(checkpoint, model_config=str(tiny_model_dir), db_path=tmp_path / "sdbot.sqlite3")
    engine = load_engine(settings)
    assert list(engine.models) == ["tiny-sd"]
    assert engine.models["tiny-sd"].checked  # from the config folder: single files carry none
    [from_file] = generate(engine, [request(seed=21)])
    [from_folder] = generate(tiny_engine, [request(seed=21)])
    assert np.array_equal(pixels(from_file.images[0].image), pixels(from_folder.images[0].image))
    # A1111's hash of the file, hashed once and kept beside the database
    written = read_parameters(from_file.images[0].png)
    assert written.model == "tiny-sd"
    assert written.extra == {"Model hash": hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:10]}
    assert (tmp_path / "model-hashes.json").is_file()


def test_unloadable_models_raise_model_load_failed(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadFailed, match="no such file"):
        load_engine(tiny_settings(tmp_path / "missing.safetensors"))
    with pytest.raises(ModelLoadFailed, match="could not load model"):
        load_engine(tiny_settings(tmp_path))  # a folder without a pipeline in it


def test_device_auto_prefers_cuda_then_mps_then_cpu_with_half_precision_on_a_gpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    placement = resolve_placement("auto", "auto")
    assert (placement.device.type, placement.dtype) == ("cpu", torch.float32)
    assert resolve_placement("cpu", "bfloat16").dtype == torch.bfloat16
    with pytest.raises(ModelLoadFailed, match="no CUDA GPU"):
        resolve_placement("cuda", "auto")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_placement("auto", "auto") == resolve_placement("mps", "float16")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    placement = resolve_placement("auto", "auto")
    assert (placement.device.type, placement.dtype) == ("cuda", torch.float16)


def test_low_memory_options_keep_the_pixels(
    tiny_engine: DiffusersEngine, tiny_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="sdbot.inference.loading"):
        engine = load_engine(tiny_settings(tiny_model_dir, attention_slicing=True, offload="model"))
    assert "no effect on the CPU" in caplog.text
    [sliced] = generate(engine, [request(seed=8, count=2)])
    [plain] = generate(tiny_engine, [request(seed=8, count=2)])
    for a, b in zip(sliced.images, plain.images, strict=True):
        assert_close(a.image, b.image)


def test_image_to_image_pipeline_keeps_the_chosen_precision(tiny_model_dir: Path) -> None:
    engine = load_engine(Settings(model=str(tiny_model_dir), device="cpu", dtype="bfloat16"))
    assert engine.dtype == torch.bfloat16
    model = engine.runner(tiny_model_dir.name).model
    for pipeline in (model.text_to_image, model.image_to_image):  # sharing modules: casting one casts both
        for name in ("unet", "vae", "text_encoder", "safety_checker"):
            assert getattr(pipeline, name).dtype == torch.bfloat16, name


def test_warm_up_runs_each_batch_size_split_into_requests_of_at_most_four(
    tiny_engine: DiffusersEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches: list[list[int]] = []
    run = tiny_engine.run

    def recording(operation, requests, *args, **kwargs):  # type: ignore[no-untyped-def]
        batches.append([r.params.count for r in requests])
        return run(operation, requests, *args, **kwargs)

    monkeypatch.setattr(tiny_engine, "run", recording)
    assert tiny_engine.warm_up(default_model(tiny_engine), batch_sizes=(1, 6), size=Size(64, 64)) > 0
    assert batches == [[1], [4, 2]]
