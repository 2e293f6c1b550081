"""Every family's tiny pipeline through sdbot's loading code: profiles, pipelines sharing their modules,
reproducible images, decoding and previews per latent space, single-file checkpoints, safety checks."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderTiny
from PIL import Image

from sdbot.errors import ModelLoadFailed
from sdbot.inference.checkpoints import detect_checkpoint
from sdbot.inference.families import Family, Size
from sdbot.inference.latents import decode_to_images, spatial
from sdbot.inference.pipelines import ModelPipelines, denoiser, load_model, load_safety_checker
from sdbot.inference.previews import LinearPreview, TinyDecoderPreview, latent_format
from sdbot.inference.safety import SafetyCheck
from tests.tiny_models.single_file import save_single_file

SIZE = Size(128, 128)
STEPS = 3
FAMILIES = ["sd1", "sd2", "sdxl", "sd3", "flux-schnell", "flux-dev"]
EXPECTED = {  # family, label, pipeline class, latent channels, packed latents
    "sd1": (Family.SD1, "SD 1.x", "StableDiffusionPipeline", 4, False),
    "sd2": (Family.SD2, "SD 2.x", "StableDiffusionPipeline", 4, False),
    "sdxl": (Family.SDXL, "SDXL", "StableDiffusionXLPipeline", 4, False),
    "sd3": (Family.SD3, "SD 3.x", "StableDiffusion3Pipeline", 16, False),
    "flux-schnell": (Family.FLUX, "Flux.1 schnell", "FluxPipeline", 16, True),
    "flux-dev": (Family.FLUX, "Flux.1 dev", "FluxPipeline", 16, True),
}


@pytest.fixture(scope="module")
def models(tiny_family: Callable[[str], Path]) -> Callable[[str], ModelPipelines]:
    """``models(name)``: the family's tiny model loaded by ``load_model`` in float32 (once per module), with
    no standalone checker (the checker tests load a local one)."""
    loaded: dict[str, ModelPipelines] = {}

    def model(name: str) -> ModelPipelines:
        if name not in loaded:
            loaded[name] = load_model(str(tiny_family(name)), dtype=torch.float32)
        return loaded[name]

    return model


def latents_of(model: ModelPipelines, seed: int, **options: object) -> torch.Tensor:
    pipe = model.text_to_image
    pipe.set_progress_bar_config(disable=True)
    return pipe(
        prompt="a photo of a red cat",
        num_inference_steps=STEPS,
        width=SIZE.width,
        height=SIZE.height,
        generator=torch.Generator("cpu").manual_seed(seed),
        output_type="latent",
        **options,
    ).images


def render(model: ModelPipelines, seed: int) -> Image.Image:
    [image] = decode_to_images(model.text_to_image, model.profile, latents_of(model, seed), SIZE)
    return image


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


@pytest.mark.parametrize("name", FAMILIES)
def test_each_family_loads_with_its_profile(models: Callable[[str], ModelPipelines], name: str) -> None:
    model = models(name)
    family, label, pipeline, channels, packed = EXPECTED[name]
    profile = model.profile
    assert (profile.family, profile.label, profile.pipeline) == (family, label, pipeline)
    assert type(model.text_to_image).__name__ == pipeline
    assert (profile.latent_channels, profile.packed_latents) == (channels, packed)
    assert profile.image_to_image and model.image_to_image is not None
    assert profile.inpaint and model.inpaint is not None


@pytest.mark.parametrize("name", FAMILIES)
def test_image_to_image_and_inpaint_hold_the_same_modules(
    models: Callable[[str], ModelPipelines], name: str
) -> None:
    model = models(name)
    shared = model.text_to_image.components
    for sibling in (model.image_to_image, model.inpaint):
        assert sibling is not None
        modules = {
            key: value for key, value in sibling.components.items() if isinstance(value, torch.nn.Module)
        }
        assert modules, "a sibling pipeline without modules"
        for key, module in modules.items():
            assert module is shared[key], f"{type(sibling).__name__}.{key} is a copy"


def test_siblings_keep_the_loaded_precision(tiny_family: Callable[[str], Path]) -> None:
    model = load_model(str(tiny_family("sdxl")), dtype=torch.bfloat16)
    assert model.image_to_image is not None
    assert model.image_to_image.unet is model.text_to_image.unet
    assert {p.dtype for p in model.text_to_image.unet.parameters()} == {torch.bfloat16}
    assert model.text_to_image.vae.dtype == torch.bfloat16


@pytest.mark.parametrize("name", FAMILIES)
def test_text_to_image_is_reproducible_by_seed(models: Callable[[str], ModelPipelines], name: str) -> None:
    model = models(name)
    first, again, other = render(model, 7), render(model, 7), render(model, 8)
    assert first.size == SIZE
    assert np.array_equal(pixels(first), pixels(again))
    assert not np.array_equal(pixels(first), pixels(other))


@pytest.mark.parametrize("name", FAMILIES)
def test_decoding_latents_matches_the_pipelines_own_images(
    models: Callable[[str], ModelPipelines], name: str
) -> None:
    """Unpacking (Flux) and each VAE's scaling and shift undone exactly as the family's pipeline does it."""
    model = models(name)
    ours = render(model, 3)
    theirs = model.text_to_image(
        prompt="a photo of a red cat",
        num_inference_steps=STEPS,
        width=SIZE.width,
        height=SIZE.height,
        generator=torch.Generator("cpu").manual_seed(3),
    ).images[0]
    assert np.array_equal(pixels(ours), pixels(theirs))


@pytest.mark.parametrize("name", FAMILIES)
def test_image_to_image_and_inpaint_run(models: Callable[[str], ModelPipelines], name: str) -> None:
    model = models(name)
    source = render(model, 5)
    mask = Image.new("L", SIZE, 0)
    mask.paste(255, (32, 32, 96, 96))
    common = {"prompt": "a blue dog", "num_inference_steps": 4, "strength": 0.5, "height": 128, "width": 128}
    for pipe, extra in ((model.image_to_image, {}), (model.inpaint, {"mask_image": mask})):
        assert pipe is not None
        pipe.set_progress_bar_config(disable=True)
        [image] = pipe(
            image=source, generator=torch.Generator("cpu").manual_seed(1), **common, **extra
        ).images
        assert image.size == SIZE
        assert not np.array_equal(pixels(image), pixels(source))


@pytest.mark.parametrize("name", FAMILIES)
def test_linear_previews_come_out_at_half_size(models: Callable[[str], ModelPipelines], name: str) -> None:
    model = models(name)
    known = latent_format(model.profile, model.text_to_image.vae.config)
    assert known is not None and known.channels == model.profile.latent_channels
    latents = spatial(latents_of(model, 2), model.profile, SIZE, model.text_to_image.vae_scale_factor)
    [preview] = LinearPreview(known)(latents)
    assert preview.size == (SIZE.width // 2, SIZE.height // 2)
    assert pixels(preview).std() > 0, "a flat preview shows nothing"


@pytest.mark.parametrize("name", ["sd1", "sdxl", "sd3", "flux-schnell"])
def test_tiny_autoencoder_previews_come_out_at_full_size(
    models: Callable[[str], ModelPipelines], name: str
) -> None:
    model = models(name)
    torch.manual_seed(0)
    decoder = AutoencoderTiny(
        encoder_block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
        latent_channels=model.profile.latent_channels,
    ).eval()
    latents = spatial(latents_of(model, 2), model.profile, SIZE, model.text_to_image.vae_scale_factor)
    [preview] = TinyDecoderPreview(decoder)(latents)
    assert preview.size == SIZE


@pytest.mark.parametrize("flag_all", [True, False])
def test_a_family_without_a_checker_gets_the_standalone_one(
    tiny_family: Callable[[str], Path], tiny_safety_checker: Callable[[bool], Path], flag_all: bool
) -> None:
    source = str(tiny_safety_checker(flag_all))
    checker = load_safety_checker(source, dtype=torch.float32)
    model = load_model(str(tiny_family("sdxl")), dtype=torch.float32, standalone_checker=lambda: checker)
    assert model.safety is checker and checker is not None and checker.source == source
    check = SafetyCheck(checker.checker, checker.feature_extractor)
    assert check([render(model, 1), render(model, 2)]) == [flag_all, flag_all]


def test_a_model_with_its_own_checker_keeps_it(
    tiny_model_dir: Path, tiny_safety_checker: Callable[[bool], Path]
) -> None:
    standalone = load_safety_checker(str(tiny_safety_checker(True)), dtype=torch.float32)
    model = load_model(str(tiny_model_dir), dtype=torch.float32, standalone_checker=lambda: standalone)
    assert model.safety is not None and model.safety.source == "the model's own"
    assert model.safety.checker is model.text_to_image.safety_checker


def test_an_unreachable_checker_is_none_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """Offline without a cached copy of the hub's checker: the models it was for run unchecked."""
    assert load_safety_checker("CompVis/stable-diffusion-safety-checker", dtype=torch.float32) is None
    assert "could not load the safety checker from CompVis/stable-diffusion-safety-checker" in caplog.text


