"""The job queue's rules on a real SQLite file and real quota service: fair order, limits, positions, cancel,
observers. No engine runs here: the tests take jobs the way the worker does (``take_batch``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from sdbot.config import Settings
from sdbot.db import Database, JobRecord
from sdbot.errors import JobNotFound, NotPermitted, QueueFull
from sdbot.inference.types import GeneratedImage, Timings
from sdbot.library import ModelLibrary
from sdbot.params import JobKind, JobParams
from sdbot.services import endings, open_services
from sdbot.services.active_job import ActiveJob
from sdbot.services.admission import JobRequest
from sdbot.services.dispatch import Dispatcher
from sdbot.services.edits import EditService
from sdbot.services.events import (
    JobCancelled,
    JobDone,
    JobEvent,
    JobFailed,
    JobPositionChanged,
    JobQueued,
    JobWatch,
)
from sdbot.services.imagine import ImagineService
from sdbot.services.jobs import JobQueue
from sdbot.services.member_jobs import MemberJobs
from sdbot.services.offers import ChoiceOffers
from sdbot.services.quotas import QuotaService
from sdbot.services.requests import RequestRules
from sdbot.services.settings import SettingsService
from sdbot.services.worker import batch_key

GUILD, CHANNEL = 100, 10
ALICE, BOB, CAROL = 1, 2, 3
NO_LIMIT = 1000


@dataclass
class Stack:
    """A queue over a real database, as the bot builds it."""

    db: Database
    settings: Settings
    settings_service: SettingsService
    quotas: QuotaService
    queue: JobQueue
    rules: RequestRules
    offers: ChoiceOffers
    imagine: ImagineService
    edits: EditService
    member_jobs: MemberJobs
    dispatcher: Dispatcher

    async def submit(
        self,
        user: int,
        prompt: str = "a cat",
        *,
        kind: JobKind = JobKind.TXT2IMG,
        count: int = 1,
        source_png: bytes | None = None,
        user_queue_limit: int | None = NO_LIMIT,
        observer: Any = None,
        **params: Any,
    ) -> JobRecord:
        """Reserve quota and submit, as the /imagine command does."""
        reservation = await self.quotas.reserve(GUILD, user, count, is_manager=False)
        request = JobRequest(
            guild_id=GUILD,
            channel_id=CHANNEL,
            user_id=user,
            kind=kind,
            params=job_params(prompt, count=count, **params),
            reservation_id=reservation,
            source_png=source_png,
        )
        return await self.queue.submit(request, user_queue_limit=user_queue_limit, observer=observer)

    async def reserved_and_used(self, user: int) -> tuple[int, int]:
        status = await self.quotas.status(GUILD, user, is_manager=False)
        return status.reserved, status.used

    def take(self, max_images: int = 1) -> list[int]:
        return [job.id for job in self.queue.take_batch(max_images, batch_key)]


def job_params(prompt: str, **overrides: Any) -> JobParams:
    return replace(JobParams(prompt, steps=2, width=64, height=64, seed=1234), **overrides)


async def open_stack(path: Path, settings: Settings, library: ModelLibrary | None = None) -> Stack:
    """The services as the bot builds them, over the database at ``path``."""
    built = await open_services(replace(settings, db_path=path), library)
    return Stack(
        built.db,
        settings,
        built.settings_service,
        built.quotas,
        built.queue,
        built.rules,
        built.offers,
        built.imagine,
        built.edits,
        built.member_jobs,
        built.dispatcher,
    )


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    built = await open_stack(tmp_path / "sdbot.sqlite3", Settings(daily_quota=100, max_queue=20))
    yield built
    await built.db.close()


async def test_round_robin_across_users_each_first_in_first_out(stack: Stack) -> None:
    a1, a2, a3 = [await stack.submit(ALICE, f"a{i}") for i in (1, 2, 3)]
    b1, b2 = [await stack.submit(BOB, f"b{i}") for i in (1, 2)]
    c1 = await stack.submit(CAROL, "c1")

    expected = [a1.id, b1.id, c1.id, a2.id, b2.id, a3.id]
    assert [job.id for job in stack.queue.queued()] == expected
    assert [stack.queue.position(job_id) for job_id in expected] == list(range(6))
    assert [stack.take()[0] for _ in expected] == expected
    assert stack.take() == []


async def test_user_with_ten_jobs_delays_another_users_first_job_by_at_most_one(stack: Stack) -> None:
    alice = [await stack.submit(ALICE, f"a{i}") for i in range(10)]
    bob = await stack.submit(BOB, "b")
    assert stack.queue.position(bob.id) == 1  # behind Alice's first job only

    assert stack.take() == [alice[0].id]  # Alice's first job runs; Bob goes next
    assert stack.queue.position(bob.id) == 0
    carol = await stack.submit(CAROL, "c")  # a newcomer while Alice is being served
    assert stack.queue.position(carol.id) == 1  # behind Bob (served never, waiting longer), ahead of Alice
    assert stack.take() == [bob.id]
    assert stack.take() == [carol.id]
    assert stack.take() == [alice[1].id]


async def test_positions_predict_the_order_jobs_are_taken_in(stack: Stack) -> None:
    for user in (ALICE, ALICE, BOB, ALICE, CAROL, BOB):
        await stack.submit(user)
    predicted = [job.id for job in stack.queue.queued()]
    assert [stack.take()[0] for _ in predicted] == predicted


async def test_user_limit_raises_queue_full_and_refunds_the_reservation(stack: Stack) -> None:
    await stack.settings_service.set(GUILD, "user_queue_limit", 2)
    await stack.submit(ALICE, user_queue_limit=None)
    await stack.submit(ALICE, user_queue_limit=None)
    with pytest.raises(QueueFull) as raised:
        await stack.submit(ALICE, user_queue_limit=None)
    assert (raised.value.scope, raised.value.limit, raised.value.ahead) == ("user", 2, 2)
    assert "you already have 2 job(s) waiting" in str(raised.value)
    assert await stack.reserved_and_used(ALICE) == (2, 0)  # the rejected job's image is not held
    assert len(await stack.db.jobs.unfinished()) == 2  # and no row was written for it
    assert (await stack.submit(BOB, user_queue_limit=None)).user_id == BOB  # others are not limited by Alice


async def test_a_running_job_does_not_count_against_the_user_limit(stack: Stack) -> None:
    await stack.submit(ALICE, user_queue_limit=1)
    stack.take()
    await stack.submit(ALICE, user_queue_limit=1)
    with pytest.raises(QueueFull):
        await stack.submit(ALICE, user_queue_limit=1)


async def test_global_limit_raises_queue_full_with_how_many_are_ahead(stack: Stack) -> None:
    for index in range(stack.settings.max_queue):
        await stack.submit(1000 + index)
    with pytest.raises(QueueFull) as raised:
        await stack.submit(ALICE)
    assert (raised.value.scope, raised.value.limit, raised.value.ahead) == ("global", 20, 20)
    assert await stack.reserved_and_used(ALICE) == (0, 0)
    stack.take()
    assert (await stack.submit(ALICE)).user_id == ALICE  # room again once a job left the queue


async def test_observers_hear_queued_then_every_position_change(stack: Stack) -> None:
    await stack.submit(ALICE)
    await stack.submit(ALICE)
    watch = JobWatch()
    bob = await stack.submit(BOB, observer=watch)
    carol_events: list[JobEvent] = []
    carol = await stack.submit(CAROL, observer=carol_events.append)

    stack.take()  # Alice's first
    stack.take()  # Bob's
    assert [type(event) for event in carol_events] == [JobQueued, JobPositionChanged, JobPositionChanged]
    assert [event.position for event in carol_events] == [2, 1, 0]  # type: ignore[attr-defined]
    assert stack.queue.position(carol.id) == 0
    assert stack.queue.position(bob.id) is None  # running
    assert bob.id in [job.id for job in stack.queue.running()]

    first, second = [await asyncio.wait_for(anext(watch), 1) for _ in range(2)]
    assert (type(first), first.position) == (JobQueued, 1)  # type: ignore[attr-defined]
    assert (type(second), second.position) == (JobPositionChanged, 0)  # type: ignore[attr-defined]


async def test_seed_is_drawn_at_submit_so_a_resumed_job_makes_the_same_images(stack: Stack) -> None:
    job = await stack.submit(ALICE, seed=None)
    stored = await stack.db.jobs.get(job.id)
    assert stored is not None and isinstance(stored.params.seed, int)
    assert stored.params.seed == job.params.seed


async def test_cancel_a_queued_job_removes_refunds_and_records_it(stack: Stack) -> None:
    events: list[JobEvent] = []
    alice = await stack.submit(ALICE, count=2, observer=events.append)
    bob_events: list[JobEvent] = []
    bob = await stack.submit(BOB, observer=bob_events.append)
    assert await stack.reserved_and_used(ALICE) == (2, 0)

    cancelled = await stack.queue.cancel(alice.id, by_user=ALICE)

    assert cancelled.state == "cancelled" and cancelled.finished_at is not None
    assert isinstance(events[-1], JobCancelled) and events[-1].by_user == ALICE
    stored = await stack.db.jobs.get(alice.id)
    assert stored is not None and stored.state == "cancelled" and stored.finished_at is not None
    assert await stack.reserved_and_used(ALICE) == (0, 0)
    assert stack.queue.position(bob.id) == 0
    assert isinstance(bob_events[-1], JobPositionChanged) and bob_events[-1].position == 0
    assert stack.take() == [bob.id]
    with pytest.raises(JobNotFound):
        await stack.queue.cancel(alice.id)


async def test_only_the_owner_or_a_manager_cancels_a_job(stack: Stack) -> None:
    job = await stack.submit(ALICE)
    with pytest.raises(NotPermitted):
        await stack.queue.cancel(job.id, by_user=BOB)
    assert stack.queue.position(job.id) == 0
    assert (await stack.queue.cancel(job.id)).state == "cancelled"  # by_user=None: a manager


async def test_a_failing_observer_does_not_stop_the_others_or_the_queue(stack: Stack) -> None:
    def broken(event: JobEvent) -> None:
        raise RuntimeError("observer bug")

    async def broken_async(event: JobEvent) -> None:
        raise RuntimeError("async observer bug")

    job = await stack.submit(ALICE, observer=broken)
    stack.queue.observers.subscribe(job.id, broken_async)
    events: list[JobEvent] = []
    stack.queue.observers.subscribe(job.id, events.append)
    await stack.submit(ALICE)
    assert (await stack.queue.cancel(job.id)).state == "cancelled"
    assert isinstance(events[-1], JobCancelled)


async def test_events_of_a_job_nobody_watches_go_to_the_listeners(stack: Stack) -> None:
    heard: list[JobEvent] = []
    stack.queue.observers.add_listener(heard.append)
    watched_events: list[JobEvent] = []
    watched = await stack.submit(ALICE, observer=watched_events.append)
    unwatched = await stack.submit(BOB)
    stack.queue.observers.unsubscribe(watched.id, watched_events.append)
    await stack.queue.cancel(watched.id)

    assert {event.job.id for event in heard} == {unwatched.id, watched.id}
    assert isinstance(heard[-1], JobCancelled) and heard[-1].job.id == watched.id
    assert [type(event) for event in watched_events] == [JobQueued]


async def test_a_cancel_while_shutdown_requeues_the_job_wins_and_leaves_no_ghost(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = await stack.submit(ALICE)
    waiting = await stack.submit(BOB)
    (active,) = stack.queue.take_batch(1, batch_key)
    assert stack.queue.start(active)
    await stack.queue.ledger.flush()
    writing, release = asyncio.Event(), asyncio.Event()
    requeue = stack.db.jobs.requeue

    async def slow_requeue(job_id: int) -> bool:
        writing.set()
        await release.wait()
        return await requeue(job_id)

    monkeypatch.setattr(stack.db.jobs, "requeue", slow_requeue)
    requeueing = asyncio.create_task(stack.queue.requeue(active))
    await writing.wait()  # the requeue is writing to the database
    cancelling = asyncio.create_task(stack.queue.cancel(job.id))
    release.set()
    assert (await cancelling).state == "cancelled"
    await requeueing

    assert [queued.id for queued in stack.queue.queued()] == [waiting.id]
    assert stack.queue.running() == []
    stored = await stack.db.jobs.get(job.id)
    assert stored is not None and stored.state == "cancelled"
    assert await stack.reserved_and_used(ALICE) == (0, 0)


async def read_only(db: Database, on: bool = True) -> None:
    """Make every write to ``db`` fail as on a read-only file (SQLite's ``query_only``), or work again."""
    async with db._gateway.reading() as conn:
        await conn.execute(f"PRAGMA query_only = {int(on)}")


def finished_images(job: ActiveJob) -> None:
    """Give ``job`` all its images, as the worker does when the engine returns them."""
    images = [
        GeneratedImage(Image.new("RGB", (8, 8)), seed, False, f"png of {seed}".encode())
        for seed in range(job.image_count)
    ]
    assert job.add_images(0, images, Timings())


async def started(stack: Stack, user: int, **options: Any) -> tuple[JobRecord, ActiveJob, list[JobEvent]]:
    """A submitted job, taken and started as the worker does; its events are heard in the list."""
    events: list[JobEvent] = []
    job = await stack.submit(user, observer=events.append, **options)
    [active] = stack.queue.take_batch(job.image_count, batch_key)
    assert stack.queue.start(active)
    await stack.queue.ledger.flush()
    return job, active, events


async def test_a_job_end_that_cannot_be_written_is_retried_and_heard_only_once_written(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    job, active, events = await started(stack, ALICE, count=2)
    finished_images(active)
    await read_only(stack.db)
    completing = asyncio.create_task(stack.queue.complete(active))
    # The images are kept first; then the ledger's write fails, and nobody hears of the job yet.
    await until(lambda: f"job {job.id}: could not record it done" in caplog.text)
    assert (stack.db.results.root / str(job.id)).is_dir()
    assert not completing.done() and not isinstance(events[-1], JobDone)
    stored = await stack.db.jobs.get(job.id)
    assert stored is not None and stored.state == "running"

    await read_only(stack.db, False)
    await asyncio.wait_for(completing, 10)
    assert [type(event) for event in events].count(JobDone) == 1
    stored = await stack.db.jobs.get(job.id)
    assert stored is not None and stored.state == "done"
    assert await stack.reserved_and_used(ALICE) == (0, 2)


async def test_images_that_cannot_be_kept_hold_the_jobs_end_until_they_can(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    job, active, events = await started(stack, ALICE)
    finished_images(active)
    stack.db.results.root.write_text("in the way")  # no folder can be made there, as on a full disk
    completing = asyncio.create_task(stack.queue.complete(active))
    await until(lambda: f"job {job.id}: could not keep its images" in caplog.text)
    stored = await stack.db.jobs.get(job.id)
    assert stored is not None and stored.state == "running" and not isinstance(events[-1], JobDone)

    stack.db.results.root.unlink()
    await asyncio.wait_for(completing, 10)
    assert isinstance(events[-1], JobDone) and await stack.db.results.load(job.id) is not None
    assert await stack.reserved_and_used(ALICE) == (0, 1)


async def test_new_work_pauses_while_job_ends_cannot_be_written(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(endings, "PATIENCE", 0.2)
    _, active, events = await started(stack, ALICE)
    waiting = await stack.submit(BOB)
    await read_only(stack.db)
    failing = asyncio.create_task(stack.queue.fail(active, "engine exploded"))
    await until(lambda: stack.queue.paused is not None)
    assert "cannot save its work" in stack.queue.paused and "readonly database" in stack.queue.paused
    assert stack.take() == []  # the waiting job stays queued

    await read_only(stack.db, False)
    await asyncio.wait_for(failing, 10)
    assert stack.queue.paused is None and isinstance(events[-1], JobFailed)
    assert await stack.reserved_and_used(ALICE) == (0, 0)  # refunded, exactly once
    assert stack.take() == [waiting.id]


async def test_a_job_whose_images_were_kept_is_recorded_done_on_restore_not_run_again(
    tmp_path: Path,
) -> None:
    settings = Settings(daily_quota=100)
    first = await open_stack(tmp_path / "sdbot.sqlite3", settings)
    job, active, _ = await started(first, ALICE, count=2)
    finished_images(active)
    await read_only(first.db)
    completing = asyncio.create_task(first.queue.complete(active))
    await until(lambda: (first.db.results.root / str(job.id)).is_dir())
    completing.cancel()  # the bot stops (or is killed) before the ledger could be written
    await first.db.close()

    second = await open_stack(tmp_path / "sdbot.sqlite3", settings)
    try:
        assert await second.queue.restore() == 0 and second.queue.queued() == []
        stored = await second.db.jobs.get(job.id)
        assert stored is not None and (stored.state, stored.seeds) == ("done", [0, 1])
        assert [waiting.id for waiting in await second.db.jobs.undelivered()] == [job.id]
        assert await second.reserved_and_used(ALICE) == (0, 2)
        kept = await second.db.results.load(job.id)
        assert kept is not None and [image.png for image in kept.images] == [b"png of 0", b"png of 1"]
    finally:
        await second.db.close()


async def until(predicate: Callable[[], bool]) -> None:
    """Wait until ``predicate()`` holds (checked every few milliseconds), for at most 10 s."""
    deadline = time.monotonic() + 10
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.005)


async def test_a_submit_cancelled_while_writing_still_queues_the_job(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    writing, release = asyncio.Event(), asyncio.Event()
    create = stack.db.jobs.create

    async def slow_create(**kwargs: Any) -> JobRecord:
        writing.set()
        await release.wait()
        return await create(**kwargs)

    monkeypatch.setattr(stack.db.jobs, "create", slow_create)
    submitting = asyncio.create_task(stack.submit(ALICE, "late"))
    await writing.wait()
    submitting.cancel()  # e.g. the bot shutting down while the job row is being written
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await submitting
    await until(lambda: len(stack.queue.queued()) == 1)  # the shielded submit finishes on its own
    # The row that was written is queued here and still paid for: no job in the database that nobody runs.
    [queued] = stack.queue.queued()
    assert [job.id for job in await stack.db.jobs.unfinished()] == [queued.id]
    assert await stack.reserved_and_used(ALICE) == (1, 0)


async def test_a_job_of_the_loaded_model_goes_first_but_no_job_is_passed_over_more_than_twice(
    stack: Stack,
) -> None:
    """Alice wants model B while A is loaded; Bob and Carol keep asking for A. Their jobs may run before
    Alice's to spare model switches, but only twice: then Alice's runs though B must be loaded."""
    alice = await stack.submit(ALICE, model="B")
    bob = [await stack.submit(BOB, f"b{i}", model="A") for i in range(3)]
    carol = [await stack.submit(CAROL, f"c{i}", model="A") for i in range(3)]
    on_gpu = {"A"}

    def take() -> list[int]:
        batch = stack.queue.take_batch(1, batch_key, prefer=lambda job: job.params.model in on_gpu)
        on_gpu.clear()
        on_gpu.add(batch[0].params.model)
        return [job.id for job in batch]

    assert stack.queue.position(alice.id) == 0  # first in fair order
    assert [take(), take(), take()] == [[bob[0].id], [carol[0].id], [alice.id]]
    assert take() == [bob[1].id]  # fair order again, and B being loaded spares nothing for A's jobs


async def test_batches_never_mix_models(stack: Stack) -> None:
    first = await stack.submit(ALICE, "a", model="A")
    await stack.submit(BOB, "b", model="B")
    assert stack.take(max_images=4) == [first.id]
