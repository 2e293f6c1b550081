"""The batches the bot waits for on its GPU workers, one ``RemoteCall`` per lease (the bot's side, in memory).

``CallTable`` is the one place that says whether an event still has a waiter: a call waits for one attempt of
its lease on one worker, so a progress event or an outcome that names another attempt, another worker or a
lease the bot gave up finds no call, and every job ends exactly once. It keeps the last attempt of each lease
that may run again, so running the same requests again is that lease's next attempt.
"""

from __future__ import annotations

import queue
from collections.abc import Sequence
from dataclasses import dataclass, field

from sdbot.remote import wire
from sdbot.remote.wire import Outcome, ProgressEvent

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


class CallTable:
    """The calls of one bot run that have not ended, by lease (see the module docstring)."""

    def __init__(self, run: str) -> None:
        self._run = run  # this bot run's mark on its leases
        self._calls: dict[str, RemoteCall] = {}  # by lease
        self._attempts: dict[str, int] = {}  # the last attempt of each lease that has not ended

    def open(self, worker: str, refs: Sequence[str]) -> RemoteCall:
        """A call for the batch of requests with ``refs`` on ``worker``: the next attempt of their lease."""
        lease = wire.lease_name(self._run, refs)
        attempt = self._attempts.get(lease, 0) + 1
        self._attempts[lease] = attempt
        call = RemoteCall(worker, lease, attempt)
        self._calls[lease] = call
        return call

    def waiting(self, worker: str | None = None) -> list[RemoteCall]:
        """The calls that have not ended (on ``worker``, if named)."""
        return [call for call in self._calls.values() if worker is None or call.worker == worker]

    def find(self, worker: str, lease: str, attempt: int) -> RemoteCall | None:
        """The call that waits for this attempt of ``lease`` on ``worker``; None when none does."""
        call = self._calls.get(lease)
        if call is None or (call.worker, call.attempt) != (worker, attempt):
            return None
        return call

    def end(self, call: RemoteCall, *, final: bool) -> None:
        """``call`` waits no more. ``final``: its lease is over (done, failed, cancelled); otherwise (lost,
        released) the same requests may run again, as the lease's next attempt."""
        call.ended = True
        if self._calls.get(call.lease) is call:
            del self._calls[call.lease]
        if final:
            self._attempts.pop(call.lease, None)