def test_single_file_sdxl_is_detected_and_pixel_identical_to_its_folder(
    models: Callable[[str], ModelPipelines], tiny_family: Callable[[str], Path], tmp_path: Path
) -> None:
    folder = tiny_family("sdxl")
    checkpoint = save_single_file(folder, tmp_path / "tiny-sdxl.safetensors")
    layout = detect_checkpoint(checkpoint)
    assert (layout.family, layout.denoiser_only) == (Family.SDXL, False)
    model = load_model(str(checkpoint), dtype=torch.float32, config=str(folder))
    assert model.profile == models("sdxl").profile
    assert np.array_equal(pixels(render(model, 4)), pixels(render(models("sdxl"), 4)))


def test_single_file_sd1_is_detected_and_keeps_the_config_folders_checker(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    checkpoint = save_single_file(tiny_model_dir, tmp_path / "tiny-sd1.safetensors")
    assert detect_checkpoint(checkpoint).family is Family.SD1
    model = load_model(str(checkpoint), dtype=torch.float32, config=str(tiny_model_dir))
    assert model.profile.family is Family.SD1
    assert model.safety is not None and model.safety.source == str(tiny_model_dir)


@pytest.mark.parametrize("name", ["flux-schnell", "flux-dev"])
def test_a_flux_transformer_file_loads_with_its_config_folder(
    models: Callable[[str], ModelPipelines], tiny_family: Callable[[str], Path], tmp_path: Path, name: str
) -> None:
    """A Flux transformer shared as one file (the text encoders and VAE come from the config folder)."""
    folder = tiny_family(name)
    checkpoint = tmp_path / f"{name}.safetensors"
    shutil.copy(folder / "transformer" / "diffusion_pytorch_model.safetensors", checkpoint)
    layout = detect_checkpoint(checkpoint)
    assert (layout.family, layout.denoiser_only, layout.guidance_embeds) == (
        Family.FLUX,
        True,
        name == "flux-dev",
    )
    with pytest.raises(ModelLoadFailed, match="holds only the transformer: set its config"):
        load_model(str(checkpoint), dtype=torch.float32)
    model = load_model(str(checkpoint), dtype=torch.float32, config=str(folder))
    assert model.profile == models(name).profile
    assert denoiser(model.text_to_image) is model.text_to_image.transformer
    assert np.array_equal(pixels(render(model, 4)), pixels(render(models(name), 4)))


def test_a_missing_file_or_folder_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadFailed, match="no such file"):
        load_model(str(tmp_path / "gone.safetensors"), dtype=torch.float32)
    with pytest.raises(ModelLoadFailed, match="could not load model"):
        load_model(str(tmp_path), dtype=torch.float32)
