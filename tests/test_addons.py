"""The LoRA and embedding folders: family from tensor names and shapes, trigger words, the web UI's hashes,
and files that appear, change or go while the bot runs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from sdbot.inference.addon_families import FLUX, SD1, SD2, SD3, SDXL
from sdbot.inference.addons import AddonKind, AddonLibrary, lora_hash
from tests.tiny_loras import save_diffusers_lora, save_embedding, save_kohya_lora


def write(path: Path, shapes: dict[str, tuple[int, ...]], metadata: dict[str, str] | None = None) -> Path:
    """A safetensors file with these tensor names and shapes (ones: only the header matters here)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({key: np.ones(shape, np.float16) for key, shape in shapes.items()}, str(path), metadata)
    return path


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


KOHYA_UNET = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0"
SELF_QUERY = f"{KOHYA_UNET}_attn1_to_q.lora_down.weight"  # says nothing of the family
SDXL_LDM = "lora_unet_input_blocks_4_1_transformer_blocks_0"


@pytest.mark.parametrize(
    ("shapes", "metadata", "family"),
    [
        # kohya SD 1.x and SD 2.x: the cross-attention context's width (CLIP ViT-L 768, OpenCLIP 1,024)
        ({f"{KOHYA_UNET}_attn2_to_k.lora_down.weight": (1, 768)}, {}, SD1),
        ({f"{KOHYA_UNET}_attn2_to_k.lora_down.weight": (1, 1024)}, {}, SD2),
        ({"lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": (1, 1024)}, {}, SD2),
        # SDXL: the second text encoder, a transformer two deep, or the 2,048-wide context
        ({"lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": (1, 1280)}, {}, SDXL),
        ({"unet.down_blocks.2.attentions.0.transformer_blocks.5.attn1.to_q.lora_A.weight": (1, 4)}, {}, SDXL),
        ({f"{SDXL_LDM}_attn2_to_k.lora_down.weight": (1, 2048)}, {}, SDXL),
        # Flux: BFL/kohya blocks, diffusers' single blocks, or a 3,072-wide diffusers transformer
        ({"lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": (1, 3072)}, {}, FLUX),
        ({"transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight": (1, 8)}, {}, FLUX),
        ({"transformer.transformer_blocks.0.attn.to_q.lora_A.weight": (1, 3072)}, {}, FLUX),
        # SD3: its joint blocks, or a narrower diffusers transformer
        ({"lora_unet_joint_blocks_0_x_block_attn_qkv.lora_down.weight": (1, 1536)}, {}, SD3),
        ({"transformer.transformer_blocks.0.attn.to_q.lora_A.weight": (1, 1536)}, {}, SD3),
        # tensors that say nothing more: the trainer's metadata, else SD 1.x
        ({SELF_QUERY: (1, 8)}, {"ss_base_model_version": "sdxl_base_v1-0"}, SDXL),
        ({SELF_QUERY: (1, 8)}, {"ss_v2": "True"}, SD2),
        ({SELF_QUERY: (1, 8)}, {}, SD1),
    ],
)
def test_a_loras_family_comes_from_its_tensor_names_and_shapes(
    tmp_path: Path, shapes: dict, metadata: dict, family: str
) -> None:
    write(tmp_path / "lora.safetensors", shapes, metadata)
    [lora] = AddonLibrary(tmp_path, AddonKind.LORA).addons().values()
    assert lora.family == family


def test_tiny_loras_in_kohya_and_diffusers_formats_are_sd1_with_their_trigger_words(
    tmp_path: Path, tiny_pipeline
) -> None:
    tags = json.dumps({"10_ink": {"inkstyle": 40, "cat": 12, "sketch": 20, "mat": 1}})
    save_kohya_lora(tiny_pipeline, tmp_path / "ink.safetensors", seed=1, metadata={"ss_tag_frequency": tags})
    save_diffusers_lora(tiny_pipeline, tmp_path / "styles" / "grain.safetensors", seed=2)
    phrase = {"modelspec.trigger_phrase": "grainy photo, film"}
    write(tmp_path / "styles" / "film.v2.safetensors", {SELF_QUERY: (1, 8)}, phrase)
    loras = AddonLibrary(tmp_path, AddonKind.LORA).addons()
    assert list(loras) == ["ink", "styles/film.v2", "styles/grain"]
    assert {lora.family for lora in loras.values()} == {SD1}
    assert loras["ink"].triggers == ("inkstyle", "sketch", "cat")
    assert loras["styles/film.v2"].triggers == ("grainy photo", "film")
    assert loras["styles/grain"].triggers == ()


