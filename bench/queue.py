"""Queue benchmark: what the queue and worker cost over calling the engine directly; what batching buys.

In one run, on the tiny pipeline (64x64, 4 steps, CPU float32), the same 40 one-image jobs from 4 users go
(a) through ``JobQueue`` + ``Worker`` (real SQLite file, real quota reservations, each done job's PNG kept
and fsynced beside the database before it is recorded, progress events on the loop; timed from starting
the worker over the submitted jobs until the queue is empty, the submits being timed on their own and shown
folded in too) and (b) through a plain loop calling the same engine one job at a time. The engine runs in a
process of its own, as the bot runs it (``EngineProcess``); ``--engine thread`` loads it in this process
instead, as ``SDBOT_ENGINE_PROCESS=0`` does. (a) runs with ``max_batch=1`` (the like-for-like comparison
with (b)) and with ``max_batch=4``. While (a) runs, a 10 ms ticker on the event loop measures how late it
wakes up (the lag a Discord heartbeat would see).

The modes take turns for ``--rounds`` rounds (5) and each mode's best round counts, so that all of them see
the same machine load, which comes in bursts on a shared box. ``--block N`` alternates the modes every N
jobs instead (each block's best round counts); every block then pays the worker's start and the last job's
bookkeeping once.

Torch runs one intra-op thread by default (``--torch-threads 0`` keeps torch's choice). On a shared 2-core
box, OpenMP's two spinning threads stall for seconds whenever another process takes a core; the stalls hit the
main thread's plain loop far more than the worker thread and would turn the ratio into noise (measured:
plain-loop blocks of 8 jobs from 0.4 s to 11 s, while the same blocks through the worker stayed under 1 s).

Prints images/s of each mode, the ratio (a, max_batch 1) / (b) (target >= 0.95), the loop lag
p50/p99 during (a) (target p99 < 50 ms) and the batched speedup (max_batch 4 over 1; small on a CPU, where
one image already keeps the cores busy). It also prints how much of (a)'s time the engine sat idle between
calls (the queue's own cost, which load bursts barely touch). The last line is machine-readable:
``throughput_ratio=<x> lag_p99_ms=<y> batched_speedup=<z>``.

Run: ``python bench/queue.py [--jobs 40] [--users 4] [--steps 4] [--rounds 5] [--block 0]
[--torch-threads 1] [--engine process|thread]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# The repository root replaces bench/ on the path: this file's name would shadow the standard ``queue``.
sys.path.pop(0)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence

import torch

from sdbot.config import Settings
from sdbot.inference.engine import load_engine
from sdbot.inference.process import EngineProcess
from sdbot.inference.types import (
    CancelCheck,
    Engine,
    EngineRequest,
    GenerationResult,
    Operation,
    ProgressCallback,
)
from sdbot.params import JobKind, JobParams
from sdbot.services import open_services
from sdbot.services.admission import JobRequest
from sdbot.services.worker import Worker
from tests.tiny_models import build_tiny_model

GUILD, CHANNEL = 1, 1
SIZE = 64
TICK = 0.01


def make_jobs(count: int, users: int, steps: int) -> list[JobParams]:
    """Job ``i`` belongs to user ``i % users``; each has its own prompt and seed."""
    prompts = ("a red cat", "a blue dog", "a photo of the cat", "the dog")
    return [
        JobParams(
            prompt=f"{prompts[i % users % len(prompts)]} {i}",
            steps=steps,
            width=SIZE,
            height=SIZE,
            seed=1000 + i,
        )
        for i in range(count)
    ]


class BusyEngine:
    """The engine, counting the seconds its calls take: (a)'s wall time minus that is what the queue and
    worker add between engine calls, a figure that the machine's load bursts barely touch."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.models = engine.models
        self.busy = 0.0

    def run(
        self,
        operation: Operation,
        requests: Sequence[EngineRequest],
        on_progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> list[GenerationResult]:
        started = time.perf_counter()
        try:
            return self._engine.run(operation, requests, on_progress, should_cancel)
        finally:
            self.busy += time.perf_counter() - started


def run_plain(engine: Engine, jobs: list[JobParams]) -> float:
    """(b): seconds to run every job with a direct engine call."""
    started = time.perf_counter()
    for job in jobs:
        engine.run(Operation.GENERATE, [EngineRequest(job)])
    return time.perf_counter() - started


async def run_queued(
    engine: BusyEngine, jobs: list[JobParams], users: int, max_batch: int, folder: Path
) -> tuple[float, float, list[float]]:
    """(a): seconds to submit every job (quota reservation + row), seconds from starting the worker until the
    queue is empty, and the loop lags (seconds) meanwhile."""
    settings = Settings(
        max_batch=max_batch,
        max_queue=len(jobs),
        daily_quota=len(jobs),
        shutdown_grace=5,
        db_path=folder / f"queue-{max_batch}-{time.monotonic_ns()}.sqlite3",
    )
    services = await open_services(settings)
    db, quotas, queue = services.db, services.quotas, services.queue
    worker = Worker(queue, engine, settings)
    submitting = time.perf_counter()
    for index, job in enumerate(jobs):
        user = 100 + index % users
        reservation = await quotas.reserve(GUILD, user, 1, is_manager=False)
        request = JobRequest(GUILD, CHANNEL, user, JobKind.TXT2IMG, job, reservation_id=reservation)
        await queue.submit(request, user_queue_limit=len(jobs))
    submitted = time.perf_counter() - submitting
    lags: list[float] = []
    ticking = asyncio.create_task(tick(lags))
    started = time.perf_counter()
    await worker.start()
    await queue.join()
    elapsed = time.perf_counter() - started
    ticking.cancel()
    await worker.stop()
    await db.close()
    return submitted, elapsed, lags


async def tick(lags: list[float]) -> None:
    while True:
        before = time.perf_counter()
        await asyncio.sleep(TICK)
        lags.append(time.perf_counter() - before - TICK)


@contextlib.contextmanager
def started_engine(model: Path, where: str, torch_threads: int) -> Iterator[Engine]:
    """The tiny model's engine, in a process of its own (``where="process"``, as the bot runs it) or here."""
    settings = Settings(model=str(model), device="cpu", dtype="float32")
    if where == "thread":
        yield load_engine(settings)
        return
    if torch_threads:  # the engine's process reads it as torch starts there
        os.environ["OMP_NUM_THREADS"] = str(torch_threads)
    engine = EngineProcess(settings).start()
    try:
        yield engine
    finally:
        engine.close()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--block", type=int, default=0, help="jobs per block (0: all jobs in one block)")
    parser.add_argument("--torch-threads", type=int, default=1, help="intra-op threads (0: torch's choice)")
    parser.add_argument(
        "--engine", choices=("process", "thread"), default="process", help="where the engine runs"
    )
    args = parser.parse_args()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)

    with tempfile.TemporaryDirectory() as temp, contextlib.ExitStack() as stack:
        folder = Path(temp)
        model = build_tiny_model(folder / "model")
        engine = stack.enter_context(started_engine(model, args.engine, args.torch_threads))
        jobs = make_jobs(args.jobs, args.users, args.steps)
        for warm in (1, 4):  # first calls of each batch size pay one-off costs
            for _ in range(2):
                engine.run(Operation.GENERATE, [EngineRequest(job) for job in jobs[:warm]])

        size = args.block or len(jobs)
        blocks = [jobs[start : start + size] for start in range(0, len(jobs), size)]
        modes = ("plain", "queue-1", "queue-4")
        # seconds[mode][block]: the block's best time over the rounds
        seconds = {mode: [float("inf")] * len(blocks) for mode in modes}
        submits: list[float] = []  # seconds per submitted job
        idle_shares: list[float] = []  # share of (a, batch 1)'s time the engine was not running
        lags: dict[str, list[float]] = {"queue-1": [], "queue-4": []}
        for round_number in range(1, args.rounds + 1):
            for index, block in enumerate(blocks):
                times = {"plain": run_plain(engine, block)}
                for max_batch in (1, 4):
                    counted = BusyEngine(engine)
                    submitted, elapsed, lagged = asyncio.run(
                        run_queued(counted, block, args.users, max_batch, folder)
                    )
                    submits.append(submitted / len(block))
                    if max_batch == 1:
                        idle_shares.append(1 - counted.busy / elapsed)
                    times[f"queue-{max_batch}"] = elapsed
                    lags[f"queue-{max_batch}"].extend(lagged)
                for mode, elapsed in times.items():
                    seconds[mode][index] = min(seconds[mode][index], elapsed)
            best = ", ".join(f"{mode} {sum(seconds[mode]):.2f} s" for mode in modes)
            print(f"round {round_number}: best so far {best}", flush=True)

    rate = {mode: args.jobs / sum(times) for mode, times in seconds.items()}
    print(
        f"{args.jobs} jobs, {args.users} users, {SIZE}x{SIZE}, {args.steps} steps, "
        f"blocks of {args.block or args.jobs}, best of {args.rounds} rounds per block, "
        f"torch threads {args.torch_threads or torch.get_num_threads()}, engine in a {args.engine}"
    )
    print(f"(b) plain engine loop:        {rate['plain']:.2f} images/s")
    print(f"(a) queue + worker, batch 1:  {rate['queue-1']:.2f} images/s")
    print(f"(a) queue + worker, batch 4:  {rate['queue-4']:.2f} images/s")
    for mode, lagged in lags.items():
        print(
            f"event-loop lag during {mode} ({len(lagged)} ticks of {TICK * 1000:.0f} ms): "
            f"p50 {percentile(lagged, 0.5) * 1000:.1f} ms, p99 {percentile(lagged, 0.99) * 1000:.1f} ms, "
            f"max {max(lagged) * 1000:.1f} ms, mean {statistics.fmean(lagged) * 1000:.1f} ms"
        )
    submit_ms = statistics.median(submits) * 1000
    with_submits = args.jobs / (sum(seconds["queue-1"]) + submit_ms / 1000 * args.jobs)
    print(
        f"submit (quota reservation + job row): median {submit_ms:.1f} ms per job; "
        f"queue + worker, batch 1, counting submits: {with_submits:.2f} images/s "
        f"(ratio {with_submits / rate['plain']:.3f})"
    )
    idle = statistics.median(idle_shares)
    print(
        f"engine idle during (a, batch 1): median {idle * 100:.1f}% of the time "
        f"(the ratio the queue's own work allows: {1 - idle:.3f})"
    )
    ratio = rate["queue-1"] / rate["plain"]
    speedup = rate["queue-4"] / rate["queue-1"]
    lag_p99 = percentile(lags["queue-1"] + lags["queue-4"], 0.99) * 1000
    print(f"throughput_ratio={ratio:.3f} lag_p99_ms={lag_p99:.1f} batched_speedup={speedup:.2f}")


if __name__ == "__main__":
    main()
