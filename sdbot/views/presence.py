"""The bot's presence (its status and the line under its name) says what state it is in, so that members
see at a glance whether their images will be made now: loading the model, ready, busy, or paused.

Requests are queued in every state; the presence only sets expectations. It is checked every
``PRESENCE_POLL`` seconds and changed at most every ``PRESENCE_GAP`` seconds (Discord limits presence
updates), and the bot starts with the loading presence, sent when it connects.
"""

from __future__ import annotations

import asyncio
import enum
import math
import time
from collections.abc import Callable

import discord

PRESENCE_POLL = 1.0  # seconds between two checks of the bot's state
PRESENCE_GAP = 5.0  # seconds between two presence changes at least


class BotState(enum.Enum):
    """What the bot is doing, most pressing first."""

    LOADING = "Loading the model: requests wait in the queue"
    PAUSED = "Paused: cannot save its work (see the logs)"
    BUSY = "Busy: generating images"
    READY = "Ready: /imagine"

    @property
    def status(self) -> discord.Status:
        return {
            BotState.LOADING: discord.Status.idle,
            BotState.PAUSED: discord.Status.dnd,
            BotState.BUSY: discord.Status.online,
            BotState.READY: discord.Status.online,
        }[self]

    @property
    def activity(self) -> discord.CustomActivity:
        return discord.CustomActivity(name=self.value)


async def keep_presence(client: discord.Client, state: Callable[[], BotState]) -> None:
    """Show ``state()`` as the client's presence, for as long as this runs. The first state shown is the one
    the client connected with (``BotState.LOADING``)."""
    shown, changed_at = BotState.LOADING, -math.inf
    while True:
        await client.wait_until_ready()
        wanted = state()
        if wanted is not shown and time.monotonic() - changed_at >= PRESENCE_GAP:
            await client.change_presence(status=wanted.status, activity=wanted.activity)
            shown, changed_at = wanted, time.monotonic()
        await asyncio.sleep(PRESENCE_POLL)
