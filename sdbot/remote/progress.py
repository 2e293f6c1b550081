"""A GPU worker's progress reports: from the engine thread, where each step is reported, to the ``progress``
stream in Redis.

The engine thread never waits for Redis: it encodes a step's previews as PNG (off the event loop) and posts
the event to the loop, whose sending loop sends them in order. A step that cannot be sent is dropped, since
the next one says more; a batch's outcome waits until its last steps are sent (``sent``).
"""

from __future__ import annotations

import asyncio
import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

from sdbot.inference.types import Progress, ProgressCallback
from sdbot.remote import wire
from sdbot.remote.wire import Batch, Keys

PROGRESS_INTERVAL = 0.2  # seconds between two progress events (previews come with them)


class ProgressSender:
    """Sends the progress events that ``reporter``s post for ``worker``, until ``stop``."""

    def __init__(self, redis: Redis, keys: Keys, worker: str) -> None:
        self.worker = worker
        self._redis = redis
        self._keys = keys
        self._queue: asyncio.Queue[wire.Fields] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = False  # the loop ends (a redis-py connect can swallow a task's cancel)

    def reporter(self, batch: Batch) -> ProgressCallback:
        """The engine's progress callback for ``batch`` (it runs in the engine thread)."""
        return _Reporter(self, batch)

    def post(self, fields: wire.Fields) -> None:
        """Queue a progress event to send (called from the engine thread)."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._queue.put_nowait, fields)

    async def sent(self) -> None:
        """Wait until every event posted so far has been sent or dropped."""
        await self._queue.join()

    def stop(self) -> None:
        self._stopped = True

    async def run(self) -> None:
        """Send the posted events in order; one that cannot be sent is dropped (the next step says more)."""
        self._loop = asyncio.get_running_loop()
        while not self._stopped:
            fields = await self._queue.get()
            try:
                await self._redis.xadd(
                    self._keys.progress, fields, maxlen=wire.PROGRESS_MAXLEN, approximate=True
                )
            except RedisError:
                pass
            finally:
                self._queue.task_done()


class _Reporter:
    """The engine thread's progress callback: a step at most every ``PROGRESS_INTERVAL`` (and the last),
    with previews encoded as PNG here, off the event loop."""

    def __init__(self, sender: ProgressSender, batch: Batch) -> None:
        self._sender = sender
        self._batch = batch
        self._last = -float("inf")

    def __call__(self, progress: Progress) -> None:
        now = time.monotonic()
        if progress.step < progress.total and now - self._last < PROGRESS_INTERVAL:
            return
        self._last = now
        previews = progress.make_previews() if progress.make_previews is not None else []
        event = wire.ProgressEvent(
            self._sender.worker,
            self._batch.lease,
            self._batch.attempt,
            progress.step,
            progress.total,
            [wire.encode_png(preview) for preview in previews],
        )
        self._sender.post(wire.encode_progress(event))
