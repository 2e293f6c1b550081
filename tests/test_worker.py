"""The single GPU worker over a real database: batching, cancel, faults, timeouts, restart and shutdown.

Rules about scheduling and faults use ``StepEngine``, a fake that steps like a real engine (progress each
step, ``should_cancel`` polled before each step) so that timing and injected faults are exact. Image
equivalence (batched against alone, a poisoned batch) uses the tiny diffusers pipeline.
"""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from sdbot.config import Settings
from sdbot.errors import GenerationFailed
from sdbot.inference.types import Engine, EngineRequest, GenerationResult, Operation
from sdbot.params import JobKind, JobParams
from sdbot.services.events import (
    JobCancelled,
    JobDone,
    JobEvent,
    JobFailed,
    JobProgress,
    JobQueued,
    JobStarted,
    JobWatch,
)
from sdbot.services.worker import Worker
from tests.engines import CountingEngine, FaultyEngine, StepEngine, poison
from tests.test_queue import ALICE, BOB, CAROL, Stack, open_stack, until


class Running:
    """A stack with a started worker."""

    def __init__(self, stack: Stack, worker: Worker, engine: Engine) -> None:
        self.stack, self.worker, self.engine = stack, worker, engine

    async def finish(self) -> None:
        async with asyncio.timeout(30):
            await self.stack.queue.join()


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """``await start(engine, **settings)``: a database, queue and started worker; stopped at the end."""
    opened: list[Running] = []

    async def build(
        engine: Engine, *, paused: bool = False, progress_interval: float = 0.0, **overrides: Any
    ) -> Running:
        settings = replace(Settings(daily_quota=100, max_queue=50, shutdown_grace=5.0), **overrides)
        stack = await open_stack(tmp_path / "sdbot.sqlite3", settings)
        worker = Worker(stack.queue, engine, settings, progress_interval=progress_interval)
        running = Running(stack, worker, engine)
        opened.append(running)
        if not paused:
            await running.worker.start()
        return running

    yield build
    for running in opened:
        await running.worker.stop()
        await running.stack.db.close()


async def test_a_job_runs_in_the_engine_thread_and_reports_each_step(start) -> None:
    engine = StepEngine()
    run = await start(engine)
    events: list[JobEvent] = []
    job = await run.stack.submit(ALICE, steps=3, count=2, observer=events.append)
    await run.finish()

    assert [type(event) for event in events] == [JobQueued, JobStarted, *[JobProgress] * 3, JobDone]
    assert [(e.step, e.total) for e in events if isinstance(e, JobProgress)] == [(1, 3), (2, 3), (3, 3)]
    done = events[-1]
    assert isinstance(done, JobDone) and done.result.seeds == [1234, 1235]
    assert len(engine.threads) == 1 and threading.main_thread() not in engine.threads
    stored = await run.stack.db.jobs.get(job.id)
    assert stored is not None
    assert (stored.state, stored.seeds, stored.nsfw) == ("done", [1234, 1235], [False, False])
    assert await run.stack.reserved_and_used(ALICE) == (0, 2)  # committed


async def test_progress_is_throttled_but_the_last_step_always_comes(start) -> None:
    run = await start(StepEngine(step_seconds=0.01), progress_interval=0.05)
    events: list[JobEvent] = []
    await run.stack.submit(ALICE, steps=20, observer=events.append)
    await run.finish()
    steps = [event.step for event in events if isinstance(event, JobProgress)]
    assert steps[0] == 1 and steps[-1] == 20
    assert 2 <= len(steps) <= 10  # 20 steps of 10 ms, one report per 50 ms at most


async def test_only_previews_that_are_forwarded_are_rendered(start) -> None:
    engine = StepEngine(step_seconds=0.001)
    run = await start(engine, progress_interval=60.0)  # reports: the first step and the last only
    events: list[JobEvent] = []
    await run.stack.submit(ALICE, steps=20, observer=events.append)
    await run.finish()
    progress = [event for event in events if isinstance(event, JobProgress)]
    assert [(event.step, event.preview is not None) for event in progress] == [(1, True), (20, False)]
    assert engine.previews_rendered == 1  # not one per step: the 18 throttled steps rendered nothing


