"""A GPU worker's lane: one consumer of the ``JobQueue`` feeding one engine.

One asyncio task takes batches from the queue and runs each engine call in the engine's own thread
(``sdbot.services.engine_thread``), so the event loop never waits for the GPU. The worker talks to the engine
only through the ``Engine`` protocol: the local engine and each remote GPU worker
(``sdbot.remote.RemoteEngine``) get a ``Worker`` of their own, all taking from the same fair order
(``sdbot.services.dispatch``).

Batching: the next job in fair order and the jobs right after it with the same batch key (the engine operation
and ``JobParams.batch_key``) run in one engine call, up to ``Settings.max_batch`` images; each keeps its own
prompt and seeds, and its images do not depend on the batch (the engine seeds every image). A job with more
images than ``max_batch`` runs in several calls, image ``i`` always with seed ``seed + i``. Batches never mix
models; a job of the model that ran last may go first, sparing a model switch, within the queue's bound
(``sdbot.services.fair_order``).

Faults, each ending in exactly one of done / failed / cancelled / requeued per job: an engine error fails only
its own job (a failed batch is retried job by job once); out of memory on several images retries at half the
batch size; a run longer than ``Settings.job_timeout`` is interrupted and its jobs fail; a remote engine
that is lost (``WorkerLost``) puts its jobs back at the front of the queue and ends this worker; any other
error is logged and the worker goes on with the next batch.

Shutdown (``stop``): take no new batch, give the running one ``Settings.shutdown_grace`` seconds, then
interrupt it and leave its jobs queued in the database (no refund) for the next start-up. While the ends of
jobs cannot be written (``JobQueue.paused``), no batch is taken.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import threading
from collections.abc import Callable
from typing import Any

from sdbot.config import Settings
from sdbot.errors import GenerationCancelled, GenerationFailed, WorkerLost
from sdbot.inference.types import Engine
from sdbot.services.active_job import ActiveJob
from sdbot.services.background import run_in_background
from sdbot.services.engine_thread import OPERATIONS, EngineRun, EngineThread, Slice
from sdbot.services.jobs import JobQueue

log = logging.getLogger(__name__)

INTERRUPT_WAIT = 10.0  # seconds an interrupted engine run gets to notice before stop() gives up on it
_OUT_OF_MEMORY = re.compile(r"out of (gpu |cuda |device )?memory", re.IGNORECASE)
INTERNAL_ERROR = "the generation failed because of an internal error; the bot's logs have the details"


def batch_key(job: ActiveJob) -> tuple[Any, ...]:
    """Jobs with equal keys can share one engine call: the same operation (txt2img and reroll are one) and
    the same parameters but for prompts, seeds and counts."""
    return (OPERATIONS[job.record.kind], *job.params.batch_key())


class Worker:
    """The one consumer of ``queue``, running ``engine`` in a single dedicated thread.

    Settings used: ``max_batch`` (images per engine call), ``job_timeout`` (seconds one engine call may run),
    ``shutdown_grace`` (seconds ``stop`` waits for the running batch before interrupting it).
    ``progress_interval``: least seconds between two progress events of a run (the last step always comes;
    Discord cannot show updates faster anyway). ``accepts``: which jobs this engine takes (default: all).
    """

    def __init__(
        self,
        queue: JobQueue,
        engine: Engine,
        settings: Settings,
        *,
        progress_interval: float = 0.2,
        accepts: Callable[[ActiveJob], bool] | None = None,
    ) -> None:
        self._queue = queue
        self._accepts = accepts
        self._engine = engine
        self._settings = settings
        self._thread = EngineThread(queue, engine, progress_interval)
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._shutdown = threading.Event()
        self._current: list[ActiveJob] = []
        self._last_model: str | None = None  # the model of the last batch: surely still on the GPU
        self._completing: set[asyncio.Future[Any]] = set()
        self.images_done = 0

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def running(self) -> list[ActiveJob]:
        """The jobs of the batch it runs now (empty: idle)."""
        return list(self._current)

    @property
    def ended(self) -> bool:
        """It stopped consuming by itself (its remote engine was lost)."""
        return self._task is not None and self._task.done()

    async def start(self, *, resume: bool = True) -> None:
        """Resume the jobs a previous run left unfinished (``resume``: once per start-up, by whoever starts
        the first worker), then start consuming."""
        if self._task is not None:
            raise RuntimeError("the worker is already running")
        self._stopping = False
        self._shutdown.clear()
        if resume:
            await self._queue.restore()
        self._thread.open()
        self._task = asyncio.create_task(self._consume(), name="sdbot-worker")

    async def stop(self) -> None:
        """Take no more jobs; let the running batch finish within ``shutdown_grace``, else interrupt it and
        leave its jobs queued in the database."""
        task = self._task
        if task is None:
            return
        self._stopping = True
        self._queue.wake()
        done, _ = await asyncio.wait({task}, timeout=self._settings.shutdown_grace)
        if not done:
            log.warning("shutdown: interrupting the running batch after %gs", self._settings.shutdown_grace)
            self._shutdown.set()
            done, _ = await asyncio.wait({task}, timeout=INTERRUPT_WAIT)
        if not done:
            log.error("shutdown: the engine did not stop; its jobs stay queued for the next start-up")
            abandoned = list(self._current)
            task.cancel()
            for job in abandoned:
                await self._queue.requeue(job)
        self._thread.close()
        await self._stop_completing()
        await self._queue.ledger.flush()
        self._task = None

    async def _stop_completing(self) -> None:
        """Give the done jobs being recorded ``INTERRUPT_WAIT`` seconds; one whose end still cannot be
        written stays unfinished in the ledger (with its images kept, if they were) for the next start."""
        if not self._completing:
            return
        _, pending = await asyncio.wait(set(self._completing), timeout=INTERRUPT_WAIT)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _consume(self) -> None:
        while not self._stopping:
            batch = self._queue.take_batch(
                self._settings.max_batch, batch_key, prefer=self._model_loaded, accepts=self._accepts
            )
            if not batch:
                await self._queue.wait_for_work()
                continue
            self._current = batch
            self._last_model = batch[0].params.model
            try:
                await self._run_batch(batch)
            except WorkerLost as lost:
                log.warning("%s; jobs %s go back to the front of the queue", lost, [job.id for job in batch])
                for job in batch:
                    await self._queue.requeue(job, front=True)
                return
            except Exception:
                log.exception("the worker failed on jobs %s; going on", [job.id for job in batch])
                for job in batch:
                    await self._fail_quietly(job, INTERNAL_ERROR)
            finally:
                self._current = []

    def _model_loaded(self, job: ActiveJob) -> bool:
        """Whether ``job`` runs without a model switch (the queue may run it a little early for that)."""
        return job.params.model == self._last_model

    async def _run_batch(self, batch: list[ActiveJob]) -> None:
        started = [job for job in batch if self._queue.start(job)]
        slices = [Slice(job, 0, job.image_count) for job in started]
        for chunk in _split(slices, self._settings.max_batch):
            await self._run_slices(chunk, retry_alone=len(started) > 1)

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

    async def _fail_quietly(self, job: ActiveJob, message: str) -> None:
        try:
            await self._queue.fail(job, message)
        except Exception:
            log.exception("could not record the failure of job %s", job.id)


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
