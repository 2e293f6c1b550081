"""GPU workers through Redis: a real redis-server and real ``python -m sdbot worker`` processes with the tiny
model, fed by the bot's queue and dispatcher over a real database.

Two workers (``a`` and ``b``) start once for the module (a worker takes seconds to load torch and the
model); a test that kills or stops one has it back for the next. ``QUICK`` jobs take a few hundredths of a
second, ``LONG`` ones (150 steps at 64x64) a second or two, long enough to be interrupted; ``LONGER`` ones
(256x256) many seconds on any CPU, for a test that needs a job still running when something else happens:
such a job is cancelled or timed out, never waited for.
"""

from __future__ import annotations

import asyncio
import codecs
import io
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from sdbot.cogs.admin import workers_text
from sdbot.config import Settings
from sdbot.errors import ModelUnavailable
from sdbot.params import JobKind
from sdbot.remote.hub import WorkerHub
from sdbot.services.dispatch import Dispatcher, EngineView
from sdbot.services.events import JobCancelled, JobDone, JobEvent, JobFailed, JobProgress, JobStarted
from sdbot.services.requests import ImagineOptions, Requester
from sdbot.views.render import NO_GPU
from tests.redis_server import REPO, RedisServer, WorkerProcess, redis_server_binary
from tests.test_bot_admin import admin
from tests.test_queue import ALICE, BOB, CAROL, CHANNEL, GUILD, Stack, open_stack

pytest_plugins = ["tests.fakediscord.fixtures"]

QUICK = {"steps": 2, "width": 64, "height": 64}
LONG = {"steps": 150, "width": 64, "height": 64}
# Far longer than a second on any CPU (150 steps at 16 times LONG's pixels): a job past a 1 s timeout.
LONGER = {"steps": 150, "width": 256, "height": 256}
DEADLINE = 60.0  # seconds any awaited state may take on a busy 2-core machine


async def until(predicate: Callable[[], Any], timeout: float = DEADLINE) -> Any:  # noqa: ASYNC109
    """Wait for ``predicate()`` to be truthy, polling; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.02)
    return value


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(redis_server_binary(), tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def workers(
    redis_server: RedisServer, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, WorkerProcess]]:
    folder = tmp_path_factory.mktemp("workers")
    started = {
        name: WorkerProcess(name, redis_server.url, tiny_model_dir, folder).start() for name in ("a", "b")
    }
    yield started
    for worker in started.values():
        worker.stop()


@dataclass
class Bot:
    """The bot's side without Discord: queue, database, hub and dispatcher, as ``SDBot`` builds them."""

    stack: Stack
    hub: WorkerHub
    dispatcher: Dispatcher
    events: list[JobEvent] = field(default_factory=list)
    where: dict[int, list[str]] = field(default_factory=dict)  # job id -> the workers it started on

    def observe(self, event: JobEvent) -> None:
        self.events.append(event)
        if isinstance(event, JobStarted):
            self.where.setdefault(event.job.id, []).append(self.dispatcher.running_on()[event.job.id])

    async def submit(self, user: int, prompt: str, **params: Any) -> int:
        return (await self.stack.submit(user, prompt, observer=self.observe, **params)).id

    def of(self, kind: type[JobEvent], job: int | None = None) -> list[JobEvent]:
        return [e for e in self.events if isinstance(e, kind) and (job is None or e.job.id == job)]

    async def finish(self) -> None:
        async with asyncio.timeout(DEADLINE):
            await self.stack.queue.join()

    async def state(self, job: int) -> str:
        record = await self.stack.db.jobs.get(job)
        assert record is not None
        return record.state


@pytest.fixture
async def start_bot(
    redis_server: RedisServer, workers: dict[str, WorkerProcess], tiny_model_dir: Path, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[Bot]]]:
    """``await start_bot(model=..., start=True)``: a bot on a fresh database whose dispatcher follows the
    module's workers (started again if an earlier test killed or stopped one)."""
    for worker in workers.values():
        worker.ensure_running()
    bots: list[Bot] = []

    async def start(
        *, model: Path | str = tiny_model_dir, start: bool = True, db: Path | None = None, **overrides: Any
    ) -> Bot:
        settings = Settings(
            model=str(model),
            daily_quota=100,
            max_queue=50,
            max_batch=1,
            shutdown_grace=2.0,
            redis_url=redis_server.url,
            local_engine=False,
            **overrides,
        )
        stack = await open_stack(db or tmp_path / f"bot{len(bots)}.sqlite3", settings)
        assert stack.dispatcher.hub is not None
        bot = Bot(stack, stack.dispatcher.hub, stack.dispatcher)
        stack.queue.observers.add_listener(bot.observe)  # the jobs a restart resumes
        bots.append(bot)
        if start:
            await bot.dispatcher.start()
        return bot

    yield start
    for bot in bots:
        await bot.dispatcher.stop()
        await bot.stack.db.close()


