"""``python bot.py``: a missing token or a bad setting is one line and exit status 2; a model that cannot load
stops the bot with exit status 1; SIGTERM (``docker stop``) shuts the bot and its engine's process down in
order; a cog that fails to load is skipped; the health check reads the running bot's heartbeat; the quota
ledger is pruned while the bot runs."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import discord
import psutil
import pytest

import bot as entry
from sdbot.library import load_library
from tests.conftest import tiny_settings
from tests.fakediscord import FakeDiscord
from tests.fakediscord.spec import API_PREFIX
from tests.test_queue import until

pytest_plugins = ["tests.fakediscord.fixtures"]

ROOT = Path(__file__).resolve().parents[1]


def run_bot_py(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k != "DISCORD_TOKEN" and not k.startswith("SDBOT_")}
    return subprocess.run(
        [sys.executable, str(ROOT / "bot.py")],
        cwd=tmp_path,  # no .env here
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_missing_token_says_what_to_do(tmp_path):
    done = run_bot_py(tmp_path)
    assert done.returncode == 2
    assert done.stderr == (
        "sdbot: DISCORD_TOKEN is not set: copy .env.example to .env and put your bot token in it\n"
    )


def test_a_bad_setting_is_one_line(tmp_path):
    done = run_bot_py(tmp_path, DISCORD_TOKEN="x", SDBOT_MAX_BATCH="lots")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "SDBOT_MAX_BATCH='lots'" in done.stderr


def _damaged_databases(folder: Path) -> dict[str, Path]:
    """SDBOT_DB values the bot cannot use: a folder that is a file, random bytes, a truncated database."""
    (folder / "a-file").write_text("not a folder")
    (folder / "random.sqlite3").write_bytes(bytes(range(256)) * 20)
    whole = folder / "whole.sqlite3"
    sqlite3.connect(whole).executescript(
        "CREATE TABLE t (x TEXT); " + "INSERT INTO t VALUES (hex(randomblob(400)));" * 300
    )
    truncated = folder / "truncated.sqlite3"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    return {
        "cannot be opened": folder / "a-file" / "sdbot.sqlite3",
        "is not a SQLite database": folder / "random.sqlite3",
        "is damaged": truncated,
    }


@pytest.mark.parametrize("problem", ["cannot be opened", "is not a SQLite database", "is damaged"])
def test_a_database_the_bot_cannot_use_is_one_line_naming_sdbot_db(tmp_path, problem):
    path = _damaged_databases(tmp_path)[problem]
    done = run_bot_py(tmp_path, DISCORD_TOKEN="x", SDBOT_DB=str(path))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    [line] = [line for line in done.stderr.splitlines() if line.startswith("sdbot: ")]
    assert line.startswith(f"sdbot: SDBOT_DB={str(path)!r}") and problem in line


async def test_discord_out_of_reach_at_start_up_is_retried_and_said_so_in_one_line(
    discord_spec, tiny_model_dir, tmp_path, caplog, monkeypatch
):
    import sdbot.bot

    monkeypatch.setattr(sdbot.bot, "LOGIN_RETRY_FIRST", 0.05)
    with socket.socket() as probe:  # a port nothing listens on, until the fake Discord does
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    fake = FakeDiscord(discord_spec)
    monkeypatch.setattr(discord.http.Route, "BASE", f"http://127.0.0.1:{port}{API_PREFIX}")
    settings = tiny_settings(tiny_model_dir, db_path=tmp_path / "bot.sqlite3", engine_process=False)
    running = asyncio.create_task(entry.run(settings, fake.token))

    def retries() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.getMessage().startswith("cannot reach Discord")]

    await until(lambda: len(retries()) >= 2)
    assert all("\n" not in r.getMessage() and r.exc_info is None for r in retries())
    assert f"127.0.0.1:{port}" in retries()[0].getMessage() and "trying again in" in retries()[0].getMessage()
    await fake.start(port)
    try:
        with fake.discord_pointed_here():
            await fake.wait_for(lambda: fake.gateway.connected, timeout=30)
            os.kill(os.getpid(), signal.SIGTERM)
            assert await asyncio.wait_for(running, 30) == 0
    finally:
        await fake.stop()


async def test_a_model_that_cannot_load_stops_the_bot(fake_discord: FakeDiscord, tmp_path, capsys):
    settings = tiny_settings(tmp_path / "no-such-model", db_path=tmp_path / "bot.sqlite3")
    assert await asyncio.wait_for(entry.run(settings, fake_discord.token), 60) == 1
    assert "no-such-model" in capsys.readouterr().err


async def test_sigterm_shuts_the_bot_down(fake_discord: FakeDiscord, tiny_model_dir, tmp_path):
    settings = tiny_settings(tiny_model_dir, db_path=tmp_path / "bot.sqlite3", shutdown_grace=1.0)
    running = asyncio.create_task(entry.run(settings, fake_discord.token))
    await fake_discord.wait_for(lambda: fake_discord.gateway.connected, timeout=30)
    # The model may still be loading: the job waits for it in the queue.
    await fake_discord.slash("imagine", raw=True, prompt="before the stop", size="64x64", steps=2)
    await fake_discord.wait_for_message(lambda m: not m.ephemeral and bool(m.attachments), timeout=60)
    engines = engine_processes()
    assert len(engines) == 1  # the model runs in a process of its own
    os.kill(os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(running, 30) == 0
    assert not engines[0].is_running() and engine_processes() == []


def engine_processes() -> list[psutil.Process]:
    """This process's children that multiprocessing spawned (not its resource tracker)."""
    return [child for child in psutil.Process().children() if "spawn_main" in " ".join(child.cmdline())]


