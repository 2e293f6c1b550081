"""Taking turns for a channel's message edits.

Discord allows 5 message edits per 5 seconds in a channel and answers more with 429s that discord.py waits
out inside the request. With many jobs queued in one channel, every status message competes for those
edits, so all of a channel's status edits take turns in one ``EditBudget``: the outcome of a job first, then
the running job's progress, then a waiting job's first status (it replaces "thinking"), then waiting jobs'
new positions, oldest request first within each.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable
from enum import IntEnum

# ``edit_slot(channel_id, priority)``: a turn to edit a status message in a channel.
EditSlot = Callable[[int | None, Callable[[], int]], contextlib.AbstractAsyncContextManager[None]]


class EditPriority(IntEnum):
    """Whose status edit goes first when a channel's budget is short (smaller first)."""

    OUTCOME = 0  # done, failed, cancelled, the restart note: never dropped
    PROGRESS = 1  # the running job's progress and preview
    QUEUED = 2  # a waiting job's first status, which replaces "thinking"
    POSITION = 3  # a waiting job's new place in the queue


class EditBudget:
    """The edits of one channel's messages: at most ``size`` in any ``window`` seconds, handed out by
    priority (oldest request first within one), so edits wait their turn here instead of in 429s.

    A slot is held from the moment it is granted until ``window`` seconds after its edit finished. The
    request reached Discord in between, so no window of Discord's own sees more than ``size`` of these edits
    whatever the network's delays."""

    def __init__(self, size: int, window: float) -> None:
        self._free = size
        self._window = window
        self._waiting: dict[asyncio.Future[None], tuple[Callable[[], int], int]] = {}
        self._arrivals = itertools.count()

    @contextlib.asynccontextmanager
    async def slot(self, priority: Callable[[], int]) -> AsyncIterator[None]:
        """Hold a slot for one edit. ``priority`` is read each time slots are handed out, so a waiter is
        served by what it wants to show now (a waiting job that started running moves up)."""
        granted = asyncio.get_running_loop().create_future()
        self._waiting[granted] = (priority, next(self._arrivals))
        self._hand_out()
        try:
            await granted
        except asyncio.CancelledError:
            self._waiting.pop(granted, None)
            if not granted.cancelled():  # granted, then cancelled before its edit: pass the slot on
                self._release()
            raise
        try:
            yield
        finally:
            asyncio.get_running_loop().call_later(self._window, self._release)

    def _release(self) -> None:
        self._free += 1
        self._hand_out()

    def _hand_out(self) -> None:
        while self._free > 0 and self._waiting:
            chosen = min(self._waiting, key=self._rank)
            del self._waiting[chosen]
            if not chosen.done():  # done: cancelled with its waiter, which is leaving
                self._free -= 1
                chosen.set_result(None)

    def _rank(self, waiter: asyncio.Future[None]) -> tuple[int, int]:
        priority, arrival = self._waiting[waiter]
        return priority(), arrival
