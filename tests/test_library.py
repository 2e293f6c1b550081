"""The model library: ``SDBOT_MODELS`` read into named models with their defaults, ``SDBOT_MODEL`` alone as a
library of one, and a one-line error naming the file, the model and the problem for every bad file."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdbot.config import Settings
from sdbot.errors import ConfigError
from sdbot.library import ModelEntry, display_name, load_library, read_library


def library_file(folder: Path, text: str) -> Path:
    path = folder / "models.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_library_file_lists_models_with_their_defaults(tmp_path: Path) -> None:
    (tmp_path / "juggernautXL.safetensors").write_bytes(b"")
    (tmp_path / "sdxl-config").mkdir()
    path = library_file(
        tmp_path,
        """
default = "sdxl"

[models.sd14]
source = "CompVis/stable-diffusion-v1-4"

[models.sdxl]
source = "stabilityai/stable-diffusion-xl-base-1.0"
description = "SDXL base"
steps = 30
guidance = 6.0
size = "1152x896"
sampler = "dpm++ 2m karras"

[models.juggernaut]
source = "juggernautXL.safetensors"   # beside this file
config = "./sdxl-config"
""",
    )
    library = load_library(Settings(models_file=path))
    assert library.names == ["sd14", "sdxl", "juggernaut"]
    assert library.default == "sdxl"
    assert library["sdxl"] == ModelEntry(
        "sdxl",
        "stabilityai/stable-diffusion-xl-base-1.0",
        description="SDXL base",
        steps=30,
        guidance=6.0,
        size=(1152, 896),
        sampler="DPM++ 2M Karras",
    )
    juggernaut = library["juggernaut"]
    assert juggernaut.source == str(tmp_path / "juggernautXL.safetensors") and juggernaut.is_file
    assert juggernaut.config == str(tmp_path / "sdxl-config")


def test_without_a_default_the_first_model_is_it(tmp_path: Path) -> None:
    path = library_file(tmp_path, '[models.b]\nsource = "org/b"\n[models.a]\nsource = "org/a"\n')
    assert read_library(path).default == "b"


def test_sdbot_model_alone_is_a_library_of_one(tmp_path: Path) -> None:
    folder = tmp_path / "my-model"
    folder.mkdir()
    library = load_library(Settings(model=str(folder), model_config="/configs/sd15"))
    assert library.names == ["my-model"] and library.default == "my-model"
    assert library["my-model"].config == "/configs/sd15"
    assert load_library(Settings()).names == ["CompVis/stable-diffusion-v1-4"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("default = 'x'\n[models.a]\nsource = 'org/a'\n", "default = 'x' names no model (models: a)"),
        ("[models.a]\nsource = 'org/a'\nstepz = 3\n", "model 'a': unknown key 'stepz'"),
        ("[models.a]\n", "model 'a': source must be a non-empty string"),
        (
            "[models.a]\nsource = './missing.safetensors'\n",
            "model 'a': source './missing.safetensors': no such",
        ),
        ("[models.a]\nsource = 'not a repo'\n", "model 'a': source 'not a repo': no such file or folder"),
        ("[models.a]\nsource = 'org/a'\nsteps = 0\n", "model 'a': steps = 0 is outside 1 to 150"),
        ("[models.a]\nsource = 'org/a'\nsteps = 2.5\n", "model 'a': steps must be a whole number"),
        ("[models.a]\nsource = 'org/a'\nsize = 'big'\n", "model 'a': size must look like"),
        (
            "[models.a]\nsource = 'org/a'\nsampler = 'PLMS'\n",
            "model 'a': sampler must be one of Euler, Euler a",
        ),
        ("[models.'a b']\nsource = 'org/a'\n", "model name 'a b' must be 1-40 letters"),
        ("models = 3\n", "no models"),
        ("modles = 1\n", "unknown key 'modles'"),
        ("[models.a\n", "not valid TOML"),
        ("[models.a]\nsource = 'org/a'\nconfig = 'models.toml'\n", "config 'models.toml' is a file"),
    ],
)
def test_a_bad_library_stops_start_up_with_one_line(tmp_path: Path, text: str, problem: str) -> None:
    path = library_file(tmp_path, text)
    with pytest.raises(ConfigError) as refused:
        read_library(path)
    message = str(refused.value)
    assert message.startswith(f"SDBOT_MODELS={str(path)!r}: ") and "\n" not in message
    assert problem in message


def test_a_missing_library_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the file"):
        read_library(tmp_path / "absent.toml")


@pytest.mark.parametrize(
    ("model", "name"),
    [
        ("CompVis/stable-diffusion-v1-4", "CompVis/stable-diffusion-v1-4"),
        ("/models/sd15", "sd15"),  # a folder this machine does not have: named as the worker names it
        ("~/models/dreamshaper.safetensors", "dreamshaper"),
    ],
)
def test_a_lone_model_is_named_by_its_repo_id_or_its_last_path_part(model: str, name: str) -> None:
    assert display_name(model) == name
