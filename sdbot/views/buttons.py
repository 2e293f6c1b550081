"""The buttons under a job's messages, as persistent ``DynamicItem``s.

A button's custom_id carries everything it needs (``sd:<action>:<job id>[:<image index>]``), so buttons keep
working after a restart: the job's parameters are read back from the database, never from memory. One class
serves every action; what a click does is decided by whoever registered itself as the client's
``job_buttons`` handler (the imagine cog), and any error goes to the command tree's one error handler.

A grid offers U1..Un (pick an image: post it alone with the single-image tools, no GPU work), V1..Vn
(Vary (Strong)), Reroll and Delete. A single image (a one-image result, or an image picked from a grid)
offers Midjourney's tools in five rows: Upscale (Subtle/Creative); Vary (Subtle/Strong) and Remix; Zoom Out
2x/1.5x; Pan left/right/up/down; Reroll and Delete. ``Tools`` leaves out what the server or the job's model
does not allow. The action codes of the first version (``r v u d c``) keep their meaning, so buttons posted
before an upgrade still do what their labels say.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any, Protocol

import discord

from sdbot.errors import NotAllowedHere
from sdbot.params import PanDirection


class Action(enum.Enum):
    REROLL = "r"
    VARY = "v"  # Vary (Strong)
    VARY_SUBTLE = "vs"
    UPSCALE = "u"  # Upscale (Creative)
    UPSCALE_SUBTLE = "us"
    ZOOM_2 = "z2"
    ZOOM_1_5 = "z15"
    PAN_LEFT = "pl"
    PAN_RIGHT = "pr"
    PAN_UP = "pu"
    PAN_DOWN = "pd"
    REMIX = "m"
    PICK = "p"
    DELETE = "d"
    CANCEL = "c"

    @property
    def zoom(self) -> float | None:
        return {Action.ZOOM_2: 2.0, Action.ZOOM_1_5: 1.5}.get(self)

    @property
    def pan(self) -> PanDirection | None:
        return _PANS.get(self)


_PANS = {
    Action.PAN_LEFT: PanDirection.LEFT,
    Action.PAN_RIGHT: PanDirection.RIGHT,
    Action.PAN_UP: PanDirection.UP,
    Action.PAN_DOWN: PanDirection.DOWN,
}
_PAN_EMOJI = {Action.PAN_LEFT: "⬅️", Action.PAN_RIGHT: "➡️", Action.PAN_UP: "⬆️", Action.PAN_DOWN: "⬇️"}
_CODES = "|".join(sorted((re.escape(action.value) for action in Action), key=len, reverse=True))
TEMPLATE = rf"sd:(?P<action>{_CODES}):(?P<job>[0-9]{{1,19}})(?::(?P<index>[0-9]))?"
MAX_BUTTONS_PER_ROW = 5


@dataclass(frozen=True)
class Tools:
    """What a result's images may be asked for. ``upscale``: the server allows upscaling; ``image_to_image``
    and ``inpaint``: the job's model has those pipelines (Vary and Upscale (Creative); Zoom Out and Pan);
    ``reroll``: the job can run again (not one that started from a member's own picture, which is not
    kept); ``remix``: the job was made from its prompt alone, so it can be made again from an edited one."""

    upscale: bool = True
    image_to_image: bool = True
    inpaint: bool = True
    reroll: bool = True
    remix: bool = True


class ButtonHandler(Protocol):
    async def on_job_button(
        self, interaction: discord.Interaction, action: Action, job_id: int, index: int | None
    ) -> None: ...


class JobButton(discord.ui.DynamicItem[discord.ui.Button], template=TEMPLATE):
    """A button acting on one job (and, for the image tools, one of its images)."""

    def __init__(
        self,
        action: Action,
        job_id: int,
        index: int | None = None,
        *,
        label: str | None = None,
        emoji: str | None = None,
        style: discord.ButtonStyle = discord.ButtonStyle.secondary,
        row: int | None = None,
    ) -> None:
        custom_id = button_id(job_id, action, index)
        button = discord.ui.Button(label=label, emoji=emoji, style=style, custom_id=custom_id)
        super().__init__(button, row=row)
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
            admit = getattr(client, "admit", None)  # refuses while the bot shuts down
            if admit is not None:
                admit()
            handler: ButtonHandler | None = getattr(client, "job_buttons", None)
            if handler is None:
                raise NotAllowedHere("These buttons are unavailable right now; please try again later.")
            await handler.on_job_button(interaction, self.action, self.job_id, self.index)
        except Exception as error:
            await client.tree.on_error(interaction, error)


def button_id(job_id: int, action: Action = Action.DELETE, index: int | None = None) -> str:
    """The custom_id of a job's button (by default its Delete button, which every result carries)."""
    return f"sd:{action.value}:{job_id}" + ("" if index is None else f":{index}")


