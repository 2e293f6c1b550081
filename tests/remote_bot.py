"""A bot without Discord for the GPU-worker tests: a queue on ``DB`` feeding the workers behind ``URL``.

``python -m tests.remote_bot DB URL MODEL PROMPT`` submits one long job, prints ``running <job id>`` once a
worker reports its first step, and then waits to be killed (a bot that dies with a batch running).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from sdbot.config import Settings
from sdbot.services.events import JobProgress
from tests.test_queue import ALICE, open_stack

LONG = {"steps": 150, "width": 64, "height": 64}  # about two seconds on a worker with the tiny model


async def main(db: Path, url: str, model: str, prompt: str) -> None:
    settings = Settings(model=model, daily_quota=100, max_batch=1, redis_url=url, local_engine=False)
    stack = await open_stack(db, settings)
    await stack.dispatcher.start()
    started = asyncio.Event()
    job = await stack.submit(
        ALICE, prompt, observer=lambda event: isinstance(event, JobProgress) and started.set(), **LONG
    )
    await started.wait()
    print(f"running {job.id}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]))
