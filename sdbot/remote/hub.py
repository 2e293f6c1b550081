"""The bot's side of Redis: which GPU workers are alive, the lease of each batch they run, and their events.

``WorkerHub`` looks at the workers' announcements and heartbeats every ``poll`` seconds (``Liveness``). When
a worker is lost, its running batch ends at once with ``WorkerLost`` (its jobs go back to the front of the
queue), its lease goes, and it is told to stop the batch should it wake up. ``changed`` is set whenever a
worker comes up or is lost.

A batch runs under a lease named by its requests' refs (jobs and image ranges), so running the same requests
again is the next *attempt* of the same lease. The hub waits for one attempt of each lease (``CallTable``); a
progress event or an outcome that names another attempt, another worker or a lease it gave up (a stalled
worker's late result, a result from before a bot restart) is discarded by its ``EventReader``, so every job
ends exactly once.

At start (and again whenever Redis comes back before that worked) the hub forgets the leases of a previous
bot run and tells every registered worker to stop whatever it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Sequence

from redis.exceptions import RedisError

from sdbot.config import redis_location
from sdbot.errors import WorkerLost
from sdbot.remote import wire
from sdbot.remote.calls import CallTable, RemoteCall
from sdbot.remote.events import EventReader
from sdbot.remote.liveness import Liveness, WorkerView
from sdbot.remote.wire import KEYS, Keys, WorkerInfo

log = logging.getLogger(__name__)

POLL = 0.25  # seconds between two looks at the workers' heartbeats


class WorkerHub:
    """Liveness, leases and events of the GPU workers behind ``url`` (see the module docstring)."""

    def __init__(self, url: str, *, keys: Keys = KEYS, poll: float = POLL) -> None:
        self.location = redis_location(url)
        self._redis = wire.open_redis(url)
        self._keys = keys
        self._poll = poll
        self._liveness = Liveness(self._redis, keys, self.location, self._lose_calls_of)
        self.changed = self._liveness.changed
        self._run = secrets.token_hex(4)  # this bot run's mark on its leases
        self._calls = CallTable(self._run)
        self._events = EventReader(self._redis, keys, self._calls, self._release_later, poll=poll)
        self._reset_done = False
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False  # the loops end (a redis-py connect can swallow a task's cancel)
        self._background: set[asyncio.Task[None]] = set()

    @property
    def discarded(self) -> int:
        """Outcomes of leases or attempts the hub no longer waits for."""
        return self._events.discarded

    @property
    def reachable(self) -> bool:
        return self._liveness.reachable

    @property
    def unreachable_since(self) -> float | None:
        """Epoch seconds since when Redis does not answer (None: it does)."""
        return self._liveness.unreachable_since

    def up(self) -> dict[str, WorkerInfo]:
        """The workers that may be given a batch now."""
        return self._liveness.up()

    def views(self) -> list[WorkerView]:
        return self._liveness.views()

    async def start(self) -> None:
        """Start watching; Redis need not be reachable yet (the hub keeps trying)."""
        self._tasks = [
            asyncio.create_task(self._watch(), name="sdbot-hub-watch"),
            asyncio.create_task(self._events.run(), name="sdbot-hub-events"),
        ]

    async def close(self) -> None:
        """Stop watching; a batch still running ends with ``WorkerLost`` (and its worker is told to stop)."""
        for call in self._calls.waiting():
            await self.cancel(call)
            self._lose(call, "the bot is stopping")
        self._closing = True
        self._events.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._background, return_exceptions=True)
        self._tasks = []
        await self._redis.aclose()

    # ----- batches (called from the loop by ``RemoteEngine``)

    def open_call(self, worker: str, refs: Sequence[str]) -> RemoteCall:
        """The lease for a batch of requests with ``refs`` on ``worker``, as its next attempt. Raises
        ``WorkerLost`` if the worker is not up."""
        if worker not in self._liveness.up():
            raise WorkerLost(f"worker {worker} is not available")
        return self._calls.open(worker, refs)

    async def send(self, call: RemoteCall, fields: wire.Fields) -> None:
        """Grant the lease and hand the batch to its worker; ``WorkerLost`` if that cannot be done."""
        if call.ended:
            raise WorkerLost(f"worker {call.worker} was lost before its batch was sent")
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(self._keys.leases, call.lease, wire.encode_lease(call.worker, call.attempt))
                pipe.xadd(self._keys.batches(call.worker), fields)
                _, call.entry = await pipe.execute()
        except RedisError as error:
            self._liveness.lose(call.worker, f"its batch could not be sent ({error})")
            raise WorkerLost(f"could not send a batch to worker {call.worker}: {error}") from None
        log.debug("lease %s attempt %d sent to worker %s", call.lease, call.attempt, call.worker)

    async def cancel(self, call: RemoteCall) -> None:
        """Ask the call's worker to stop it (it answers with a cancelled outcome after its next step)."""
        if call.ended:
            return
        try:
            await self._redis.xadd(
                self._keys.control(call.worker),
                wire.encode_cancel(call.lease, call.attempt),
                maxlen=wire.CONTROL_MAXLEN,
                approximate=True,
            )
        except RedisError as error:
            log.info("could not send a cancel to worker %s: %s", call.worker, error)

    # ----- liveness and leases

    async def _watch(self) -> None:
        while not self._closing:
            announced = await self._liveness.look()
            if announced is not None and not self._reset_done:
                await self._reset(announced)
            await asyncio.sleep(self._poll)

    def _lose_calls_of(self, worker: str, reason: str) -> None:
        for call in self._calls.waiting(worker):
            self._lose(call, f"worker {worker} is lost: {reason}")

    def _lose(self, call: RemoteCall, reason: str) -> None:
        """Give up on ``call``: its waiter gets ``WorkerLost``; the lease and the batch entry go, and the
        worker, should it wake up (a stall, a network cut), stops the batch at its next step."""
        self._calls.end(call, final=False)
        call.events.put(WorkerLost(reason))
        self._release_later(call, cancel=True)

    def _release_later(self, call: RemoteCall, *, cancel: bool = False) -> None:
        """Drop the lease of an ended call and its batch entry (and tell its worker to stop it), in the
        background."""
        task = asyncio.ensure_future(self._release(call, cancel=cancel))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _release(self, call: RemoteCall, *, cancel: bool = False) -> None:
        with contextlib.suppress(RedisError):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hdel(self._keys.leases, call.lease)
                if cancel:
                    stop = wire.encode_cancel(call.lease, call.attempt)
                    control = self._keys.control(call.worker)
                    pipe.xadd(control, stop, maxlen=wire.CONTROL_MAXLEN, approximate=True)
                if call.entry is not None:
                    pipe.xack(self._keys.batches(call.worker), wire.GROUP, call.entry)
                    pipe.xdel(self._keys.batches(call.worker), call.entry)
                await pipe.execute()

    async def _reset(self, announced: dict[str, WorkerInfo]) -> None:
        """Forget a previous bot run's leases; ask every worker to stop what it runs for another run."""
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.delete(self._keys.leases)
                for name in announced:
                    pipe.xadd(
                        self._keys.control(name),
                        wire.encode_cancel(wire.ANY_LEASE, keep=self._run),
                        maxlen=wire.CONTROL_MAXLEN,
                        approximate=True,
                    )
                await pipe.execute()
        except RedisError as error:
            log.info("could not clear the last run's leases yet: %s", error)
            return
        self._reset_done = True
