"""The bot's reading of its GPU workers' events: progress and outcomes, from two Redis streams of all workers.

Reading is apart from the hub's writes (leases, batches, cancels) because it is a loop of its own, with its
own cursors: progress from the moment the bot starts (older steps are of batches it no longer waits for),
results from the stream's start (they are never trimmed, and each is deleted once read, so an outcome sent
while the bot was away is still read). Each event goes to the call that waits for it (``CallTable``); an
outcome ends its call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from sdbot.remote import wire
from sdbot.remote.calls import CallTable, RemoteCall
from sdbot.remote.wire import Keys, Outcome, ProgressEvent

log = logging.getLogger(__name__)

EVENTS_BLOCK_MS = 1000  # how long one read of the event streams waits


class EventReader:
    """Hands the workers' events to the calls in ``calls`` until ``stop``; ``on_ended`` hears of each call an
    outcome ended (the hub releases its lease). ``discarded`` counts the outcomes nobody waits for."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        calls: CallTable,
        on_ended: Callable[[RemoteCall], None],
        *,
        poll: float,
    ) -> None:
        """``poll``: seconds to wait before reading again after Redis failed to answer."""
        self.discarded = 0
        self._redis = redis
        self._keys = keys
        self._calls = calls
        self._on_ended = on_ended
        self._poll = poll
        self._stopped = False  # the loop ends (a redis-py connect can swallow a task's cancel)

    def stop(self) -> None:
        self._stopped = True

    async def run(self) -> None:
        keys = self._keys
        cursors: dict[str, bytes | str] = {keys.progress: "$", keys.results: "0-0"}
        while not self._stopped:
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
        call = self._calls.find(event.worker, event.lease, event.attempt)
        if call is None:
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
            self._calls.end(call, final=event.kind is not wire.OutcomeKind.RELEASED)
            self._on_ended(call)
        call.events.put(event)

    def _unreadable_outcome(self, fields: wire.Fields, error: Exception) -> None:
        """An outcome whose images do not decode fails its batch (rather than leave it waiting)."""
        try:
            worker, lease, attempt = wire.outcome_lease(fields)
        except Exception:
            return
        call = self._calls.find(worker, lease, attempt)
        if call is not None:
            self._calls.end(call, final=True)
            reason = f"the worker sent an unreadable result: {error}"
            call.events.put(Outcome(worker, lease, attempt, wire.OutcomeKind.FAILED, reason))
