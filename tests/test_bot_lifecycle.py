"""End to end through the loopback Discord: the bot's life across stops and restarts. A graceful stop answers
every interaction in flight; after a restart, members' status messages say what became of their jobs."""

from __future__ import annotations

import asyncio
import logging

import pytest

from sdbot.bot import SDBot
from sdbot.db import Database
from tests.fakediscord import FakeDiscord
from tests.test_bot_buttons import imagine
from tests.test_bot_imagine import SMALL, ephemeral_answer

pytest_plugins = ["tests.fakediscord.fixtures"]


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
