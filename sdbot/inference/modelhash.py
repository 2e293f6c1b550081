"""A1111's ``Model hash`` of a single checkpoint file: the first 10 hex digits of its SHA-256.

Hashing a 6 GB checkpoint reads all of it (seconds to a minute), so each file is hashed once and the result
kept in a small JSON cache beside the database, keyed by the file's path, size and modification time: a
changed file is hashed again, an unchanged one never. A cache that cannot be read or written only costs the
hashing again; it never stops a model from loading.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

HASH_DIGITS = 10
CHUNK = 8 * 1024 * 1024


def model_hash(path: Path, cache: Path) -> str:
    """The file's A1111 model hash, from ``cache`` when the file has not changed since it was hashed."""
    stat = path.stat()
    key = str(path.resolve())
    stamp = [stat.st_size, stat.st_mtime_ns]
    known = _read(cache)
    entry = known.get(key)
    if isinstance(entry, dict) and entry.get("stamp") == stamp and isinstance(entry.get("hash"), str):
        return entry["hash"]
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    value = digest.hexdigest()[:HASH_DIGITS]
    known[key] = {"stamp": stamp, "hash": value}
    _write(cache, known)
    return value


def _read(cache: Path) -> dict[str, object]:
    try:
        data = json.loads(cache.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        log.warning("ignoring the model hash cache %s: %s", cache, error)
        return {}
    return data if isinstance(data, dict) else {}


def _write(cache: Path, known: dict[str, object]) -> None:
    """Write the whole cache to a temporary file, then put it in place: a crash leaves the old one."""
    temporary = cache.with_name(cache.name + ".tmp")
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(json.dumps(known, indent=1), encoding="utf-8")
        os.replace(temporary, cache)
    except OSError as error:
        log.warning("could not keep model hashes in %s: %s", cache, error)
