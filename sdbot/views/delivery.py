"""Getting a job's progress and result to the member who asked, whatever happened in between.

A ``JobTracker`` follows one job for the interaction that asked for it. The interaction's own ephemeral
message shows the queue position (with a Cancel button), then progress and a preview, edited no more often
than every ``EDIT_INTERVAL`` seconds (newer states replace older ones in between; discord.py waits out 429s).
The result is a public message: the interaction's followup for ``/imagine``, a reply to the clicked message
for a button. When the interaction token is too old (Discord's 15 minutes, with a margin) or a webhook call
fails, or when nobody is watching the job at all (it was resumed after a restart), the result is a plain
channel message that mentions the requester, with the same buttons.

``Delivery`` owns the trackers of this process and the listener for unwatched jobs, and closes them all on
shutdown, telling members whose jobs stay queued that the result will come after the restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import discord
from PIL import Image

from sdbot.config import Settings
from sdbot.db import Database, JobRecord
from sdbot.inference.types import GenerationResult
from sdbot.services.jobs import (
    JobCancelled,
    JobDone,
    JobEvent,
    JobFailed,
    JobPositionChanged,
    JobProgress,
    JobQueued,
    JobStarted,
)
from sdbot.services.settings import SettingsService
from sdbot.views.buttons import cancel_view
from sdbot.views.render import ResultMessage, progress_text, result_message, short, waiting_text

log = logging.getLogger(__name__)

EDIT_INTERVAL = 2.0  # seconds between progress edits of one message
TOKEN_LIFETIME = 14 * 60.0  # Discord's is 15 minutes; keep a margin for slow uploads
CLOSE_TIMEOUT = 5.0  # seconds close() gives deliveries in flight
RESTARTING = "The bot is restarting. Your job stays queued; its result will be posted in this channel."


class Delivery:
    """Follows jobs for their interactions and posts every result somewhere its owner will see it."""

    def __init__(
        self,
        client: discord.Client,
        db: Database,
        settings_service: SettingsService,
        settings: Settings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._db = db
        self._settings_service = settings_service
        self._settings = settings
        self._clock = clock
        self._trackers: set[JobTracker] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

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
        return result_message(
            job,
            result,
            policy=guild.nsfw_policy,
            unchecked_policy=self._settings.unchecked_policy,
            age_restricted=bool(is_nsfw()) if callable(is_nsfw) else False,
            upscale_allowed=guild.upscale_allowed,
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
    prompt = short(job.params.get("prompt", ""), 200)
    return f"Job {job.id} (**{prompt}**) failed: {error}. Nothing was charged."


def _cancelled_text(job: JobRecord) -> str:
    return f"Job {job.id} was cancelled. Nothing was charged."


class JobTracker:
    """Follows one job for the interaction that asked for it (see the module docstring)."""

    def __init__(
        self, delivery: Delivery, interaction: discord.Interaction, reply_to: discord.Message | None
    ):
        self._delivery = delivery
        self._interaction = interaction
        self._reply_to = reply_to
        self._events: asyncio.Queue[JobEvent] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._job: JobRecord | None = None
        self._status_alive = True  # the ephemeral status message can still be edited
        self._status_shown = False  # it shows something (no longer "thinking")
        self._last_edit = -EDIT_INTERVAL
        self._stopped = False  # shutdown: no more progress edits
        self._ending = False  # the job's last event has arrived: its delivery must not be cut short

    def __call__(self, event: JobEvent) -> None:
        self._ending = self._ending or event.terminal
        self._events.put_nowait(event)

    def begin(self, job: JobRecord) -> None:
        """Start following ``job`` (already queued with this tracker as its observer)."""
        self._job = job
        self._delivery._trackers.add(self)
        self._task = self._delivery.spawn(self._follow(), f"sdbot-track-{job.id}")

    def stop_watching(self) -> None:
        """Shutdown: stop following a job that stays queued, and tell its owner. A job that has ended is
        left to finish its delivery (``Delivery.close`` waits for it)."""
        if self._task is None or self._task.done() or self._ending:
            return
        self._stopped = True
        self._task.cancel()
        self._delivery.spawn(
            self._edit(content=RESTARTING, view=None, attachments=[]), "sdbot-restarting-note"
        )

    async def _follow(self) -> None:
        try:
            pending: JobEvent | None = None
            while True:
                wait = None if pending is None else self._last_edit + EDIT_INTERVAL - time.monotonic()
                try:
                    # asyncio.timeout, not wait_for: in 3.11 wait_for can swallow a cancel (shutdown).
                    async with asyncio.timeout(None if wait is None else max(0.0, wait)):
                        event = await self._events.get()
                except TimeoutError:
                    assert pending is not None
                    await self._show(pending)
                    pending = None
                    continue
                if event.terminal:
                    await self._finish(event)
                    return
                pending = event
                if time.monotonic() - self._last_edit >= EDIT_INTERVAL:
                    await self._show(pending)
                    pending = None
        finally:
            self._delivery._trackers.discard(self)

    async def _show(self, event: JobEvent) -> None:
        """Show a queued or running job's state on the status message."""
        if self._stopped or not self._status_alive or not self._delivery.token_fresh(self._interaction):
            return
        job = event.job
        match event:
            case JobQueued(position=position) | JobPositionChanged(position=position):
                await self._edit(content=waiting_text(job, position), view=cancel_view(job.id))
            case JobStarted():
                text = progress_text(job, 0, job.params.get("steps", 0))
                await self._edit(content=text, view=cancel_view(job.id))
            case JobProgress(step=step, total=total, preview=preview):
                fields: dict[str, Any] = {
                    "content": progress_text(job, step, total),
                    "view": cancel_view(job.id),
                }
                if preview is not None:
                    fields["attachments"] = [discord.File(_encode_preview(preview), filename="preview.jpg")]
                await self._edit(**fields)

    async def _finish(self, event: JobEvent) -> None:
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
                    await self._edit(content=text, view=None, attachments=[])
                    return
                await self._edit(
                    content=f"Job {job.id} is done: {message.jump_url}", view=None, attachments=[]
                )
            case JobFailed(error=error):
                if not await self._edit(content=_failed_text(job, error), view=None, attachments=[]):
                    await self._delivery.notice(job, _failed_text(job, error))
            case JobCancelled():
                await self._edit(content=_cancelled_text(job), view=None, attachments=[])

    async def _edit(self, **fields: Any) -> bool:
        """Edit the status message; False (and no more tries) once Discord no longer accepts it."""
        if not self._status_alive or not self._delivery.token_fresh(self._interaction):
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
