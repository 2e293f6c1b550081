"""Writing a job's end until it is written, and pausing new work while it cannot be.

A job ends exactly once: its end (a done job's images kept beside the database, then its state and its
quota in one transaction) is recorded before anyone hears of it. Were its images posted while the ledger
still said "running", a restart would run the job and post them again; were the quota settled apart from
the state, a fault between the two would charge for nothing or refund what was posted.

So a write that fails (the database locked past its busy timeout, a full disk, a read-only file) is tried
again with backoff (``FIRST_RETRY`` doubling up to ``LAST_RETRY`` seconds) until it succeeds or the bot
stops, in which case the job stays unfinished in the ledger and the next start-up ends it (posting stored
images, or running it again). After ``PATIENCE`` seconds of failures the writer pauses: the bot takes no new
jobs and starts no new batch, and says why, until every pending write has succeeded.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

WRITE_ERRORS = (sqlite3.Error, OSError)  # what a locked, full or read-only database or disk raises
FIRST_RETRY = 0.05  # seconds before the first retry of a failed write
LAST_RETRY = 5.0  # seconds between retries at most
PATIENCE = 30.0  # seconds of failing writes after which new work pauses


class EndingWriter:
    """Retries the writes that end jobs. ``paused`` says why new work waits (None: it does not);
    ``on_resume`` is called when it no longer does."""

    def __init__(self, on_resume: Callable[[], None]) -> None:
        self._on_resume = on_resume
        self._failing: dict[int, float] = {}  # job id -> when its write started failing
        self.paused: str | None = None

    async def write(self, job_id: int, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run ``attempt`` (one try of a write for job ``job_id``; ``what`` names it in logs) until it
        succeeds. Cancelling stops the retries (the write then never happened)."""
        delay = FIRST_RETRY
        try:
            while True:
                try:
                    return await attempt()
                except WRITE_ERRORS as error:
                    self._failed(job_id, what, error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, LAST_RETRY)
        finally:
            self._done(job_id)

    def _failed(self, job_id: int, what: str, error: BaseException) -> None:
        now = time.monotonic()
        since = self._failing.setdefault(job_id, now)
        if since == now:
            log.warning("job %s: could not %s (%s); trying again", job_id, what, error)
        if self.paused is None and now - since >= PATIENCE:
            self.paused = f"the bot cannot save its work ({error})"
            log.error(
                "job %s: could not %s for %.0f s (%s): new jobs are paused until it can",
                job_id,
                what,
                now - since,
                error,
            )

    def _done(self, job_id: int) -> None:
        if self._failing.pop(job_id, None) is not None and not self._failing and self.paused is not None:
            log.info("the bot can save its work again: new jobs are accepted")
            self.paused = None
            self._on_resume()
