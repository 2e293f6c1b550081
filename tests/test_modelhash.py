"""A1111's model hash of a checkpoint file: SHA-256's first 10 hex digits, hashed once per file version."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from sdbot.inference import modelhash


def test_a_files_hash_is_computed_once_and_again_only_when_it_changes(tmp_path: Path, monkeypatch) -> None:
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"weights" * 1000)
    cache = tmp_path / "data" / "model-hashes.json"
    expected = hashlib.sha256(model.read_bytes()).hexdigest()[:10]
    assert modelhash.model_hash(model, cache) == expected and cache.is_file()

    hashed: list[Path] = []
    real_open = Path.open

    def counting_open(self: Path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self == model:
            hashed.append(self)
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", counting_open)
    assert modelhash.model_hash(model, cache) == expected and hashed == []  # from the cache
    model.write_bytes(b"other weights")
    os.utime(model, ns=(1, 1))
    hashed.clear()  # the write above opened it too
    assert modelhash.model_hash(model, cache) == hashlib.sha256(b"other weights").hexdigest()[:10]
    assert hashed == [model]


def test_a_broken_cache_costs_only_the_hashing(tmp_path: Path) -> None:
    model = tmp_path / "model.ckpt"
    model.write_bytes(b"x")
    cache = tmp_path / "model-hashes.json"
    cache.write_text("{not json", encoding="utf-8")
    assert modelhash.model_hash(model, cache) == hashlib.sha256(b"x").hexdigest()[:10]
    assert modelhash.model_hash(model, cache) == hashlib.sha256(b"x").hexdigest()[:10]  # rewritten, readable
