"""Which GPU workers are up, from their announcements and heartbeats in Redis (the bot's side).

``Liveness.look`` reads every announcement and heartbeat at once. A worker is *up* while its heartbeat key
exists; it comes up only with a heartbeat that says it is idle (a worker still busy with a batch of a bot run
that no longer exists is told to stop first) and, after it was lost, only with a newer heartbeat. It is
*lost* when its heartbeat key is gone, when its heartbeat changes hands (a new process with the same name),
when its announcement goes (it signed off), when ``lose`` says so (a batch could not be sent to it), or when
Redis has been unreachable for longer than the worker's heartbeat TTL. ``changed`` is set whenever a worker
comes up or is lost, or Redis stops or starts answering; ``on_lost`` hears of each loss.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from sdbot.remote.wire import Keys, WorkerInfo, WorkerStatus

log = logging.getLogger(__name__)

FORGET_AFTER = 24 * 60 * 60.0  # seconds after which an absent worker's announcement is removed


@dataclass
class _Tracked:
    """What the hub knows of one worker."""

    info: WorkerInfo
    status: WorkerStatus | None = None
    up: bool = False
    alive_at: float = -float("inf")  # monotonic time its heartbeat was last seen
    lost: tuple[str, int] | None = None  # (token, beat) of the heartbeat it was lost with


@dataclass(frozen=True)
class WorkerView:
    """A worker as ``/sdadmin workers`` shows it."""

    info: WorkerInfo
    up: bool
    busy: bool
    images: int


class Liveness:
    """The up or lost state of every announced worker (see the module docstring)."""

    def __init__(self, redis: Redis, keys: Keys, location: str, on_lost: Callable[[str, str], None]) -> None:
        self.changed = asyncio.Event()
        self.location = location
        self._redis = redis
        self._keys = keys
        self._on_lost = on_lost
        self._workers: dict[str, _Tracked] = {}
        self._reachable = False
        self._unreachable_since: float | None = None

    @property
    def reachable(self) -> bool:
        return self._reachable

    @property
    def unreachable_since(self) -> float | None:
        """Epoch seconds since when Redis does not answer (None: it does)."""
        return self._unreachable_since

    def up(self) -> dict[str, WorkerInfo]:
        """The workers that may be given a batch now."""
        return {name: tracked.info for name, tracked in self._workers.items() if tracked.up}

    def views(self) -> list[WorkerView]:
        return [
            WorkerView(
                tracked.info,
                tracked.up,
                busy=tracked.status is not None and tracked.status.busy,
                images=tracked.status.images if tracked.status is not None else 0,
            )
            for tracked in sorted(self._workers.values(), key=lambda tracked: tracked.info.name)
        ]

    async def look(self) -> dict[str, WorkerInfo] | None:
        """Read every announcement and heartbeat and update the workers' states; the announcements, or None
        when Redis does not answer."""
        try:
            announced, statuses = await self._read_workers()
        except RedisError as error:
            self._set_reachable(False, error)
            announced = None
        else:
            self._set_reachable(True)
            self._update(announced, statuses)
        self._expire()
        return announced

    async def _read_workers(self) -> tuple[dict[str, WorkerInfo], dict[str, WorkerStatus | None]]:
        raw = await self._redis.hgetall(self._keys.workers)
        announced = {}
        for name, value in raw.items():
            try:
                announced[name.decode()] = WorkerInfo.from_json(value)
            except (ValueError, TypeError, KeyError) as error:
                log.warning("ignoring the unreadable announcement of worker %r: %s", name, error)
        names = list(announced)
        beats = await self._redis.mget([self._keys.alive(name) for name in names]) if names else []
        statuses = {}
        for name, beat in zip(names, beats, strict=True):
            try:
                statuses[name] = None if beat is None else WorkerStatus.from_json(beat)
            except (ValueError, TypeError) as error:
                log.warning("ignoring the unreadable heartbeat of worker %s: %s", name, error)
                statuses[name] = None
        await self._forget_absent(announced, statuses)
        return announced, statuses

    def _update(self, announced: dict[str, WorkerInfo], statuses: dict[str, WorkerStatus | None]) -> None:
        now = time.monotonic()
        for name in set(self._workers) - set(announced):
            self.lose(name, "it signed off")
            del self._workers[name]
        for name, info in announced.items():
            tracked = self._workers.setdefault(name, _Tracked(info))
            tracked.info = info
            status = statuses.get(name)
            if status is None:
                self.lose(name, "its heartbeat stopped")
                continue
            previous, tracked.status = tracked.status, status
            if tracked.up and previous is not None and previous.token != status.token:
                self.lose(name, "it restarted")
            tracked.alive_at = now
            if not tracked.up and self._may_come_up(tracked, status):
                tracked.up, tracked.lost = True, None
                log.info(
                    "GPU worker %s is up (%s on %s; models %s)",
                    name,
                    info.device,
                    info.host,
                    ", ".join(info.model_names),
                )
                self.changed.set()

    def _may_come_up(self, tracked: _Tracked, status: WorkerStatus) -> bool:
        """Idle, and not the very heartbeat it was lost with."""
        if status.busy:
            return False
        return tracked.lost is None or tracked.lost[0] != status.token or status.beat > tracked.lost[1]

    def _expire(self) -> None:
        """With Redis unreachable, a worker counts as gone once its heartbeat would have expired."""
        now = time.monotonic()
        for name, tracked in self._workers.items():
            if tracked.up and now - tracked.alive_at > tracked.info.ttl:
                self.lose(name, f"Redis has not answered for {tracked.info.ttl:g} s")

    def lose(self, name: str, reason: str) -> None:
        """Count the worker gone (``on_lost`` hears of it); it comes up again with a newer heartbeat."""
        tracked = self._workers.get(name)
        if tracked is None or not tracked.up:
            return
        tracked.up = False
        status = tracked.status
        tracked.lost = (status.token, status.beat) if status is not None else ("", 0)
        log.warning("GPU worker %s is lost: %s", name, reason)
        self._on_lost(name, reason)
        self.changed.set()

    def _set_reachable(self, reachable: bool, error: Exception | None = None) -> None:
        if reachable and not self._reachable:
            log.info("Redis at %s answers", self.location)
            self._unreachable_since = None
            self.changed.set()
        elif not reachable and (self._reachable or self._unreachable_since is None):
            log.warning("Redis at %s is unreachable (%s); jobs wait for a GPU", self.location, error)
            self._unreachable_since = time.time()
            self.changed.set()
        self._reachable = reachable

    async def _forget_absent(
        self, announced: dict[str, WorkerInfo], statuses: dict[str, WorkerStatus | None]
    ) -> None:
        """Remove the announcements of workers absent for ``FORGET_AFTER`` (they vanished without signing
        off: a machine that was switched off for good)."""
        stale = [
            name
            for name, info in announced.items()
            if statuses.get(name) is None and time.time() - info.seen > FORGET_AFTER
        ]
        if stale:
            await self._redis.hdel(self._keys.workers, *stale)
            for name in stale:
                del announced[name]
