"""What an admin asks about a server's records as a whole, not about one request: the recent work and the
queue (``/sdadmin stats``), and deleting what the bot holds about a member (``/sdadmin forget``).

Nothing here knows about Discord: the cogs pass plain ids.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from sdbot.db import Database, ForgottenRows, JobStats
from sdbot.errors import JobNotFound
from sdbot.services.jobs import JobQueue
from sdbot.services.privacy import forget_user


@dataclass(frozen=True)
class ServerStats:
    done: JobStats  # the server's finished jobs in the period
    waiting: int  # jobs waiting now, all servers together (they share the GPU)
    running: int


class ServerRecords:
    """A server's statistics, and forgetting a member of it."""

    def __init__(self, db: Database, queue: JobQueue, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._queue = queue
        self._clock = clock

    async def stats(self, guild_id: int, *, period: float = 24 * 60 * 60) -> ServerStats:
        """What the server's members generated in the last ``period`` seconds, and the queue now."""
        done = await self._db.jobs.stats(guild_id, self._clock() - period)
        return ServerStats(done=done, waiting=len(self._queue.queued()), running=len(self._queue.running()))

    async def forget(self, guild_id: int, user_id: int) -> ForgottenRows:
        """Delete what the bot holds about a member of a server, stopping their unfinished jobs first."""
        for job in [*self._queue.running(), *self._queue.queued()]:
            if job.guild_id == guild_id and job.user_id == user_id:
                with contextlib.suppress(JobNotFound):
                    await self._queue.cancel(job.id)
        return await forget_user(self._db, guild_id, user_id)
