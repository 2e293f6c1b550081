"""The buttons' layout within Discord's five rows of five, what each set of tools leaves out, and custom_ids
that stay readable after an upgrade."""

from __future__ import annotations

import re

import discord
import pytest

from sdbot.views.buttons import TEMPLATE, Action, Tools, image_view, is_job_button, result_view


def rows(view: discord.ui.View) -> list[list[str]]:
    """Each row's labels (or emoji), top to bottom."""
    laid: dict[int, list[str]] = {}
    for item in view.children:
        assert isinstance(item, discord.ui.DynamicItem)
        button = item.item
        laid.setdefault(item.row or 0, []).append(button.label or str(button.emoji))
    return [laid[row] for row in sorted(laid)]


def custom_ids(view: discord.ui.View) -> list[str]:
    return [item.custom_id for item in view.children if isinstance(item, discord.ui.DynamicItem)]


async def test_a_single_image_offers_every_tool_in_five_rows_of_five() -> None:
    view = image_view(123, 0, Tools())
    assert rows(view) == [
        ["Upscale (Subtle)", "Upscale (Creative)"],
        ["Vary (Subtle)", "Vary (Strong)", "Remix"],
        ["Zoom Out 2x", "Zoom Out 1.5x"],
        ["⬅️", "➡️", "⬆️", "⬇️"],
        ["Reroll", "Delete"],
    ]
    ids = custom_ids(view)
    assert len(set(ids)) == len(ids) and all(len(i) <= 100 and is_job_button(i) for i in ids)


@pytest.mark.parametrize(
    ("tools", "missing"),
    [
        (Tools(upscale=False), {"Upscale (Subtle)", "Upscale (Creative)"}),
        (Tools(image_to_image=False), {"Upscale (Creative)", "Vary (Subtle)", "Vary (Strong)"}),
        (Tools(inpaint=False), {"Zoom Out 2x", "Zoom Out 1.5x", "⬅️", "➡️", "⬆️", "⬇️"}),
        (Tools(reroll=False, remix=False), {"Reroll", "Remix"}),
    ],
)
async def test_tools_the_server_or_model_cannot_do_are_left_out(tools: Tools, missing: set[str]) -> None:
    every = {label for row in rows(image_view(1, 0, Tools())) for label in row}
    offered = {label for row in rows(image_view(1, 0, tools)) for label in row}
    assert every - offered == missing


async def test_a_grid_offers_pick_and_vary_per_shown_image() -> None:
    view = result_view(7, 4, [0, 2, 3], Tools())
    assert rows(view) == [["U1", "U3", "U4"], ["V1", "V3", "V4"], ["Reroll", "Delete"]]
    assert custom_ids(view)[:2] == ["sd:p:7:0", "sd:p:7:2"]
    withheld = result_view(7, 1, [], Tools())
    assert rows(withheld) == [["Reroll", "Delete"]]


def test_custom_ids_of_the_first_version_keep_their_meaning() -> None:
    old = [("sd:u:5:0", Action.UPSCALE), ("sd:v:5:1", Action.VARY), ("sd:r:5", Action.REROLL)]
    for custom_id, action in old:
        match = re.fullmatch(TEMPLATE, custom_id)
        assert match is not None and Action(match["action"]) is action
    assert not is_job_button("sd:zz:5:0")
