"""Work that runs as a task nobody awaits: held until it ends, and its failure logged.

The queue writes a job's start in the background, calls async observers without waiting for them, and the
worker records done jobs while the engine runs the next batch; each keeps its tasks in a set so that they
can be awaited at shutdown and are not garbage-collected half-way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

log = logging.getLogger(__name__)


def run_in_background(tasks: set[asyncio.Future[Any]], work: Awaitable[Any], failure: str) -> None:
    """Run ``work`` as a task held in ``tasks`` until it ends (so it can be awaited, and is not collected
    half-way); an exception it raises is logged as ``failure``, as nobody awaits it to see it."""
    task = asyncio.ensure_future(work)
    tasks.add(task)

    def done(task: asyncio.Future[Any]) -> None:
        tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(failure, exc_info=task.exception())

    task.add_done_callback(done)
