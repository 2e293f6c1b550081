"""End to end through the loopback Discord: /imagine from a member's own picture (also across a restart with
Discord's copy gone), a bad picture refused for nothing, Pan keeping the picture's pixels, and Remix through
its modal (also submitted after a restart)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from sdbot.bot import SDBot
from sdbot.db.database import sources_folder
from sdbot.inference.pngmeta import read_parameters
from tests.engines import GatedEngine
from tests.fakediscord import FakeDiscord, Message, Upload
from tests.test_bot_buttons import imagine, reply_to
from tests.test_bot_imagine import SINGLE, SMALL, ephemeral_answer, labels, result_of

pytest_plugins = ["tests.fakediscord.fixtures"]


def sideways_jpeg() -> bytes:
    """A 96x64 JPEG stored sideways (EXIF orientation 6): members see it 64x96, its left half on top."""
    image = Image.new("RGB", (96, 64), (20, 20, 220))
    image.paste((220, 20, 20), (0, 0, 48, 64))
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95, exif=exif)
    return buffer.getvalue()


def picture(message: Message) -> Image.Image:
    return Image.open(io.BytesIO(message.attachments[0].data)).convert("RGB")


async def used(bot: SDBot, fake: FakeDiscord, member: str = "alice") -> int:
    status = await bot.quotas.status(fake.guild_id, fake.members[member].id, is_manager=False)
    return status.used + status.reserved


async def test_imagine_from_an_uploaded_picture_and_a_bad_one_refused_for_nothing(start_sdbot, fake_discord):
    running = await start_sdbot()
    bot: SDBot = running.client
    gif = io.BytesIO()
    Image.new("RGB", (64, 64)).save(gif, format="GIF")
    refused = await fake_discord.slash(
        "imagine", raw=True, prompt="a castle", steps=2, image=Upload("cat.gif", gif.getvalue(), "image/gif")
    )
    assert "not a PNG, JPEG or WebP" in await ephemeral_answer(fake_discord, refused)
    assert await used(bot, fake_discord) == 0

    upload = Upload("photo.jpg", sideways_jpeg(), "image/jpeg")
    asked = await fake_discord.slash(
        "imagine", raw=True, prompt="a castle", steps=2, image=upload, strength=0.5
    )
    result = await result_of(fake_discord, asked)
    assert "From your picture: **a castle**" in result.content
    assert "64x96" in result.content and "strength 0.5" in result.content
    assert picture(result).size == (64, 96)  # upright, at the size it was fitted to
    assert read_parameters(result.attachments[0].data).strength == 0.5
    # The picture is not kept once the job ended: no Reroll or Remix, which would need it.
    assert labels(result) == [label for label in SINGLE if label not in ("Reroll", "Remix")]
    assert list(sources_folder(bot.settings.db_path).iterdir()) == []
    assert await used(bot, fake_discord) == 1


async def test_an_upload_waiting_through_a_restart_needs_no_discord(start_sdbot, fake_discord, tiny_engine):
    gated = GatedEngine(tiny_engine)
    running = await start_sdbot(gated, shutdown_grace=0.2)
    await fake_discord.slash("imagine", raw=True, prompt="ahead", **SMALL)
    await fake_discord.wait_for(lambda: gated.paused.is_set())
    upload = Upload("photo.jpg", sideways_jpeg(), "image/jpeg")
    queued = await fake_discord.slash("imagine", raw=True, prompt="behind", steps=2, image=upload)
    assert "Queued" in (await fake_discord.wait_for_reply(queued)).content

    await running.stop()
    fake_discord.attachments.clear()  # Discord's copy is gone: the stored picture must do
    gated.gate.set()
    await running.start()

    posted = await fake_discord.wait_for_message(
        lambda m: "behind" in m.content and bool(m.attachments), timeout=30
    )
    assert "From your picture" in posted.content and picture(posted).size == (64, 96)
    await fake_discord.wait_for_message(lambda m: "ahead" in m.content and bool(m.attachments), timeout=30)


async def test_pan_left_paints_a_new_left_part_and_keeps_the_picture(start_sdbot, fake_discord):
    running = await start_sdbot()
    bot: SDBot = running.client
    original = await imagine(fake_discord, "a harbour")
    click = await fake_discord.click(original, "sd:pl:1:0", user="bob")
    assert (await fake_discord.wait_for_ack(click)).ephemeral
    panned = await reply_to(fake_discord, original)
    assert "Pan left of job 1" in panned.content and "96x64" in panned.content
    result, source = np.asarray(picture(panned)), np.asarray(picture(original))
    band = 8  # the seam the model repaints to blend, at this size
    assert np.array_equal(result[:, 32 + band :], source[:, band:])
    assert read_parameters(panned.attachments[0].data).extra["Outpaint"] == "pan left"
    assert await used(bot, fake_discord, "bob") == 1


async def test_remix_opens_a_prefilled_modal_and_makes_the_edited_prompt_with_the_same_seed(
    start_sdbot, fake_discord
):
    running = await start_sdbot()
    original = await imagine(fake_discord, "a red fox", negative="blurry")
    opened = await fake_discord.click(original, "Remix", user="bob")
    await fake_discord.wait_for_ack(opened)
    modal = opened.modal
    assert modal is not None and modal["title"] == "Remix"
    inputs = [row["components"][0] for row in modal["components"]]
    values = {text_input["custom_id"]: text_input.get("value") for text_input in inputs}
    assert values == {"prompt": "a red fox", "negative": "blurry"}

    await running.restart()  # the member takes their time; the modal still works
    await fake_discord.wait_for(lambda: running.client is not None and running.client.model_ready)
    submitted = await fake_discord.submit_modal(opened, {"prompt": "a blue fox"})
    assert (await fake_discord.wait_for_reply(submitted)).ephemeral  # its status is the member's alone
    remix = await reply_to(fake_discord, original)
    assert "Remix of job 1: **a blue fox**" in remix.content and "Negative: blurry" in remix.content
    original_seed = read_parameters(original.attachments[0].data).seed
    assert read_parameters(remix.attachments[0].data).seed == original_seed