def has_button(message: discord.Message | None, custom_id: str) -> bool:
    """Whether ``message`` (as Discord sent it) carries a button with ``custom_id``."""
    if message is None:
        return False
    return any(
        getattr(child, "custom_id", None) == custom_id
        for row in message.components
        for child in getattr(row, "children", ())
    )


def is_job_button(custom_id: str) -> bool:
    """Whether a custom_id has the shape of one of our buttons (it may still name a job that is gone)."""
    return re.fullmatch(TEMPLATE, custom_id) is not None


def _layout(rows: list[list[JobButton]]) -> discord.ui.View:
    """A view of the non-empty ``rows``, one action row each."""
    view = discord.ui.View(timeout=None)
    for number, row in enumerate(row for row in rows if row):
        for button in row:
            button.row = number
            view.add_item(button)
    return view


def cancel_view(job_id: int) -> discord.ui.View:
    """The button on a job's waiting message."""
    return _layout([[JobButton(Action.CANCEL, job_id, label="Cancel", style=discord.ButtonStyle.danger)]])


def result_view(job_id: int, image_count: int, shown: list[int], tools: Tools) -> discord.ui.View:
    """Buttons under a result. ``shown`` lists the images that were posted: a withheld image gets no tools."""
    if image_count == 1:
        return image_view(job_id, 0 if shown else None, tools)
    picks = [JobButton(Action.PICK, job_id, i, label=f"U{i + 1}") for i in shown]
    varies = [JobButton(Action.VARY, job_id, i, label=f"V{i + 1}") for i in shown]
    return _layout([picks, varies if tools.image_to_image else [], _last_row(job_id, tools)])


def image_view(job_id: int, index: int | None, tools: Tools) -> discord.ui.View:
    """The single-image tools for image ``index`` of the job (None: it was withheld: Reroll and Delete)."""
    rows = [] if index is None else _image_tools(job_id, index, tools)
    return _layout([*rows, _last_row(job_id, tools)])


def _image_tools(job_id: int, index: int, tools: Tools) -> list[list[JobButton]]:
    def tool(action: Action, label: str | None = None) -> JobButton:
        return JobButton(action, job_id, index, label=label, emoji=_PAN_EMOJI.get(action))

    upscales = [tool(Action.UPSCALE_SUBTLE, "Upscale (Subtle)")]
    varies: list[JobButton] = []
    zooms: list[JobButton] = []
    if tools.image_to_image:
        upscales.append(tool(Action.UPSCALE, "Upscale (Creative)"))
        varies += [tool(Action.VARY_SUBTLE, "Vary (Subtle)"), tool(Action.VARY, "Vary (Strong)")]
    if tools.remix:
        varies.append(tool(Action.REMIX, "Remix"))
    if tools.inpaint:
        zooms += [tool(Action.ZOOM_2, "Zoom Out 2x"), tool(Action.ZOOM_1_5, "Zoom Out 1.5x")]
    pans = [tool(action) for action in _PAN_EMOJI] if tools.inpaint else []
    return [upscales if tools.upscale else [], varies, zooms, pans]


def _last_row(job_id: int, tools: Tools) -> list[JobButton]:
    reroll = JobButton(Action.REROLL, job_id, label="Reroll", style=discord.ButtonStyle.primary)
    delete = JobButton(Action.DELETE, job_id, label="Delete", style=discord.ButtonStyle.danger)
    return [reroll, delete] if tools.reroll else [delete]
