"""End to end through the loopback Discord: /imagine from acknowledgement to the posted PNGs, refusals that
charge nothing, cancelling, fairness between members, late results and start-up while the model loads.

Images are 64x64 with 2 steps so each job takes a fraction of a second on the tiny model; Discord's client
only offers the listed sizes, so these invocations go out ``raw`` (the bot's own validation still runs).
"""

from __future__ import annotations

import asyncio
import io
import threading

import pytest
from PIL import Image

from sdbot.bot import SDBot
from sdbot.errors import GenerationFailed
from sdbot.inference.types import Engine
from sdbot.views import delivery, presence
from tests.conftest import tiny_settings
from tests.engines import FaultyEngine, GatedEngine, always
from tests.fakediscord import FakeDiscord, Interaction, Message

pytest_plugins = ["tests.fakediscord.fixtures"]

SMALL = {"size": "64x64", "steps": 2}
RESULT_TIMEOUT = 30.0


async def result_of(fake: FakeDiscord, interaction: Interaction) -> Message:
    """The public message carrying the result of the job that ``interaction`` asked for."""
    return await fake.wait_for_message(
        lambda m: m.interaction is interaction and not m.ephemeral and bool(m.components),
        timeout=RESULT_TIMEOUT,
    )


async def ephemeral_answer(fake: FakeDiscord, interaction: Interaction) -> str:
    reply = await fake.wait_for_reply(interaction)
    assert reply.ephemeral
    return reply.content


def labels(message: Message) -> list[str]:
    """Each button's label, or its emoji where it has none (the Pan arrows)."""
    return [button.get("label") or button["emoji"]["name"] for button in message.buttons]


# The single-image tools of a result, row by row, as a server that changed nothing offers them.
SINGLE = [
    "Upscale (Subtle)",
    "Upscale (Creative)",
    "Vary (Subtle)",
    "Vary (Strong)",
    "Remix",
    "Zoom Out 2x",
    "Zoom Out 1.5x",
    "⬅️",
    "➡️",
    "⬆️",
    "⬇️",
    "Reroll",
    "Delete",
]


async def test_imagine_acknowledges_shows_position_and_progress_then_posts_pngs(
    start_sdbot, fake_discord, tiny_engine
):
    gated = GatedEngine(tiny_engine)
    await start_sdbot(gated)
    interaction = await fake_discord.slash(
        "imagine", raw=True, prompt="a red fox in snow", size="64x64", steps=3
    )
    await fake_discord.wait_for_ack(interaction)
    assert interaction.response_type == 5 and interaction.ephemeral  # "thinking", privately, within 3 s

    status = await fake_discord.wait_for_reply(interaction)
    await fake_discord.wait_for(lambda: gated.paused.is_set())
    await fake_discord.wait_for(lambda: "step 1/" in status.content and status.attachments, timeout=15)
    assert status.attachments[0].filename == "preview.jpg"
    assert labels(status) == ["Cancel"]
    gated.gate.set()

    result = await result_of(fake_discord, interaction)
    assert labels(result) == SINGLE
    (attachment,) = result.attachments
    image = Image.open(io.BytesIO(attachment.data))
    assert image.size == (64, 64)
    assert "a red fox in snow" in image.info["parameters"]
    assert "a red fox in snow" in result.content and "3 steps" in result.content and "64x64" in result.content
    await fake_discord.wait_for(lambda: "is done" in status.content and not status.buttons)
    link = f"https://discord.com/channels/{fake_discord.guild_id}/{result.channel_id}/{result.id}"
    assert status.content.endswith(f"is done: {link}")  # the followup's own link would say @me


