"""Daily image quotas over a rolling 24 hours: reserve before a job is queued, commit or refund after.

Whose limit is what, most specific first:

1. a member's personal quota (``SettingsService.set_member_quota``), even for a manager;
2. none at all for members with Manage Server, while the server keeps ``managers_exempt`` on (the default);
3. the server's daily quota, whose default is ``SDBOT_DAILY_QUOTA`` (50).

Committed and still-reserved images count; refunded ones do not. A row counts while it is younger than the
window, so ``next_free_at`` (when the oldest counted row leaves it) is when the next image frees up. The
check and the reservation are one SQLite write transaction (see ``sdbot.db.usage``), so concurrent requests,
from this process or another one on the same file, can never overdraw a quota.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sdbot.db import Database, UsageWindow
from sdbot.errors import QuotaExceeded
from sdbot.services.settings import SettingsService

WINDOW_SECONDS = 24 * 60 * 60


@dataclass(frozen=True)
class QuotaStatus:
    """A member's quota right now; ``limit`` and ``left`` are None when the member has no limit."""

    limit: int | None
    used: int
    reserved: int
    left: int | None
    next_free_at: float | None


class QuotaService:
    """Reserves, commits and refunds images against each member's rolling daily quota."""

    def __init__(
        self,
        db: Database,
        settings_service: SettingsService,
        clock: Callable[[], float] = time.time,
        *,
        window: float = WINDOW_SECONDS,
    ) -> None:
        self._db = db
        self._settings = settings_service
        self._clock = clock
        self.window = window

    async def limit_for(self, guild_id: int, user_id: int, *, is_manager: bool) -> int | None:
        """The member's daily limit, or None when they have none."""
        override = await self._settings.member(guild_id, user_id)
        if override.quota is not None:
            return override.quota
        settings = await self._settings.get(guild_id)
        if is_manager and settings.managers_exempt:
            return None
        return settings.daily_quota

    async def reserve(self, guild_id: int, user_id: int, images: int, *, is_manager: bool) -> int:
        """Set ``images`` aside for a job and return the reservation id, or raise ``QuotaExceeded``."""
        if images < 1:
            raise ValueError(f"a reservation needs at least one image, not {images}")
        limit = await self.limit_for(guild_id, user_id, is_manager=is_manager)
        now = self._clock()
        outcome = await self._db.usage.reserve(
            guild_id, user_id, images, limit=limit, since=now - self.window, now=now
        )
        if outcome.reservation_id is None:
            assert limit is not None and outcome.refused_by is not None
            window = outcome.refused_by
            raise QuotaExceeded(
                requested=images,
                left=max(0, limit - window.used - window.reserved),
                limit=limit,
                next_free_at=self._next_free_at(window),
            )
        return outcome.reservation_id

    async def commit(self, reservation_id: int, images: int | None = None) -> bool:
        """The job produced its images: count them. ``images`` fewer than reserved gives the rest back.

        False if the reservation was no longer open (already settled, or older than the window and pruned)."""
        if images is not None and images < 1:
            return await self.refund(reservation_id)
        return await self._db.usage.commit(reservation_id, images)

    async def refund(self, reservation_id: int) -> bool:
        """The job failed, was cancelled or never ran: its images no longer count. False if not open."""
        return await self._db.usage.refund(reservation_id)

    async def status(self, guild_id: int, user_id: int, *, is_manager: bool) -> QuotaStatus:
        limit = await self.limit_for(guild_id, user_id, is_manager=is_manager)
        window = await self._db.usage.window(guild_id, user_id, self._clock() - self.window)
        return QuotaStatus(
            limit=limit,
            used=window.used,
            reserved=window.reserved,
            left=None if limit is None else max(0, limit - window.used - window.reserved),
            next_free_at=self._next_free_at(window),
        )

    async def prune(self) -> int:
        """Delete every member's ledger rows that left the window; returns how many.

        Checks stay fast without it (they read only the window); running it at start-up and hourly keeps
        the file small."""
        return await self._db.usage.prune(self._clock() - self.window)

    def _next_free_at(self, window: UsageWindow) -> float | None:
        return None if window.oldest_at is None else window.oldest_at + self.window
