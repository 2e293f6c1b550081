"""The buttons under a job's messages, as persistent ``DynamicItem``s.

A button's custom_id carries everything it needs (``sd:<action>:<job id>[:<image index>]``), so buttons keep
working after a restart: the job's parameters are read back from the database, never from memory. One class
serves every action; what a click does is decided by whoever registered itself as the client's
``job_buttons`` handler (the imagine cog), and any error goes to the command tree's one error handler.
"""

from __future__ import annotations

import enum
import re
from typing import Any, Protocol

import discord

from sdbot.errors import NotAllowedHere

TEMPLATE = r"sd:(?P<action>[rvudc]):(?P<job>[0-9]{1,19})(?::(?P<index>[0-9]))?"
MAX_BUTTONS_PER_ROW = 5


class Action(enum.Enum):
    REROLL = "r"
    VARY = "v"
    UPSCALE = "u"
    DELETE = "d"
    CANCEL = "c"


class ButtonHandler(Protocol):
    async def on_job_button(
        self, interaction: discord.Interaction, action: Action, job_id: int, index: int | None
    ) -> None: ...


class JobButton(discord.ui.DynamicItem[discord.ui.Button], template=TEMPLATE):
    """A button acting on one job (and, for vary and upscale, one of its images)."""

    def __init__(
        self,
        action: Action,
        job_id: int,
        index: int | None = None,
        *,
        label: str | None = None,
        style: discord.ButtonStyle = discord.ButtonStyle.secondary,
        row: int | None = None,
    ) -> None:
        custom_id = f"sd:{action.value}:{job_id}" + ("" if index is None else f":{index}")
        super().__init__(discord.ui.Button(label=label, style=style, custom_id=custom_id), row=row)
        self.action = action
        self.job_id = job_id
        self.index = index

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str], /
    ) -> JobButton:
        index = match["index"]
        return cls(
            Action(match["action"]),
            int(match["job"]),
            None if index is None else int(index),
            label=item.label,
            style=item.style,
        )

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        client = interaction.client
        try:
            handler: ButtonHandler | None = getattr(client, "job_buttons", None)
            if handler is None:
                raise NotAllowedHere("These buttons are unavailable right now; please try again later.")
            await handler.on_job_button(interaction, self.action, self.job_id, self.index)
        except Exception as error:
            await client.tree.on_error(interaction, error)


def is_job_button(custom_id: str) -> bool:
    """Whether a custom_id has the shape of one of our buttons (it may still name a job that is gone)."""
    return re.fullmatch(TEMPLATE, custom_id) is not None


def _view(buttons: list[JobButton]) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for button in buttons:
        view.add_item(button)
    return view


def cancel_view(job_id: int) -> discord.ui.View:
    """The button on a job's waiting message."""
    return _view([JobButton(Action.CANCEL, job_id, label="Cancel", style=discord.ButtonStyle.danger)])


def result_view(job_id: int, image_count: int, shown: list[int], *, upscale: bool) -> discord.ui.View:
    """Buttons under a result. ``shown`` lists the images that were posted: a withheld image cannot be
    varied or upscaled. One image: Reroll, Vary, Upscale, Delete. Several: U1..Un, V1..Vn, Reroll, Delete."""
    buttons: list[JobButton] = []
    if image_count == 1:
        buttons.append(JobButton(Action.REROLL, job_id, label="Reroll", style=discord.ButtonStyle.primary))
        if shown:
            buttons.append(JobButton(Action.VARY, job_id, 0, label="Vary"))
            if upscale:
                buttons.append(JobButton(Action.UPSCALE, job_id, 0, label="Upscale"))
        buttons.append(JobButton(Action.DELETE, job_id, label="Delete", style=discord.ButtonStyle.danger))
        return _view(buttons)
    row = 0
    if upscale and shown:
        buttons += [JobButton(Action.UPSCALE, job_id, i, label=f"U{i + 1}", row=row) for i in shown]
        row += 1
    if shown:
        buttons += [JobButton(Action.VARY, job_id, i, label=f"V{i + 1}", row=row) for i in shown]
        row += 1
    buttons += [
        JobButton(Action.REROLL, job_id, label="Reroll", style=discord.ButtonStyle.primary, row=row),
        JobButton(Action.DELETE, job_id, label="Delete", style=discord.ButtonStyle.danger, row=row),
    ]
    return _view(buttons)
