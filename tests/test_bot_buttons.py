"""End to end through the loopback Discord: the result buttons (Reroll, Vary, Upscale, Delete), their life
after a restart, forged or stale custom_ids, and a job a restart interrupted, resumed and posted to its
channel."""

from __future__ import annotations

import asyncio
import io

from PIL import Image

from sdbot.bot import SDBot
from tests.engines import GatedEngine
from tests.fakediscord import FakeDiscord, Interaction, Message
from tests.test_bot_imagine import SINGLE, SMALL, ephemeral_answer, labels, result_of

pytest_plugins = ["tests.fakediscord.fixtures"]


async def imagine(
    fake: FakeDiscord, prompt: str = "a lighthouse at dusk", *, user: str = "alice", **options: object
) -> Message:
    interaction = await fake.slash("imagine", raw=True, user=user, prompt=prompt, **(SMALL | options))
    return await result_of(fake, interaction)


async def interaction_handlers_done() -> None:
    """Wait for the tasks discord.py runs a click's handlers in (the button's and ``on_interaction``)."""
    names = ("discord-ui-dynamic-item-", "discord.py: on_interaction")
    handlers = [task for task in asyncio.all_tasks() if task.get_name().startswith(names)]
    await asyncio.wait_for(asyncio.gather(*handlers, return_exceptions=True), 10)


async def reply_to(fake: FakeDiscord, original: Message, *, after: int = 0) -> Message:
    """The public reply posted for a button pressed on ``original`` (the ``after``-th one, oldest first)."""
    return await fake.wait_for(
        lambda: next(
            iter(
                [
                    m
                    for m in fake.messages
                    if m.reference_id == original.id and not m.deleted and m.components
                ][after:]
            ),
            None,
        ),
        timeout=30,
    )


def message_url(message: Message) -> str:
    return f"https://discord.com/channels/{message.guild_id}/{message.channel_id}/{message.id}"


def size_of(message: Message) -> tuple[int, int]:
    (attachment,) = message.attachments
    return Image.open(io.BytesIO(attachment.data)).size


async def test_reroll_by_another_member_is_their_job_and_replies_to_the_original(start_sdbot, fake_discord):
    running = await start_sdbot()
    bot: SDBot = running.client
    original = await imagine(fake_discord)
    click = await fake_discord.click(original, "Reroll", user="bob")
    await fake_discord.wait_for_ack(click)
    assert click.ephemeral
    reroll = await reply_to(fake_discord, original)
    bob = fake_discord.members["bob"]
    assert f"<@{bob.id}>" in reroll.content and "Reroll of job" in reroll.content
    assert labels(reroll) == SINGLE
    assert size_of(reroll) == (64, 64)
    quota = await bot.quotas.status(fake_discord.guild_id, bob.id, is_manager=False)
    assert quota.used == 1


async def test_vary_and_a_picked_images_upscale_start_from_the_clicked_image(start_sdbot, fake_discord):
    running = await start_sdbot()
    bot: SDBot = running.client
    original = await imagine(fake_discord, count=2)
    await fake_discord.click(original, "V2")
    variation = await reply_to(fake_discord, original)
    assert "Vary (Strong) of job" in variation.content and size_of(variation) == (64, 64)
    assert "strength 0.7" in variation.content
    pick = await fake_discord.click(original, "U1", user="bob")
    picked = await fake_discord.wait_for_reply(pick)
    assert not picked.ephemeral and "Image 1 of job 1" in picked.content
    assert picked.attachments[0].data == original.attachments[0].data
    assert labels(picked) == SINGLE  # the single-image tools, for image 1 of job 1
    bob = fake_discord.members["bob"]
    assert (await bot.quotas.status(fake_discord.guild_id, bob.id, is_manager=False)).used == 0  # free
    await fake_discord.click(picked, "Upscale (Creative)")
    upscale = await reply_to(fake_discord, picked)
    assert "Upscale (Creative) of job 1" in upscale.content and size_of(upscale) == (128, 128)
    assert "128x128" in upscale.content


async def test_delete_is_for_the_requester_or_a_moderator(start_sdbot, fake_discord):
    await start_sdbot()
    first = await imagine(fake_discord, "first")
    refused = await fake_discord.click(first, "Delete", user="bob")
    assert "not yours" in await ephemeral_answer(fake_discord, refused)
    assert not first.deleted

    await fake_discord.click(first, "Delete", user="moderator")
    await fake_discord.wait_for(lambda: first.deleted)

    second = await imagine(fake_discord, "second")
    await fake_discord.click(second, "Delete")
    await fake_discord.wait_for(lambda: second.deleted)


