"""Running a ``Worker``'s batch until each of its jobs has ended: the engine calls it takes, and what each
fault ends its jobs in.

A batch runs in engine calls of at most ``Settings.max_batch`` images; a job with more images than that runs
in several calls, image ``i`` always with seed ``seed + i``. Each job ends in exactly one of done / failed /
cancelled / requeued: an engine error fails only its own job (a failed batch is retried job by job once); out
of memory on several images retries at half the batch size; a call longer than ``Settings.job_timeout`` is
interrupted and its jobs fail; a call interrupted for shutdown, or not yet made by then, leaves its jobs
queued. A lost remote engine (``WorkerLost``) is no fault of the batch: it goes up to the worker. Done jobs
are recorded in the background, while the engine already runs the next batch.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import threading
from typing import Any

from sdbot.config import Settings
from sdbot.errors import GenerationCancelled, GenerationFailed, WorkerLost
from sdbot.services.active_job import ActiveJob
from sdbot.services.background import run_in_background
from sdbot.services.engine_thread import EngineRun, EngineThread, Slice
from sdbot.services.jobs import JobQueue

log = logging.getLogger(__name__)

_OUT_OF_MEMORY = re.compile(r"out of (gpu |cuda |device )?memory", re.IGNORECASE)
INTERNAL_ERROR = "the generation failed because of an internal error; the bot's logs have the details"


class BatchRunner:
    """Runs batches in ``thread`` and records how each of their jobs ends in ``queue``. ``shutdown``: set
    when the worker gives up waiting for the running batch. Settings used: ``max_batch`` (images per engine
    call), ``job_timeout`` (seconds one engine call may run)."""

    def __init__(
        self, queue: JobQueue, thread: EngineThread, settings: Settings, shutdown: threading.Event
    ) -> None:
        self._queue = queue
        self._thread = thread
        self._settings = settings
        self._shutdown = shutdown
        self._completing: set[asyncio.Future[Any]] = set()
        self.images_done = 0

    async def run(self, batch: list[ActiveJob]) -> None:
        """Start the jobs of ``batch`` and run each until it ends (or, on shutdown, is queued again)."""
        started = [job for job in batch if self._queue.start(job)]
        slices = [Slice(job, 0, job.image_count) for job in started]
        for chunk in _split(slices, self._settings.max_batch):
            await self._run_slices(chunk, retry_alone=len(started) > 1)

    async def finish_recording(self, grace: float) -> None:
        """Give the done jobs being recorded ``grace`` seconds; one whose end still cannot be written stays
        unfinished in the ledger (with its images kept, if they were) for the next start."""
        if not self._completing:
            return
        _, pending = await asyncio.wait(set(self._completing), timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _run_slices(self, slices: list[Slice], *, retry_alone: bool) -> None:
        slices = [part for part in slices if not part.job.finished]
        if not slices:
            return
        run = EngineRun(slices, self._settings.job_timeout, self._shutdown)
        if self._shutdown.is_set():
            await self._requeue(run)
            return
        try:
            results = await self._thread.call(run)
        except GenerationCancelled:
            await self._interrupted(run)
            return
        except WorkerLost:
            raise
        except Exception as error:
            await self._engine_failed(run, error, retry_alone=retry_alone)
            return
        for part, result in zip(run.slices, results, strict=True):
            self.images_done += len(result.images)
            if part.job.add_images(part.first, result.images, result.timings):
                self._complete_later(part.job)

    def _complete_later(self, job: ActiveJob) -> None:
        """Record a done job while the engine already runs the next batch."""
        run_in_background(self._completing, self._queue.complete(job), "recording a done job failed")

    async def _engine_failed(self, run: EngineRun, error: Exception, *, retry_alone: bool) -> None:
        images = sum(part.count for part in run.slices)
        if _is_out_of_memory(error) and images > 1:
            log.warning("out of memory on %d images; retrying at half the batch size", images)
            for half in _split(run.slices, math.ceil(images / 2)):
                await self._run_slices(half, retry_alone=retry_alone)
            return
        if retry_alone and len(run.jobs) > 1:
            log.warning("batch %s failed (%s); retrying job by job", [job.id for job in run.jobs], error)
            for job in run.jobs:
                await self._run_slices([part for part in run.slices if part.job is job], retry_alone=False)
            return
        message = _user_message(error)
        if message == INTERNAL_ERROR:
            log.error("engine error on jobs %s", [job.id for job in run.jobs], exc_info=error)
        for job in run.jobs:
            await self._queue.fail(job, message)

    async def _interrupted(self, run: EngineRun) -> None:
        if self._shutdown.is_set():
            await self._requeue(run)
        elif run.timed_out():
            for job in run.jobs:
                await self._queue.fail(job, f"timed out after {self._settings.job_timeout:g} s")
        else:  # cancel() has recorded the cancelled jobs; any other was stopped by the engine itself
            for job in run.jobs:
                await self._queue.fail(job, "the generation was interrupted")

    async def _requeue(self, run: EngineRun) -> None:
        for job in run.jobs:
            await self._queue.requeue(job)


def _split(slices: list[Slice], max_images: int) -> list[list[Slice]]:
    """Cut ``slices`` into consecutive chunks of at most ``max_images`` images, splitting a job if needed."""
    chunks: list[list[Slice]] = []
    chunk: list[Slice] = []
    size = 0
    for part in slices:
        first, left = part.first, part.count
        while left:
            take = min(left, max_images - size)
            chunk.append(Slice(part.job, first, take))
            size, first, left = size + take, first + take, left - take
            if size == max_images:
                chunks.append(chunk)
                chunk, size = [], 0
    if chunk:
        chunks.append(chunk)
    return chunks


def _is_out_of_memory(error: Exception) -> bool:
    memory_kinds = GenerationFailed | MemoryError | RuntimeError  # torch's OutOfMemoryError is a RuntimeError
    return isinstance(error, memory_kinds) and _OUT_OF_MEMORY.search(str(error)) is not None


def _user_message(error: Exception) -> str:
    """Text fit for the member: our own errors and the engine's parameter checks say what went wrong;
    anything else is an internal error whose details go to the log only."""
    if isinstance(error, GenerationFailed):
        return str(error)
    if isinstance(error, ValueError):
        return f"the engine rejected the parameters: {error}"
    return INTERNAL_ERROR
