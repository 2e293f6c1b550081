"""End to end through the loopback Discord: status edits under Discord's limit of 5 message edits per 5 s
in a channel. Many jobs queued in one channel share that budget without a 429, and a result never waits
behind a status edit that Discord holds up.
"""

from __future__ import annotations

import pytest

from sdbot.services import dispatch
from sdbot.services.worker import Worker
from sdbot.views import delivery
from tests.engines import SteppedEngine
from tests.fakediscord import FakeDiscord, Interaction, Message
from tests.test_bot_imagine import SMALL, result_of

pytest_plugins = ["tests.fakediscord.fixtures"]

MEMBERS = ("alice", "bob", "moderator", "manager", "owner")
JOBS_EACH = 3  # the default queue limit per member


def posted_results(fake: FakeDiscord) -> list[Message]:
    """Public messages carrying images: one per finished job, through a followup or the channel."""
    return [m for m in fake.messages if not m.ephemeral and m.attachments and not m.deleted]


def rate_limited(fake: FakeDiscord) -> list[str]:
    return [f"{r.method} {r.path}" for r in fake.rejections if r.status == 429]


async def test_many_jobs_in_one_channel_share_its_edit_budget_without_a_429(
    start_sdbot, fake_discord, monkeypatch: pytest.MonkeyPatch
):
    # Discord's window scaled from 5 s to 1 s on both sides, so every status reaches its end quickly.
    fake_discord.rules.edit_window = 1.0
    monkeypatch.setattr(delivery, "EDIT_WINDOW", 1.0)
    await start_sdbot()
    prompts = [f"{member} {n}" for n in range(JOBS_EACH) for member in MEMBERS]
    interactions: list[Interaction] = [
        await fake_discord.slash("imagine", raw=True, user=prompt.split()[0], prompt=prompt, **SMALL)
        for prompt in prompts
    ]
    await fake_discord.wait_for(lambda: len(posted_results(fake_discord)) >= len(prompts), timeout=30)

    def statuses_done() -> bool:
        return all(i.original is not None and "is done" in i.original.content for i in interactions)

    await fake_discord.wait_for(statuses_done, timeout=30)
    assert rate_limited(fake_discord) == []
    results = {m.id: m for m in posted_results(fake_discord)}
    for prompt, interaction in zip(prompts, interactions, strict=True):
        assert interaction.original is not None
        linked = int(interaction.original.content.rsplit("/", 1)[1])
        assert f"**{prompt}**" in results[linked].content  # each status links its own result


async def test_a_result_is_posted_while_a_status_edit_waits_out_a_429(
    start_sdbot, fake_discord, tiny_engine, monkeypatch: pytest.MonkeyPatch
):
    # Every step handed over to the loop, none merged by the worker's progress interval.
    monkeypatch.setattr(
        dispatch, "Worker", lambda *args, **kw: Worker(*args, **kw | {"progress_interval": 0.0})
    )
    engine = SteppedEngine(tiny_engine)
    await start_sdbot(engine)
    # Stricter than Discord (another bot editing in this channel, say): one edit per 10 s, so the second
    # progress edit is held up in discord.py's 429 path.
    fake_discord.rules.edits_per_window, fake_discord.rules.edit_window = 1, 10.0
    steps = 30
    interaction = await fake_discord.slash("imagine", raw=True, prompt="no wait", size="64x64", steps=steps)
    status = await fake_discord.wait_for_reply(interaction)  # completing "thinking" is not an edit
    # The engine waits after each step until let go, and the worker hands over every step: the next step
    # after the one shown makes the window's one edit, the step after that an edit that meets a 429.
    for _ in range(2):
        engine.steps.release()
        await fake_discord.wait_for(
            lambda edits=status.edits: status.edits > edits or rate_limited(fake_discord), timeout=15
        )
    await fake_discord.wait_for(lambda: rate_limited(fake_discord), timeout=15)
    shown = status.content
    engine.steps.release(2 * steps)

    result = await result_of(fake_discord, interaction)
    assert status.content == shown  # the result did not wait for the status edit before it
    fake_discord.rules.edits_per_window = 5
    await fake_discord.wait_for(lambda: "is done: " in status.content, timeout=15)
    assert status.content.endswith(f"/{result.id}")
