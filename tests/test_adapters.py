"""LoRAs and embeddings on the tiny SD pipeline, with prompts encoded by compel as the engine encodes them:
LoRA weights, isolation between batches, the bounded set of loaded adapters, embeddings that come and go,
long and weighted prompts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sdbot.errors import GenerationFailed, InvalidRequest
from sdbot.inference.adapters import Embeddings, LoraAdapters
from sdbot.inference.addon_families import SD1, SDXL
from sdbot.inference.addons import AddonKind, AddonLibrary
from sdbot.inference.conditioning import PromptEncoder
from tests.tiny_loras import save_diffusers_lora, save_embedding, save_kohya_lora


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory: pytest.TempPathFactory, tiny_pipeline) -> Path:
    folder = tmp_path_factory.mktemp("loras")
    save_kohya_lora(tiny_pipeline, folder / "kohya.safetensors", seed=1)
    save_diffusers_lora(tiny_pipeline, folder / "styles" / "diffusers.safetensors", seed=2)
    save_kohya_lora(tiny_pipeline, folder / "third.safetensors", seed=3)
    # a new version of styles/diffusers, made here while the pipeline has no adapters
    save_kohya_lora(tiny_pipeline, folder.parent / "replacement.safetensors", seed=9)
    return folder


@pytest.fixture
def pipe(tiny_pipeline):
    """The shared tiny pipeline, with every LoRA removed after the test (embeddings go with their files)."""
    yield tiny_pipeline
    tiny_pipeline.unload_lora_weights()


def render(pipe, prompt: str = "a red cat", negative: str = "", seed: int = 1) -> np.ndarray:
    encoder = PromptEncoder(pipe)
    arguments = encoder.arguments(encoder.encode([prompt, negative]), [prompt], [negative])
    generator = torch.Generator().manual_seed(seed)
    image = pipe(num_inference_steps=2, width=64, height=64, generator=generator, **arguments).images[0]
    return np.asarray(image, dtype=np.int16)


def test_loras_in_both_formats_change_the_image_at_weight_1_and_not_at_0(pipe, lora_dir: Path) -> None:
    loras = LoraAdapters(pipe, AddonLibrary(lora_dir, AddonKind.LORA), SD1)
    before = render(pipe)
    for name in ("kohya", "styles/diffusers"):
        [applied] = loras.apply([(name, 1.0)])
        assert applied.name == name and len(applied.hash) == 12
        assert np.abs(render(pipe) - before).mean() > 3  # on 0..255
        loras.apply([(name, 0.0)])
        assert np.array_equal(render(pipe), before)


def test_no_lora_leaks_into_a_later_batch(pipe, lora_dir: Path) -> None:
    loras = LoraAdapters(pipe, AddonLibrary(lora_dir, AddonKind.LORA), SD1)
    weighted = "a (red:1.4) cat, " + "on the mat " * 40  # weighting and chunks use the text encoder too
    before = [render(pipe), render(pipe, weighted, "blurry")]
    both = loras.apply([("kohya", 0.8), ("styles/diffusers", -0.5)])
    assert [lora.weight for lora in both] == [0.8, -0.5]
    assert not np.array_equal(render(pipe, weighted, "blurry"), before[1])
    assert loras.apply([]) == ()
    after = [render(pipe), render(pipe, weighted, "blurry")]
    for image, original in zip(after, before, strict=True):
        assert np.abs(image - original).max() <= 1


def test_recently_used_loras_stay_loaded_within_the_bound_and_changed_files_reload(
    pipe, lora_dir: Path
) -> None:
    loras = LoraAdapters(pipe, AddonLibrary(lora_dir, AddonKind.LORA, max_age=0), SD1, keep=1)
    loras.apply([("kohya", 1.0)])
    [first] = pipe.get_active_adapters()
    loras.apply([("third", 1.0)])
    loras.apply([("kohya", 1.0)])
    assert pipe.get_active_adapters() == [first]  # still loaded: not read again
    loras.apply([("styles/diffusers", 1.0)])  # the batch's one plus one kept: "third" goes
    assert loras.loaded == 2
    first_version = render(pipe)
    path = lora_dir / "styles" / "diffusers.safetensors"
    original = path.read_bytes()
    path.write_bytes((lora_dir.parent / "replacement.safetensors").read_bytes())
    try:
        loras.apply([("styles/diffusers", 1.0)])
        assert not np.array_equal(render(pipe), first_version)
    finally:
        path.write_bytes(original)


def test_a_lora_applies_whole_where_the_attention_projections_were_fused(pipe, lora_dir: Path) -> None:
    library = AddonLibrary(lora_dir, AddonKind.LORA)
    LoraAdapters(pipe, library, SD1).apply([("kohya", 1.0)])
    with_lora = render(pipe)
    pipe.unload_lora_weights()
    pipe.unet.fuse_qkv_projections()  # as the engine does on CUDA when it loads a model
    LoraAdapters(pipe, library, SD1).apply([("kohya", 1.0)])
    assert np.abs(render(pipe) - with_lora).max() <= 1


def test_a_lora_gone_or_of_another_family_fails_the_batch_clearly(pipe, lora_dir: Path) -> None:
    with pytest.raises(GenerationFailed, match="no longer in the LoRA folder"):
        LoraAdapters(pipe, AddonLibrary(lora_dir, AddonKind.LORA), SD1).apply([("missing", 1.0)])
    with pytest.raises(InvalidRequest, match="for sd1 models, not sdxl"):
        LoraAdapters(pipe, AddonLibrary(lora_dir, AddonKind.LORA), SDXL).apply([("kohya", 1.0)])


def test_embeddings_load_as_their_file_name_and_unload_when_removed(pipe, tmp_path: Path) -> None:
    library = AddonLibrary(tmp_path, AddonKind.EMBEDDING, max_age=0)
    embeddings = Embeddings(pipe, library, SD1)
    without = render(pipe, "a red cat", "badhands")
    save_embedding(tmp_path / "negative" / "badhands.safetensors", 32, 3, seed=1)
    embeddings.refresh()
    assert "badhands_2" in pipe.tokenizer.get_vocab()
    with_embedding = render(pipe, "a red cat", "badhands")
    assert not np.array_equal(with_embedding, without)
    assert embeddings.hashes("a cat, (badhands:1.2)").keys() == {"badhands"}
    (tmp_path / "negative" / "badhands.safetensors").unlink()
    embeddings.refresh()
    assert "badhands" not in pipe.tokenizer.get_vocab()
    assert np.array_equal(render(pipe, "a red cat", "badhands"), without)


def test_long_prompts_are_encoded_whole_and_weighting_changes_the_image(pipe) -> None:
    body = "a red cat on the mat, " * 45  # about 300 tokens
    assert len(pipe.tokenizer(body + "blue dog", add_special_tokens=False).input_ids) > 300
    assert not np.array_equal(render(pipe, body + "blue dog"), render(pipe, body + "red cat"))

    def native(prompt: str) -> np.ndarray:  # the pipeline's own encoding cuts the prompt at 77 tokens
        generator = torch.Generator().manual_seed(1)
        image = pipe(prompt, num_inference_steps=2, width=64, height=64, generator=generator).images[0]
        return np.asarray(image, dtype=np.int16)

    assert np.array_equal(native(body + "blue dog"), native(body + "red cat"))
    plain = render(pipe, "a red cat")
    assert np.array_equal(plain, native("a red cat"))  # without markup, compel encodes as the pipeline
    for weighted in ("a (red:1.5) cat", "a [red] cat", "a red BREAK cat"):
        assert not np.array_equal(render(pipe, weighted), plain), weighted
