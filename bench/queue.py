"""Queue benchmark: what the queue and worker cost over calling the engine directly; what batching buys.

In one run, on the tiny pipeline (64x64, 4 steps, CPU float32), the same 40 one-image jobs from 4 users go
(a) through ``JobQueue`` + ``Worker`` (real SQLite file, real quota reservations, progress events on the
loop) and (b) through a plain loop calling ``engine.generate`` one job at a time. (a) runs with
``max_batch=1`` (the like-for-like comparison with (b)) and with ``max_batch=4``. While (a) runs, a 10 ms
ticker on the event loop measures how late it wakes up (the lag a Discord heartbeat would see).

The modes alternate for ``--rounds`` rounds so that all of them see the same machine load; each mode's best
round counts. Prints images/s of each mode, the ratio (a, max_batch 1) / (b) (target >= 0.95), the loop lag
p50/p99 during (a) (target p99 < 50 ms) and the batched speedup (max_batch 4 over 1; small on a CPU, where
one image already keeps the cores busy). The last line is machine-readable:
``throughput_ratio=<x> lag_p99_ms=<y> batched_speedup=<z>``.

Run: ``python bench/queue.py [--jobs 40] [--users 4] [--steps 4] [--rounds 2]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# The repository root replaces bench/ on the path: this file's name would shadow the standard ``queue``.
sys.path.pop(0)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import asyncio
import statistics
import tempfile
import time

from sdbot.config import Settings
from sdbot.db import Database
from sdbot.inference.engine import DiffusersEngine, load_engine
from sdbot.inference.types import GenerateRequest
from sdbot.services.jobs import JobQueue, JobRequest
from sdbot.services.quotas import QuotaService
from sdbot.services.settings import SettingsService, defaults_from
from sdbot.services.worker import Worker
from tests.tiny_model import build_tiny_model

GUILD, CHANNEL = 1, 1
SIZE = 64
TICK = 0.01


def make_jobs(count: int, users: int, steps: int) -> list[GenerateRequest]:
    """Job ``i`` belongs to user ``i % users``; each has its own prompt and seed."""
    prompts = ("a red cat", "a blue dog", "a photo of the cat", "the dog")
    return [
        GenerateRequest(
            prompt=f"{prompts[i % users % len(prompts)]} {i}",
            steps=steps,
            width=SIZE,
            height=SIZE,
            seed=1000 + i,
        )
        for i in range(count)
    ]


def run_plain(engine: DiffusersEngine, jobs: list[GenerateRequest]) -> float:
    """(b): seconds to run every job with a direct engine call."""
    started = time.perf_counter()
    for job in jobs:
        engine.generate([job])
    return time.perf_counter() - started


async def run_queued(
    engine: DiffusersEngine, jobs: list[GenerateRequest], users: int, max_batch: int, folder: Path
) -> tuple[float, list[float]]:
    """(a): seconds from the first submit until the queue is empty, and the loop lags (seconds) meanwhile."""
    settings = Settings(max_batch=max_batch, max_queue=len(jobs), daily_quota=len(jobs), shutdown_grace=5)
    db = await Database.open(folder / f"queue-{max_batch}-{time.monotonic_ns()}.sqlite3")
    settings_service = SettingsService(db, defaults_from(settings))
    quotas = QuotaService(db, settings_service)
    queue = JobQueue(db, quotas, settings, settings_service)
    worker = Worker(queue, engine, settings)
    await worker.start()
    lags: list[float] = []
    ticking = asyncio.create_task(tick(lags))
    started = time.perf_counter()
    for index, job in enumerate(jobs):
        user = 100 + index % users
        reservation = await quotas.reserve(GUILD, user, 1, is_manager=False)
        params = {
            "prompt": job.prompt,
            "negative_prompt": "",
            "steps": job.steps,
            "guidance": job.guidance,
            "width": job.width,
            "height": job.height,
            "seed": job.seed,
            "count": 1,
        }
        request = JobRequest(GUILD, CHANNEL, user, "txt2img", params, 1, reservation_id=reservation)
        await queue.submit(request, user_queue_limit=len(jobs))
    await queue.join()
    elapsed = time.perf_counter() - started
    ticking.cancel()
    await worker.stop()
    await db.close()
    return elapsed, lags


async def tick(lags: list[float]) -> None:
    while True:
        before = time.perf_counter()
        await asyncio.sleep(TICK)
        lags.append(time.perf_counter() - before - TICK)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        model = build_tiny_model(folder / "model")
        engine = load_engine(Settings(model=str(model), device="cpu", dtype="float32"))
        jobs = make_jobs(args.jobs, args.users, args.steps)
        for warm in (1, 4):  # first calls of each batch size pay one-off costs
            engine.generate([*jobs[:warm]])
            engine.generate([*jobs[:warm]])

        seconds: dict[str, list[float]] = {"plain": [], "queue-1": [], "queue-4": []}
        lags: dict[str, list[float]] = {"queue-1": [], "queue-4": []}
        for round_number in range(1, args.rounds + 1):
            seconds["plain"].append(run_plain(engine, jobs))
            for max_batch in (1, 4):
                elapsed, lagged = asyncio.run(run_queued(engine, jobs, args.users, max_batch, folder))
                seconds[f"queue-{max_batch}"].append(elapsed)
                lags[f"queue-{max_batch}"].extend(lagged)
            print(
                f"round {round_number}: "
                + ", ".join(f"{mode} {runs[-1]:.2f} s" for mode, runs in seconds.items()),
                flush=True,
            )

    rate = {mode: args.jobs / min(runs) for mode, runs in seconds.items()}
    print(f"{args.jobs} jobs, {args.users} users, {SIZE}x{SIZE}, {args.steps} steps, best of {args.rounds}")
    print(f"(b) plain engine loop:        {rate['plain']:.2f} images/s")
    print(f"(a) queue + worker, batch 1:  {rate['queue-1']:.2f} images/s")
    print(f"(a) queue + worker, batch 4:  {rate['queue-4']:.2f} images/s")
    for mode, lagged in lags.items():
        print(
            f"event-loop lag during {mode} ({len(lagged)} ticks of {TICK * 1000:.0f} ms): "
            f"p50 {percentile(lagged, 0.5) * 1000:.1f} ms, p99 {percentile(lagged, 0.99) * 1000:.1f} ms, "
            f"max {max(lagged) * 1000:.1f} ms, mean {statistics.fmean(lagged) * 1000:.1f} ms"
        )
    ratio = rate["queue-1"] / rate["plain"]
    speedup = rate["queue-4"] / rate["queue-1"]
    lag_p99 = percentile(lags["queue-1"] + lags["queue-4"], 0.99) * 1000
    print(f"throughput_ratio={ratio:.3f} lag_p99_ms={lag_p99:.1f} batched_speedup={speedup:.2f}")


if __name__ == "__main__":
    main()
