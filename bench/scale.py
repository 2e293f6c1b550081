"""Scale benchmark: what GPU workers through Redis add, and how two compare with one.

In one run, on a *simulated* engine (each image takes ``--steps`` steps of ``--step-ms`` milliseconds of
sleep, with progress every step: no model, so the figures measure dispatching, not diffusion, and a 2-core
box can stand for two GPUs), the same one-image jobs from 4 members go through the bot's queue and
dispatcher (real SQLite file, real quotas, ``max_batch`` 1):

- **local**: the bot's own engine, in its engine process as by default;
- **1 worker**: one ``python -m sdbot worker`` process behind a real redis-server;
- **2 workers**: two worker processes behind another redis-server.

The modes take turns for ``--rounds`` rounds and each mode's best round counts (machine load comes in
bursts). Then, with two workers, a long job starts and the worker running it is killed (SIGKILL): the time
until the job runs again on the other worker is the requeue time (workers beat every second, as by default;
the bot counts one gone two beats after its last).

Last line: ``scale_2x=<2 workers / 1 worker images/s> remote_overhead=<1 - 1 worker / local images/s>
requeue_s=<SIGKILL to running elsewhere>``. Targets: scale_2x >= 1.9, remote_overhead <= 0.05,
requeue_s <= 5.

Run: ``python bench/scale.py [--jobs 24] [--steps 10] [--step-ms 20] [--rounds 3]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# The repository root replaces bench/ on the path (bench/queue.py would shadow the standard ``queue``).
if __name__ == "__main__":
    sys.path.pop(0)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import asyncio
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace

from sdbot.config import Settings
from sdbot.inference.process import EngineProcess
from sdbot.library import ModelLibrary
from sdbot.services.events import JobProgress, JobStarted
from tests.engines import StepEngine, fake_library
from tests.redis_server import RedisServer, WorkerProcess
from tests.test_queue import open_stack

STEP_SECONDS = "SDBOT_BENCH_STEP_SECONDS"  # read by the simulated engine in each engine process
MODEL = "simulated"


def load_simulated_engine(settings: Settings, library: ModelLibrary | None) -> StepEngine:
    """The engine every mode runs (``--engine bench.scale:load_simulated_engine`` for the workers)."""
    engine = StepEngine(step_seconds=float(os.environ[STEP_SECONDS]))
    engine.models = fake_library(MODEL)
    return engine


async def until(predicate: Callable[[], bool], timeout: float = 60.0) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the workers did not come up")
        await asyncio.sleep(0.01)


async def run_jobs(settings: Settings, engines: int, jobs: int, steps: int, folder: Path) -> float:
    """Seconds from submitting ``jobs`` jobs (4 members, once every engine is up) until all are done."""
    stack = await open_stack(folder / f"scale-{time.monotonic_ns()}.sqlite3", settings)
    dispatcher = stack.dispatcher
    await dispatcher.start()
    local = None
    if dispatcher.hub is None:
        local = EngineProcess(settings, loader=load_simulated_engine).start()
        await dispatcher.add_local(local)
    else:
        await until(lambda: len(dispatcher.views()) == engines)
    started = time.perf_counter()
    for index in range(jobs):
        await stack.submit(100 + index % 4, f"job {index}", steps=steps, width=64, height=64)
    await stack.queue.join()
    elapsed = time.perf_counter() - started
    await dispatcher.stop()
    if local is not None:
        local.close()
    await stack.db.close()
    return elapsed


async def requeue_seconds(settings: Settings, workers: dict[str, WorkerProcess], folder: Path) -> float:
    """Kill the worker running a long job; seconds until the job runs on the other one."""
    stack = await open_stack(folder / "requeue.sqlite3", settings)
    dispatcher, hub = stack.dispatcher, stack.dispatcher.hub
    assert hub is not None
    await dispatcher.start()
    await until(lambda: len(hub.up()) == len(workers))
    progressed = asyncio.Event()
    restarted = asyncio.Event()
    starts: list[float] = []

    def observe(event: object) -> None:
        if isinstance(event, JobProgress):
            progressed.set()
        elif isinstance(event, JobStarted):
            starts.append(time.perf_counter())
            if len(starts) == 2:
                restarted.set()

    job = await stack.submit(100, "a long one", steps=500, width=64, height=64, observer=observe)
    await progressed.wait()
    killed_at = time.perf_counter()
    workers[dispatcher.running_on()[job.id]].send(signal.SIGKILL)
    await asyncio.wait_for(restarted.wait(), 60)
    await stack.queue.join()
    await dispatcher.stop()
    await stack.db.close()
    return starts[1] - killed_at


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=24)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--step-ms", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("bench/scale.py: redis-server is not installed (apt-get install redis-server)")
    os.environ[STEP_SECONDS] = str(args.step_ms / 1000)

    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        servers = {count: RedisServer(binary, folder / f"redis{count}") for count in (1, 2)}
        workers: dict[int, dict[str, WorkerProcess]] = {}
        for count, server in servers.items():
            (folder / f"redis{count}").mkdir()
            server.start()
            workers[count] = {
                name: WorkerProcess(name, server.url, MODEL, folder, SDBOT_WORKER_HEARTBEAT="1").start(
                    "--engine", "bench.scale:load_simulated_engine"
                )
                for name in [f"w{count}{index}" for index in range(count)]
            }
        base = Settings(model=MODEL, daily_quota=10_000, max_queue=10_000, max_batch=1, shutdown_grace=5)
        settings = {
            "local": base,
            "1 worker": replace(base, redis_url=servers[1].url, local_engine=False),
            "2 workers": replace(base, redis_url=servers[2].url, local_engine=False),
        }
        best = dict.fromkeys(settings, float("inf"))
        try:
            for round_number in range(1, args.rounds + 1):
                for (mode, chosen), engines in zip(settings.items(), (1, 1, 2), strict=True):
                    elapsed = asyncio.run(run_jobs(chosen, engines, args.jobs, args.steps, folder))
                    best[mode] = min(best[mode], elapsed)
                shown = ", ".join(f"{mode} {seconds:.2f} s" for mode, seconds in best.items())
                print(f"round {round_number}: best so far {shown}", flush=True)
            requeue = asyncio.run(requeue_seconds(settings["2 workers"], workers[2], folder))
        finally:
            for group in workers.values():
                for worker in group.values():
                    worker.stop()
            for server in servers.values():
                server.stop()

    rate = {mode: args.jobs / seconds for mode, seconds in best.items()}
    print(
        f"simulated engine (no model): {args.steps} steps of {args.step_ms:g} ms per image; "
        f"{args.jobs} one-image jobs from 4 members; best of {args.rounds} rounds"
    )
    for mode, images in rate.items():
        print(f"{mode:>10}: {images:.2f} images/s")
    scale = rate["2 workers"] / rate["1 worker"]
    overhead = 1 - rate["1 worker"] / rate["local"]
    print(f"requeue after a worker's SIGKILL: {requeue:.2f} s (heartbeat 1 s, gone after 2)")
    print(f"scale_2x={scale:.2f} remote_overhead={overhead:.3f} requeue_s={requeue:.2f}")


if __name__ == "__main__":
    main()
