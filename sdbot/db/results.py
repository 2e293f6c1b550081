"""A done job's images on disk, from before its end is recorded until its result message is.

The job ledger says a job is done only once its PNGs are safely in a folder beside the database
(``<database name>-results/<job id>/``: ``<index>.png`` and ``images.json`` with each image's seed and NSFW
verdict), so that whatever happens next (a kill -9, Discord down for an hour) the images can still be posted,
and a restart that finds images for a job the ledger still calls unfinished records it done instead of
running it again. The folder of a job goes once its message is recorded (or its delivery abandoned).

``images.json`` also keeps the result's notes (what the member is told about how it was made). A job's
folder appears whole or not at all: files are written and fsynced in ``<job id>.partial/``, which is
then renamed. Partial folders left by a crash are removed at start-up.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

MANIFEST = "images.json"
PARTIAL = ".partial"


@dataclass(frozen=True)
class StoredImage:
    """One image of a done job as kept on disk."""

    png: bytes = field(repr=False)
    seed: int
    nsfw: bool | None  # None: not checked (the model has no safety checker)


@dataclass(frozen=True)
class StoredResult:
    """A done job's images as kept, with what the member is told about how they were made."""

    images: list[StoredImage]
    notes: tuple[str, ...] = ()


def results_folder(db_path: Path) -> Path:
    """Where the results of the database at ``db_path`` wait (beside it, named after it, so that two
    databases in one folder never share)."""
    return db_path.with_name(f"{db_path.stem}-results")


class ResultFiles:
    """The folder of waiting results. The file work runs in one thread of its own, in the order it was
    asked for (so results are kept, and then posted, in the order their jobs finished)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sdbot-results")

    async def save(self, job_id: int, result: StoredResult) -> None:
        """Keep ``result`` for ``job_id`` durably (written, fsynced, renamed into place). Raises ``OSError``
        (a full disk, say); a failed save leaves nothing behind for the job but a partial folder."""
        await self._run(self._save, job_id, result)

    async def load(self, job_id: int) -> StoredResult | None:
        """The images kept for ``job_id``, or None when there are none (or they cannot be read)."""
        return await self._run(self._load, job_id)

    async def delete(self, job_id: int) -> None:
        await self._run(shutil.rmtree, self.root / str(job_id), True)

    async def remove_partial(self) -> None:
        """Remove what saves that a crash interrupted left behind."""
        await self._run(self._remove_partial)

    async def remove_except(self, keep: set[int]) -> None:
        """Remove the images of every job but those in ``keep`` (jobs whose rows were deleted meanwhile, or
        whose message was recorded by a run that stopped before it removed them)."""
        await self._run(self._remove_except, keep)

    def close(self) -> None:
        """Let the file work asked for finish, then end the thread."""
        self._thread.shutdown(wait=True)

    async def _run(self, work: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, work, *args)

    def _save(self, job_id: int, result: StoredResult) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        partial = self.root / f"{job_id}{PARTIAL}"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        for index, image in enumerate(result.images):
            _write_synced(partial / f"{index}.png", image.png)
        manifest = {
            "images": [{"seed": image.seed, "nsfw": image.nsfw} for image in result.images],
            "notes": list(result.notes),
        }
        _write_synced(partial / MANIFEST, json.dumps(manifest).encode())
        _sync_folder(partial)
        final = self.root / str(job_id)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        _sync_folder(self.root)

    def _load(self, job_id: int) -> StoredResult | None:
        folder = self.root / str(job_id)
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
            images = [
                StoredImage((folder / f"{index}.png").read_bytes(), entry["seed"], entry["nsfw"])
                for index, entry in enumerate(manifest["images"])
            ]
            return StoredResult(images, tuple(manifest["notes"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _remove_except(self, keep: set[int]) -> None:
        if self.root.is_dir():
            for folder in self.root.iterdir():
                if folder.name.isdigit() and int(folder.name) not in keep:
                    shutil.rmtree(folder, ignore_errors=True)

    def _remove_partial(self) -> None:
        if self.root.is_dir():
            for folder in self.root.glob(f"*{PARTIAL}"):
                shutil.rmtree(folder, ignore_errors=True)


def _write_synced(path: Path, data: bytes) -> None:
    with path.open("wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def _sync_folder(folder: Path) -> None:
    """Make a folder's entries (new files, a rename) durable."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
