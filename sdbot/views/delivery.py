"""Getting every job's progress and result to the member who asked, whatever happened in between.

``Delivery`` owns what delivers jobs in this process: the ``JobTracker`` of each job a member follows
(``sdbot.views.tracker``), the channels' edit budgets (``sdbot.views.budget``), the ``ResultPoster``
(``sdbot.views.posting``) and the ``StatusNotes`` that keep status messages editable across a restart
(``sdbot.views.statuses``).

Jobs nobody follows (resumed after a restart) reach their members through ``on_unwatched``: the result is a
channel message that mentions the requester, a failure a notice, and the status message, when its token is
still valid, says what happened. At start-up, ``recover`` posts the results a previous run finished but did
not post (looking in the channel first, in case it posted them without recording it), and finishes the
status messages of jobs that ended while the bot was down.

``close`` lets deliveries in flight finish (briefly) and tells members whose jobs stay queued that the
result will come after the restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import discord

from sdbot.config import Settings
from sdbot.db import Database, JobRecord, StoredResult
from sdbot.params import JobState
from sdbot.services.events import JobCancelled, JobDone, JobEvent, JobFailed, JobQueued
from sdbot.services.ledger import JobLedger, stored
from sdbot.services.models import ModelCatalog
from sdbot.services.settings import SettingsService
from sdbot.views.budget import EditBudget
from sdbot.views.posting import NETWORK_ERRORS, Posted, ResultPoster
from sdbot.views.render import cancelled_text, done_text, failed_text, resumed_text
from sdbot.views.statuses import TOKEN_LIFETIME, StatusNotes
from sdbot.views.tracker import JobTracker

log = logging.getLogger(__name__)

CHANNEL_EDITS = 4  # status edits per channel in any EDIT_WINDOW; Discord allows 5, the rest is headroom
EDIT_WINDOW = 5.0  # seconds
CLOSE_TIMEOUT = 5.0  # seconds close() gives deliveries in flight
LOST = "its images were lost before they could be posted"


class Delivery:
    """Follows jobs for their interactions and posts every result somewhere its owner will see it."""

    def __init__(
        self,
        client: discord.Client,
        db: Database,
        ledger: JobLedger,
        settings_service: SettingsService,
        models: ModelCatalog,
        settings: Settings,
        *,
        model_ready: Callable[[], bool] = lambda: True,
        waiting_for_gpu: Callable[[JobRecord], bool] = lambda job: False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``model_ready``: the bot's own model has loaded; ``waiting_for_gpu``: no GPU that can run the job
        is up (a waiting job's status says either)."""
        self.waiting_for_gpu = waiting_for_gpu
        self._client = client
        self._db = db
        self._ledger = ledger
        self._clock = clock
        self.model_ready = model_ready
        self.poster = ResultPoster(client, ledger, settings_service, models, settings, clock)
        self.notes = StatusNotes(client, db, self.edit_slot, clock)
        self._trackers: set[JobTracker] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._budgets: dict[int | None, EditBudget] = {}

    def track(
        self,
        interaction: discord.Interaction,
        *,
        reply_to: discord.Message | None = None,
        status_message_id: int | None = None,
    ) -> JobTracker:
        """An observer to pass to ``JobQueue.submit``; call ``begin`` once the job is queued.
        ``status_message_id``: the interaction's own (deferred) message, edited after a restart."""
        return JobTracker(self, interaction, reply_to, status_message_id)

    def on_unwatched(self, event: JobEvent) -> None:
        """Listener for jobs nobody follows (resumed after a restart): post their outcome to the channel,
        and say so on their status messages."""
        job = event.job
        name = f"sdbot-unwatched-{job.id}"
        match event:
            case JobQueued(position=position):
                self.spawn(self.notes.note(job, resumed_text(job, position), final=False), name)
            case JobDone(result=result):
                self.spawn(self._post_late(job, stored(result)), name)
            case JobFailed(error=error):
                self.spawn(self._tell(job, failed_text(job, error), must_reach=True), name)
            case JobCancelled():
                self.spawn(self._tell(job, cancelled_text(job), must_reach=False), name)

    async def recover(self) -> None:
        """At start-up: post the results a previous run left unposted, finish the status messages of jobs
        that ended while the bot was down, and remove result files nothing waits for."""
        undelivered = await self._db.jobs.undelivered()
        for job in undelivered:
            kept = await self._db.results.load(job.id)
            posted_before = None if kept is None else await self.poster.find_posted(job)
            if kept is None:
                await self._ledger.undeliverable(job.id, LOST)
                posted = Posted(None, LOST)
            elif posted_before is not None:
                log.info("job %s: its result was posted before the restart; recording it", job.id)
                await self._ledger.delivered(job.id, posted_before)
                posted = Posted(posted_before)
            else:
                log.info("job %s: posting the result a previous run could not post", job.id)
                posted = await self.poster.post(job, kept)
            await self._tell(job, posted.status(job), must_reach=posted.message_id is None)
        for status in await self._db.statuses.valid(self._clock()):
            job = await self._db.jobs.get(status.job_id)
            text = None if job is None else _final_status(job)
            if job is not None and text is not None:
                await self.notes.note(job, text, final=True)
        await self._db.statuses.prune(self._clock())
        waiting = {job.id for job in undelivered} | {job.id for job in await self._db.jobs.unfinished()}
        await self._db.results.remove_except(waiting)

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

    async def notice(self, job: JobRecord, text: str) -> None:
        """A short channel message for the requester when their interaction can no longer carry it."""
        channel = await self.poster.channel(job.channel_id)
        try:
            await channel.send(
                f"<@{job.user_id}> {text}",
                allowed_mentions=discord.AllowedMentions(
                    users=[discord.Object(job.user_id)], everyone=False, roles=False
                ),
            )
        except (discord.HTTPException, *NETWORK_ERRORS) as failure:
            log.warning("job %s: could not tell its member in the channel: %s", job.id, failure)

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

    async def _post_late(self, job: JobRecord, result: StoredResult) -> None:
        posted = await self.poster.post(job, result)
        await self._tell(job, posted.status(job), must_reach=posted.message_id is None)

    async def _tell(self, job: JobRecord, text: str, *, must_reach: bool) -> None:
        """Say how a job ended on its kept status message; in the channel when there is none and the
        member must hear of it (a failure)."""
        if not await self.notes.note(job, text, final=True) and must_reach:
            await self.notice(job, text)


def _final_status(job: JobRecord) -> str | None:
    """What a job's status message ends with once the job has ended (None: not yet known)."""
    if job.state is JobState.DONE and job.message_id is not None:
        return done_text(job, job.message_id)
    if job.state is JobState.FAILED:
        return failed_text(job, job.error or "")
    if job.state is JobState.CANCELLED:
        return cancelled_text(job)
    return None
