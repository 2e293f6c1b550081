"""The job queue: the jobs of this process from the moment they are queued until their end is recorded.

``JobQueue`` queues what ``JobAdmission`` admits (and, at start-up, what a previous run left unfinished),
keeps it in the fair order (``FairOrder``) while it waits, hands it in batches to the GPU lanes
(``sdbot.services.worker``) and takes their reports through the methods marked "for the worker", puts back a
batch whose GPU worker was lost, and ends each job exactly once: done, failed or cancelled, its quota
reservation committed or refunded. ``ledger`` (``JobLedger``) records what happens to the jobs, and
``observers`` (``JobObservers``) tells whoever listens.

Nothing here knows about Discord: observers are plain callables that receive ``JobEvent`` objects.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PIL import Image

from sdbot.config import Settings
from sdbot.db import JobEnding
from sdbot.errors import JobNotFound, NotPermitted
from sdbot.inference.types import GenerationResult
from sdbot.params import JobState
from sdbot.services.active_job import ActiveJob
from sdbot.services.admission import JobAdmission, JobRequest
from sdbot.services.events import (
    JobCancelled,
    JobDone,
    JobEvent,
    JobFailed,
    JobObservers,
    JobProgress,
    JobStarted,
    Observer,
)
from sdbot.services.fair_order import FairOrder
from sdbot.services.ledger import JobLedger

if TYPE_CHECKING:
    from sdbot.db import Database, JobRecord
    from sdbot.services.quotas import QuotaService
    from sdbot.services.settings import SettingsService

log = logging.getLogger(__name__)


class JobQueue:
    """The queue of generation jobs: ``submit`` admits a job (``JobAdmission``: the queue limits), the worker
    runs it, ``ledger`` records what happens to it in ``db.jobs`` and ``observers`` hear of it.

    Reservations: ``submit`` takes over the reservation of the request from the moment it is called. If the
    job is not queued (``QueueFull``, or any error) the reservation is refunded before ``submit`` raises;
    once queued, the job's end commits it (done) or refunds it (failed, cancelled). A caller therefore never
    refunds a reservation it has passed to ``submit``.
    """

    def __init__(
        self,
        db: Database,
        quotas: QuotaService,
        settings: Settings,
        settings_service: SettingsService | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._clock = clock
        self._order = FairOrder()
        self._admission = JobAdmission(db, quotas, settings, self._order, settings_service, clock)
        self._jobs: dict[int, ActiveJob] = {}  # queued or running
        self._running: dict[int, ActiveJob] = {}
        self._work = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.observers = JobObservers()
        self.ledger = JobLedger(db, on_resume=self.wake, clock=clock)

    # ----- for the bot

    async def submit(
        self,
        request: JobRequest,
        *,
        user_queue_limit: int | None = None,
        observer: Observer | None = None,
    ) -> JobRecord:
        """Persist and queue a job; ``observer`` (if any) hears all its events, starting with ``JobQueued``.

        Raises ``QueueFull`` when the user already has ``user_queue_limit`` jobs waiting in this server, or
        the whole queue holds ``Settings.max_queue``. Refunds the reservation whenever it raises. Shielded
        from cancellation: a caller cancelled after the row was written must not leave a job in the database
        that is neither queued here nor refunded.
        """
        return await asyncio.shield(self._submit(request, user_queue_limit, observer))

    async def _submit(
        self, request: JobRequest, user_queue_limit: int | None, observer: Observer | None
    ) -> JobRecord:
        record = await self._admission.admit(request, user_queue_limit)
        self._enqueue(ActiveJob(record), observer)  # before any await: see JobAdmission.admit
        return record

    def position(self, job_id: int) -> int | None:
        """How many queued jobs will run before this one (0: it runs next); None if it is not queued."""
        for index, job in enumerate(self._order.order()):
            if job.id == job_id:
                return index
        return None

    def queued(self) -> list[JobRecord]:
        """The waiting jobs in the order they will run."""
        return [job.record for job in self._order.order()]

    def running(self) -> list[JobRecord]:
        return [job.record for job in self._running.values()]

    async def cancel(self, job_id: int, *, by_user: int | None = None) -> JobRecord:
        """Cancel a queued or running job and refund it. A running job's engine run stops within one
        denoising step (the worker polls ``finished``). ``by_user``: the member asking, who must own the job
        (None: a manager, no ownership check). Raises ``JobNotFound`` or ``NotPermitted``."""
        job = self._jobs.get(job_id)
        if job is None or job.finished:
            raise JobNotFound(f"job {job_id} is not queued or running")
        if by_user is not None and by_user != job.user_id:
            raise NotPermitted(f"job {job_id} belongs to someone else")
        if job.id not in self._running:
            self._order.remove(job)
        ending = JobEnding(JobState.CANCELLED, self._clock())
        await self._finish(job, ending, lambda record: JobCancelled(record, by_user=by_user))
        return job.record

    async def join(self) -> None:
        """Wait until no job is queued or running."""
        await self._idle.wait()

    @property
    def paused(self) -> str | None:
        """Why no job is taken now (the ends of jobs cannot be saved), or None."""
        return self.ledger.paused

    # ----- for the worker

    async def restore(self) -> int:
        """Queue again the jobs a previous run left queued or running, in their original order; a running
        one starts over. A job whose images were kept before the run stopped is recorded done instead (its
        images wait to be posted): it never runs twice. Returns how many were queued again."""
        restored = 0
        for record in await self.ledger.unfinished():
            if record.id in self._jobs:
                continue
            resumed = await self.ledger.resume(record)
            if resumed is not None:
                self._enqueue(ActiveJob(resumed))
                restored += 1
        if restored:
            log.info("resumed %d unfinished job(s) from the last run", restored)
        return restored

    async def wait_for_work(self) -> None:
        """Return once a job is waiting (or ``wake`` is called)."""
        await self._work.wait()
        self._work.clear()

    def wake(self) -> None:
        self._work.set()

    def take_batch(
        self,
        max_images: int,
        batch_key: Callable[[ActiveJob], Any],
        prefer: Callable[[ActiveJob], bool] | None = None,
        accepts: Callable[[ActiveJob], bool] | None = None,
    ) -> list[ActiveJob]:
        """Take the next batch to run (``FairOrder.next_batch``, which says how) and count its jobs as
        running. Nothing while ``paused``."""
        if self.paused is not None:
            return []
        batch = self._order.next_batch(max_images, batch_key, prefer, accepts)
        if not batch:
            return batch
        for job in batch:
            self._running[job.id] = job
        self.observers.publish_positions(self.queued())
        return batch

    def start(self, job: ActiveJob) -> bool:
        """Record that ``job`` runs now; False if it was cancelled meanwhile. The row is written in the
        background (``JobLedger.started``), so the engine does not wait for the disk."""
        if job.finished:
            return False
        now = self._clock()
        job.mark_running(now)
        self.ledger.started(job.id, now)
        self.observers.emit(JobStarted(job.record))
        return True

    def progress(self, job: ActiveJob, step: int, total: int, preview: Image.Image | None) -> None:
        if not job.finished:
            self.observers.emit(JobProgress(job.record, step=step, total=total, preview=preview))

    async def complete(self, job: ActiveJob) -> None:
        """The job has all its images: keep them beside the database, record it done and commit its
        reservation, then tell its observers (who post the images)."""
        if job.finished:
            return
        result = job.result()
        ending = JobEnding(JobState.DONE, self._clock(), result.seeds, result.nsfw)
        await self._finish(job, ending, lambda record: JobDone(record, result=result), result)

    async def fail(self, job: ActiveJob, error: str) -> None:
        """The job cannot be done: record ``error`` (user-safe text), refund, tell its observers."""
        if job.finished:
            return
        ending = JobEnding(JobState.FAILED, self._clock(), error=error)
        await self._finish(job, ending, lambda record: JobFailed(record, error=error))

    async def requeue(self, job: ActiveJob, *, front: bool = False) -> None:
        """Put a running job back in the queue, in the database too: it runs again from the start, its
        reservation untouched; on shutdown, at the next start-up; with ``front`` (its GPU worker was lost),
        before every waiting job. The job is queued in memory before the write, so a cancel that arrives
        meanwhile finds it queued and removes it."""
        if job.finished or self._running.pop(job.id, None) is None:
            return
        job.mark_queued()
        self._order.add(job, front=front)
        if front:
            self._work.set()
        self.observers.publish_positions(self.queued())
        await self._db.jobs.requeue(job.id)

    # ----- internals

    def _enqueue(self, job: ActiveJob, observer: Observer | None = None) -> None:
        self._jobs[job.id] = job
        self._order.add(job)
        self._idle.clear()
        self._work.set()
        self.observers.announce_queued(job.record, observer, self.queued())

    async def _finish(
        self,
        job: ActiveJob,
        ending: JobEnding,
        make: Callable[[JobRecord], JobEvent],
        result: GenerationResult | None = None,
    ) -> None:
        """End a job exactly once: whoever sets ``finished`` first (all on the loop, before any await) wins.
        Its observers hear of it only once its end is recorded (``JobLedger.end`` retries until it is); if
        the bot stops first, nobody hears, and the job stays unfinished in the ledger for the next start.
        ``result``: a done job's images, kept before its end is recorded."""
        job.finished = True
        try:
            await self.ledger.end(job.id, ending, result)
        finally:
            self._jobs.pop(job.id, None)
            self._running.pop(job.id, None)
            self.observers.publish_positions(self.queued())
            if not self._jobs:
                self._order.forget_turns()
                self._idle.set()
        job.mark_ended(ending)
        self.observers.emit(make(job.record))
