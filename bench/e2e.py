"""End-to-end benchmark: the whole bot (``SDBot``, its cogs, queue, worker and delivery) driven through the
loopback Discord with the tiny pipeline, outside pytest.

The fake Discord runs on its own event loop in a second thread, as the real one runs on another machine:
what the bot's loop does is the bot's work only. Its OpenAPI validation is off here (it costs 10-40 ms of
CPU per request, which Discord does not put on the bot's machine; the test suite validates every request);
Discord's own rules still apply, and any request the fake rejects as a bot bug fails the run.

The bot runs its engine as it does by default, in a process of its own (``--engine thread``: in a thread of
the bot's process, ``SDBOT_ENGINE_PROCESS=0``). The plain loop runs an engine in this process. Both use one
intra-op thread (``OMP_NUM_THREADS=1``), which suits the tiny model.

In one run, with ``--users`` members (at most 5: alice, bob, moderator, manager, owner) and ``--jobs`` jobs
each, ``--size`` pixels square and ``--steps`` steps (sent ``raw``: Discord's client only offers 512 px and
up, the bot's own validation still runs):

1. throughput: ``--rounds`` rounds, each the same jobs (prompt, seed, size, steps) through a plain loop
   calling ``engine.generate`` one job at a time, then through the bot (every member sends all their
   ``/imagine`` at once; done when every result is posted). The ratio is the median over the rounds of each
   round's bot images/s to its plain loop's: the two runs of a round are back to back and meet the same load
   on a shared machine, where the best of each could pair a lucky plain run with an unlucky bot run.
   ``--max-batch`` is 1 by default: one job per engine call, like the plain loop. Each round also prints
   how busy the engine was during the bot's run and the CPU seconds of each thread (engine, bot loop, fake
   Discord) and of the engine's process: a slower bot run shows whether the engine sat idle (the bot's
   overhead) or ran slower (contention).
2. interaction acknowledgement latency: from the fake sending INTERACTION_CREATE to it receiving the
   callback, for every ``/imagine`` of that burst (the later ones meet a queue that holds nearly all jobs).
3. event-loop lag: a 10 ms ticker on the bot's loop during the burst; how late each tick wakes up.
4. resident memory: ``--rss-jobs`` cheap jobs (64x64, 1 step; 0 skips this) after ``--rss-jobs // 5``
   (at least 20) such jobs of warm-up, at most ``--rss-window`` unfinished at a time; the growth of the
   resident memory of this process and the engine's (bot, engine and fake Discord together, so an upper
   bound for the bot: the fake keeps every message and attachment, reported separately).

No job may be refused: the daily quota (``SDBOT_DAILY_QUOTA``) and the global queue (``SDBOT_MAX_QUEUE``)
are raised through ``Settings``, and the per-member queue limit to 50 (the most a server may set) with
``/sdadmin queue-limit``, sent by the manager.

The last line is machine-readable:
``e2e_ratio=<x> ack_p99_ms=<y> lag_p99_ms=<z> rss_growth_mb=<w>`` (``nan`` for a figure not measured).
Targets: ratio >= 0.9, ack p99 < 500 ms, lag p99 < 50 ms, growth < 50 MB.

Run: ``python bench/e2e.py [--users 5] [--jobs 20] [--size 128] [--steps 4] [--rounds 5] [--engine process]``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# The repository root replaces bench/ on the path: bench/queue.py would shadow the standard ``queue``.
sys.path.pop(0)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# Before anything imports huggingface_hub, which reads it once: the hub is never needed here.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The tiny model's tensors are so small that a second intra-op thread costs more than it saves. Set before
# torch starts, here and in the engine's process (it inherits the environment).
os.environ["OMP_NUM_THREADS"] = "1"

import argparse
import asyncio
import gc
import logging
import math
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import psutil

from sdbot.bot import SDBot
from sdbot.config import Settings
from sdbot.inference.engine import DiffusersEngine, load_engine
from sdbot.inference.process import EngineProcess
from sdbot.inference.types import Engine, EngineRequest, Operation
from sdbot.params import JobParams
from tests.fakediscord import FakeDiscord, Interaction
from tests.fakediscord.fixtures import RunningBot
from tests.tiny_models import build_tiny_model

T = TypeVar("T")

USERS = ("alice", "bob", "moderator", "manager", "owner")
PROMPTS = ("a red cat", "a blue dog", "a photo of a lighthouse", "an oil painting of a fox", "the sea")
TICK = 0.01
USER_QUEUE_LIMIT = 50  # the most /sdadmin queue-limit allows
RSS_SIZE, RSS_STEPS = 64, 1
RESULT_TIMEOUT_PER_JOB = 2.0  # seconds; generous, so only a stuck bot times out


@dataclass(frozen=True)
class Job:
    """One ``/imagine``: who sends it and what it asks for (the plain loop runs the same request)."""

    user: str
    prompt: str
    seed: int
    size: int
    steps: int

    def request(self) -> EngineRequest:
        return EngineRequest(
            JobParams(prompt=self.prompt, steps=self.steps, width=self.size, height=self.size, seed=self.seed)
        )

    def options(self) -> dict[str, Any]:
        size = f"{self.size}x{self.size}"
        return {"prompt": self.prompt, "seed": self.seed, "size": size, "steps": self.steps}


def make_jobs(users: int, per_user: int, size: int, steps: int, first_seed: int) -> list[Job]:
    """Members take turns, so the queue sees them interleaved as the fair queue would order them anyway."""
    return [
        Job(USERS[i % users], f"{PROMPTS[i % users]} {i}", first_seed + i, size, steps)
        for i in range(users * per_user)
    ]


class TimedEngine:
    """The engine the bot gets, timing its ``run`` calls, so that a slower bot run shows whether the
    engine ran slower (contention) or sat idle between jobs (the bot's own overhead)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.busy = 0.0  # seconds inside run, all calls together

    def run(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return self._engine.run(*args, **kwargs)
        finally:
            self.busy += time.perf_counter() - started

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


class FakeDiscordThread:
    """A ``FakeDiscord`` serving from its own event loop in a daemon thread; ``call`` runs a coroutine
    function there and awaits its result from the caller's loop."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-discord", daemon=True)
        self.fake: FakeDiscord

    def start(self) -> None:
        self._thread.start()

        async def create() -> FakeDiscord:
            fake = FakeDiscord(None)
            await fake.start()
            return fake

        self.fake = asyncio.run_coroutine_threadsafe(create(), self._loop).result()

    def call(self, function: Callable[[FakeDiscord], Coroutine[Any, Any, T]]) -> Awaitable[T]:
        return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(function(self.fake), self._loop))

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.fake.stop(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


class ResultCounter:
    """Counts the public messages carrying images (one per finished job here) as the fake records them.
    The fake's message list only grows, so each call looks at the new messages only."""

    def __init__(self, fake: FakeDiscord) -> None:
        self._fake = fake
        self._seen = 0
        self.count = 0

    def __call__(self) -> int:
        messages = self._fake.messages
        for message in messages[self._seen :]:
            if not message.ephemeral and message.attachments:
                self.count += 1
        self._seen = len(messages)
        return self.count


async def drive(fake: FakeDiscord, jobs: list[Job], window: int) -> list[float]:
    """Runs on the fake's loop: send each job's ``/imagine`` with at most ``window`` jobs unfinished, wait
    until every result is posted, and return each acknowledgement's latency in seconds."""
    counter = ResultCounter(fake)
    base = counter()
    timeout = 30.0 + RESULT_TIMEOUT_PER_JOB * len(jobs)
    unconfirmed: list[Interaction] = []  # sent, and not yet shown as queued

    def refusal() -> str | None:
        """A refused job never posts a result: stop at once instead of waiting out the timeout."""
        for interaction in list(unconfirmed):
            reply = interaction.original
            if reply is None or reply.loading:
                continue
            if reply.components or "job" in reply.content.lower():
                unconfirmed.remove(interaction)
            else:
                return f"{interaction.user.name}'s job was refused: {reply.content}"
        return None

    def results(count: int) -> Callable[[], bool]:
        def probe() -> bool:
            reason = refusal()
            if reason is not None:
                raise RuntimeError(reason)
            return counter() >= base + count

        return probe

    async def send(job: Job) -> float:
        started = time.perf_counter()
        interaction = await fake.slash("imagine", user=job.user, raw=True, **job.options())
        unconfirmed.append(interaction)
        await fake.wait_for_ack(interaction, timeout=timeout)
        return time.perf_counter() - started

    acks: list[asyncio.Task[float]] = []
    try:
        for index, job in enumerate(jobs):
            if index >= window:
                await fake.wait_for(results(index - window + 1), timeout=timeout)
            acks.append(asyncio.create_task(send(job)))
        await fake.wait_for(results(len(jobs)), timeout=timeout)
        return list(await asyncio.gather(*acks))
    except TimeoutError:
        raise RuntimeError(
            f"only {counter() - base} of {len(jobs)} results arrived in {timeout:.0f} s; "
            f"last messages: {[m.content for m in fake.messages[-5:]]}"
        ) from None
    finally:
        for task in acks:
            task.cancel()


async def configure(fake: FakeDiscord) -> None:
    """Let each member have enough jobs waiting (the only limit not in ``Settings``)."""
    interaction = await fake.slash("sdadmin queue-limit", user="manager", jobs=USER_QUEUE_LIMIT)
    reply = await fake.wait_for_reply(interaction)
    if str(USER_QUEUE_LIMIT) not in reply.content:
        raise RuntimeError(f"/sdadmin queue-limit failed: {reply.content}")


def run_plain(engine: DiffusersEngine, jobs: list[Job]) -> float:
    """Seconds for a plain loop of one engine call per job."""
    started = time.perf_counter()
    for job in jobs:
        engine.run(Operation.GENERATE, [job.request()])
    return time.perf_counter() - started


async def tick(lags: list[float]) -> None:
    while True:
        before = time.perf_counter()
        await asyncio.sleep(TICK)
        lags.append(time.perf_counter() - before - TICK)


def seconds(runs: list[float]) -> str:
    return ", ".join(f"{run:.2f} s" for run in runs)


class ThreadCpu:
    """CPU seconds each thread of this process, and the engine's process if it has one, used since this
    object was made, grouped by role."""

    def __init__(self, engine_pid: int | None) -> None:
        self._engine_pid = engine_pid
        self._before = self._sample()

    def _sample(self) -> dict[int, float]:
        used = {thread.id: thread.user_time + thread.system_time for thread in psutil.Process().threads()}
        if self._engine_pid is not None:
            times = psutil.Process(self._engine_pid).cpu_times()
            used[self._engine_pid] = times.user + times.system
        return used

    def since(self) -> str:
        roles = {threading.main_thread().native_id: "bot loop"}
        if self._engine_pid is not None:
            roles[self._engine_pid] = "engine process"
        for thread in threading.enumerate():
            if thread.name == "fake-discord":
                roles[thread.native_id] = "fake Discord"
            elif thread.name.startswith("sdbot-engine"):
                roles[thread.native_id] = "engine"
        used: dict[str, float] = {}
        for thread_id, total in self._sample().items():
            role = roles.get(thread_id, "other threads")
            used[role] = used.get(role, 0.0) + total - self._before.get(thread_id, 0.0)
        return ", ".join(f"{role} {cpu:.2f}" for role, cpu in sorted(used.items()))


def percentile(values: list[float], share: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def rss_mb() -> float:
    """This process's resident memory and its children's (the engine's process, when it has one)."""
    gc.collect()
    here = psutil.Process()
    return sum(process.memory_info().rss for process in [here, *here.children(recursive=True)]) / 2**20


def retained_mb(fake: FakeDiscord) -> float:
    """What the fake keeps of the attachments it was sent (read from the main thread between phases)."""
    return sum(len(attachment.data) for attachment in list(fake.attachments.values())) / 2**20


@dataclass
class Figures:
    ratio: float = math.nan
    ack_p99_ms: float = math.nan
    lag_p99_ms: float = math.nan
    rss_growth_mb: float = math.nan

    def line(self) -> str:
        return (
            f"e2e_ratio={self.ratio:.3f} ack_p99_ms={self.ack_p99_ms:.1f} "
            f"lag_p99_ms={self.lag_p99_ms:.1f} rss_growth_mb={self.rss_growth_mb:.1f}"
        )


class Bench:
    """The measurements, with the bot running on this thread's loop and the fake Discord on its own."""

    def __init__(
        self,
        args: argparse.Namespace,
        engine: DiffusersEngine,
        bot_engine: Engine,
        discord_: FakeDiscordThread,
    ) -> None:
        self.args = args
        self.engine = engine  # the plain loop's
        self.engine_pid = bot_engine.pid if isinstance(bot_engine, EngineProcess) else None
        self.timed_engine = TimedEngine(bot_engine)
        self.discord = discord_
        self.figures = Figures()

    async def run(self, settings: Settings) -> Figures:
        fake = self.discord.fake
        running = RunningBot(
            fake, lambda: SDBot(settings, lambda: self.timed_engine, clock=fake.clock.now), 0.05
        )
        client = await running.start()
        try:
            assert isinstance(client, SDBot)
            await self.discord.call(lambda f: f.wait_for(lambda: client.model_ready, timeout=60.0))
            await self.discord.call(configure)
            print(
                f"SDBOT_MAX_BATCH={settings.max_batch} SDBOT_DAILY_QUOTA={settings.daily_quota} "
                f"SDBOT_MAX_QUEUE={settings.max_queue}, /sdadmin queue-limit {USER_QUEUE_LIMIT}"
            )
            await self.throughput()
            if self.args.rss_jobs > 0:
                await self.memory()
        finally:
            await running.stop()
        problems = await self.discord.call(lambda f: _copy(f.violations))
        rejected = await self.discord.call(lambda f: _copy(f.rejections))
        counts = Counter(f"{r.status} {r.method} {r.path.split('/')[3]}" for r in rejected)
        print(
            "requests the fake Discord refused (429: its edit rate limit, 5 per channel per 5 s): "
            + (", ".join(f"{what} x{count}" for what, count in sorted(counts.items())) or "none")
        )
        if problems:
            raise RuntimeError("requests Discord would reject:\n" + "\n".join(problems))
        return self.figures

    async def bot_runs(self, jobs: list[Job], window: int) -> list[float]:
        return await self.discord.call(lambda fake: drive(fake, jobs, window))

    async def throughput(self) -> None:
        """Phases 1-3: rounds of the plain loop then the bot (acknowledgements and loop lag meanwhile)."""
        args = self.args
        jobs = make_jobs(args.users, args.jobs, args.size, args.steps, first_seed=1000)
        warm_up = make_jobs(args.users, 1, args.size, args.steps, first_seed=1)
        await asyncio.to_thread(run_plain, self.engine, warm_up)
        await self.bot_runs(warm_up, len(warm_up))

        plain: list[float] = []
        through_bot: list[float] = []
        acks: list[float] = []
        lags: list[float] = []
        for round_number in range(1, args.rounds + 1):
            plain.append(await asyncio.to_thread(run_plain, self.engine, jobs))
            ticker = asyncio.create_task(tick(lags))
            cpu, busy = ThreadCpu(self.engine_pid), self.timed_engine.busy
            started = time.perf_counter()
            acks += await self.bot_runs(jobs, len(jobs))
            through_bot.append(time.perf_counter() - started)
            ticker.cancel()
            engine_share = (self.timed_engine.busy - busy) / through_bot[-1]
            print(
                f"round {round_number}: plain {plain[-1]:.2f} s, bot {through_bot[-1]:.2f} s (engine busy "
                f"{engine_share:.0%}; CPU seconds by thread: {cpu.since()})",
                flush=True,
            )

        plain_rate, bot_rate = len(jobs) / min(plain), len(jobs) / min(through_bot)
        ratios = [alone / bot for alone, bot in zip(plain, through_bot, strict=True)]
        self.figures.ratio = statistics.median(ratios)
        self.figures.ack_p99_ms = percentile(acks, 0.99) * 1000
        self.figures.lag_p99_ms = percentile(lags, 0.99) * 1000
        size = f"{args.size}x{args.size}"
        print(
            f"{len(jobs)} jobs ({args.users} users x {args.jobs}), {size}, {args.steps} steps, "
            f"engine in a {args.engine}"
        )
        print(f"plain engine loop: {plain_rate:.2f} images/s at best (runs: {seconds(plain)})")
        print(f"through the bot:   {bot_rate:.2f} images/s at best (runs: {seconds(through_bot)})")
        print(
            f"ratio bot / plain: {self.figures.ratio:.3f}, the median of the rounds' "
            f"{', '.join(f'{ratio:.3f}' for ratio in ratios)} "
            f"(best against best: {bot_rate / plain_rate:.3f})"
        )
        print(
            f"acknowledgement latency ({len(acks)} /imagine, sent {len(jobs)} at once): "
            f"p50 {percentile(acks, 0.5) * 1000:.1f} ms, p99 {self.figures.ack_p99_ms:.1f} ms, "
            f"max {max(acks) * 1000:.1f} ms"
        )
        print(
            f"event-loop lag ({len(lags)} ticks of {TICK * 1000:.0f} ms): "
            f"p50 {percentile(lags, 0.5) * 1000:.1f} ms, p99 {self.figures.lag_p99_ms:.1f} ms, "
            f"max {max(lags, default=math.nan) * 1000:.1f} ms",
            flush=True,
        )

    async def memory(self) -> None:
        """Phase 4: resident memory growth over cheap jobs, after a warm-up of the same kind."""
        count, window = self.args.rss_jobs, self.args.rss_window
        warm = max(count // 5, 20)
        per_user = math.ceil((warm + count) / len(USERS))
        cheap = make_jobs(len(USERS), per_user, RSS_SIZE, RSS_STEPS, first_seed=10_000)
        await self.bot_runs(cheap[:warm], window)
        fake = self.discord.fake
        before, fake_before = rss_mb(), retained_mb(fake)
        started = time.perf_counter()
        await self.bot_runs(cheap[warm : warm + count], window)
        elapsed = time.perf_counter() - started
        after, fake_after = rss_mb(), retained_mb(fake)
        self.figures.rss_growth_mb = after - before
        print(
            f"resident memory over {count} jobs ({RSS_SIZE}x{RSS_SIZE}, {RSS_STEPS} step, {elapsed:.1f} s) "
            f"after {warm} of warm-up: {before:.1f} -> {after:.1f} MB (+{self.figures.rss_growth_mb:.1f} MB; "
            f"of that, the fake's stored attachments: {fake_after - fake_before:.1f} MB)",
            flush=True,
        )


async def _copy(values: list[T]) -> list[T]:
    """A snapshot of one of the fake's lists, taken on its own loop."""
    return list(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=5, choices=range(1, len(USERS) + 1))
    parser.add_argument("--jobs", type=int, default=20, help="jobs per user")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (multiple of 8, >= 64)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5, help="plain loop + bot rounds; the median counts")
    parser.add_argument(
        "--engine",
        choices=("process", "thread"),
        default="process",
        help="the bot's engine in a process of its own (SDBOT_ENGINE_PROCESS=1, the default) or in a thread",
    )
    parser.add_argument("--max-batch", type=int, default=1, help="SDBOT_MAX_BATCH for the bot")
    parser.add_argument("--rss-jobs", type=int, default=500, help="jobs for the memory figure; 0 skips it")
    parser.add_argument("--rss-window", type=int, default=25, help="unfinished jobs at a time in that phase")
    args = parser.parse_args()

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        model = build_tiny_model(folder / "model")
        settings = Settings(
            model=str(model),
            device="cpu",
            dtype="float32",
            db_path=folder / "sdbot.sqlite3",
            daily_quota=10_000,
            max_queue=1_000,
            max_batch=args.max_batch,
            shutdown_grace=2.0,
        )
        engine = load_engine(settings)
        bot_engine = EngineProcess(settings).start() if args.engine == "process" else engine
        discord_ = FakeDiscordThread()
        discord_.start()
        try:
            with discord_.fake.discord_pointed_here():
                figures = asyncio.run(Bench(args, engine, bot_engine, discord_).run(settings))
        finally:
            discord_.stop()
            if isinstance(bot_engine, EngineProcess):
                bot_engine.close()
    print(figures.line())


if __name__ == "__main__":
    main()
