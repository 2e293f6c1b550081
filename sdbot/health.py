"""Liveness for container health checks.

The running bot writes a small heartbeat file next to its database; ``python -m sdbot health`` (Docker's
HEALTHCHECK) reads it. The check runs the same code inside and outside Docker and needs no network, no
GPU and no Discord token.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

STALE_AFTER_SECONDS = 120.0


@dataclass(frozen=True)
class Heartbeat:
    at: float  # when it was written (epoch seconds)
    connected: bool  # the Discord gateway is connected
    model_ready: bool  # the model is loaded and jobs are accepted
    queued: int  # jobs waiting


def heartbeat_path(db_path: Path) -> Path:
    """The heartbeat lives beside the database, in the data volume the bot can always write."""
    return db_path.with_name(db_path.name + ".heartbeat")


def write_heartbeat(path: Path, heartbeat: Heartbeat) -> None:
    """Write atomically (temp file + rename) so a reader never sees half a file."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(asdict(heartbeat)))
    os.replace(temporary, path)


def check_heartbeat(path: Path, *, now: float, stale_after: float = STALE_AFTER_SECONDS) -> tuple[bool, str]:
    """``(healthy, one line saying why)``: healthy when a fresh heartbeat says the gateway is connected."""
    try:
        heartbeat = Heartbeat(**json.loads(path.read_text()))
    except FileNotFoundError:
        return False, f"no heartbeat at {path}: the bot is not running (or still starting)"
    except (ValueError, TypeError) as error:
        return False, f"unreadable heartbeat at {path}: {error}"
    age = now - heartbeat.at
    if age > stale_after:
        return False, f"heartbeat is {age:.0f} s old (limit {stale_after:.0f} s): the bot is stuck or stopped"
    if not heartbeat.connected:
        return False, "the bot is not connected to Discord"
    model = "model ready" if heartbeat.model_ready else "model loading"
    return True, f"ok: connected, {model}, {heartbeat.queued} job(s) queued, heartbeat {age:.0f} s old"