async def test_jobs_with_the_same_batch_key_next_in_fair_order_share_a_call(start) -> None:
    engine = StepEngine()
    run = await start(engine, paused=True, max_batch=4)
    await run.stack.submit(ALICE, "a1", count=2)
    await run.stack.submit(BOB, "b1", kind=JobKind.REROLL)  # a reroll is a txt2img call too
    await run.stack.submit(CAROL, "c1", width=128)  # another size: not in the same call
    await run.stack.submit(ALICE, "a2", count=2)
    await run.stack.submit(BOB, "b2")
    await run.worker.start()
    await run.finish()

    # Fair order is a1, b1, c1, a2, b2: a batch is a run of equal keys in that order, within 4 images.
    assert engine.calls == [["a1", "a1", "b1"], ["c1"], ["a2", "a2", "b2"]]


async def test_a_job_larger_than_max_batch_runs_in_parts_with_consecutive_seeds(start) -> None:
    run = await start(StepEngine(), max_batch=2)
    events: list[JobEvent] = []
    await run.stack.submit(ALICE, count=4, seed=50, observer=events.append)
    await run.finish()
    assert run.engine.calls == [["a cat"] * 2] * 2
    assert isinstance(events[-1], JobDone) and events[-1].result.seeds == [50, 51, 52, 53]


async def test_cancel_a_running_job_stops_it_within_one_step_and_refunds_it(start) -> None:
    engine = StepEngine(step_seconds=0.02)
    run = await start(engine)
    watch = JobWatch()
    job = await run.stack.submit(ALICE, steps=200, count=2, observer=watch)
    async for event in watch:
        if isinstance(event, JobProgress):
            break
    cancelled_at = time.monotonic()
    await run.stack.queue.cancel(job.id, by_user=ALICE)
    await run.finish()

    events = [event async for event in watch]
    assert isinstance(events[-1], JobCancelled)
    assert len([started for started in engine.step_started if started > cancelled_at]) <= 1
    assert len(engine.step_started) < 200
    stored = await run.stack.db.jobs.get(job.id)
    assert stored is not None and stored.state == "cancelled"
    assert await run.stack.reserved_and_used(ALICE) == (0, 0)


async def test_cancelling_one_job_of_a_batch_lets_the_others_finish(start) -> None:
    engine = StepEngine(step_seconds=0.01)
    run = await start(engine, paused=True)
    alice = await run.stack.submit(ALICE, steps=20)
    bob_events: list[JobEvent] = []
    await run.stack.submit(BOB, steps=20, observer=bob_events.append)
    await run.worker.start()
    await until(lambda: len(engine.step_started) >= 2)
    await run.stack.queue.cancel(alice.id)
    await run.finish()
    assert isinstance(bob_events[-1], JobDone)
    assert await run.stack.reserved_and_used(ALICE) == (0, 0)
    assert await run.stack.reserved_and_used(BOB) == (0, 1)


async def test_an_engine_error_fails_only_its_own_job_after_a_retry_alone(start) -> None:
    engine = StepEngine(fault=poison("poison"))
    run = await start(engine, paused=True)
    fine = await run.stack.submit(ALICE, "fine")
    bad = await run.stack.submit(BOB, "poison")
    also_fine = await run.stack.submit(CAROL, "also fine")
    await run.worker.start()
    await run.finish()

    assert engine.calls == [["fine", "poison", "also fine"], ["fine"], ["poison"], ["also fine"]]
    states = {job.id: (await run.stack.db.jobs.get(job.id)).state for job in (fine, bad, also_fine)}
    assert states == {fine.id: "done", bad.id: "failed", also_fine.id: "done"}
    stored_bad = await run.stack.db.jobs.get(bad.id)
    assert stored_bad is not None and stored_bad.error == "poisoned"
    assert await run.stack.reserved_and_used(BOB) == (0, 0)
    assert await run.stack.reserved_and_used(ALICE) == (0, 1)


async def test_out_of_memory_on_a_batch_retries_at_half_the_size(start) -> None:
    def small_batches_only(requests: Sequence[EngineRequest]) -> Exception | None:
        images = sum(request.params.count for request in requests)
        return GenerationFailed("out of GPU memory: try fewer images") if images > 2 else None

    engine = StepEngine(fault=small_batches_only)
    run = await start(engine, paused=True)
    for user in (ALICE, BOB, CAROL):
        await run.stack.submit(user, f"p{user}")
    await run.stack.submit(4, "p4")
    await run.worker.start()
    await run.finish()
    assert [len(call) for call in engine.calls] == [4, 2, 2]
    assert all(job.state == "done" for job in [await run.stack.db.jobs.get(i) for i in (1, 2, 3, 4)])


