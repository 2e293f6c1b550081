"""What the bot's messages say, without Discord: a member's text is shown escaped and short enough that the
longest request's messages stay within Discord's 2,000 characters."""

from __future__ import annotations

import discord

from sdbot.db import JobRecord
from sdbot.params import MAX_PROMPT_LENGTH, MAX_SEED, MAX_SIDE, MAX_STEPS, JobKind, JobParams, JobState
from sdbot.views.render import MAX_PROMPT_SHOWN, progress_text, short, summary, waiting_text

DISCORD_MAX_CONTENT = 2000
MARKDOWN_PROMPT = "*_" * (MAX_PROMPT_LENGTH // 2)  # every character escapes to two


def longest_job() -> JobRecord:
    """The longest a job's texts get: markdown-only prompt and negative prompt, four seeds, large numbers."""
    return JobRecord(
        id=10**12,
        guild_id=1,
        channel_id=2,
        user_id=2**63 - 1,
        kind=JobKind.VARIATION,
        parent_id=10**12 - 1,
        params=JobParams(
            prompt=MARKDOWN_PROMPT,
            negative_prompt=MARKDOWN_PROMPT,
            steps=MAX_STEPS,
            guidance=12.25,
            width=MAX_SIDE,
            height=MAX_SIDE,
            count=4,
        ),
        image_count=4,
        state=JobState.DONE,
        error=None,
        seeds=[MAX_SEED] * 4,
        nsfw=[True] * 4,
        message_id=None,
        reservation_id=None,
        created_at=0.0,
        started_at=0.0,
        finished_at=12345.6,
    )


def test_short_counts_the_escapes_and_never_cuts_one_in_half():
    shown = short(MARKDOWN_PROMPT)
    assert len(shown) <= MAX_PROMPT_SHOWN and shown.endswith("…")
    assert not shown.removesuffix("…").endswith("\\")
    kept = shown.removesuffix("…").replace("\\", "")
    assert MARKDOWN_PROMPT.startswith(kept) and len(kept) > MAX_PROMPT_SHOWN // 3
    assert short("a **bold** claim") == discord.utils.escape_markdown("a **bold** claim")
    assert short("x" * 601) == "x" * 599 + "…"


def test_the_longest_request_fits_every_message():
    job = longest_job()
    texts = {
        "result": summary(job, mention=True, withheld=4),
        "waiting": waiting_text(job, 99),
        "progress": progress_text(job, MAX_STEPS, MAX_STEPS),
    }
    for name, text in texts.items():
        assert len(text) <= DISCORD_MAX_CONTENT, (name, len(text))
    assert "4 images were withheld" in texts["result"] and f"<@{job.user_id}>" in texts["result"]


def test_a_failure_notice_with_a_huge_error_stays_within_a_message() -> None:
    from sdbot.views.delivery import _failed_text

    notice = _failed_text(longest_job(), "CUDA error: " + "x" * 5000)
    assert len(f"<@{2**63 - 1}> {notice}") <= DISCORD_MAX_CONTENT
    assert notice.endswith("Nothing was charged.")
