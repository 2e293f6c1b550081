"""The queue's writes to the job ledger that outlive the call that asked for them (``JobLedger``).

A job's end is written until it is (``EndingWriter``), after a done job's images are kept beside the
database; so are the records of its delivery. A job's start is written in the background, so that the
engine never waits for the disk. At start-up, the jobs a previous run left unfinished are read back, and
one whose images were already kept is recorded done instead of running again. The two writes whose caller
simply awaits them do not come through here: a job's row is created by ``JobAdmission`` and put back in the
queue by ``JobQueue.requeue``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

from sdbot.db import JobEnding, StoredImage, StoredResult
from sdbot.inference.types import GenerationResult
from sdbot.params import JobState
from sdbot.services.background import run_in_background
from sdbot.services.endings import EndingWriter

if TYPE_CHECKING:
    from sdbot.db import Database, JobRecord

log = logging.getLogger(__name__)


def stored(result: GenerationResult) -> StoredResult:
    """A generation's images as kept and posted."""
    images = [StoredImage(image.png, image.seed, image.nsfw) for image in result.images]
    return StoredResult(images, result.notes)


class JobLedger:
    """Records what happens to the queue's jobs in ``db.jobs`` (and a done job's images in ``db.results``).

    ``paused`` says why new work waits while the ends of jobs cannot be written; ``on_resume`` is called
    when it no longer does.
    """

    def __init__(
        self, db: Database, on_resume: Callable[[], None], clock: Callable[[], float] = time.time
    ) -> None:
        self._db = db
        self._clock = clock
        self._endings = EndingWriter(on_resume=on_resume)
        self._writes: set[asyncio.Future[Any]] = set()  # starts being written in the background

    @property
    def paused(self) -> str | None:
        """Why no job is taken now (the ends of jobs cannot be saved), or None."""
        return self._endings.paused

    async def unfinished(self) -> list[JobRecord]:
        """The jobs a previous run left queued or running, oldest first (after removing the images whose
        keeping a crash cut short: those jobs were not done)."""
        await self._db.results.remove_partial()
        return await self._db.jobs.unfinished()

    async def resume(self, record: JobRecord) -> JobRecord | None:
        """An unfinished job of a previous run, ready to queue again: a running one starts over. None if its
        images were kept before the run stopped: it is recorded done instead (its images wait to be
        posted), so it never runs twice."""
        kept = await self._db.results.load(record.id)
        if kept is not None:
            seeds, nsfw = [i.seed for i in kept.images], [i.nsfw for i in kept.images]
            ending = JobEnding(JobState.DONE, self._clock(), seeds, nsfw)
            record_done = partial(self._db.end_job, record.id, ending)
            await self._endings.write(record.id, "record it done", record_done)
            log.info("job %s was done before the restart: its images will be posted", record.id)
            return None
        if record.state == "running":
            await self._db.jobs.requeue(record.id)
            return replace(record, state=JobState.QUEUED, started_at=None)
        return record

    async def source_png(self, job_id: int) -> bytes | None:
        """The image a variation or upscale job starts from (stored with the job, so it survives restarts)."""
        return await self._db.jobs.source_png(job_id)

    def started(self, job_id: int, now: float) -> None:
        """Record that the job runs since ``now``, as a task: aiosqlite runs a connection's statements in
        the order they were issued, and the task issues its statement on the next loop turn, before any
        later write of the job."""
        run_in_background(self._writes, self._mark_running(job_id, now), "a background job write failed")

    async def flush(self) -> None:
        """Wait for the background writes started so far."""
        while self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)

    async def end(self, job_id: int, ending: JobEnding, result: GenerationResult | None = None) -> None:
        """Record the job's end and settle its quota, first keeping a done job's images (``result``) beside
        the database; each write is tried until it succeeds (cancelling stops it)."""
        if result is not None:
            keep = partial(self._db.results.save, job_id, stored(result))
            await self._endings.write(job_id, "keep its images", keep)
        record_end = partial(self._db.end_job, job_id, ending)
        if not await self._endings.write(job_id, f"record it {ending.state}", record_end):
            log.warning("job %s had already ended in the database", job_id)

    async def delivered(self, job_id: int, message_id: int) -> None:
        """A done job's images are posted in ``message_id``: record it (retried until written, as a job's
        end is), then let their files go."""
        record = partial(self._db.jobs.set_message, job_id, message_id)
        await self._endings.write(job_id, "record its result message", record)
        await self._db.results.delete(job_id)

    async def undeliverable(self, job_id: int, error: str) -> None:
        """A done job's images cannot be posted: it ends failed with ``error`` (user-safe text) and its
        images are refunded (retried until written), then their files go."""
        abandon = partial(self._db.abandon_delivery, job_id, error)
        await self._endings.write(job_id, "record that its images could not be posted", abandon)
        await self._db.results.delete(job_id)

    async def _mark_running(self, job_id: int, now: float) -> None:
        if not await self._db.jobs.mark_running(job_id, now):
            log.warning("job %s was no longer queued in the database when it started", job_id)
