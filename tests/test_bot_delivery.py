"""End to end through the loopback Discord: a done job's images are posted exactly once, or its quota is
refunded with a word to the member, whatever Discord does meanwhile (fails for a while, refuses the files as
too large, keeps failing) and whatever the disk does (refuses the job's end: the result waits for it)."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from sdbot.bot import SDBot
from sdbot.params import JobState
from sdbot.services import endings
from sdbot.views import posting, presence
from tests.engines import GatedEngine
from tests.fakediscord import FakeDiscord, Message
from tests.test_bot_imagine import SMALL, ephemeral_answer, presence_line, result_of
from tests.test_queue import read_only

pytest_plugins = ["tests.fakediscord.fixtures"]


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(posting, "FIRST_RETRY", 0.05)


def posted(fake: FakeDiscord) -> list[Message]:
    """The public messages that carry images."""
    return [m for m in fake.messages if not m.ephemeral and m.attachments and not m.deleted]


async def ledger(bot: SDBot, fake: FakeDiscord, member: str = "alice") -> tuple[int, int]:
    """The member's images (reserved, used) in the quota ledger."""
    status = await bot.quotas.status(fake.guild_id, fake.members[member].id, is_manager=False)
    return status.reserved, status.used


def waiting_results(bot: SDBot) -> list[str]:
    """The folders of results that wait to be posted."""
    root = bot.db.results.root
    return sorted(path.name for path in root.iterdir()) if root.is_dir() else []


async def first_result(fake: FakeDiscord) -> Message:
    """A first job's result, whose Reroll then posts to the channel (a followup's own 5xx retries happen
    inside discord.py, for about 25 s)."""
    interaction = await fake.slash("imagine", raw=True, prompt="patience", **SMALL)
    return await result_of(fake, interaction)


async def test_a_result_discord_fails_to_take_for_a_while_is_posted_once(start_sdbot, fake_discord):
    running = await start_sdbot()
    original = await first_result(fake_discord)
    fake_discord.refuse_posts(503, times=3)
    click = await fake_discord.click(original, "Reroll")
    status = await fake_discord.wait_for_reply(click)
    await fake_discord.wait_for(lambda: "is done" in status.content, timeout=30)
    [reroll] = [m for m in posted(fake_discord) if m.reference_id == original.id]
    assert "Reroll of job" in reroll.content and status.content.endswith(f"/{reroll.id}")
    assert [rejection.status for rejection in fake_discord.rejections].count(503) == 3
    assert await ledger(running.client, fake_discord) == (0, 2)
    assert waiting_results(running.client) == []


async def test_images_too_large_for_the_server_are_sent_as_jpeg(start_sdbot, fake_discord):
    await start_sdbot()
    options = {"prompt": "a detailed map", "seed": 7, **SMALL}
    first = await fake_discord.slash("imagine", raw=True, **options)
    await fake_discord.wait_for(lambda: len(posted(fake_discord)) == 1, timeout=30)
    png = posted(fake_discord)[0].attachments[0].data
    jpeg = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").save(jpeg, format="JPEG", quality=posting.JPEG_QUALITY)
    assert len(jpeg.getvalue()) < len(png)
    fake_discord.rules.attachment_size_limit = (len(jpeg.getvalue()) + len(png)) // 2  # the same image again

    again = await fake_discord.slash("imagine", raw=True, **options)
    status = await fake_discord.wait_for_reply(again)
    await fake_discord.wait_for(lambda: "is done" in status.content, timeout=30)
    [(attachment,)] = [m.attachments for m in posted(fake_discord) if m.interaction is not first]
    assert attachment.filename.endswith(".jpg") and Image.open(io.BytesIO(attachment.data)).format == "JPEG"
    assert [rejection.status for rejection in fake_discord.rejections].count(413) == 1


@pytest.mark.parametrize("refusal", ["Discord keeps failing", "too large even as JPEG"])
async def test_a_result_discord_will_not_take_is_refunded_and_the_member_told(
    start_sdbot, fake_discord, refusal
):
    running = await start_sdbot(post_retry=0.3)
    original = await first_result(fake_discord)
    if refusal == "Discord keeps failing":
        fake_discord.refuse_posts(503, times=1000)
    else:
        fake_discord.rules.attachment_size_limit = 100
    click = await fake_discord.click(original, "Reroll")
    status = await fake_discord.wait_for_reply(click)
    await fake_discord.wait_for(lambda: "could not be posted" in status.content, timeout=30)
    assert status.content.endswith("Nothing was charged.") and posted(fake_discord) == [original]
    assert await ledger(running.client, fake_discord) == (0, 1)  # the first job's image only
    job = await running.client.db.jobs.get(2)
    assert job is not None and job.state is JobState.FAILED and "could not be posted" in (job.error or "")
    assert waiting_results(running.client) == []


async def test_a_job_whose_end_cannot_be_saved_is_posted_once_saved_and_new_jobs_wait_meanwhile(
    start_sdbot, fake_discord, tiny_engine, monkeypatch, caplog
):
    monkeypatch.setattr(endings, "PATIENCE", 0.2)
    monkeypatch.setattr(presence, "PRESENCE_GAP", 0.0)
    gated = GatedEngine(tiny_engine)
    running = await start_sdbot(gated)
    bot: SDBot = running.client
    interaction = await fake_discord.slash("imagine", raw=True, prompt="a full disk", **SMALL)
    await fake_discord.wait_for(lambda: gated.paused.is_set())
    await read_only(bot.db)  # as a full disk or a read-only file makes every write fail
    gated.gate.set()
    await fake_discord.wait_for(lambda: bot.queue.paused is not None, timeout=30)
    assert "could not record it done" in caplog.text and posted(fake_discord) == []
    refused = await fake_discord.slash("imagine", raw=True, user="bob", prompt="meanwhile", **SMALL)
    answer = await ephemeral_answer(fake_discord, refused)
    assert answer.startswith("New jobs are paused: the bot cannot save its work (attempt to write a readonly")
    await fake_discord.wait_for(lambda: presence_line(fake_discord).startswith("Paused"), timeout=10)

    await read_only(bot.db, False)
    status = await fake_discord.wait_for_reply(interaction)
    await fake_discord.wait_for(lambda: "is done" in status.content, timeout=30)
    [result] = posted(fake_discord)
    assert "a full disk" in result.content and bot.queue.paused is None
    assert await ledger(bot, fake_discord) == (0, 1) and await ledger(bot, fake_discord, "bob") == (0, 0)
    await fake_discord.wait_for(lambda: presence_line(fake_discord) == "Ready: /imagine", timeout=10)