async def test_queue_position_is_shown_while_waiting(start_sdbot, fake_discord, tiny_engine):
    gated = GatedEngine(tiny_engine)
    await start_sdbot(gated)
    first = await fake_discord.slash("imagine", raw=True, prompt="first", **SMALL)
    await fake_discord.wait_for(lambda: gated.paused.is_set())
    second = await fake_discord.slash("imagine", raw=True, prompt="second", user="bob", **SMALL)
    status = await fake_discord.wait_for_reply(second)
    await fake_discord.wait_for(lambda: "next up" in status.content)
    gated.gate.set()
    await result_of(fake_discord, first)
    await result_of(fake_discord, second)


async def test_count_four_gives_four_pngs_and_u_v_buttons(start_sdbot, fake_discord):
    await start_sdbot()
    interaction = await fake_discord.slash("imagine", raw=True, prompt="four cats", count=4, **SMALL)
    result = await result_of(fake_discord, interaction)
    assert len(result.attachments) == 4
    assert labels(result) == ["U1", "U2", "U3", "U4", "V1", "V2", "V3", "V4", "Reroll", "Delete"]
    assert [len(row["components"]) for row in result.components] == [4, 4, 2]
    seeds = [
        Image.open(io.BytesIO(a.data)).info["parameters"].split("Seed: ")[1].split(",")[0]
        for a in result.attachments
    ]
    assert len(set(seeds)) == 4


async def test_exhausted_quota_is_refused_privately_and_charges_nothing(start_sdbot, fake_discord):
    running = await start_sdbot(daily_quota=2)
    bot: SDBot = running.client
    done = await fake_discord.slash("imagine", raw=True, prompt="two dogs", count=2, **SMALL)
    await result_of(fake_discord, done)

    refused = await fake_discord.slash("imagine", raw=True, prompt="one more", **SMALL)
    text = await ephemeral_answer(fake_discord, refused)
    assert "quota" in text.lower() and "<t:" in text and ":R>" in text
    assert not [m for m in fake_discord.messages if m.interaction is refused and not m.ephemeral]
    guild = fake_discord.guild_id
    status = await bot.quotas.status(guild, fake_discord.members["alice"].id, is_manager=False)
    assert (status.used, status.reserved, status.left) == (2, 0, 0)
    assert bot.queue.queued() == [] and bot.queue.running() == []

    quota = await fake_discord.slash("quota")
    assert "0** of 2" in await ephemeral_answer(fake_discord, quota)


async def test_banned_word_is_refused_without_charge(start_sdbot, fake_discord):
    running = await start_sdbot()
    admin = await fake_discord.slash("sdadmin banned add", user="manager", word="Dragon")
    assert "1 banned" in await ephemeral_answer(fake_discord, admin)
    refused = await fake_discord.slash("imagine", raw=True, prompt="a red DRAGON flying", **SMALL)
    assert '"dragon" is banned' in await ephemeral_answer(fake_discord, refused)
    status = await running.client.quotas.status(
        fake_discord.guild_id, fake_discord.members["alice"].id, is_manager=False
    )
    assert status.used == status.reserved == 0


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"prompt": ""}, "prompt is empty"),
        ({"prompt": "x" * 5000}, "5,000 characters"),
        ({"prompt": "a cat", "steps": 100000}, "Steps must be from 1 to 50"),
        ({"prompt": "a cat", "count": 0}, "image count must be from 1 to 4"),
        ({"prompt": "a cat", "size": "100x100"}, "multiple of 8"),
        ({"prompt": "a cat", "size": "2048x2048"}, "larger than this server allows"),
    ],
)
async def test_bad_inputs_sent_raw_are_answered_clearly(start_sdbot, fake_discord, options, expected):
    await start_sdbot()
    interaction = await fake_discord.slash("imagine", raw=True, options=options)
    assert expected in await ephemeral_answer(fake_discord, interaction)