async def test_out_of_memory_on_a_single_image_fails_with_the_engines_advice(start) -> None:
    engine = StepEngine(fault=lambda requests: GenerationFailed("out of GPU memory: try a smaller size"))
    run = await start(engine)
    events: list[JobEvent] = []
    await run.stack.submit(ALICE, observer=events.append)
    await run.finish()
    assert isinstance(events[-1], JobFailed) and events[-1].error == "out of GPU memory: try a smaller size"


async def test_a_stuck_run_times_out_fails_and_is_refunded(start) -> None:
    run = await start(StepEngine(step_seconds=0.02), job_timeout=0.2)
    events: list[JobEvent] = []
    await run.stack.submit(ALICE, steps=1000, observer=events.append)
    await run.finish()
    assert isinstance(events[-1], JobFailed) and events[-1].error == "timed out after 0.2 s"
    assert await run.stack.reserved_and_used(ALICE) == (0, 0)


async def test_the_worker_keeps_going_after_unexpected_errors_and_broken_observers(start) -> None:
    def crash(requests: Sequence[EngineRequest]) -> Exception | None:
        return RuntimeError("driver bug") if requests[0].params.prompt == "crash" else None

    engine = StepEngine(fault=crash)
    run = await start(engine)

    def broken_observer(event: JobEvent) -> None:
        raise RuntimeError("observer bug")

    crashed: list[JobEvent] = []
    await run.stack.submit(ALICE, "crash", observer=crashed.append)
    await run.stack.submit(BOB, "fine", observer=broken_observer)
    await run.finish()
    assert isinstance(crashed[-1], JobFailed) and "internal error" in crashed[-1].error
    assert "driver bug" not in crashed[-1].error
    after: list[JobEvent] = []
    await run.stack.submit(CAROL, "later", observer=after.append)
    await run.finish()
    assert isinstance(after[-1], JobDone)
    assert (await run.stack.db.jobs.get(2)).state == "done"


async def test_variation_and_upscale_get_their_stored_source_decoded(start) -> None:
    engine = StepEngine()
    run = await start(engine)
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), "blue").save(buffer, format="PNG")
    events: list[JobEvent] = []
    source = buffer.getvalue()
    await run.stack.submit(
        ALICE, kind=JobKind.VARIATION, count=2, strength=0.6, source_png=source, observer=events.append
    )
    await run.stack.submit(BOB, kind=JobKind.UPSCALE, strength=0.3, source_png=source)
    await run.finish()
    assert engine.operations == [Operation.VARIATION, Operation.UPSCALE]
    assert engine.sources == [(64, 48)] * 2  # one request per job, its images from the one source
    assert isinstance(events[-1], JobDone) and events[-1].result.seeds == [1234, 1235]


async def test_restart_resumes_unfinished_jobs_in_order_and_runs_each_once(tmp_path: Path, start) -> None:
    first = await start(StepEngine(), paused=True)
    ids = [(await first.stack.submit(user, f"job{i}")).id for i, user in enumerate((ALICE, ALICE, BOB))]
    assert await first.stack.db.jobs.mark_running(ids[0], time.time())  # it was running when the bot died
    await first.stack.db.close()

    engine = StepEngine()
    second = await start(engine, max_batch=1)
    heard: list[JobEvent] = []
    # Nobody watches a resumed job: the listener posts it.
    second.stack.queue.observers.add_listener(heard.append)
    await second.finish()

    assert engine.calls == [["job0"], ["job2"], ["job1"]]  # Alice's first, Bob's, Alice's second
    assert {event.job.id for event in heard if isinstance(event, JobDone)} == set(ids)
    assert [(await second.stack.db.jobs.get(i)).state for i in ids] == ["done"] * 3
    assert await second.stack.reserved_and_used(ALICE) == (0, 2)
    assert await second.stack.db.jobs.unfinished() == []


