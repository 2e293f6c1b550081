"""The LoRA and textual-inversion files an operator offers: ``SDBOT_LORA_DIR`` and ``SDBOT_EMBEDDINGS_DIR``.

An ``AddonLibrary`` indexes the ``.safetensors`` files under one folder, subfolders included, from their
headers alone (no weight is loaded, no torch imported): each file's family (``addon_families``), trigger
words and, for an embedding, its vector count. A LoRA's name is its path below the folder without the suffix
(``styles/ink``); an embedding's is its file name without the suffix, the word that stands for it in
prompts. Files added, replaced or removed while the bot runs are seen at the next look after ``max_age``
seconds: a rescan lists the folders and rereads only the headers of files whose size or time changed.

``lora_hash`` and ``embedding_hash`` are the short hashes AUTOMATIC1111's web UI writes into ``Lora hashes``
and ``TI hashes``: for a LoRA the first 12 hex digits of the SHA-256 of the file's tensor data after the
header (kohya's "addnet" hash, which survives edits of the metadata; a trainer may have stored it as
``sshs_model_hash``), for an embedding those of the whole file's SHA-256. Both are computed once per file
version.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from sdbot.inference.addon_families import UnsupportedAddon, embedding_family, lora_family

log = logging.getLogger(__name__)

SUFFIX = ".safetensors"
MAX_AGE = 2.0  # seconds a scan is trusted before the folders are listed again
MAX_TRIGGERS = 3
SHORT_HASH = 12
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit
_CHUNK = 1024 * 1024
_HEX = re.compile(r"[0-9a-fA-F]{12,64}")


class AddonKind(StrEnum):
    LORA = "lora"
    EMBEDDING = "embedding"


@dataclass(frozen=True)
class Addon:
    """One usable file. ``vectors``: the prompt tokens an embedding stands for (0 for a LoRA)."""

    kind: AddonKind
    name: str
    path: Path
    family: str
    triggers: tuple[str, ...] = ()
    vectors: int = 0


@dataclass(frozen=True)
class _Header:
    shapes: dict[str, list[int]]
    metadata: dict[str, str]
    data_offset: int  # where the tensor data starts


class AddonLibrary:
    """The LoRAs or the embeddings under ``folder`` (None: the operator offers none). Thread-safe."""

    def __init__(
        self,
        folder: Path | None,
        kind: AddonKind,
        *,
        max_age: float = MAX_AGE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._folder = folder
        self._kind = kind
        self._max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._scanned_at: float | None = None
        self._addons: dict[str, Addon] = {}
        self._problems: dict[Path, str] = {}
        self._seen: dict[Path, tuple[int, int, Addon | str]] = {}  # path -> (mtime_ns, size, result)

    @property
    def kind(self) -> AddonKind:
        return self._kind

    def addons(self) -> dict[str, Addon]:
        """Every usable file by name, in name order."""
        with self._lock:
            now = self._clock()
            if self._scanned_at is None or now - self._scanned_at >= self._max_age:
                self._scan()
                self._scanned_at = now
            return dict(self._addons)

    def problems(self) -> dict[Path, str]:
        """The files that could not be used, with the reason (as of the last scan)."""
        self.addons()
        return dict(self._problems)

    def find(self, name: str) -> Addon | None:
        """The file ``name`` names: exactly, else ignoring case, else by its file name alone when only one
        file has it (so that ``<lora:ink>`` from another tool finds ``styles/ink``)."""
        addons = self.addons()
        if name in addons:
            return addons[name]
        wanted = name.casefold()
        for matches in (
            [a for a in addons.values() if a.name.casefold() == wanted],
            [a for a in addons.values() if a.path.stem.casefold() == wanted],
        ):
            if len(matches) == 1:
                return matches[0]
        return None

    def for_family(self, family: str) -> list[Addon]:
        return [addon for addon in self.addons().values() if addon.family == family]

    def _scan(self) -> None:
        seen: dict[Path, tuple[int, int, Addon | str]] = {}
        addons: dict[str, Addon] = {}
        problems: dict[Path, str] = {}
        for path, stat in _files(self._folder):
            previous = self._seen.get(path)
            if previous is not None and previous[:2] == (stat.st_mtime_ns, stat.st_size):
                result = previous[2]
            else:
                result = self._read(path)
                if isinstance(result, str):
                    log.warning("%s %s is not usable: %s", self._kind, path, result)
            seen[path] = (stat.st_mtime_ns, stat.st_size, result)
            if isinstance(result, str):
                problems[path] = result
            elif result.name in addons:
                problems[path] = f"the name {result.name} is already taken by {addons[result.name].path}"
            else:
                addons[result.name] = result
        self._seen = seen
        self._addons = dict(sorted(addons.items(), key=lambda item: item[0].casefold()))
        self._problems = problems

    def _read(self, path: Path) -> Addon | str:
        assert self._folder is not None
        try:
            header = _read_header(path)
            if self._kind is AddonKind.LORA:
                name = path.relative_to(self._folder).with_suffix("").as_posix()
                family = lora_family(header.shapes, header.metadata)
                return Addon(self._kind, name, path, family, trigger_words(header.metadata))
            family, vectors = embedding_family(header.shapes)
            return Addon(self._kind, path.stem, path, family, vectors=vectors)
        except (OSError, ValueError, UnsupportedAddon) as error:
            return str(error)


def trigger_words(metadata: dict[str, str]) -> tuple[str, ...]:
    """The words that call up what a LoRA learned: its declared trigger phrase, else the tags most frequent
    in its training captions (kohya's ``ss_tag_frequency``: ``{dataset: {tag: count}}``)."""
    phrase = metadata.get("modelspec.trigger_phrase", "")
    if phrase.strip():
        return tuple(part.strip() for part in phrase.split(",") if part.strip())[:MAX_TRIGGERS]
    try:
        datasets = json.loads(metadata.get("ss_tag_frequency", "{}"))
        counts: Counter[str] = Counter()
        for tags in datasets.values():
            counts.update({str(tag).strip(): int(count) for tag, count in tags.items()})
    except (ValueError, TypeError, AttributeError):
        return ()
    return tuple(tag for tag, _ in counts.most_common(MAX_TRIGGERS) if tag)


def lora_hash(path: Path) -> str:
    """The web UI's short hash of a LoRA file (``Lora hashes``)."""
    stat = path.stat()
    return _lora_hash(path, stat.st_mtime_ns, stat.st_size)


def embedding_hash(path: Path) -> str:
    """The web UI's short hash of an embedding file (``TI hashes``)."""
    stat = path.stat()
    return _file_hash(path, stat.st_mtime_ns, stat.st_size, 0)


@functools.lru_cache(maxsize=1024)
def _lora_hash(path: Path, mtime_ns: int, size: int) -> str:
    header = _read_header(path)
    stored = header.metadata.get("sshs_model_hash", "")
    if _HEX.fullmatch(stored):
        return stored[:SHORT_HASH].lower()
    return _file_hash(path, mtime_ns, size, header.data_offset)


@functools.lru_cache(maxsize=1024)
def _file_hash(path: Path, mtime_ns: int, size: int, offset: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        file.seek(offset)
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()[:SHORT_HASH]


def _read_header(path: Path) -> _Header:
    """A safetensors file's header: 8 bytes of length, then JSON (tensors and ``__metadata__``)."""
    with path.open("rb") as file:
        prefix = file.read(8)
        length = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
        if not 2 <= length <= _MAX_HEADER:
            raise ValueError("not a .safetensors file (no header)")
        raw = file.read(length)
    if len(raw) != length:
        raise ValueError("the file is cut short (still being copied?)")
    try:
        entries = json.loads(raw)
        metadata = entries.pop("__metadata__", None) or {}
        shapes = {key: list(entry["shape"]) for key, entry in entries.items()}
    except (ValueError, TypeError, KeyError) as error:
        raise ValueError(f"not a .safetensors file (bad header: {error})") from error
    return _Header(shapes, {str(k): str(v) for k, v in metadata.items()}, 8 + length)


def _files(folder: Path | None) -> Iterator[tuple[Path, os.stat_result]]:
    """Every ``.safetensors`` file under ``folder``, in path order, with its stat (hidden entries skipped)."""
    if folder is None:
        return
    pending = [folder]
    found: list[tuple[Path, os.stat_result]] = []
    while pending:
        try:
            entries = list(os.scandir(pending.pop()))
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                pending.append(Path(entry.path))
            elif entry.name.lower().endswith(SUFFIX):
                try:
                    found.append((Path(entry.path), entry.stat()))
                except OSError:
                    continue
    yield from sorted(found, key=lambda item: item[0])
