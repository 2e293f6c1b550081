"""What a member's request must pass to join the queue: ``JobRequest`` and ``JobAdmission``.

A request arrives validated and paid for (a quota reservation). Admission holds it to the per-user and
global queue limits, draws the seed it left open and writes the job's row; whatever stops it on the way,
the reservation is refunded before the error reaches the caller. ``JobQueue.submit`` queues what it admits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from sdbot.config import Settings
from sdbot.errors import QueueFull
from sdbot.params import JobKind, JobParams, random_seed

if TYPE_CHECKING:
    from sdbot.db import Database, JobRecord
    from sdbot.services.fair_order import FairOrder
    from sdbot.services.quotas import QuotaService
    from sdbot.services.settings import SettingsService


@dataclass(frozen=True)
class JobRequest:
    """What a member asked for, already validated and paid for (``reservation_id``) by the caller.

    A seed of None in ``params`` is drawn at submit, so that a resumed job makes the same images.
    ``source_png`` is the picture a job of a ``from_image`` kind starts from.
    """

    guild_id: int
    channel_id: int
    user_id: int
    kind: JobKind
    params: JobParams
    parent_id: int | None = None
    reservation_id: int | None = None
    source_png: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.params.count < 1:
            raise ValueError(f"a job needs at least one image, not {self.params.count}")
        if self.kind.from_image != (self.source_png is not None):
            raise ValueError("jobs that start from a picture need source_png; the text kinds take none")


class JobAdmission:
    """Admits requests to the queue whose waiting jobs are ``waiting`` (read, never changed here).

    Settings used: ``max_queue`` (jobs waiting, all users together). The per-user limit is the server's
    ``user_queue_limit`` from ``settings_service`` unless ``admit`` is given one.
    """

    def __init__(
        self,
        db: Database,
        quotas: QuotaService,
        settings: Settings,
        waiting: FairOrder,
        settings_service: SettingsService | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._quotas = quotas
        self._settings = settings
        self._waiting = waiting
        self._settings_service = settings_service
        self._clock = clock
        self._lock = asyncio.Lock()

    async def admit(self, request: JobRequest, user_queue_limit: int | None) -> JobRecord:
        """Write the job's row if the limits leave room for it, else raise ``QueueFull``; refunds the
        reservation whenever it raises. One request at a time, so that two cannot both take the last place:
        the caller queues the job before it awaits anything."""
        try:
            async with self._lock:
                await self._check_limits(request, user_queue_limit)
                params = request.params
                if params.seed is None:
                    params = replace(params, seed=random_seed())
                return await self._db.jobs.create(
                    guild_id=request.guild_id,
                    channel_id=request.channel_id,
                    user_id=request.user_id,
                    kind=request.kind,
                    params=params,
                    image_count=params.count,
                    parent_id=request.parent_id,
                    reservation_id=request.reservation_id,
                    source_png=request.source_png,
                    now=self._clock(),
                )
        except BaseException:
            if request.reservation_id is not None:
                await self._quotas.refund(request.reservation_id)
            raise

    async def _check_limits(self, request: JobRequest, user_queue_limit: int | None) -> None:
        if user_queue_limit is None and self._settings_service is not None:
            user_queue_limit = (await self._settings_service.get(request.guild_id)).user_queue_limit
        if user_queue_limit is not None:
            mine = self._waiting.waiting_of(request.user_id, request.guild_id)
            if mine >= user_queue_limit:
                raise QueueFull(scope="user", limit=user_queue_limit, ahead=mine)
        waiting = len(self._waiting)
        if waiting >= self._settings.max_queue:
            raise QueueFull(scope="global", limit=self._settings.max_queue, ahead=waiting)
