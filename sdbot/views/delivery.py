"""Getting a job's progress and result to the member who asked, whatever happened in between.

A ``JobTracker`` follows one job for the interaction that asked for it. The interaction's own ephemeral
message shows the queue position (with a Cancel button), then progress and a preview, edited no more often
than every ``EDIT_INTERVAL`` seconds. The result is a public message: the interaction's followup for
``/imagine``, a reply to the clicked message for a button. When the interaction token is too old (Discord's
15 minutes, with a margin) or a webhook call fails, or when nobody is watching the job at all (it was resumed
after a restart), the result is a plain channel message that mentions the requester, with the same buttons.

Discord allows 5 message edits per 5 seconds in a channel and answers more with 429s that discord.py waits
out inside the request. With many jobs queued in one channel, every status message competes for those
edits, so all of a channel's status edits take turns in one ``EditBudget`` (4 per 5 s, leaving headroom):
the outcome of a job first, then the running job's progress, then a waiting job's first status (it replaces
"thinking"), then waiting jobs' new positions, oldest request first within each. Position and progress edits
are droppable: while one waits for its turn, newer states replace it, and the job's end drops it. A result
never waits behind status edits: it is posted as its own message first (an edit already on its way gets at
most ``IN_FLIGHT_WAIT`` seconds to land; one Discord holds up longer is cancelled), then the status message
says where it is.

``Delivery`` owns the trackers of this process, the channels' edit budgets and the listener for unwatched
jobs, and closes them all on shutdown, telling members whose jobs stay queued that the result will come
after the restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from enum import IntEnum
from typing import Any, NamedTuple

import discord
from PIL import Image

from sdbot.config import Settings
from sdbot.db import Database, JobRecord
from sdbot.inference.types import GenerationResult
from sdbot.services.jobs import (
    JobDone,
    JobEvent,
    JobFailed,
    JobPositionChanged,
    JobProgress,
    JobQueued,
    JobStarted,
)
from sdbot.services.models import ModelCatalog
from sdbot.services.settings import SettingsService
from sdbot.views.buttons import cancel_view
from sdbot.views.render import (
    ResultMessage,
    progress_text,
    result_message,
    short,
    tools_for,
    waiting_text,
)

log = logging.getLogger(__name__)

EDIT_INTERVAL = 2.0  # seconds between progress edits of one message
CHANNEL_EDITS = 4  # status edits per channel in any EDIT_WINDOW; Discord allows 5, the rest is headroom
EDIT_WINDOW = 5.0  # seconds
IN_FLIGHT_WAIT = 1.0  # seconds a job's outcome lets a status edit already on its way land first
TOKEN_LIFETIME = 14 * 60.0  # Discord's is 15 minutes; keep a margin for slow uploads
CLOSE_TIMEOUT = 5.0  # seconds close() gives deliveries in flight
RESTARTING = "The bot is restarting. Your job stays queued; its result will be posted in this channel."


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


class Delivery:
    """Follows jobs for their interactions and posts every result somewhere its owner will see it."""

    def __init__(
        self,
        client: discord.Client,
        db: Database,
        settings_service: SettingsService,
        models: ModelCatalog,
        settings: Settings,
        clock: Callable[[], float] = time.time,
        *,
        waiting_for_gpu: Callable[[JobRecord], bool] = lambda job: False,
    ) -> None:
        """``waiting_for_gpu``: no GPU that can run the job is up (a waiting job's status says so)."""
        self.waiting_for_gpu = waiting_for_gpu
        self._client = client
        self._db = db
        self._settings_service = settings_service
        self._models = models
        self._settings = settings
        self._clock = clock
        self._trackers: set[JobTracker] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._budgets: dict[int | None, EditBudget] = {}

    def track(
        self, interaction: discord.Interaction, *, reply_to: discord.Message | None = None
    ) -> JobTracker:
        """An observer to pass to ``JobQueue.submit``; call ``begin`` once the job is queued."""
        return JobTracker(self, interaction, reply_to)

    def on_unwatched(self, event: JobEvent) -> None:
        """Listener for jobs nobody follows (resumed after a restart): post their outcome to the channel."""
        if isinstance(event, JobDone):
            self.spawn(self.publish(event.job, event.result), f"sdbot-publish-{event.job.id}")
        elif isinstance(event, JobFailed):
            notice = self.notice(event.job, _failed_text(event.job, event.error))
            self.spawn(notice, f"sdbot-notice-{event.job.id}")

    def spawn(self, coroutine: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("delivering a job's outcome failed", exc_info=task.exception())

    def token_fresh(self, interaction: discord.Interaction) -> bool:
        return self._clock() - interaction.created_at.timestamp() < TOKEN_LIFETIME

    def edit_slot(
        self, channel_id: int | None, priority: Callable[[], int]
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """A turn to edit a status message in the channel, shared by all its trackers (``EditBudget``)."""
        budget = self._budgets.get(channel_id)
        if budget is None:
            budget = self._budgets[channel_id] = EditBudget(CHANNEL_EDITS, EDIT_WINDOW)
        return budget.slot(priority)

    async def publish(
        self,
        job: JobRecord,
        result: GenerationResult,
        *,
        interaction: discord.Interaction | None = None,
        reply_to: discord.Message | None = None,
    ) -> discord.Message:
        """Post a done job's images. Through ``interaction``'s followup when given and its token still
        works; else as a channel message (a reply to ``reply_to`` when given) that mentions the requester."""
        channel = await self._channel(job.channel_id)
        message: discord.Message | None = None
        if interaction is not None and reply_to is None and self.token_fresh(interaction):
            render = await self._render(job, result, channel, mention=False)
            try:
                message = await interaction.followup.send(
                    render.content,
                    files=render.files,
                    view=render.view,
                    allowed_mentions=render.allowed_mentions,
                    wait=True,
                )
            except discord.HTTPException as failure:
                log.info("job %s: followup failed (%s); posting to the channel instead", job.id, failure)
        if message is None:
            render = await self._render(job, result, channel, mention=True)
            reference = None if reply_to is None else reply_to.to_reference(fail_if_not_exists=False)
            message = await channel.send(
                render.content,
                files=render.files,
                view=render.view,
                allowed_mentions=render.allowed_mentions,
                reference=reference,
            )
        await self._db.jobs.set_message(job.id, message.id)
        return message

    async def notice(self, job: JobRecord, text: str) -> None:
        """A short channel message for the requester when their interaction can no longer carry it."""
        channel = await self._channel(job.channel_id)
        await channel.send(
            f"<@{job.user_id}> {text}",
            allowed_mentions=discord.AllowedMentions(
                users=[discord.Object(job.user_id)], everyone=False, roles=False
            ),
        )

    async def close(self) -> None:
        """Let deliveries in flight finish (briefly), then stop following jobs."""
        trackers = list(self._trackers)
        for tracker in trackers:
            tracker.stop_watching()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=CLOSE_TIMEOUT)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks))

    async def _render(
        self, job: JobRecord, result: GenerationResult, channel: discord.abc.Messageable, *, mention: bool
    ) -> ResultMessage:
        guild = await self._settings_service.get(job.guild_id)
        is_nsfw = getattr(channel, "is_nsfw", None)
        profile = self._models.profile(job.params.model or self._models.library.default)
        return result_message(
            job,
            result,
            policy=guild.nsfw_policy,
            unchecked_policy=self._settings.unchecked_policy,
            age_restricted=bool(is_nsfw()) if callable(is_nsfw) else False,
            tools=tools_for(job, guild, profile),
            mention=mention,
        )

    async def _channel(self, channel_id: int) -> discord.abc.Messageable:
        channel = self._client.get_channel(channel_id)
        if channel is None:
            with contextlib.suppress(discord.HTTPException):
                channel = await self._client.fetch_channel(channel_id)
        if isinstance(channel, discord.abc.Messageable):
            return channel
        return self._client.get_partial_messageable(channel_id)


