"""End to end through the loopback Discord: each server NSFW policy, in and out of an age-restricted channel,
with a safety checker that flags every image, and a model without a checker under SDBOT_UNCHECKED_POLICY."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdbot.bot import SDBot
from tests.conftest import tiny_settings
from tests.fakediscord import FakeDiscord, Message
from tests.test_bot_imagine import SINGLE, SMALL, labels, result_of

pytest_plugins = ["tests.fakediscord.fixtures"]


@pytest.fixture(scope="session")
def flagging_engine(tiny_nsfw_model_dir: Path):
    from sdbot.inference.engine import load_engine

    return load_engine(tiny_settings(tiny_nsfw_model_dir))


@pytest.fixture(scope="session")
def unchecked_engine(tiny_unchecked_model_dir: Path):
    from sdbot.inference.engine import load_engine

    return load_engine(tiny_settings(tiny_unchecked_model_dir))


async def imagine_in(fake: FakeDiscord, channel: str, **options: object) -> Message:
    interaction = await fake.slash(
        "imagine", raw=True, channel=channel, prompt="a figure study", **(SMALL | options)
    )
    return await result_of(fake, interaction)


async def set_policy(fake: FakeDiscord, policy: str) -> None:
    interaction = await fake.slash("sdadmin nsfw", user="manager", policy=policy)
    reply = await fake.wait_for_reply(interaction)
    assert f"NSFW policy is now **{policy}**" in reply.content


async def test_block_withholds_flagged_images_and_records_the_flags(
    start_sdbot, fake_discord, flagging_engine
):
    running = await start_sdbot(flagging_engine)
    bot: SDBot = running.client
    result = await imagine_in(fake_discord, "nsfw", count=2)  # block is the default, even here
    assert result.attachments == []
    assert "2 images were withheld" in result.content
    assert labels(result) == ["Reroll", "Delete"]
    job_id = int(result.buttons[0]["custom_id"].split(":")[2])
    job = await bot.db.jobs.get(job_id)
    assert job is not None and job.nsfw == [True, True]


async def test_spoiler_policy_posts_flagged_images_as_spoilers(start_sdbot, fake_discord, flagging_engine):
    await start_sdbot(flagging_engine)
    await set_policy(fake_discord, "spoiler")
    result = await imagine_in(fake_discord, "nsfw")
    (attachment,) = result.attachments
    assert attachment.spoiler and attachment.filename.startswith("SPOILER_sdbot-")
    assert labels(result) == SINGLE


async def test_allow_posts_plainly_only_in_age_restricted_channels(
    start_sdbot, fake_discord, flagging_engine
):
    await start_sdbot(flagging_engine)
    await set_policy(fake_discord, "allow")
    plain = await imagine_in(fake_discord, "nsfw")
    assert not plain.attachments[0].spoiler
    elsewhere = await imagine_in(fake_discord, "general")
    assert elsewhere.attachments[0].spoiler


async def test_a_flagged_spoiler_can_still_be_varied(start_sdbot, fake_discord, flagging_engine):
    await start_sdbot(flagging_engine)
    await set_policy(fake_discord, "spoiler")
    original = await imagine_in(fake_discord, "general")
    await fake_discord.click(original, "Vary (Strong)")
    variation = await fake_discord.wait_for_message(
        lambda m: m.reference_id == original.id and bool(m.attachments), timeout=30
    )
    assert variation.attachments[0].spoiler


@pytest.mark.parametrize(("unchecked_policy", "spoiler"), [("spoiler", True), ("allow", False)])
async def test_a_model_without_checker_follows_the_unchecked_policy(
    start_sdbot, fake_discord, unchecked_engine, unchecked_policy, spoiler
):
    await start_sdbot(unchecked_engine, unchecked_policy=unchecked_policy)
    result = await imagine_in(fake_discord, "general")
    assert result.attachments[0].spoiler is spoiler


async def test_unchecked_block_withholds_every_image(start_sdbot, fake_discord, unchecked_engine):
    await start_sdbot(unchecked_engine, unchecked_policy="block")
    result = await imagine_in(fake_discord, "general")
    assert result.attachments == [] and "1 image was withheld" in result.content
