"""What a model's source is before anything loads: its family, whether it is on this machine, and how much
its weights take on disk (about what they take in memory at the files' precision).

A local checkpoint file tells its family by its tensor names (``checkpoints``), a diffusers folder by the
pipeline class in its ``model_index.json``; a hub repo the same way once it is in the Hugging Face cache.
Nothing here imports torch or diffusers, so ``python -m sdbot models`` answers at once and the bot's process
could ask too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import try_to_load_from_cache

from sdbot.errors import ModelLoadFailed
from sdbot.inference.checkpoints import SINGLE_FILE_SUFFIXES, detect_checkpoint
from sdbot.inference.families import Family

# The text-to-image pipeline classes of the families sdbot has a table entry for.
PIPELINE_FAMILIES = {
    "StableDiffusionPipeline": Family.SD1,
    "StableDiffusionXLPipeline": Family.SDXL,
    "StableDiffusion3Pipeline": Family.SD3,
    "FluxPipeline": Family.FLUX,
}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".sft", ".gguf")
MODEL_INDEX = "model_index.json"


@dataclass(frozen=True)
class SourceInfo:
    """``family``: None where it cannot be told without downloading. ``weight_bytes``: None likewise."""

    family: Family | None
    on_disk: bool  # a local path, or a hub repo already in the cache
    weight_bytes: int | None


def inspect_source(source: str) -> SourceInfo:
    """Raises ``ModelLoadFailed`` for a local checkpoint file that no family reads."""
    path = Path(source).expanduser()
    if path.is_file():
        family = Family.SD1 if path.suffix.lower() == ".ckpt" else detect_checkpoint(path).family
        return SourceInfo(family, True, path.stat().st_size)
    if path.is_dir():
        return SourceInfo(_index_family(path / MODEL_INDEX), True, _weights_size(path))
    if path.suffix.lower() in SINGLE_FILE_SUFFIXES:
        raise ModelLoadFailed(f"{source!r}: no such file")
    cached = try_to_load_from_cache(source, MODEL_INDEX)
    if not isinstance(cached, str):
        return SourceInfo(None, False, None)
    index = Path(cached)
    return SourceInfo(_index_family(index), True, _weights_size(index.parent))


def pipeline_family(class_name: str) -> Family:
    """The family of a text-to-image pipeline class; ``OTHER`` for the families without a table entry."""
    return PIPELINE_FAMILIES.get(class_name, Family.OTHER)


def _index_family(index: Path) -> Family | None:
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return pipeline_family(str(data.get("_class_name", ""))) if isinstance(data, dict) else None


def _weights_size(folder: Path) -> int:
    """The weight files below ``folder`` (a hub snapshot's are links into the cache's blobs: followed)."""
    return sum(
        path.stat().st_size
        for path in folder.rglob("*")
        if path.suffix.lower() in WEIGHT_SUFFIXES and path.is_file()
    )