async def workers_up(bot: Bot, *names: str) -> None:
    await until(lambda: set(names) <= set(bot.hub.up()))


async def test_two_workers_share_the_queue_in_its_fair_order(start_bot) -> None:
    bot = await start_bot(start=False)
    jobs = {
        ALICE: [await bot.submit(ALICE, f"alice {i}", steps=20, width=64, height=64) for i in range(3)],
        BOB: [await bot.submit(BOB, f"bob {i}", steps=20, width=64, height=64) for i in range(2)],
        CAROL: [await bot.submit(CAROL, "carol", steps=20, width=64, height=64)],
    }
    await bot.dispatcher.start()
    await bot.finish()

    fair = [jobs[ALICE][0], jobs[BOB][0], jobs[CAROL][0], jobs[ALICE][1], jobs[BOB][1], jobs[ALICE][2]]
    assert [event.job.id for event in bot.of(JobStarted)] == fair  # taken in the fair order, by both
    assert {where for started in bot.where.values() for where in started} == {"a", "b"}
    for user, mine in jobs.items():
        for job in mine:
            assert len(bot.of(JobDone, job)) == 1 and await bot.state(job) == "done"
        assert await bot.stack.reserved_and_used(user) == (0, len(mine))


async def test_a_model_offered_by_one_worker_runs_only_there_and_an_unoffered_one_is_refused(
    start_bot, redis_server: RedisServer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other-model"
    other.symlink_to(tiny_model_dir)
    only = WorkerProcess("c", redis_server.url, other, tmp_path).start()
    try:
        bot = await start_bot(model=other)
        await workers_up(bot, "a", "b", "c")
        jobs = [await bot.submit(user, "a cat", **QUICK) for user in (ALICE, BOB, CAROL)]
        await bot.finish()
        assert [bot.where[job] for job in jobs] == [["c"], ["c"], ["c"]]
        assert [await bot.state(job) for job in jobs] == ["done"] * 3
    finally:
        only.stop()

    nobody = await start_bot(model="no-such-model")
    await workers_up(nobody, "a", "b")
    service = nobody.stack.imagine
    with pytest.raises(ModelUnavailable, match="no-such-model"):
        await service.imagine(Requester(GUILD, CHANNEL, ALICE), ImagineOptions("a cat", size="512x512"))
    assert await nobody.stack.reserved_and_used(ALICE) == (0, 0)  # nothing queued, nothing charged


async def test_cancel_reaches_the_remote_worker_within_a_step(start_bot, caplog) -> None:
    caplog.set_level("DEBUG", logger="sdbot.remote.events")
    bot = await start_bot()
    await workers_up(bot, "a", "b")
    job = await bot.submit(ALICE, "a long one", **LONG)
    await until(lambda: bot.of(JobProgress, job))
    await bot.stack.queue.cancel(job)
    await bot.finish()

    assert [type(event) for event in bot.events][-1] is JobCancelled and not bot.of(JobDone)
    assert await bot.stack.reserved_and_used(ALICE) == (0, 0)  # refunded
    # The worker says where it stopped: a step or two after the cancel, not at the end of its ~150.
    stopped = await until(lambda: re.search(r"cancelled after step (\d+) of (\d+)", caplog.text))
    assert int(stopped.group(1)) < int(stopped.group(2)) // 2
    await until(lambda: not any(view.busy for view in bot.hub.views()))  # both idle again


async def test_a_remote_job_past_the_timeout_fails_refunded_and_its_worker_stops(start_bot) -> None:
    bot = await start_bot(job_timeout=1.0)
    await workers_up(bot, "a", "b")
    job = await bot.submit(ALICE, "too long", **LONGER)
    await bot.finish()
    [failed] = bot.of(JobFailed, job)
    assert failed.error == "timed out after 1 s" and await bot.state(job) == "failed"
    assert await bot.stack.reserved_and_used(ALICE) == (0, 0)
    await until(lambda: not any(view.busy for view in bot.hub.views()))


def test_a_pure_dispatcher_never_imports_torch() -> None:
    """With ``SDBOT_LOCAL_ENGINE=0`` the bot's process needs no torch: nothing it imports loads it."""
    probe = "import sys, bot, sdbot.bot, sdbot.remote.node; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], cwd=REPO).returncode == 0


class Monitor:
    """Every command Redis receives (``MONITOR``), as lists of argument bytes, read in a thread."""

    def __init__(self, path: Path) -> None:
        self._socket = socket.socket(socket.AF_UNIX)
        self._socket.connect(str(path))
        self._socket.sendall(b"MONITOR\r\n")
        self.commands: list[list[bytes]] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        buffer = b""
        while chunk := self._socket.recv(1 << 20):
            buffer += chunk
            *lines, buffer = buffer.split(b"\r\n")
            for line in lines:
                arguments = re.findall(rb'"((?:[^"\\]|\\.)*)"', line)
                self.commands.append([codecs.escape_decode(argument)[0] for argument in arguments])

    def close(self) -> None:
        self._socket.shutdown(socket.SHUT_RDWR)
        self._socket.close()
        self._thread.join(5)


async def test_nothing_on_the_wire_is_pickled_only_json_text_and_png(start_bot, redis_server) -> None:
    bot = await start_bot()
    await workers_up(bot, "a", "b")
    monitor = Monitor(redis_server.socket)
    try:
        await bot.submit(ALICE, "a cat", **QUICK)
        source = io.BytesIO()
        Image.new("RGB", (64, 64), (200, 30, 30)).save(source, format="PNG")
        variation = {**QUICK, "steps": 4, "strength": 0.5}
        await bot.submit(BOB, "a dog", kind=JobKind.VARIATION, source_png=source.getvalue(), **variation)
        await bot.finish()
        await asyncio.sleep(0.2)  # the monitor's last lines
    finally:
        monitor.close()

    assert len(bot.of(JobDone)) == 2
    pngs = jsons = 0
    for command in monitor.commands:
        for argument in command:
            assert not argument.startswith(b"\x80"), f"a pickle in {command[0]!r}"
            if argument.startswith(b"\x89PNG\r\n\x1a\n"):
                pngs += 1
            else:
                text = argument.decode("utf-8")  # anything else is text
                if text.startswith("{"):
                    json.loads(text)
                    jsons += 1
    # The source image went out, the images came back, with JSON metadata both ways.
    assert pngs >= 3 and jsons >= 4


async def test_a_bot_restart_requeues_running_batches_and_stale_workers_stop(
    start_bot, redis_server: RedisServer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    db = tmp_path / "restarted.sqlite3"
    crashed = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "tests.remote_bot", str(db), redis_server.url, str(tiny_model_dir), "lost"],
        cwd=REPO,
        stdout=subprocess.PIPE,
    )
    try:
        assert crashed.stdout is not None
        line = await asyncio.wait_for(crashed.stdout.readline(), DEADLINE)
        job = int(line.split()[1])
    finally:
        crashed.kill()  # a bot that dies with a batch running
        await crashed.wait()

    bot = await start_bot(db=db)
    await bot.finish()
    assert await bot.state(job) == "done" and len(bot.of(JobDone, job)) == 1  # it ran again, to the end
    assert await bot.stack.reserved_and_used(ALICE) == (0, 1)
    # The worker that ran it for the dead bot was told to stop; what it sent back was not taken.
    await until(lambda: bot.hub.discarded >= 1)


