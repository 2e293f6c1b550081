"""End to end through the loopback Discord: the bot's life across stops and restarts. A graceful stop answers
every interaction in flight; after a restart, members' status messages say what became of their jobs."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sdbot.bot import SDBot
from sdbot.db import Database, StoredImage, StoredResult
from tests.fakediscord import FakeDiscord, Message
from tests.test_bot_buttons import imagine
from tests.test_bot_imagine import SMALL, ephemeral_answer

pytest_plugins = ["tests.fakediscord.fixtures"]

ROOT = Path(__file__).resolve().parents[1]


def unretrieved_task_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    """asyncio's "Task exception was never retrieved": a handler that raised where nobody caught it."""
    return [r.getMessage() for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.ERROR]


async def test_a_graceful_stop_answers_every_interaction_in_flight(start_sdbot, fake_discord, caplog):
    running = await start_sdbot()
    bot: SDBot = running.client
    original = await imagine(fake_discord)
    release = fake_discord.hold_downloads()  # the Vary clicks' handlers wait for the clicked image
    members = ("alice", "bob", "moderator")
    clicks = [await fake_discord.click(original, "Vary (Strong)", user=user) for user in members]
    await fake_discord.wait_for(lambda: fake_discord.downloads_held == len(clicks))

    stopping = asyncio.create_task(running.stop())
    await fake_discord.wait_for(lambda: bot.is_closed() or not bot.accepting)
    late = await fake_discord.slash("imagine", raw=True, prompt="while it stops", **SMALL)
    assert "restarting" in await ephemeral_answer(fake_discord, late)
    release.set()
    await asyncio.wait_for(stopping, 30)

    for click in clicks:
        assert click.original is not None and not click.original.loading  # queued, then "restarting"
    assert unretrieved_task_errors(caplog) == []
    assert await _unfinished_or_done(bot, fake_discord) == len(clicks) + 1


async def _unfinished_or_done(bot: SDBot, fake: FakeDiscord) -> int:
    """Images reserved or used by the three members (in the stopped bot's database): each click's job was
    kept, none lost or refunded."""
    db = await Database.open(bot.settings.db_path)
    try:
        windows = [
            await db.usage.window(fake.guild_id, fake.members[member].id, since=0.0)
            for member in ("alice", "bob", "moderator")
        ]
    finally:
        await db.close()
    return sum(window.reserved + window.used for window in windows)


class BotProcess:
    """bot.py in a process of its own against the fake Discord (``tests.bot_process``), to be killed."""

    def __init__(self, fake: FakeDiscord, model: Path, folder: Path) -> None:
        self.fake = fake
        self.db_path = folder / "sdbot.sqlite3"
        self.log = folder / "bot.log"
        ours = ("DISCORD_TOKEN", "SDBOT_")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(ours)} | {
            "PYTHONPATH": str(ROOT),
            "DISCORD_TOKEN": fake.token,
            "SDBOT_MODEL": str(model),
            "SDBOT_DEVICE": "cpu",
            "SDBOT_DTYPE": "float32",
            "SDBOT_DB": str(self.db_path),
            "SDBOT_ENGINE_PROCESS": "0",  # one process to kill
        }
        self.folder = folder
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Start it and wait until it is connected (and, the first time, has synced its commands)."""
        sessions = set(self.fake.gateway.sessions)
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.bot_process",
                self.fake.url,
                cwd=self.folder,  # no .env here
                env=self.env,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )
        await self.fake.wait_for(
            lambda: set(self.fake.gateway.sessions) - sessions and self.fake.commands(guild=False), timeout=60
        )

    async def kill(self) -> None:
        """SIGKILL: no shutdown at all."""
        assert self.process is not None
        self.process.kill()
        await asyncio.wait_for(self.process.wait(), 30)

    async def stop(self) -> int:
        """SIGTERM (``docker stop``): the graceful shutdown; its exit status."""
        assert self.process is not None
        self.process.terminate()
        return await asyncio.wait_for(self.process.wait(), 60)


@pytest.fixture
async def bot_process(fake_discord, tiny_model_dir, tmp_path) -> AsyncIterator[BotProcess]:
    running = BotProcess(fake_discord, tiny_model_dir, tmp_path)
    yield running
    if running.process is not None and running.process.returncode is None:
        await running.kill()


def posted(fake: FakeDiscord) -> list[Message]:
    return [m for m in fake.messages if not m.ephemeral and m.attachments and not m.deleted]


async def test_a_result_waiting_out_a_429_when_the_bot_is_killed_is_posted_once_after_the_restart(
    bot_process, fake_discord
):
    await bot_process.start()
    fake_discord.refuse_posts(429, retry_after=120)  # the result's post waits two minutes
    interaction = await fake_discord.slash("imagine", raw=True, prompt="through a kill", **SMALL)
    await fake_discord.wait_for(lambda: any(r.status == 429 for r in fake_discord.rejections), timeout=60)
    await bot_process.kill()
    assert posted(fake_discord) == []

    await bot_process.start()
    await fake_discord.wait_for(lambda: posted(fake_discord), timeout=60)
    status = await fake_discord.wait_for_reply(interaction)
    await fake_discord.wait_for(lambda: "is done" in status.content, timeout=30)
    [result] = posted(fake_discord)
    alice = fake_discord.members["alice"]
    assert f"<@{alice.id}>" in result.content and status.content.endswith(f"/{result.id}")
    assert await bot_process.stop() == 0
    await expect_ledger(bot_process.db_path, fake_discord, used=1, message_id=result.id)


async def test_a_job_running_when_the_bot_is_killed_runs_again_and_its_status_says_so(
    bot_process, fake_discord
):
    await bot_process.start()
    options = {"prompt": "interrupted", "size": "256x256", "steps": 50}  # long enough to be killed in
    interaction = await fake_discord.slash("imagine", raw=True, **options)
    status = await fake_discord.wait_for_reply(interaction, timeout=60)
    await fake_discord.wait_for(lambda: "Generating" in status.content, timeout=60)
    await bot_process.kill()

    await bot_process.start()
    await fake_discord.wait_for(lambda: "is done" in status.content, timeout=120)
    [result] = posted(fake_discord)
    assert any("queued again" in content for content in status.contents)
    assert status.content.endswith(f"/{result.id}")
    assert await bot_process.stop() == 0
    await expect_ledger(bot_process.db_path, fake_discord, used=1, message_id=result.id)


async def expect_ledger(db_path: Path, fake: FakeDiscord, *, used: int, message_id: int) -> None:
    """Alice's one job is done and recorded with its message, its images counted once, nothing waits."""
    db = await Database.open(db_path)
    try:
        window = await db.usage.window(fake.guild_id, fake.members["alice"].id, since=0.0)
        job = await db.jobs.get(1)
        assert (window.reserved, window.used) == (0, used)
        assert job is not None and (job.state, job.message_id) == ("done", message_id)
        assert await db.jobs.undelivered() == [] and await db.statuses.valid(now=0.0) == []
        assert not db.results.root.is_dir() or list(db.results.root.iterdir()) == []
    finally:
        await db.close()


