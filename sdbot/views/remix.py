"""Remix: a modal prefilled with an image's prompt and negative prompt; submitting it queues the new job.

The modal's custom_id carries the job and the image (``sd:remix:<job>:<index>``), as the buttons' do, and
no modal object is kept in memory: ``RemixModal`` is stopped before it is sent, so discord.py stores
nothing, and every submission is read by ``remix_submission`` from the client's ``on_interaction``
listener. A member who types for a while across a bot restart still gets their job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import discord

from sdbot.params import MAX_PROMPT_LENGTH

REMIX_TEMPLATE = re.compile(r"sd:remix:(?P<job>[0-9]{1,19}):(?P<index>[0-9])")
PROMPT, NEGATIVE = "prompt", "negative"


@dataclass(frozen=True)
class RemixSubmission:
    """What a member sent back: the job and image remixed, and the edited prompts."""

    job_id: int
    index: int
    prompt: str
    negative: str | None  # None: the model takes no negative prompt, so the modal asked for none


class RemixModal(discord.ui.Modal):
    """The prompt (and, where the model takes one, the negative prompt) of image ``index`` of a job."""

    def __init__(self, job_id: int, index: int, prompt: str, negative: str | None) -> None:
        super().__init__(title="Remix", custom_id=f"sd:remix:{job_id}:{index}", timeout=None)
        self.add_item(
            discord.ui.TextInput(
                label="Prompt",
                custom_id=PROMPT,
                style=discord.TextStyle.paragraph,
                default=prompt[:MAX_PROMPT_LENGTH],
                max_length=MAX_PROMPT_LENGTH,
            )
        )
        if negative is not None:
            self.add_item(
                discord.ui.TextInput(
                    label="Negative prompt",
                    custom_id=NEGATIVE,
                    style=discord.TextStyle.paragraph,
                    default=negative[:MAX_PROMPT_LENGTH] or None,
                    required=False,
                    max_length=MAX_PROMPT_LENGTH,
                )
            )
        self.stop()  # never stored: submissions are read by ``remix_submission``, also after a restart


def remix_submission(interaction: discord.Interaction) -> RemixSubmission | None:
    """The remix a modal submission carries, or None when the interaction is not one."""
    if interaction.type is not discord.InteractionType.modal_submit or interaction.data is None:
        return None
    match = REMIX_TEMPLATE.fullmatch(str(interaction.data.get("custom_id", "")))
    if match is None:
        return None
    values = _text_values(interaction.data.get("components") or [])
    return RemixSubmission(
        job_id=int(match["job"]),
        index=int(match["index"]),
        prompt=values.get(PROMPT, ""),
        negative=values.get(NEGATIVE),
    )


def _text_values(components: list[Any]) -> dict[str, str]:
    """The text inputs' values by custom_id, in action rows or in labels."""
    values: dict[str, str] = {}
    for component in components:
        children = component.get("components") or [component.get("component") or {}]
        for child in children:
            if "custom_id" in child and isinstance(child.get("value"), str):
                values[child["custom_id"]] = child["value"]
    return values
