"""Shared fixtures. Expensive things (tiny model folders, a loaded engine) are built once per session.

The Hugging Face hub is unreachable here: HF_HUB_OFFLINE makes any accidental hub call fail at once
instead of waiting on the network.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from sdbot.config import Settings
from sdbot.db import Database

# Before anything imports huggingface_hub (tests.tiny_models, diffusers), which reads it once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Before torch starts, here and in the engine processes the tests spawn (they inherit it): see ``_build``.
os.environ.setdefault("OMP_NUM_THREADS", "1")


TINY_MODEL = "tiny-model"


def tiny_settings(model: Path | str, **overrides: object) -> Settings:
    """Settings that load ``model`` on the CPU in float32, as the engine tests and the bot tests run it."""
    return Settings(model=str(model), device="cpu", dtype="float32", **overrides)


def _one_thread() -> None:
    import torch

    # The tiny models' tensors are so small that handing work to a second thread costs more than it
    # saves: one intra-op thread runs their steps about 10x faster on a busy 2-core machine.
    torch.set_num_threads(1)


def _build(factory: pytest.TempPathFactory, name: str, nsfw: bool | None) -> Path:
    """A tiny SD 1.x folder named ``tiny-model`` whatever its checker, so that every engine over one calls its
    model ``tiny-model`` (the name a bot's one-model library gives it)."""
    from tests.tiny_models import build_tiny_model

    _one_thread()
    return build_tiny_model(factory.mktemp(name) / TINY_MODEL, nsfw=nsfw)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SD pipeline folder whose safety checker flags nothing."""
    return _build(tmp_path_factory, "tiny-model", nsfw=False)


@pytest.fixture(scope="session")
def tiny_nsfw_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same weights, but the safety checker flags every image."""
    return _build(tmp_path_factory, "tiny-model-nsfw", nsfw=True)


@pytest.fixture(scope="session")
def tiny_unchecked_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same weights, saved without a safety checker."""
    return _build(tmp_path_factory, "tiny-model-unchecked", nsfw=None)


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_unchecked_model_dir: Path):
    """The tiny SD pipeline loaded in memory, without a safety checker (shared: a test that changes it undoes
    it)."""
    from diffusers import StableDiffusionPipeline

    _one_thread()
    pipe = StableDiffusionPipeline.from_pretrained(tiny_unchecked_model_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def tiny_family(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], Path]:
    """``tiny_family(name)``: the folder of a tiny pipeline of a family in ``tests.tiny_models.TINY_FAMILIES``
    ("sd1", "sdxl", "flux-schnell", ...), built on first use ("sd1" is ``tiny_model_dir``)."""
    from tests.tiny_models import TINY_FAMILIES

    built: dict[str, Path] = {}

    def folder(name: str) -> Path:
        if name == "sd1":
            return request.getfixturevalue("tiny_model_dir")
        if name not in built:
            _one_thread()
            built[name] = TINY_FAMILIES[name](tmp_path_factory.mktemp(name))
        return built[name]

    return folder


@pytest.fixture(scope="session")
def tiny_safety_checker(tmp_path_factory: pytest.TempPathFactory) -> Callable[[bool], Path]:
    """``tiny_safety_checker(flag_all)``: a folder laid out like the hub's standalone SD safety checker,
    whose tiny checker flags every image (True) or none (False)."""
    from tests.tiny_models.parts import save_standalone_checker

    built: dict[bool, Path] = {}

    def folder(flag_all: bool) -> Path:
        if flag_all not in built:
            built[flag_all] = save_standalone_checker(tmp_path_factory.mktemp("checker"), flag_all=flag_all)
        return built[flag_all]

    return folder


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dir: Path):
    """A DiffusersEngine over ``tiny_model_dir`` on the CPU in float32 (shared: do not change its state)."""
    from sdbot.inference.engine import load_engine

    return load_engine(tiny_settings(tiny_model_dir))


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated database in a temporary file, closed after the test."""
    database = await Database.open(tmp_path / "sdbot.sqlite3")
    yield database
    await database.close()


@pytest.fixture
def start_sdbot(discord_bot, fake_discord, tiny_model_dir: Path, tiny_engine, tmp_path: Path):
    """``await start_sdbot(engine=None, **settings)``: the real SDBot on the loopback Discord (test modules
    load ``tests.fakediscord.fixtures``), on a temporary database, with the tiny engine (or ``engine``; with
    a ``models_file``, an engine of that library) and the fake's clock; returns the fixture's ``RunningBot``
    once the model is in and requests are accepted."""
    from sdbot.bot import SDBot
    from sdbot.inference.engine import load_engine

    async def start(engine=None, **overrides: object):
        settings = tiny_settings(
            tiny_model_dir, **({"db_path": tmp_path / "sdbot.sqlite3", "shutdown_grace": 2.0} | overrides)
        )
        chosen = engine or (load_engine(settings) if settings.models_file else tiny_engine)
        running = await discord_bot(lambda: SDBot(settings, lambda: chosen, clock=fake_discord.clock.now))
        await fake_discord.wait_for(lambda: running.client is not None and running.client.model_ready)
        return running

    return start