async def test_a_stalled_worker_is_replaced_and_its_late_result_discarded(start_bot, workers) -> None:
    bot = await start_bot()
    await workers_up(bot, "a", "b")
    job = await bot.submit(ALICE, "a long one", **LONG)
    await until(lambda: bot.of(JobProgress, job))
    stalled = bot.where[job][0]
    workers[stalled].send(signal.SIGSTOP)  # its engine process goes on; its heartbeat stops
    await bot.finish()
    [other] = {"a", "b"} - {stalled}
    assert bot.where[job] == [stalled, other]  # given up, then run by the other worker
    workers[stalled].send(signal.SIGCONT)
    await until(lambda: bot.hub.discarded >= 1)  # the late outcome of the first attempt
    await workers_up(bot, stalled)  # back, and idle
    assert len(bot.of(JobDone, job)) == 1 and await bot.state(job) == "done"
    assert await bot.stack.reserved_and_used(ALICE) == (0, 1)


async def test_redis_restarted_mid_run_loses_no_job_and_work_resumes(start_bot, redis_server) -> None:
    bot = await start_bot()
    await workers_up(bot, "a", "b")
    running = await bot.submit(ALICE, "a long one", **LONG)
    await until(lambda: bot.of(JobProgress, running))
    redis_server.restart()  # empty: no persistence in the tests
    await bot.finish()
    after = await bot.submit(BOB, "after the restart", **QUICK)
    await bot.finish()
    for job in (running, after):
        assert len(bot.of(JobDone, job)) == 1 and await bot.state(job) == "done"
    assert await bot.stack.reserved_and_used(ALICE) == (0, 1)
    assert await bot.stack.reserved_and_used(BOB) == (0, 1)
    await workers_up(bot, "a", "b")  # both registered again by themselves


