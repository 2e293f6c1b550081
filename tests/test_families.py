"""Family profiles as data (defaults, JSON round trip, no torch in the bot process) and the detection of a
checkpoint file's family from its tensor names and shapes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from sdbot.errors import ModelLoadFailed
from sdbot.inference import families
from sdbot.inference.checkpoints import detect_checkpoint
from sdbot.inference.families import Family, FamilyProfile, Size

PROFILES = [
    families.SD1,
    families.SD2,
    families.SD2_BASE,
    families.SDXL,
    families.SD3,
    families.FLUX_SCHNELL,
    families.FLUX_DEV,
]


@pytest.mark.parametrize("profile", PROFILES, ids=lambda profile: profile.label)
def test_profiles_survive_a_json_round_trip(profile: FamilyProfile) -> None:
    wire = json.loads(json.dumps(profile.to_dict()))
    assert FamilyProfile.from_dict(wire) == profile
    assert wire["family"] == profile.family.value and wire["native_size"] == list(profile.native_size)


def test_each_family_states_its_published_defaults() -> None:
    assert (families.SD1.native_size, families.SD1.size_multiple) == (Size(512, 512), 8)
    assert families.SD2.native_size == Size(768, 768) and families.SD2_BASE.native_size == Size(512, 512)
    for profile in (families.SDXL, families.SD3, families.FLUX_SCHNELL, families.FLUX_DEV):
        assert profile.native_size == Size(1024, 1024)
        assert {Size(1152, 896), Size(832, 1216), Size(1344, 768)} <= set(profile.size_presets)
        assert all(size.width % 64 == 0 and size.height % 64 == 0 for size in profile.size_presets)
    assert (families.SD3.size_multiple, families.FLUX_DEV.size_multiple) == (16, 16)
    schnell, dev = families.FLUX_SCHNELL, families.FLUX_DEV
    assert (schnell.default_steps, schnell.uses_guidance, schnell.prompt_tokens) == (4, False, 256)
    assert (dev.default_steps, dev.default_guidance, dev.prompt_tokens) == (28, 3.5, 512)
    assert not schnell.negative_prompt and not dev.negative_prompt and families.SD3.negative_prompt
    assert families.SD1.prompt_tokens == families.SDXL.prompt_tokens == 77
    assert str(Size(832, 1216)) == "832x1216"


def test_the_bot_process_reads_profiles_and_checkpoints_without_torch() -> None:
    code = (
        "import sys, sdbot.inference.families, sdbot.inference.checkpoints; "
        "sys.exit('torch' in sys.modules or 'diffusers' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def _checkpoint(folder: Path, shapes: dict[str, tuple[int, ...]]) -> Path:
    path = folder / "model.safetensors"
    save_file({key: np.zeros(shape, dtype=np.float16) for key, shape in shapes.items()}, str(path))
    return path


UNET = "model.diffusion_model."
VAE = {"first_stage_model.decoder.conv_in.weight": (1, 1)}
SD_UNET = {UNET + "input_blocks.0.0.weight": (4, 4, 1, 1)}
CASES = {
    "sd1": (
        SD_UNET | VAE | {"cond_stage_model.transformer.text_model.final_layer_norm.weight": (2,)},
        Family.SD1,
    ),
    "sd2 by its text encoder": (
        SD_UNET | VAE | {"cond_stage_model.model.token_embedding.weight": (2, 2)},
        Family.SD2,
    ),
    "sd2 by its cross-attention width": (
        SD_UNET | {UNET + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (2, 1024)},
        Family.SD2,
    ),
    "sdxl": (
        SD_UNET
        | VAE
        | {UNET + "label_emb.0.0.weight": (2, 2), "conditioner.embedders.1.model.ln_final.weight": (2,)},
        Family.SDXL,
    ),
    "sd3": ({UNET + "joint_blocks.0.context_block.adaLN_modulation.1.bias": (2,)} | VAE, Family.SD3),
    "sd3 diffusers transformer": (
        {"transformer_blocks.0.ff_context.net.0.proj.weight": (2, 2), "pos_embed.proj.weight": (2, 2)},
        Family.SD3,
    ),
    "flux": ({"double_blocks.0.img_attn.norm.key_norm.scale": (2,)}, Family.FLUX),
}


@pytest.mark.parametrize("case", CASES)
def test_a_checkpoints_family_comes_from_its_tensor_names(tmp_path: Path, case: str) -> None:
    shapes, family = CASES[case]
    layout = detect_checkpoint(_checkpoint(tmp_path, shapes))
    assert layout.family is family
    assert layout.denoiser_only == (not any(key.startswith("first_stage_model.") for key in shapes))


def test_flux_dev_is_told_from_schnell_by_its_guidance_embedding(tmp_path: Path) -> None:
    dev = {
        UNET + "double_blocks.0.img_attn.norm.key_norm.scale": (2,),
        UNET + "guidance_in.in_layer.weight": (2, 2),
    }
    assert detect_checkpoint(_checkpoint(tmp_path, dev)).guidance_embeds
    (tmp_path / "model.safetensors").unlink()
    assert not detect_checkpoint(_checkpoint(tmp_path, CASES["flux"][0])).guidance_embeds


@pytest.mark.parametrize(
    ("shapes", "message"),
    [
        ({UNET + "input_blocks.0.0.weight": (4, 9, 1, 1)}, "9 input channels"),
        (
            SD_UNET
            | {UNET + "label_emb.0.0.weight": (2, 2), "conditioner.embedders.0.model.ln_final.weight": (2,)},
            "SDXL refiner",
        ),
        ({"single_stream_modulation.lin.weight": (2, 2)}, "Flux.2 or Chroma"),
        ({"encoder.conv_in.weight": (2, 2)}, "not a checkpoint of a family"),
    ],
)
def test_checkpoints_sdbot_cannot_run_are_refused_in_one_line(
    tmp_path: Path, shapes: dict[str, tuple[int, ...]], message: str
) -> None:
    with pytest.raises(ModelLoadFailed, match=message):
        detect_checkpoint(_checkpoint(tmp_path, shapes))


def test_a_file_that_is_not_safetensors_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadFailed, match=r"not a readable \.safetensors file"):
        detect_checkpoint(path)