async def test_a_cog_that_fails_to_load_is_logged_and_the_rest_works(
    start_sdbot, fake_discord, monkeypatch, caplog
):
    import sdbot.bot

    monkeypatch.setattr(sdbot.bot, "COGS", ("sdbot.cogs.no_such_cog", *sdbot.bot.COGS))
    await start_sdbot()
    assert "could not load sdbot.cogs.no_such_cog" in caplog.text
    interaction = await fake_discord.slash("imagine", raw=True, prompt="still here", size="64x64", steps=2)
    await fake_discord.wait_for_message(
        lambda m: m.interaction is interaction and not m.ephemeral and bool(m.attachments), timeout=30
    )


async def test_the_health_check_sees_a_running_bot_and_then_a_stopped_one(start_sdbot, tmp_path):
    from sdbot.health import check_heartbeat, heartbeat_path

    running = await start_sdbot()
    path = heartbeat_path(tmp_path / "sdbot.sqlite3")
    healthy, reason = check_heartbeat(path, now=time.time())
    assert healthy and reason.startswith("ok: connected")
    await running.stop()
    assert check_heartbeat(path, now=time.time()) == (
        False,
        f"no heartbeat at {path}: the bot is not running (or still starting)",
    )


async def test_the_quota_ledger_is_pruned_while_the_bot_runs(start_sdbot, fake_discord, monkeypatch):
    import sdbot.bot
    import sdbot.housekeeping

    monkeypatch.setattr(sdbot.housekeeping, "PRUNE_INTERVAL", 0.05)
    running = await start_sdbot()
    bot: sdbot.bot.SDBot = running.client
    guild, alice = fake_discord.guild_id, fake_discord.members["alice"].id

    prunes = 0
    prune = bot.quotas.prune

    async def counted_prune() -> int:
        nonlocal prunes
        pruned = await prune()
        prunes += 1
        return pruned

    monkeypatch.setattr(bot.quotas, "prune", counted_prune)

    async def ledger_rows() -> int:
        window = await bot.db.usage.window(guild, alice, since=float("-inf"))  # the whole history
        return window.used + window.reserved

    async def two_more_prunes() -> None:
        seen = prunes
        await until(lambda: prunes >= seen + 2)  # the second began after this was called

    await bot.quotas.commit(await bot.quotas.reserve(guild, alice, 3, is_manager=False))
    await two_more_prunes()
    assert await ledger_rows() == 3  # inside the window
    fake_discord.clock.advance(bot.quotas.window + 1)
    await two_more_prunes()
    assert await ledger_rows() == 0


def test_engine_process_off_loads_the_engine_in_the_bots_process(tiny_model_dir, tmp_path):
    from sdbot.inference.engine import DiffusersEngine

    settings = tiny_settings(tiny_model_dir, db_path=tmp_path / "bot.sqlite3", engine_process=False)
    with entry.engine_factory(settings, load_library(settings)) as load_engine:
        assert isinstance(load_engine(), DiffusersEngine)
    assert engine_processes() == []
