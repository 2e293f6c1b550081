"""What the bot's messages say, without Discord: a member's text is shown escaped and short enough that the
longest request's messages stay within Discord's 2,000 characters."""

from __future__ import annotations

from pathlib import Path

import discord

from sdbot.db import JobRecord
from sdbot.inference.addons import Addon, AddonKind
from sdbot.inference.extras import WEIGHTS_DROPPED
from sdbot.params import (
    MAX_LORAS,
    MAX_PROMPT_LENGTH,
    MAX_SEED,
    MAX_SIDE,
    MAX_STEPS,
    JobKind,
    JobParams,
    JobState,
)
from sdbot.services.loras import FamilyAddons
from sdbot.views.render import (
    MAX_PROMPT_SHOWN,
    addons_text,
    failed_text,
    progress_text,
    short,
    summary,
    undelivered_text,
    waiting_text,
)

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
            loras=tuple((f"styles/{'x' * 190}{n}", -1.25) for n in range(MAX_LORAS)),
            sampler="DPM++ 2M SDE Karras",
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
        "result": summary(job, mention=True, withheld=4, notes=(WEIGHTS_DROPPED,)),
        "waiting": waiting_text(job, 99),
        "progress": progress_text(job, MAX_STEPS, MAX_STEPS),
    }
    for name, text in texts.items():
        assert len(text) <= DISCORD_MAX_CONTENT, (name, len(text))
    assert "4 images were withheld" in texts["result"] and f"<@{job.user_id}>" in texts["result"]
    assert "DPM++ 2M SDE Karras" in texts["result"] and "LoRAs: styles/" in texts["result"]
    assert WEIGHTS_DROPPED in texts["result"]


def test_the_list_of_loras_and_embeddings_fits_a_message_however_many_there_are() -> None:
    def addon(kind: AddonKind, name: str) -> Addon:
        return Addon(kind, name, Path(name), "sd1", triggers=("t" * 40, "u" * 40))

    families = [
        FamilyAddons(
            label,
            [addon(AddonKind.LORA, f"{label}/lora{n}") for n in range(300)],
            [addon(AddonKind.EMBEDDING, f"embedding{n}") for n in range(300)],
        )
        for label in ("SD 1.x", "SDXL", "Flux")
    ]
    text = addons_text(families)
    assert len(text) <= DISCORD_MAX_CONTENT and "**SD 1.x**" in text and "and 285 more" in text
    assert addons_text([FamilyAddons("SD 1.x", [], [])]).startswith("There are no LoRAs")


def test_a_failure_notice_with_a_huge_error_stays_within_a_message() -> None:
    for notice in (
        failed_text(longest_job(), "CUDA error: " + "x" * 5000),
        undelivered_text(longest_job(), "Discord answered 503 " + "x" * 5000),
    ):
        assert len(f"<@{2**63 - 1}> {notice}") <= DISCORD_MAX_CONTENT
        assert notice.endswith("Nothing was charged.")


def test_mentions_timestamps_emoji_and_direction_overrides_in_a_prompt_show_as_typed():
    markup = ["<@123456789012345678>", "<@!42>", "<@&42>", "<#7>", "<t:1700000000:R>", "<:blob:99>",
              "<a:dance:98>", "</imagine:5>", "<id:customize>"]
    shown = short(" ".join(markup) + " done")
    for item in markup:
        assert "\\" + item in shown  # Discord shows an escaped markup as typed, and renders the rest
    assert short("a < b and c<d") == "a < b and c<d"  # no markup: nothing to escape


def test_invisible_and_direction_changing_characters_are_dropped_but_emoji_sequences_kept():
    spoof = "cat\u202e)moc.live(\u202c by \u2066alice\u2069 w\u200bi\u200ct\u2060h\ufeff \u200flove\u200e"
    assert short(spoof) == "cat)moc.live( by alice with love"
    family, firefighter = "\U0001F468\u200d\U0001F469\u200d\U0001F467", "\U0001F469\U0001F3FD\u200d\U0001F692"
    assert short(f"{family} {firefighter} \u2764\ufe0f\u200d\U0001F525") == (
        f"{family} {firefighter} \u2764\ufe0f\u200d\U0001F525"
    )
    assert short("a\u200db") == "ab"