def _failed_text(job: JobRecord, error: str) -> str:
    prompt = short(job.params.prompt, 200)
    # An engine's error text can be long (a library's message): keep the notice well within 2,000 characters.
    return f"Job {job.id} (**{prompt}**) failed: {short(error, 500)}. Nothing was charged."


def _cancelled_text(job: JobRecord) -> str:
    return f"Job {job.id} was cancelled. Nothing was charged."


class _Outcome(NamedTuple):
    job: JobRecord
    status: str  # what the status message ends with
    must_reach: bool  # told in the channel if the status message is gone (a failure)


class JobTracker:
    """Follows one job for the interaction that asked for it (see the module docstring)."""

    def __init__(
        self, delivery: Delivery, interaction: discord.Interaction, reply_to: discord.Message | None
    ):
        self._delivery = delivery
        self._interaction = interaction
        self._reply_to = reply_to
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
        """Start following ``job`` (already queued with this tracker as its observer)."""
        self._job = job
        self._delivery._trackers.add(self)
        self._task = self._delivery.spawn(self._follow(), f"sdbot-track-{job.id}")
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
                interaction = self._interaction if self._status_shown else None
                try:
                    message = await self._delivery.publish(
                        job, result, interaction=interaction, reply_to=self._reply_to
                    )
                except discord.HTTPException as failure:
                    log.warning("job %s: could not post its images: %s", job.id, failure)
                    reason = failure.text or failure
                    text = f"Job {job.id} is done, but I could not post its images here ({reason})."
                    return _Outcome(job, text, must_reach=False)
                return _Outcome(job, f"Job {job.id} is done: {message.jump_url}", must_reach=False)
            case JobFailed(error=error):
                return _Outcome(job, _failed_text(job, error), must_reach=True)
            case _:  # JobCancelled, the only other terminal event
                return _Outcome(job, _cancelled_text(job), must_reach=False)

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
                no_gpu = self._delivery.waiting_for_gpu(job)
                await self._edit(content=waiting_text(job, position, no_gpu=no_gpu), view=cancel_view(job.id))
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
