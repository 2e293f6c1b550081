"""Where a ``Worker``'s engine calls run: one dedicated thread, and their progress handed back to the loop.

An engine call blocks for as long as the GPU works, so each runs in the engine's own thread (``EngineThread``)
and the event loop (the Discord gateway's heartbeats, interaction acknowledgements) never waits for it. The
source images of the call's jobs are read from the ledger on the loop and decoded in the thread; progress
comes back with ``call_soon_threadsafe``. An ``EngineRun`` is one call: the slices of jobs it makes images
for and the reasons to interrupt it (shutdown, its deadline, every job cancelled), which the engine reads
from the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from PIL import Image

from sdbot.errors import GenerationFailed
from sdbot.inference.types import Engine, EngineRequest, GenerationResult, Operation, Progress
from sdbot.params import JobKind
from sdbot.services.active_job import ActiveJob
from sdbot.services.jobs import JobQueue

OPERATIONS = {
    JobKind.TXT2IMG: Operation.GENERATE,
    JobKind.REROLL: Operation.GENERATE,
    JobKind.REMIX: Operation.GENERATE,
    JobKind.IMG2IMG: Operation.VARIATION,
    JobKind.VARY_SUBTLE: Operation.VARIATION,
    JobKind.VARIATION: Operation.VARIATION,
    JobKind.UPSCALE_SUBTLE: Operation.SUPER_RESOLUTION,
    JobKind.UPSCALE: Operation.UPSCALE,
    JobKind.ZOOM_OUT: Operation.OUTPAINT,
    JobKind.PAN: Operation.OUTPAINT,
}


@dataclass(frozen=True)
class Slice:
    """Images ``first .. first + count - 1`` of a job."""

    job: ActiveJob
    first: int
    count: int


class EngineRun:
    """One engine call: its slices and the reasons it may be interrupted (read from the engine thread)."""

    def __init__(self, slices: list[Slice], timeout: float, shutdown: threading.Event) -> None:
        self.slices = slices
        self.jobs = list(dict.fromkeys(part.job for part in slices))
        self.deadline = time.monotonic() + timeout
        self._shutdown = shutdown

    def timed_out(self) -> bool:
        return time.monotonic() >= self.deadline

    def should_cancel(self) -> bool:
        """Stop when shutting down, past the deadline, or when every job of the call was cancelled."""
        return self._shutdown.is_set() or self.timed_out() or all(job.finished for job in self.jobs)


class EngineThread:
    """Runs ``engine``'s calls in one dedicated thread (from ``open`` to ``close``) and hands their progress
    to ``queue``, at most every ``progress_interval`` seconds (the last step always comes; Discord cannot
    show updates faster anyway)."""

    def __init__(self, queue: JobQueue, engine: Engine, progress_interval: float) -> None:
        self._queue = queue
        self._engine = engine
        self._progress_interval = progress_interval
        self._executor: ThreadPoolExecutor | None = None

    def open(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sdbot-engine")

    def close(self) -> None:
        """Let the thread go without waiting for a call that may still be in it."""
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    async def call(self, run: EngineRun) -> list[GenerationResult]:
        """Run ``run`` in the engine thread; one result per slice, in order."""
        ledger = self._queue.ledger
        sources = {job.id: await ledger.source_png(job.id) for job in run.jobs if job.record.kind.from_image}
        loop = asyncio.get_running_loop()
        last_report = -math.inf
        owners = [part.job for part in run.slices]  # the job of each engine request

        def report(progress: Progress) -> None:
            """Hand a step to the loop, at most every ``progress_interval`` seconds but always the last one:
            each hand-over wakes the loop and costs the engine thread the GIL for a moment."""
            nonlocal last_report
            now = time.monotonic()
            if progress.step < progress.total and now - last_report < self._progress_interval:
                return
            last_report = now
            previews = progress.make_previews() if progress.make_previews is not None else None
            with contextlib.suppress(RuntimeError):  # the loop closed under a run being abandoned
                loop.call_soon_threadsafe(
                    self._report_progress, run, owners, progress.step, progress.total, previews
                )

        def call() -> list[GenerationResult]:
            operation = OPERATIONS[run.jobs[0].record.kind]
            requests = [_request(part, sources) for part in run.slices]
            results = self._engine.run(operation, requests, report, run.should_cancel)
            if len(results) != len(requests):
                raise GenerationFailed(f"the engine returned {len(results)} results for {len(requests)}")
            return results

        assert self._executor is not None
        return await loop.run_in_executor(self._executor, call)

    def _report_progress(
        self,
        run: EngineRun,
        owners: list[ActiveJob],
        step: int,
        total: int,
        previews: list[Image.Image] | None,
    ) -> None:
        """On the loop: one ``JobProgress`` per job of the run, with the preview of its first request."""
        for job in run.jobs:
            mine = [preview for preview, owner in zip(previews or [], owners, strict=False) if owner is job]
            self._queue.progress(job, step, total, mine[0] if mine else None)


def _request(part: Slice, sources: dict[int, bytes | None]) -> EngineRequest:
    """The engine request for a slice (in the engine thread: decoding a source image is CPU work)."""
    params = part.job.params.images(part.first, part.count)
    ref = f"{part.job.id}.{part.first}+{part.count}"
    if not part.job.record.kind.from_image:
        return EngineRequest(params, ref=ref)
    return EngineRequest(params, _decode_source(sources.get(part.job.id)), ref)


def _decode_source(png: bytes | None) -> Image.Image:
    if png is None:
        raise GenerationFailed("the source image of this job is no longer stored")
    try:
        with Image.open(io.BytesIO(png)) as image:
            return image.convert("RGB")
    except (OSError, ValueError, SyntaxError):  # SyntaxError: PIL's word for a broken PNG chunk
        raise GenerationFailed("the source image of this job could not be read") from None