async def test_shutdown_interrupts_the_running_job_and_leaves_it_queued(tmp_path: Path, start) -> None:
    engine = StepEngine(step_seconds=0.02)
    first = await start(engine, shutdown_grace=0.1)
    job = await first.stack.submit(ALICE, steps=1000)
    await until(lambda: len(engine.step_started) > 0)
    began = time.monotonic()
    await first.worker.stop()
    assert time.monotonic() - began < 2
    assert len(engine.step_started) < 1000
    stored = await first.stack.db.jobs.get(job.id)
    assert stored is not None and (stored.state, stored.started_at) == ("queued", None)
    assert await first.stack.reserved_and_used(ALICE) == (1, 0)  # still reserved, not refunded
    await first.stack.db.close()

    again = StepEngine()
    second = await start(again, shutdown_grace=0.1)
    await second.finish()
    assert again.calls == [["a cat"]]
    assert (await second.stack.db.jobs.get(job.id)).state == "done"
    assert await second.stack.reserved_and_used(ALICE) == (0, 1)


async def test_shutdown_lets_a_batch_that_finishes_within_the_grace_complete(start) -> None:
    engine = StepEngine(step_seconds=0.01)
    run = await start(engine, shutdown_grace=10)
    job = await run.stack.submit(ALICE, steps=10)
    await until(lambda: len(engine.step_started) > 0)
    await run.worker.stop()
    assert (await run.stack.db.jobs.get(job.id)).state == "done"


def _pixels(result: GenerationResult) -> list[np.ndarray]:
    return [np.asarray(image.image, dtype=np.float32) for image in result.images]


async def test_batched_jobs_make_the_same_images_as_jobs_run_alone(tmp_path: Path, tiny_engine) -> None:
    prompts = [(ALICE, "a red cat", 2), (BOB, "a blue dog", 1), (CAROL, "a photo of the cat", 1)]

    async def run_all(max_batch: int, folder: str) -> tuple[dict[str, GenerationResult], list[int]]:
        settings = Settings(daily_quota=100, max_batch=max_batch, shutdown_grace=5.0)
        stack = await open_stack(tmp_path / folder / "sdbot.sqlite3", settings)
        counting = CountingEngine(tiny_engine)
        worker = Worker(stack.queue, counting, settings)
        results: dict[str, GenerationResult] = {}
        for user, prompt, count in prompts:

            def keep(event: JobEvent, prompt: str = prompt) -> None:
                if isinstance(event, JobDone):
                    results[prompt] = event.result

            await stack.submit(user, prompt, count=count, steps=2, seed=user * 100, observer=keep)
        await worker.start()
        await asyncio.wait_for(stack.queue.join(), 120)
        await worker.stop()
        await stack.db.close()
        return results, counting.sizes

    batched, batched_sizes = await run_all(4, "batched")
    alone, alone_sizes = await run_all(1, "alone")
    assert batched_sizes == [4] and alone_sizes == [1, 1, 1, 1]
    for user, prompt, count in prompts:
        assert batched[prompt].seeds == alone[prompt].seeds == list(range(user * 100, user * 100 + count))
        for together, single in zip(_pixels(batched[prompt]), _pixels(alone[prompt]), strict=True):
            assert np.abs(together - single).max() <= 2.0, prompt  # 8-bit pixels, float rounding only


async def test_a_poisoned_job_in_a_batch_fails_alone_and_the_others_match_single_runs(
    tmp_path: Path, tiny_engine
) -> None:
    settings = Settings(daily_quota=100, max_batch=4, shutdown_grace=5.0)
    stack = await open_stack(tmp_path / "sdbot.sqlite3", settings)
    engine = FaultyEngine(tiny_engine, poison("poison", "the model could not handle this prompt"))
    worker = Worker(stack.queue, engine, settings)
    outcomes: dict[str, JobEvent] = {}
    for user, prompt in ((ALICE, "a red cat"), (BOB, "poison"), (CAROL, "a blue dog")):

        def keep(event: JobEvent, prompt: str = prompt) -> None:
            outcomes[prompt] = event

        await stack.submit(user, prompt, steps=2, seed=7, observer=keep)
    await worker.start()
    await asyncio.wait_for(stack.queue.join(), 120)
    await worker.stop()
    await stack.db.close()

    assert isinstance(outcomes["poison"], JobFailed)
    for prompt in ("a red cat", "a blue dog"):
        done = outcomes[prompt]
        assert isinstance(done, JobDone)
        params = JobParams(prompt, steps=2, width=64, height=64, seed=7)
        (single,) = tiny_engine.run(Operation.GENERATE, [EngineRequest(params)])
        for got, expected in zip(_pixels(done.result), _pixels(single), strict=True):
            assert np.abs(got - expected).max() <= 2.0
