"""End to end through the loopback Discord: ``/sdadmin`` is refused to members without Manage Server (hidden
by Discord and checked again by the bot), and each setting answers with its new value and takes effect."""

from __future__ import annotations

import pytest

from sdbot.bot import SDBot
from tests.fakediscord import FakeDiscord, RefusedByClient
from tests.test_bot_imagine import SINGLE, SMALL, ephemeral_answer, labels, result_of

pytest_plugins = ["tests.fakediscord.fixtures"]


async def admin(fake: FakeDiscord, command: str, **options: object) -> str:
    return await ephemeral_answer(fake, await fake.slash(f"sdadmin {command}", user="manager", **options))


async def test_members_without_manage_server_are_refused(start_sdbot, fake_discord):
    await start_sdbot()
    with pytest.raises(RefusedByClient):
        await fake_discord.slash("sdadmin show", user="alice")
    # A client that shows the command anyway (a server override, a stale cache) meets the bot's own check.
    forced = await fake_discord.slash("sdadmin quota", user="alice", raw=True, images=1000)
    assert "not permitted" in await ephemeral_answer(fake_discord, forced)
    assert "Daily quota: **50**" in await admin(fake_discord, "show")


async def test_settings_answer_with_their_new_value(start_sdbot, fake_discord):
    await start_sdbot()
    assert "Daily quota is now **7**" in await admin(fake_discord, "quota", images=7)
    assert "default **20**, max **40**" in await admin(fake_discord, "steps", default=20, maximum=40)
    assert "default **45**, max **60**" in await admin(fake_discord, "steps", default=45, maximum=60)
    assert "at most **2** images" in await admin(fake_discord, "count", images=2)
    assert "**1** job(s) waiting" in await admin(fake_discord, "queue-limit", jobs=1)
    assert "Upscaling is now **off**" in await admin(fake_discord, "upscale", allowed=False)
    assert "may no longer start `/imagine`" in await admin(fake_discord, "uploads", allowed=False)
    assert "**262,144** pixels (512x512)" in await admin(fake_discord, "max-size", size="512x512")
    assert "same quota as everyone" in await admin(fake_discord, "managers-exempt", exempt=False)
    shown = await admin(fake_discord, "show")
    for expected in (
        "Daily quota: **7** images per member\n",
        "Largest image: **262,144** pixels",
        "default **45**, max **60**",
        "at most **2**",
        "Upscaling: **off**",
        "own pictures: **off**",
    ):
        assert expected in shown
    too_many = await fake_discord.slash("imagine", raw=True, prompt="three", count=3, **SMALL)
    assert "count must be from 1 to 2" in await ephemeral_answer(fake_discord, too_many)
    no_upscale = await result_of(
        fake_discord, await fake_discord.slash("imagine", raw=True, prompt="x", **SMALL)
    )
    assert labels(no_upscale) == [label for label in SINGLE if not label.startswith("Upscale")]
    refused = await admin(fake_discord, "steps", default=100)
    assert "cannot exceed max steps (60)" in refused


async def test_allowed_channels_limit_where_imagine_works(start_sdbot, fake_discord):
    await start_sdbot()
    art = fake_discord.channels["art"]
    assert f"Allowed channels: <#{art.id}>" in await admin(
        fake_discord, "channels add", options={"channel": art}
    )
    elsewhere = await fake_discord.slash("imagine", raw=True, prompt="here?", **SMALL)
    assert f"Try <#{art.id}>" in await ephemeral_answer(fake_discord, elsewhere)
    there = await fake_discord.slash("imagine", raw=True, channel="art", prompt="here!", **SMALL)
    await result_of(fake_discord, there)
    assert "every channel" in await admin(fake_discord, "channels remove", options={"channel": art})