async def test_option_values_only_a_modified_client_sends_get_short_clear_refusals(start_sdbot, fake_discord):
    running = await start_sdbot()
    cases = {
        "size": ("x" * 3000, "is not WIDTHxHEIGHT"),
        "steps": ("10", "The steps option takes a whole number, not '10'."),
        "guidance": ("abc", "The guidance option takes a number, not 'abc'."),
        "seed": (1.5, "The seed option takes a whole number, not 1.5."),
        "count": (True, "The count option takes a whole number, not True."),
        "prompt": (5, "The prompt option takes text, not 5."),
    }
    for option, (value, expected) in cases.items():
        options = {"prompt": "a cat", option: value}
        interaction = await fake_discord.slash("imagine", raw=True, options=options)
        answer = await ephemeral_answer(fake_discord, interaction)
        assert expected in answer and len(answer) < 300, (option, answer)
    status = await running.client.quotas.status(
        fake_discord.guild_id, fake_discord.members["alice"].id, is_manager=False
    )
    assert status.used == status.reserved == 0


async def test_cancel_queued_and_running_jobs_refunds_them(start_sdbot, fake_discord, tiny_engine):
    gated = GatedEngine(tiny_engine)
    running = await start_sdbot(gated)
    bot: SDBot = running.client
    first = await fake_discord.slash("imagine", raw=True, prompt="running one", **SMALL)
    await fake_discord.wait_for(lambda: gated.paused.is_set())
    second = await fake_discord.slash("imagine", raw=True, prompt="queued one", **SMALL)
    await fake_discord.wait_for(lambda: len(bot.queue.queued()) == 1)

    cancel = await fake_discord.slash("cancel")  # the newest: the queued one
    assert "Cancelled job" in await ephemeral_answer(fake_discord, cancel)
    status = await fake_discord.wait_for_reply(second)
    await fake_discord.wait_for(lambda: "cancelled" in status.content)

    first_status = await fake_discord.wait_for_reply(first)
    click = await fake_discord.click(first_status, "Cancel")
    await fake_discord.wait_for_ack(click)
    await fake_discord.wait_for(lambda: "cancelled" in first_status.content and not first_status.buttons)
    await fake_discord.wait_for(lambda: not bot.queue.running())
    quota = await bot.quotas.status(fake_discord.guild_id, fake_discord.members["alice"].id, is_manager=False)
    assert quota.used == quota.reserved == 0
    assert not [m for m in fake_discord.messages if m.interaction in (first, second) and not m.ephemeral]


async def test_someone_elses_job_cannot_be_cancelled(start_sdbot, fake_discord, tiny_engine):
    gated = GatedEngine(tiny_engine)
    await start_sdbot(gated)
    mine = await fake_discord.slash("imagine", raw=True, prompt="mine", **SMALL)
    await fake_discord.wait_for(lambda: gated.paused.is_set())
    job_id = int((await fake_discord.wait_for_reply(mine)).content.split("job ")[1].split(":")[0])
    attempt = await fake_discord.slash("cancel", user="bob", job=job_id)
    assert "not yours" in await ephemeral_answer(fake_discord, attempt)
    forged = await fake_discord.slash("cancel", raw=True, job=2**64)
    assert f"no job {2**64}" in await ephemeral_answer(fake_discord, forged)
    gated.gate.set()
    await result_of(fake_discord, mine)


async def test_two_members_take_turns(start_sdbot, fake_discord, tiny_engine):
    gated = GatedEngine(tiny_engine)
    await start_sdbot(gated)
    alice = [await fake_discord.slash("imagine", raw=True, prompt=f"alice {i}", **SMALL) for i in range(3)]
    await fake_discord.wait_for(lambda: gated.paused.is_set())
    bob = await fake_discord.slash("imagine", raw=True, prompt="bob 0", user="bob", **SMALL)
    bob_status = await fake_discord.wait_for_reply(bob)
    await fake_discord.wait_for(lambda: "next up" in bob_status.content)
    gated.gate.set()
    results = [await result_of(fake_discord, i) for i in (*alice, bob)]
    order = sorted(results, key=lambda m: m.id)
    assert [m.content.split("**")[1] for m in order] == ["alice 0", "bob 0", "alice 1", "alice 2"]


