"""The container health check: the heartbeat the bot writes and ``python -m sdbot health`` reading it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from sdbot.health import Heartbeat, check_heartbeat, heartbeat_path, write_heartbeat

REPO = Path(__file__).resolve().parents[1]


def _run_health(db_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SDBOT_DB": str(db_path)}
    return subprocess.run(
        [sys.executable, "-m", "sdbot", "health"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )


def test_health_command_passes_on_a_fresh_connected_heartbeat(tmp_path: Path) -> None:
    db_path = tmp_path / "sdbot.sqlite3"
    beat = Heartbeat(at=time.time(), connected=True, model_ready=True, queued=2)
    write_heartbeat(heartbeat_path(db_path), beat)
    done = _run_health(db_path)
    assert done.returncode == 0, done.stderr
    assert "ok: connected, model ready, 2 job(s) queued" in done.stdout


def test_health_command_fails_in_one_line_when_the_bot_never_ran(tmp_path: Path) -> None:
    done = _run_health(tmp_path / "sdbot.sqlite3")
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "the bot is not running" in done.stderr


def test_a_stale_heartbeat_is_unhealthy(tmp_path: Path) -> None:
    path = heartbeat_path(tmp_path / "sdbot.sqlite3")
    write_heartbeat(path, Heartbeat(at=1000.0, connected=True, model_ready=True, queued=0))
    assert check_heartbeat(path, now=1000.0 + 60)[0]
    healthy, reason = check_heartbeat(path, now=1000.0 + 121)
    assert not healthy and "121 s old" in reason


def test_a_disconnected_bot_is_unhealthy_and_a_loading_one_is_not(tmp_path: Path) -> None:
    path = heartbeat_path(tmp_path / "sdbot.sqlite3")
    write_heartbeat(path, Heartbeat(at=5.0, connected=False, model_ready=True, queued=0))
    assert check_heartbeat(path, now=5.0) == (False, "the bot is not connected to Discord")
    write_heartbeat(path, Heartbeat(at=5.0, connected=True, model_ready=False, queued=0))
    healthy, reason = check_heartbeat(path, now=5.0)
    assert healthy and "model loading" in reason


def test_a_corrupt_heartbeat_is_reported_not_raised(tmp_path: Path) -> None:
    path = heartbeat_path(tmp_path / "sdbot.sqlite3")
    path.write_text("{not json")
    healthy, reason = check_heartbeat(path, now=0.0)
    assert not healthy and reason.startswith("unreadable heartbeat")
