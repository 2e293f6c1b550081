"""The bot's side of Redis: which GPU workers are alive, the lease of each batch they run, and their events.

``WorkerHub`` looks at the workers' announcements and heartbeats every ``poll`` seconds (``Liveness``). When
a worker is lost, its running batch ends at once with ``WorkerLost`` (its jobs go back to the front of the
queue), its lease goes, and it is told to stop the batch should it wake up. ``changed`` is set whenever a
worker comes up or is lost.

A batch runs under a lease named by its requests' refs (jobs and image ranges), so running the same requests
again is the next *attempt* of the same lease. The hub keeps the one attempt it waits for; a progress event or
an outcome that names another attempt, another worker or a lease it gave up (a stalled worker's late result,
a result from before a bot restart) is discarded, so every job ends exactly once.

At start (and again whenever Redis comes back before that worked) the hub forgets the leases of a previous
bot run and tells every registered worker to stop whatever it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import secrets
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

from sdbot.config import redis_location
from sdbot.errors import WorkerLost
from sdbot.remote import wire
from sdbot.remote.liveness import Liveness, WorkerView
from sdbot.remote.wire import KEYS, Keys, Outcome, ProgressEvent, WorkerInfo

log = logging.getLogger(__name__)

POLL = 0.25  # seconds between two looks at the workers' heartbeats
EVENTS_BLOCK_MS = 1000  # how long one read of the event streams waits

Event = ProgressEvent | Outcome | BaseException


@dataclass(eq=False)
class RemoteCall:
    """One batch on one worker. Its events go to ``events`` in order, for the thread that waits for them;
    the last one is an ``Outcome`` or an exception (``WorkerLost``)."""

    worker: str
    lease: str
    attempt: int
    entry: bytes | None = None  # the batch's id in the worker's stream, once sent
    ended: bool = False
    events: queue.SimpleQueue[Event] = field(default_factory=queue.SimpleQueue)


class WorkerHub:
    """Liveness, leases and events of the GPU workers behind ``url`` (see the module docstring)."""

    def __init__(self, url: str, *, keys: Keys = KEYS, poll: float = POLL) -> None:
        self.location = redis_location(url)
        self.discarded = 0  # events of leases or attempts the hub no longer waits for
        self._redis = wire.open_redis(url)
        self._keys = keys
        self._poll = poll
        self._liveness = Liveness(self._redis, keys, self.location, self._lose_calls_of)
        self.changed = self._liveness.changed
        self._run = secrets.token_hex(4)  # this bot run's mark on its leases
        self._calls: dict[str, RemoteCall] = {}  # by lease
        self._attempts: dict[str, int] = {}  # the last attempt of each lease that has not ended
        self._reset_done = False
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False  # the loops end (a redis-py connect can swallow a task's cancel)
        self._background: set[asyncio.Task[None]] = set()

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
            asyncio.create_task(self._read_events(), name="sdbot-hub-events"),
        ]

    async def close(self) -> None:
        """Stop watching; a batch still running ends with ``WorkerLost`` (and its worker is told to stop)."""
        for call in list(self._calls.values()):
            await self.cancel(call)
            self._lose(call, "the bot is stopping")
        self._closing = True
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
        lease = wire.lease_name(self._run, refs)
        attempt = self._attempts.get(lease, 0) + 1
        self._attempts[lease] = attempt
        call = RemoteCall(worker, lease, attempt)
        self._calls[lease] = call
        return call

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
        for call in [call for call in self._calls.values() if call.worker == worker]:
            self._lose(call, f"worker {worker} is lost: {reason}")

    def _lose(self, call: RemoteCall, reason: str) -> None:
        """Give up on ``call``: its waiter gets ``WorkerLost``; the lease and the batch entry go, and the
        worker, should it wake up (a stall, a network cut), stops the batch at its next step."""
        self._end(call)
        call.events.put(WorkerLost(reason))
        self._in_background(self._release(call, cancel=True))

    def _end(self, call: RemoteCall) -> None:
        call.ended = True
        if self._calls.get(call.lease) is call:
            del self._calls[call.lease]

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

    # ----- events

    async def _read_events(self) -> None:
        keys = self._keys
        cursors: dict[str, bytes | str] = {keys.progress: "$", keys.results: "0-0"}
        while not self._closing:
            try:
                if cursors[keys.progress] == "$":
                    cursors[keys.progress] = await self._last_id(keys.progress)
                replies = await self._redis.xread(cursors, count=100, block=EVENTS_BLOCK_MS)
            except RedisError:
                await asyncio.sleep(self._poll)
                continue
            read_results: list[bytes] = []
            for stream, entries in replies:
                name = stream.decode()
                for entry, fields in entries:
                    cursors[name] = entry
                    if name == keys.results:
                        read_results.append(entry)
                    self._handle(name, fields)
            if read_results:
                with contextlib.suppress(RedisError):  # read again and discarded after a restart
                    await self._redis.xdel(keys.results, *read_results)

    async def _last_id(self, stream: str) -> bytes | str:
        last = await self._redis.xrevrange(stream, count=1)
        return last[0][0] if last else "0-0"

    def _handle(self, stream: str, fields: wire.Fields) -> None:
        try:
            event: ProgressEvent | Outcome = (
                wire.decode_outcome(fields) if stream == self._keys.results else wire.decode_progress(fields)
            )
        except Exception as error:  # whatever a worker sent, the hub goes on reading
            log.warning("an unreadable event on %s: %s", stream, error)
            if stream == self._keys.results:
                self._unreadable_outcome(fields, error)
            return
        call = self._calls.get(event.lease)
        if call is None or (call.worker, call.attempt) != (event.worker, event.attempt):
            if isinstance(event, Outcome):
                self.discarded += 1
                log.info(
                    "discarded the late %s outcome of lease %s attempt %d from worker %s",
                    event.kind,
                    event.lease,
                    event.attempt,
                    event.worker,
                )
            return
        if isinstance(event, Outcome):
            log.debug(
                "lease %s attempt %d on worker %s: %s %s",
                call.lease,
                call.attempt,
                call.worker,
                event.kind,
                event.error,
            )
            self._end(call)
            if event.kind is not wire.OutcomeKind.RELEASED:
                self._attempts.pop(call.lease, None)
            self._in_background(self._release(call))
        call.events.put(event)

    def _unreadable_outcome(self, fields: wire.Fields, error: Exception) -> None:
        """An outcome whose images do not decode fails its batch (rather than leave it waiting)."""
        try:
            worker, lease, attempt = wire.outcome_lease(fields)
        except Exception:
            return
        call = self._calls.get(lease)
        if call is not None and (call.worker, call.attempt) == (worker, attempt):
            self._end(call)
            self._attempts.pop(lease, None)
            reason = f"the worker sent an unreadable result: {error}"
            call.events.put(Outcome(worker, lease, attempt, wire.OutcomeKind.FAILED, reason))

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