async def _as_if_stopped_between_post_and_record(bot: SDBot, job_id: int, *, keep_images: bool) -> None:
    """Put the ledger back as a run leaves it when it stops after posting a result but before recording
    its message: done, its images waiting (kept or, ``keep_images=False``, lost). First wait until this run
    has finished with the job (message recorded, status final), so that it does not undo the change."""
    await _until_settled(bot, job_id)
    async with bot.db._gateway.transaction() as conn:
        await conn.execute("UPDATE jobs SET message_id = NULL, undelivered = 1 WHERE id = ?", (job_id,))
    if keep_images:
        await bot.db.results.save(job_id, StoredResult([StoredImage(b"\x89PNG kept", 1, False)]))


async def test_a_result_posted_by_a_run_that_stopped_before_recording_it_is_not_posted_again(
    start_sdbot, fake_discord
):
    running = await start_sdbot()
    result = await imagine(fake_discord, "posted once")
    await _as_if_stopped_between_post_and_record(running.client, 1, keep_images=True)
    bot: SDBot = await running.restart()
    await fake_discord.wait_for(lambda: bot.model_ready)
    await until_recorded(bot, 1)
    job = await bot.db.jobs.get(1)
    assert job is not None and job.message_id == result.id
    assert [m for m in fake_discord.messages if m.attachments and not m.ephemeral] == [result]
    assert await bot.db.results.load(1) is None


async def test_a_result_whose_images_were_lost_is_refunded_and_the_member_told(start_sdbot, fake_discord):
    running = await start_sdbot()
    await imagine(fake_discord, "lost")
    await _as_if_stopped_between_post_and_record(running.client, 1, keep_images=False)
    bot: SDBot = await running.restart()
    alice = fake_discord.members["alice"]
    notice = await fake_discord.wait_for_message(lambda m: f"<@{alice.id}> Job 1 is done, but" in m.content)
    assert "images were lost" in notice.content and notice.content.endswith("Nothing was charged.")
    window = await bot.db.usage.window(fake_discord.guild_id, alice.id, since=0.0)
    assert (window.reserved, window.used) == (0, 0)


async def _until_settled(bot: SDBot, job_id: int) -> None:
    """Wait until the job's message is recorded and its status message's token forgotten."""
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        job = await bot.db.jobs.get(job_id)
        status = await bot.db.statuses.get(job_id, now=0.0)
        if job is not None and job.message_id is not None and status is None:
            return
        assert asyncio.get_running_loop().time() < deadline, "timed out waiting"
        await asyncio.sleep(0.02)


async def until_recorded(bot: SDBot, job_id: int) -> None:
    """Wait until the job no longer waits to be posted (start-up recovery runs in the background)."""
    deadline = asyncio.get_running_loop().time() + 30
    while [job.id for job in await bot.db.jobs.undelivered()] == [job_id]:
        assert asyncio.get_running_loop().time() < deadline, "timed out waiting"
        await asyncio.sleep(0.02)