async def test_late_result_after_token_expiry_goes_to_the_channel(start_sdbot, fake_discord, tiny_engine):
    gated = GatedEngine(tiny_engine)
    await start_sdbot(gated)
    interaction = await fake_discord.slash("imagine", raw=True, prompt="a slow painting", **SMALL)
    await fake_discord.wait_for(lambda: gated.paused.is_set())
    fake_discord.clock.advance(16 * 60)
    gated.gate.set()
    alice = fake_discord.members["alice"]
    late = await fake_discord.wait_for_message(
        lambda m: m.interaction is None and bool(m.attachments), timeout=30
    )
    assert f"<@{alice.id}>" in late.content and "a slow painting" in late.content
    assert labels(late) == SINGLE
    assert late.channel_id == fake_discord.channels["general"].id
    assert not [m for m in fake_discord.messages if m.interaction is interaction and not m.ephemeral]


async def test_requests_while_the_model_loads_are_queued_and_run_once_it_is_loaded(
    discord_bot, fake_discord, tiny_model_dir, tiny_engine, tmp_path, monkeypatch
):
    monkeypatch.setattr(presence, "PRESENCE_GAP", 0.0)
    loaded = threading.Event()

    def slow_engine() -> Engine:
        loaded.wait(10)
        return tiny_engine

    settings = tiny_settings(tiny_model_dir, db_path=tmp_path / "bot.sqlite3", shutdown_grace=2.0)
    await discord_bot(lambda: SDBot(settings, slow_engine, clock=fake_discord.clock.now))
    assert presence_line(fake_discord) == "Loading the model: requests wait in the queue"
    early = await fake_discord.slash("imagine", raw=True, prompt="too early", **SMALL)
    status = await fake_discord.wait_for_reply(early)
    await fake_discord.wait_for(lambda: "next up, waiting for the model to load" in status.content)
    assert status.buttons  # it can be cancelled meanwhile
    loaded.set()
    await result_of(fake_discord, early)
    await fake_discord.wait_for(lambda: presence_line(fake_discord) == "Ready: /imagine")


def presence_line(fake: FakeDiscord) -> str:
    """The line under the bot's name, as it last set it (discord.py sends it as ``game`` at IDENTIFY)."""
    last = fake.gateway.presences[-1]
    activity = last.get("game") or last["activities"][0]
    return activity.get("state") or activity["name"]


async def test_queue_command_lists_my_jobs(start_sdbot, fake_discord, tiny_engine):
    gated = GatedEngine(tiny_engine)
    running = await start_sdbot(gated)
    first = await fake_discord.slash("imagine", raw=True, prompt="one", **SMALL)
    await fake_discord.wait_for(lambda: gated.paused.is_set())
    second = await fake_discord.slash("imagine", raw=True, prompt="two", **SMALL)
    await fake_discord.wait_for_reply(second)
    overview = await fake_discord.slash("queue")
    text = await ephemeral_answer(fake_discord, overview)
    assert "1 job(s) waiting, 1 running" in text
    model = running.client.library.default
    assert f"**one** ({model}), running now" in text and f"**two** ({model}), position 1" in text
    gated.gate.set()
    await asyncio.gather(result_of(fake_discord, first), result_of(fake_discord, second))


async def test_queue_command_lists_at_most_ten_of_my_jobs(
    start_sdbot, fake_discord, tiny_engine, monkeypatch
):
    # Discord's edit window scaled from 5 s to 1 s on both sides: 13 status messages take their turns quickly.
    fake_discord.rules.edit_window = 1.0
    monkeypatch.setattr(delivery, "EDIT_WINDOW", 1.0)
    gated = GatedEngine(tiny_engine)
    running = await start_sdbot(gated)
    limit = await fake_discord.slash("sdadmin queue-limit", user="manager", jobs=50)
    await ephemeral_answer(fake_discord, limit)
    prompt = "a long prompt " * 7  # 100 characters shown a job: 50 such lines would be 7,000 characters
    jobs = [await fake_discord.slash("imagine", raw=True, prompt=f"{prompt}{i}", **SMALL) for i in range(13)]
    await fake_discord.wait_for(lambda: gated.paused.is_set() and len(running.client.queue.queued()) == 12)
    text = await ephemeral_answer(fake_discord, await fake_discord.slash("queue"))
    assert "12 job(s) waiting, 1 running" in text
    assert text.count("• Job") == 10 and text.endswith("… and 3 more of yours.")
    gated.gate.set()
    # A result whose status message never left "thinking" goes to the channel, not through the interaction.
    await fake_discord.wait_for(
        lambda: len([m for m in fake_discord.messages if m.attachments and not m.ephemeral]) == len(jobs),
        timeout=RESULT_TIMEOUT,
    )


