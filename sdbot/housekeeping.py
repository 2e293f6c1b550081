"""The bot's chores while it runs, apart from its requests: the heartbeat file that ``python -m sdbot health``
(Docker's HEALTHCHECK) reads, the pruning of quota ledger rows that left the window and of status message
tokens that expired (at start-up, then hourly), and the presence that says loading / ready / busy / paused."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

import discord

from sdbot.db import Database
from sdbot.health import Heartbeat, write_heartbeat
from sdbot.services.jobs import JobQueue
from sdbot.services.quotas import QuotaService
from sdbot.views.presence import BotState, keep_presence

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL = 20.0  # seconds between heartbeats (the health check allows 120)
PRUNE_INTERVAL = 60 * 60.0  # seconds between deletions of quota ledger rows older than the window


class Housekeeping:
    """Runs the heartbeat, the pruning and the presence as background tasks, from ``start`` to ``stop``."""

    def __init__(
        self,
        client: discord.Client,
        db: Database,
        quotas: QuotaService,
        queue: JobQueue,
        *,
        heartbeat_file: Path,
        model_ready: Callable[[], bool],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._db = db
        self._quotas = quotas
        self._queue = queue
        self._heartbeat_file = heartbeat_file
        self._model_ready = model_ready
        self._clock = clock
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._beat(), name="sdbot-heartbeat"),
            asyncio.create_task(self._prune(), name="sdbot-prune"),
            asyncio.create_task(keep_presence(self._client, self.state), name="sdbot-presence"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def state(self) -> BotState:
        if not self._model_ready():
            return BotState.LOADING
        if self._queue.paused is not None:
            return BotState.PAUSED
        return BotState.BUSY if self._queue.running() or self._queue.queued() else BotState.READY

    def write_heartbeat(self) -> None:
        ws = self._client.ws
        heartbeat = Heartbeat(
            at=time.time(),  # wall time: the checker is another process reading the clock
            connected=self._client.is_ready() and ws is not None and ws.open,
            model_ready=self._model_ready(),
            queued=len(self._queue.queued()),
        )
        try:
            write_heartbeat(self._heartbeat_file, heartbeat)
        except OSError as error:
            log.warning("could not write the heartbeat: %s", error)

    async def _beat(self) -> None:
        """Keep the heartbeat fresh; remove it when the bot stops, so the health check says so at once."""
        try:
            while True:
                self.write_heartbeat()
                await asyncio.sleep(HEARTBEAT_INTERVAL)
        finally:
            self._heartbeat_file.unlink(missing_ok=True)

    async def _prune(self) -> None:
        """Delete the quota ledger's rows that left the window and the status messages whose tokens
        expired, now and every ``PRUNE_INTERVAL``. Checks read only the window and the valid tokens either
        way: a failed prune is logged and tried again next time."""
        while True:
            try:
                pruned = await self._quotas.prune()
                expired = await self._db.statuses.prune(self._clock())
            except Exception:
                log.exception("could not prune the quota ledger and the expired tokens")
            else:
                log.debug("pruned %d quota ledger row(s) and %d expired token(s)", pruned, expired)
            await asyncio.sleep(PRUNE_INTERVAL)