async def test_a_long_channel_list_is_cut_to_fit_a_message(start_sdbot, fake_discord):
    running = await start_sdbot()
    for channel_id in range(10**17, 10**17 + 100):  # servers may allow hundreds of channels
        await running.client.settings_service.add(fake_discord.guild_id, "channels", channel_id)
    refused = await ephemeral_answer(
        fake_discord, await fake_discord.slash("imagine", raw=True, prompt="here?", **SMALL)
    )
    assert refused.startswith("Images can't be generated in this channel. Try <#")
    assert refused.endswith("and 80 more.") and len(refused) < 2000
    shown = await admin(fake_discord, "show")
    assert "and 80 more" in shown and len(shown) < 2000


async def test_banned_words_add_list_remove(start_sdbot, fake_discord):
    await start_sdbot()
    await admin(fake_discord, "banned add", word="red panda")
    await admin(fake_discord, "banned add", word="gore")
    assert "2 banned: `gore`, `red panda`" in await admin(fake_discord, "banned list")
    assert "1 banned word(s) now" in await admin(fake_discord, "banned remove", word="GORE")
    missing = await admin(fake_discord, "banned remove", word="gore")
    assert "not a banned word" in missing


async def test_member_quota_block_and_forget(start_sdbot, fake_discord):
    running = await start_sdbot()
    bot: SDBot = running.client
    bob = fake_discord.members["bob"]
    assert "quota **1** images a day" in await admin(fake_discord, "user quota", member=bob, images=1)
    first = await fake_discord.slash("imagine", raw=True, user="bob", prompt="only one", **SMALL)
    await result_of(fake_discord, first)
    second = await fake_discord.slash("imagine", raw=True, user="bob", prompt="one more", **SMALL)
    assert "0 of 1 images left" in await ephemeral_answer(fake_discord, second)

    assert "**blocked**" in await admin(fake_discord, "user block", member=bob)
    blocked = await fake_discord.slash("imagine", raw=True, user="bob", prompt="blocked", **SMALL)
    assert "blocked" in await ephemeral_answer(fake_discord, blocked)
    assert "not blocked" in await admin(fake_discord, "user unblock", member=bob)

    stats = await admin(fake_discord, "stats")
    assert "**1** images in 1 job(s)" in stats and f"<@{bob.id}> (1)" in stats

    forgotten = await admin(fake_discord, "user forget", member=bob)
    assert "1 job(s), 1 quota record(s), 1 rule(s) deleted" in forgotten
    status = await bot.quotas.status(fake_discord.guild_id, bob.id, is_manager=False)
    assert status.used == 0 and status.limit == 50


async def test_admins_choose_the_models_and_imagine_offers_only_those(
    start_sdbot, fake_discord, tiny_model_dir, tmp_path
):
    models = tmp_path / "models.toml"
    models.write_text(
        f'[models.sd14]\nsource = "{tiny_model_dir}"\n\n'
        f'[models.anime]\nsource = "{tiny_model_dir}"\ndescription = "cel shaded"\n',
        encoding="utf-8",
    )
    running = await start_sdbot(models_file=models)
    offered = await fake_discord.autocomplete("imagine", "model", "")
    assert [(c["name"], c["value"]) for c in offered] == [
        ("sd14 (SD 1.x)", "sd14"),
        ("anime (SD 1.x): cel shaded", "anime"),
    ]
    assert [c["value"] for c in await fake_discord.autocomplete("sdadmin model allow", "model", "ANI")] == [
        "anime"
    ]
    assert "(not allowed)" not in await admin(fake_discord, "model list")
    answer = await admin(fake_discord, "model allow", model="anime")
    assert "• **sd14** (not allowed)" in answer and "• **anime**: cel shaded (allowed)" in answer
    assert "Default model: **anime**" in await admin(fake_discord, "model default", model="anime")
    assert [c["value"] for c in await fake_discord.autocomplete("imagine", "model", "")] == ["anime"]
    refused = await fake_discord.slash("imagine", prompt="a cat", model="sd14", **SMALL, raw=True)
    assert "sd14 is not allowed on this server" in await ephemeral_answer(fake_discord, refused)
    asked = await fake_discord.slash("imagine", prompt="a cat", **SMALL, raw=True)
    assert "anime ·" in (await result_of(fake_discord, asked)).content
    assert running.client.queue.queued() == []
