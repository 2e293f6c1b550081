"""Shared fixtures. Expensive things (tiny model folders, a loaded engine) are built once per session.

The Hugging Face hub is unreachable here: HF_HUB_OFFLINE makes any accidental hub call fail at once
instead of waiting on the network.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sdbot.config import Settings

# Before anything imports huggingface_hub (tests.tiny_model, diffusers), which reads it once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def tiny_settings(model: Path | str, **overrides: object) -> Settings:
    """Settings that load ``model`` on the CPU in float32, as the engine tests and the bot tests run it."""
    return Settings(model=str(model), device="cpu", dtype="float32", **overrides)


def _build(factory: pytest.TempPathFactory, name: str, nsfw: bool | None) -> Path:
    import torch

    from tests.tiny_model import build_tiny_model

    # The tiny model's tensors are so small that handing work to a second thread costs more than it
    # saves: one intra-op thread runs its steps about 10x faster on a busy 2-core machine.
    torch.set_num_threads(1)
    return build_tiny_model(factory.mktemp(name), nsfw=nsfw)


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
def tiny_engine(tiny_model_dir: Path):
    """A DiffusersEngine over ``tiny_model_dir`` on the CPU in float32 (shared: do not change its state)."""
    from sdbot.inference.engine import load_engine

    return load_engine(tiny_settings(tiny_model_dir))