def test_files_that_are_not_usable_loras_are_listed_with_the_reason(tmp_path: Path) -> None:
    write(tmp_path / "loha.safetensors", {f"{KOHYA_UNET}_attn1_to_q.hada_w1_a": (4, 8)})
    write(tmp_path / "model.safetensors", {"model.diffusion_model.input_blocks.0.0.weight": (8, 4, 3, 3)})
    (tmp_path / "half.safetensors").write_bytes(b"\x40\x00\x00\x00\x00\x00\x00\x00{")
    (tmp_path / "notes.txt").write_text("not a LoRA")
    library = AddonLibrary(tmp_path, AddonKind.LORA)
    assert library.addons() == {}
    problems = {path.name: reason for path, reason in library.problems().items()}
    assert problems.keys() == {"loha.safetensors", "model.safetensors", "half.safetensors"}
    assert "LoHa" in problems["loha.safetensors"]
    assert "no LoRA weights" in problems["model.safetensors"]
    assert "cut short" in problems["half.safetensors"]


def test_files_added_changed_or_removed_while_running_are_seen_after_a_short_while(tmp_path: Path) -> None:
    clock = Clock()
    library = AddonLibrary(tmp_path, AddonKind.LORA, max_age=2.0, clock=clock)
    assert library.addons() == {}
    key = f"{KOHYA_UNET}_attn2_to_k.lora_down.weight"
    write(tmp_path / "new" / "ink.safetensors", {key: (1, 768)})
    assert library.addons() == {}  # within max_age the last scan stands
    clock.now += 2.0
    assert library.find("new/ink").family == SD1
    assert library.find("ink") is library.find("NEW/INK") is library.find("new/ink")  # by file name, any case
    write(tmp_path / "new" / "ink.safetensors", {key: (1, 1024)})
    clock.now += 2.0
    assert library.find("new/ink").family == SD2
    (tmp_path / "new" / "ink.safetensors").unlink()
    clock.now += 2.0
    assert library.find("new/ink") is None


def test_the_lora_hash_is_the_web_uis_sha256_of_the_tensor_data_after_the_header(tmp_path: Path) -> None:
    key = f"{KOHYA_UNET}_attn2_to_k.lora_down.weight"
    first = write(tmp_path / "a.safetensors", {key: (4, 768)}, {"ss_output_name": "a"})
    renamed = write(tmp_path / "b.safetensors", {key: (4, 768)}, {"ss_output_name": "b", "more": "text"})
    data = first.read_bytes()
    header_end = 8 + int.from_bytes(data[:8], "little")
    assert lora_hash(first) == hashlib.sha256(data[header_end:]).hexdigest()[:12]
    assert lora_hash(renamed) == lora_hash(first)  # metadata edits keep the hash
    stored = write(tmp_path / "c.safetensors", {key: (4, 768)}, {"sshs_model_hash": "ABCDEF0123456789" * 4})
    assert lora_hash(stored) == "abcdef012345"


def test_embeddings_are_named_by_file_with_their_family_and_vector_count(tmp_path: Path) -> None:
    save_embedding(tmp_path / "negative" / "badhands.safetensors", 32, 3, seed=1)
    save_embedding(tmp_path / "wide.safetensors", 1024, 1, seed=2)
    save_embedding(tmp_path / "xl.safetensors", 32, 2, seed=3, second_width=48)
    write(tmp_path / "token.safetensors", {"<token>": (768,)})
    write(tmp_path / "other" / "badhands.safetensors", {"<other>": (768,)})
    library = AddonLibrary(tmp_path, AddonKind.EMBEDDING)
    found = {name: (e.family, e.vectors) for name, e in library.addons().items()}
    assert found == {"badhands": (SD1, 3), "token": (SD1, 1), "wide": (SD2, 1), "xl": (SDXL, 2)}
    [(clash, reason)] = library.problems().items()
    assert clash.parent.name == "other" and "already taken" in reason  # "negative/" sorts first