async def test_a_killed_worker_s_job_goes_first_and_finishes_elsewhere_exactly_once(
    start_bot, workers
) -> None:
    bot = await start_bot()
    await workers_up(bot, "a", "b")
    first = await bot.submit(ALICE, "alice", **LONG)
    second = await bot.submit(BOB, "bob", **LONGER)  # busy until the kill is noticed, whatever the CPU
    await until(lambda: bot.of(JobProgress, first) and bot.of(JobProgress, second))
    waiting = await bot.submit(CAROL, "carol", **QUICK)  # next in line while both workers are busy
    killed = bot.where[first][0]
    workers[killed].send(signal.SIGKILL)
    await until(lambda: not any(view.up for view in bot.hub.views() if view.info.name == killed))
    await bot.stack.queue.cancel(second)  # frees the survivor: the fair order decides what runs next
    await bot.finish()

    [survivor] = {"a", "b"} - {killed}
    started = [event.job.id for event in bot.of(JobStarted)]
    assert started[2:] == [first, waiting]  # the lost job went back to the front, before carol's
    assert bot.where[first] == [killed, survivor]
    for job, user in ((first, ALICE), (waiting, CAROL)):
        assert len(bot.of(JobDone, job)) == 1 and await bot.state(job) == "done"
        assert await bot.stack.reserved_and_used(user) == (0, 1)
    assert await bot.stack.reserved_and_used(BOB) == (0, 0)


async def test_without_a_gpu_the_bot_answers_queues_and_says_jobs_wait_even_with_redis_down(
    start_sdbot, fake_discord, tmp_path: Path
) -> None:
    empty = RedisServer(redis_server_binary(), tmp_path).start()  # no worker behind this one
    try:
        running = await start_sdbot(redis_url=empty.url, local_engine=False)
        bot = running.client
        first = await fake_discord.slash("imagine", raw=True, prompt="a cat", size="64x64", steps=2)
        assert NO_GPU in (await fake_discord.wait_for_reply(first)).content
        assert "No GPU is connected." in await admin(fake_discord, "workers")

        empty.stop()
        await fake_discord.wait_for(lambda: bot.dispatcher.hub.unreachable_since)
        assert "is **unreachable**" in await admin(fake_discord, "workers")
        second = await fake_discord.slash("imagine", raw=True, prompt="a dog", size="64x64", steps=2)
        assert NO_GPU in (await fake_discord.wait_for_reply(second)).content
        assert len(bot.queue.queued()) == 2  # both wait, neither failed
    finally:
        empty.stop()



def test_sdadmin_workers_shows_each_gpu_busy_idle_or_offline_within_one_message() -> None:
    def view(name: str, **fields: Any) -> EngineView:
        values = {"host": "box", "device": "RTX 4090", "models": ("sd15",), "loaded": ("sd15",), "up": True,
                  "jobs": (), "images": 3, "last_seen": 1_700_000_000.0} | fields  # fmt: skip
        return EngineView(name=name, **values)

    busy = view("gpu-a", jobs=(12,), models=("sd15", "sdxl"), loaded=("sdxl",))
    text = workers_text([busy, view("gpu-b"), view("gpu-c", up=False)], "redis://hub:6379/0", None)
    lines = text.splitlines()
    assert lines[0] == "Redis: redis://hub:6379/0."
    assert "**gpu-a** (box, RTX 4090): busy (job 12); models sd15, sdxl (loaded); 3 images" in lines[1]
    assert "idle" in lines[2] and "**offline**" in lines[3] and "<t:1700000000:R>" in lines[3]
    many = workers_text([view(f"gpu-{i:03}") for i in range(100)], "redis://hub:6379/0", None)
    assert len(many) < 2000 and many.endswith("... and 88 more.")
