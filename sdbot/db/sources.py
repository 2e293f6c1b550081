"""The pictures unfinished jobs start from, kept as files in the data folder next to the database.

A job that starts from a picture (a member's upload, or an image of an earlier result for Vary, Upscale,
Zoom Out and Pan) reads it once, when it is queued, and keeps it here until it ends, so a restart or a long
queue never needs Discord's CDN again and an expired attachment URL cannot fail it. Files are named at
random, written whole (a temporary file, flushed, then renamed) before the job row that names them, and
deleted once the job has ended. ``sweep`` at start-up deletes what no unfinished job names: what a crash
left between writing a file and its row, or between a job's end and its file's deletion (files younger
than a few minutes are spared: another bot process on the same database may be about to write their row).

File work runs in a thread: it must not hold up the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from pathlib import Path

SUFFIX = ".png"


class SourceStore:
    """PNG files in ``folder`` (created on first write), by name."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def write(self, png: bytes) -> str:
        """Store ``png`` durably and return its name."""
        return await asyncio.to_thread(self._write, png)

    async def read(self, name: str) -> bytes | None:
        """The file's bytes, or None when it is gone."""
        return await asyncio.to_thread(self._read, name)

    async def delete(self, name: str) -> None:
        await asyncio.to_thread(self._path(name).unlink, missing_ok=True)

    async def sweep(self, keep: set[str], *, older_than: float) -> int:
        """Delete every stored file (and half-written one) not in ``keep`` and last written more than
        ``older_than`` seconds ago; return how many."""
        return await asyncio.to_thread(self._sweep, keep, time.time() - older_than)

    def _write(self, png: bytes) -> str:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = secrets.token_hex(16) + SUFFIX
        partial = self.folder / f".{name}.partial"
        with open(partial, "wb") as file:
            file.write(png)
            file.flush()
            os.fsync(file.fileno())
        partial.replace(self._path(name))
        return name

    def _read(self, name: str) -> bytes | None:
        try:
            return self._path(name).read_bytes()
        except FileNotFoundError:
            return None

    def _sweep(self, keep: set[str], written_before: float) -> int:
        if not self.folder.is_dir():
            return 0
        removed = 0
        for path in self.folder.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if path.name in keep or not path.is_file() or path.stat().st_mtime >= written_before:
                    continue
                path.unlink()
                removed += 1
        return removed

    def _path(self, name: str) -> Path:
        if Path(name).name != name or not name.endswith(SUFFIX):  # only names this store made
            raise ValueError(f"not a stored source name: {name!r}")
        return self.folder / name