async def test_delete_is_for_whom_the_message_was_made_not_only_who_owns_the_job_it_names(
    start_sdbot, fake_discord
):
    await start_sdbot()
    grid = await imagine(fake_discord, "a grid", count=2)  # Alice's
    pick = await fake_discord.click(grid, "U1", user="bob")
    picked = await fake_discord.wait_for_reply(pick)  # Bob's message, its Delete naming Alice's job
    refused = await fake_discord.click(picked, "Delete")
    assert "not yours to delete" in await ephemeral_answer(fake_discord, refused)
    await interaction_handlers_done()
    assert not picked.deleted
    await fake_discord.click(picked, "Delete", user="bob")
    await fake_discord.wait_for(lambda: picked.deleted)
    assert not grid.deleted


async def test_buttons_work_after_a_restart_from_the_stored_parameters(start_sdbot, fake_discord):
    running = await start_sdbot()
    original = await imagine(fake_discord, "a windmill", steps=3)
    version = fake_discord.commands(guild=False)[0]["version"]
    await running.restart()
    await fake_discord.wait_for(lambda: running.client is not None and running.client.model_ready)
    assert fake_discord.commands(guild=False)[0]["version"] == version  # same commands: not synced again

    await fake_discord.click(original, "Reroll")
    reroll = await reply_to(fake_discord, original)
    assert "a windmill" in reroll.content and "3 steps" in reroll.content


async def test_forged_or_stale_custom_ids_get_a_private_error(start_sdbot, fake_discord):
    await start_sdbot()
    original = await imagine(fake_discord)
    job_id = original.buttons[0]["custom_id"].split(":")[2]
    forged = {
        "sd:r:987654321": "no longer exists",
        "sd:r:9999999999999999999": "no longer exists",  # more than SQLite's ids hold
        f"sd:v:{job_id}:7": "image no longer exists",
        f"sd:v:{job_id}": "does not say which image",
        "sd:x:1": "no longer valid",
        "not-ours": "no longer valid",
    }
    for custom_id, expected in forged.items():
        original.components[0]["components"][0]["custom_id"] = custom_id
        click: Interaction = await fake_discord.click(original, custom_id)
        assert expected in await ephemeral_answer(fake_discord, click)


async def test_a_job_interrupted_by_a_restart_is_resumed_and_posted_to_its_channel(
    start_sdbot, fake_discord, tiny_engine
):
    gated = GatedEngine(tiny_engine)
    running = await start_sdbot(gated, shutdown_grace=0.2)
    interaction = await fake_discord.slash("imagine", raw=True, prompt="through the restart", **SMALL)
    status = await fake_discord.wait_for_reply(interaction)
    await fake_discord.wait_for(lambda: gated.paused.is_set())

    await running.stop()
    assert "restarting" in status.content
    gated.gate.set()
    await running.start()

    alice = fake_discord.members["alice"]
    posted = await fake_discord.wait_for_message(
        lambda m: m.interaction is None and bool(m.attachments), timeout=30
    )
    assert f"<@{alice.id}>" in posted.content and "through the restart" in posted.content
    assert labels(posted) == SINGLE
    # The member's private status followed it across the restart: resumed, then where the result is.
    await fake_discord.wait_for(lambda: status.content.endswith(f"is done: {message_url(posted)}"))
    assert any("queued again" in content for content in status.contents)


async def test_a_refused_click_fetches_no_image(start_sdbot, fake_discord):
    await start_sdbot()
    original = await imagine(fake_discord)
    block = await fake_discord.slash("sdadmin user block", user="manager", member=fake_discord.members["bob"])
    assert "**blocked**" in await ephemeral_answer(fake_discord, block)
    fake_discord.attachments.clear()  # from now on, fetching the image would fail with its own message
    click = await fake_discord.click(original, "Vary (Strong)", user="bob")
    assert "blocked from generating" in await ephemeral_answer(fake_discord, click)
    fetched = await fake_discord.click(original, "Vary (Strong)")
    assert "could not be fetched" in await ephemeral_answer(fake_discord, fetched)