async def test_a_failed_generation_is_reported_and_refunded(start_sdbot, fake_discord, tiny_engine):
    running = await start_sdbot(
        FaultyEngine(tiny_engine, always(GenerationFailed("the model produced no image")))
    )
    interaction = await fake_discord.slash("imagine", raw=True, prompt="doomed", **SMALL)
    status = await fake_discord.wait_for_reply(interaction)
    await fake_discord.wait_for(lambda: "failed: the model produced no image" in status.content)
    assert "Nothing was charged" in status.content and not status.buttons
    quota = await running.client.quotas.status(
        fake_discord.guild_id, fake_discord.members["alice"].id, is_manager=False
    )
    assert quota.used == quota.reserved == 0


async def test_a_full_member_queue_is_refused_without_charge(start_sdbot, fake_discord, tiny_engine):
    gated = GatedEngine(tiny_engine)
    running = await start_sdbot(gated)
    assert "**1** job(s)" in await ephemeral_answer(
        fake_discord, await fake_discord.slash("sdadmin queue-limit", user="manager", jobs=1)
    )
    first = await fake_discord.slash("imagine", raw=True, prompt="running", **SMALL)
    await fake_discord.wait_for(lambda: gated.paused.is_set())
    second = await fake_discord.slash("imagine", raw=True, prompt="waiting", **SMALL)
    await fake_discord.wait_for_reply(second)
    third = await fake_discord.slash("imagine", raw=True, prompt="one too many", **SMALL)
    assert "You already have 1 job(s) waiting" in await ephemeral_answer(fake_discord, third)
    quota = await running.client.quotas.status(
        fake_discord.guild_id, fake_discord.members["alice"].id, is_manager=False
    )
    assert quota.reserved == 2 and quota.used == 0
    gated.gate.set()
    await asyncio.gather(result_of(fake_discord, first), result_of(fake_discord, second))


async def test_status_edits_survive_rate_limits(start_sdbot, fake_discord, tiny_engine):
    gated = GatedEngine(tiny_engine)
    await start_sdbot(gated)
    fake_discord.rules.edits_per_window, fake_discord.rules.edit_window = 1, 2.5
    interaction = await fake_discord.slash("imagine", raw=True, prompt="patience", size="64x64", steps=3)
    status = await fake_discord.wait_for_reply(interaction)
    await fake_discord.wait_for(lambda: "step 1/" in status.content, timeout=15)  # the window's one edit
    gated.gate.set()  # the final edit comes at once: 429, retried by discord.py
    await result_of(fake_discord, interaction)
    await fake_discord.wait_for(lambda: "is done" in status.content, timeout=15)
    assert any(rejection.status == 429 for rejection in fake_discord.rejections)


async def test_startup_syncs_to_the_dev_guild_and_asks_for_no_privileged_intent(start_sdbot, fake_discord):
    running = await start_sdbot(dev_guild=fake_discord.guild_id)
    intents = running.client.intents
    assert not (intents.members or intents.presences or intents.message_content)
    names = sorted(command["name"] for command in fake_discord.commands(guild=True))
    assert names == ["cancel", "imagine", "loras", "queue", "quota", "sdadmin"]
    assert fake_discord.commands(guild=False) == []
