"""A GPU worker's lane: one consumer of the ``JobQueue`` feeding one engine.

One asyncio task takes batches from the queue and hands each to its ``BatchRunner``
(``sdbot.services.batch_runner``: the engine calls of a batch and how faults end its jobs), whose calls run in
the engine's own thread (``sdbot.services.engine_thread``), so the event loop never waits for the GPU. The
worker talks to the engine only through the ``Engine`` protocol: the local engine and each remote GPU worker
(``sdbot.remote.RemoteEngine``) get a ``Worker`` of their own, all taking from the same fair order
(``sdbot.services.dispatch``).

Batching: the next job in fair order and the jobs right after it with the same batch key (the engine operation
and ``JobParams.batch_key``) run together, up to ``Settings.max_batch`` images; each keeps its own prompt and
seeds, and its images do not depend on the batch (the engine seeds every image). Batches never mix models; a
job of the model that ran last may go first, sparing a model switch, within the queue's bound
(``sdbot.services.fair_order``).

A remote engine that is lost (``WorkerLost``) puts the batch's jobs back at the front of the queue and ends
this worker; any other error that escapes the runner fails the batch's jobs as an internal error, logged, and
the worker goes on with the next batch.

Shutdown (``stop``): take no new batch, give the running one ``Settings.shutdown_grace`` seconds, then
interrupt it and leave its jobs queued in the database (no refund) for the next start-up. While the ends of
jobs cannot be written (``JobQueue.paused``), no batch is taken.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

from sdbot.config import Settings
from sdbot.errors import WorkerLost
from sdbot.inference.types import Engine
from sdbot.services.active_job import ActiveJob
from sdbot.services.batch_runner import INTERNAL_ERROR, BatchRunner
from sdbot.services.engine_thread import OPERATIONS, EngineThread
from sdbot.services.jobs import JobQueue

log = logging.getLogger(__name__)

INTERRUPT_WAIT = 10.0  # seconds an interrupted engine run gets to notice before stop() gives up on it


def batch_key(job: ActiveJob) -> tuple[Any, ...]:
    """Jobs with equal keys can share one engine call: the same operation (txt2img and reroll are one) and
    the same parameters but for prompts, seeds and counts."""
    return (OPERATIONS[job.record.kind], *job.params.batch_key())


class Worker:
    """The one consumer of ``queue``, running ``engine`` in a single dedicated thread.

    Settings used: ``max_batch`` (images per batch), ``shutdown_grace`` (seconds ``stop`` waits for the
    running batch before interrupting it), and those of its ``BatchRunner``.
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
        self._shutdown = threading.Event()
        self._batches = BatchRunner(queue, self._thread, settings, self._shutdown)
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._current: list[ActiveJob] = []
        self._last_model: str | None = None  # the model of the last batch: surely still on the GPU

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def images_done(self) -> int:
        """Images its engine has made since it was built."""
        return self._batches.images_done

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
        await self._batches.finish_recording(INTERRUPT_WAIT)
        await self._queue.ledger.flush()
        self._task = None

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
                await self._batches.run(batch)
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

    async def _fail_quietly(self, job: ActiveJob, message: str) -> None:
        try:
            await self._queue.fail(job, message)
        except Exception:
            log.exception("could not record the failure of job %s", job.id)
