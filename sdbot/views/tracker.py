"""Following one job for the member who asked for it: its private status message, then its result.

A ``JobTracker`` follows one job for the interaction that asked for it. The interaction's own ephemeral
message shows the queue position (with a Cancel button), then progress and a preview, edited no more often
than every ``EDIT_INTERVAL`` seconds, each edit in its turn of the channel's ``EditBudget``. Position and
progress edits are droppable: while one waits for its turn, newer states replace it, and the job's end drops
it. A result never waits behind status edits: it is posted as its own message first (an edit already on its
way gets at most ``IN_FLIGHT_WAIT`` seconds to land; one Discord holds up longer is cancelled), then the
status message says where it is (or, when the images could not be posted, that nothing was charged).

The result is a public message: the interaction's followup for ``/imagine``, a reply to the clicked message
for a button; a plain channel message that mentions the requester when the interaction's token is too old
(Discord's 15 minutes, with a margin) or its followup fails (``sdbot.views.posting``).
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from typing import TYPE_CHECKING, Any, NamedTuple

import discord
from PIL import Image

from sdbot.db import JobRecord
from sdbot.services.events import (
    JobDone,
    JobEvent,
    JobFailed,
    JobPositionChanged,
    JobProgress,
    JobQueued,
    JobStarted,
)
from sdbot.services.ledger import stored
from sdbot.views.budget import EditPriority
from sdbot.views.buttons import cancel_view
from sdbot.views.render import cancelled_text, failed_text, progress_text, waiting_text

if TYPE_CHECKING:
    from sdbot.views.delivery import Delivery

log = logging.getLogger(__name__)

EDIT_INTERVAL = 2.0  # seconds between progress edits of one message
IN_FLIGHT_WAIT = 1.0  # seconds a job's outcome lets a status edit already on its way land first
RESTARTING = "The bot is restarting. Your job stays queued; its result will be posted in this channel."


class _Outcome(NamedTuple):
    job: JobRecord
    status: str  # what the status message ends with
    must_reach: bool  # told in the channel if the status message is gone (a failure)


class JobTracker:
    """Follows one job for the interaction that asked for it (see the module docstring)."""

    def __init__(
        self,
        delivery: Delivery,
        interaction: discord.Interaction,
        reply_to: discord.Message | None,
        status_message_id: int | None,
    ):
        self._delivery = delivery
        self._interaction = interaction
        self._reply_to = reply_to
        self._status_message_id = status_message_id
        self._last_event: asyncio.Future[JobEvent] = asyncio.get_running_loop().create_future()
        self._task: asyncio.Task[None] | None = None
        self._job: JobRecord | None = None
        self._latest: JobEvent | None = None  # the newest state not shown yet (it replaces older ones)
        self._showing: asyncio.Task[None] | None = None  # shows ``_latest`` when its turn comes
        self._sending = False  # a status edit is on its way to Discord, not just waiting for its turn
        self._status_alive = True  # the ephemeral status message can still be edited
        self._status_shown = False  # it shows something (no longer "thinking")
        self._last_edit = -EDIT_INTERVAL
        self._stopped = False  # shutdown: no more progress edits
        self._ending = False  # the job's last event has arrived: its delivery must not be cut short

    def __call__(self, event: JobEvent) -> None:
        """A state only replaces the one waiting to be shown (no task wakes up for it: a job that ends
        moves every waiting job up one place); the terminal event wakes ``_follow``."""
        if event.terminal:
            self._ending = True
            if not self._last_event.done():  # done: cancelled, as shutdown stopped following the job
                self._last_event.set_result(event)
        else:
            self._latest = event
            self._start_showing()

    def begin(self, job: JobRecord) -> None:
        """Start following ``job`` (already queued with this tracker as its observer), and keep what editing
        its status message after a restart needs."""
        self._job = job
        self._delivery._trackers.add(self)
        self._task = self._delivery.spawn(self._follow(), f"sdbot-track-{job.id}")
        if self._status_message_id is not None and self._may_edit():
            remember = self._delivery.notes.remember(job, self._interaction, self._status_message_id)
            self._delivery.spawn(remember, f"sdbot-remember-{job.id}")
        self._start_showing()

    def stop_watching(self) -> None:
        """Shutdown: stop following a job that stays queued, and tell its owner. A job that has ended is
        left to finish its delivery (``Delivery.close`` waits for it)."""
        if self._task is None or self._task.done() or self._ending:
            return
        self._stopped = True
        self._task.cancel()
        note = self._edit_in_turn(content=RESTARTING, view=None, attachments=[])
        self._delivery.spawn(note, "sdbot-restarting-note")

    async def _follow(self) -> None:
        try:
            # The terminal event (and a done job's images) is let go once the result is posted.
            outcome = await self._conclude(await self._last_event)
            status = {"content": outcome.status, "view": None, "attachments": []}
            if not await self._edit_in_turn(**status) and outcome.must_reach:
                await self._delivery.notice(outcome.job, outcome.status)
            await self._delivery.notes.forget(outcome.job.id)  # final: its token is no longer needed
        finally:
            if self._showing is not None:
                self._showing.cancel()
            self._delivery._trackers.discard(self)

    def _start_showing(self) -> None:
        """Make sure a task shows ``_latest`` once the job is followed, unless one already will."""
        if self._job is None or (self._showing is not None and not self._showing.done()):
            return
        if self._wants_edit():
            self._showing = self._delivery.spawn(self._show_latest(), f"sdbot-status-{self._job.id}")

    async def _conclude(self, event: JobEvent) -> _Outcome:
        """Post a done job's images (before any status edit) and say how the status message ends."""
        await self._stop_status_edits()
        job = event.job
        match event:
            case JobDone(result=result):
                # Without a shown status, a followup would replace the private "thinking" message.
                through = self._interaction.followup if self._status_shown and self._may_follow_up() else None
                posted = await self._delivery.poster.post(
                    job, stored(result), followup=through, reply_to=self._reply_to
                )
                return _Outcome(job, posted.status(job), must_reach=posted.message_id is None)
            case JobFailed(error=error):
                return _Outcome(job, failed_text(job, error), must_reach=True)
            case _:  # JobCancelled, the only other terminal event
                return _Outcome(job, cancelled_text(job), must_reach=False)

    async def _show_latest(self) -> None:
        """Show the newest state, at most every ``EDIT_INTERVAL`` and when the channel's budget allows."""
        while self._wants_edit():
            await asyncio.sleep(self._last_edit + EDIT_INTERVAL - time.monotonic())
            async with self._delivery.edit_slot(self._interaction.channel_id, self._priority):
                event = self._latest
                if event is None or not self._wants_edit():  # the job ended or the bot stops meanwhile
                    return
                self._latest = None
                self._sending = True
                try:
                    await self._show(event)
                finally:
                    self._sending = False

    def _wants_edit(self) -> bool:
        return self._latest is not None and not (self._ending or self._stopped) and self._may_edit()

    def _priority(self) -> EditPriority:
        if isinstance(self._latest, JobStarted | JobProgress):
            return EditPriority.PROGRESS
        return EditPriority.POSITION if self._status_shown else EditPriority.QUEUED

    async def _show(self, event: JobEvent) -> None:
        """Show a queued or running job's state on the status message."""
        job = event.job
        match event:
            case JobQueued(position=position) | JobPositionChanged(position=position):
                text = waiting_text(
                    job,
                    position,
                    loading=not self._delivery.model_ready(),
                    no_gpu=self._delivery.waiting_for_gpu(job),
                )
                await self._edit(content=text, view=cancel_view(job.id))
            case JobStarted():
                text = progress_text(job, 0, job.params.steps)
                await self._edit(content=text, view=cancel_view(job.id))
            case JobProgress(step=step, total=total, preview=preview):
                fields: dict[str, Any] = {
                    "content": progress_text(job, step, total),
                    "view": cancel_view(job.id),
                }
                if preview is not None:
                    fields["attachments"] = [discord.File(_encode_preview(preview), filename="preview.jpg")]
                await self._edit(**fields)

    async def _stop_status_edits(self) -> None:
        """The job ended: drop a status edit waiting for its turn. One already on its way gets
        ``IN_FLIGHT_WAIT`` seconds to land (discord.py sends nothing else through the interaction until it
        has, and Discord must get the outcome's edit after it); one held up longer, by a 429 discord.py
        waits out, is cancelled."""
        showing = self._showing
        if showing is None:
            return
        if self._sending:
            await asyncio.wait([showing], timeout=IN_FLIGHT_WAIT)
        showing.cancel()
        await asyncio.wait([showing])

    async def _edit_in_turn(self, **fields: Any) -> bool:
        """An outcome edit: it takes the first turn in its channel's budget, and is never dropped."""
        if not self._may_edit():
            return False
        async with self._delivery.edit_slot(self._interaction.channel_id, lambda: EditPriority.OUTCOME):
            return await self._edit(**fields)

    def _may_edit(self) -> bool:
        return self._status_alive and self._delivery.token_fresh(self._interaction)

    def _may_follow_up(self) -> bool:
        """Whether the result may be the interaction's followup: a button's result is a reply instead."""
        return self._reply_to is None and self._delivery.token_fresh(self._interaction)

    async def _edit(self, **fields: Any) -> bool:
        """Edit the status message; False (and no more tries) once Discord no longer accepts it."""
        if not self._may_edit():
            return False
        try:
            await self._interaction.edit_original_response(**fields)
        except discord.HTTPException as failure:
            log.info("status message of interaction %s is gone: %s", self._interaction.id, failure)
            self._status_alive = False
            return False
        self._status_shown = True
        self._last_edit = time.monotonic()
        return True


def _encode_preview(image: Image.Image) -> io.BytesIO:
    """JPEG: a few milliseconds even at full size, so it is done on the loop between edits."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=85)
    buffer.seek(0)
    return buffer
