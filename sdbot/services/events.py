"""What happens to a job and who hears of it: the ``JobEvent`` types, ``JobWatch`` and ``JobObservers``.

A job's events come in order: ``JobQueued``, then any ``JobPositionChanged`` while it waits, ``JobStarted``
and ``JobProgress`` while it runs, and exactly one terminal event (``JobDone``, ``JobFailed`` or
``JobCancelled``). An observer is any callable that takes an event (``JobWatch`` is one to iterate over);
``JobObservers`` keeps each job's observers and the listeners that hear the jobs nobody watches, and hands
them the events the queue emits. Nothing here knows about Discord.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from PIL import Image

from sdbot.errors import JobNotFound
from sdbot.inference.types import GenerationResult
from sdbot.services.background import run_in_background

if TYPE_CHECKING:
    from sdbot.db import JobRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobEvent:
    """Something happened to a job. ``job`` is its record as of this event (state, timestamps)."""

    job: JobRecord

    @property
    def terminal(self) -> bool:
        """True for the last event a job ever gets (done, failed or cancelled)."""
        return False


@dataclass(frozen=True)
class JobQueued(JobEvent):
    """The job entered the queue (on submit, or on start-up for a job resumed after a restart)."""

    position: int


@dataclass(frozen=True)
class JobPositionChanged(JobEvent):
    position: int


@dataclass(frozen=True)
class JobStarted(JobEvent):
    pass


@dataclass(frozen=True)
class JobProgress(JobEvent):
    """A denoising step finished. ``preview`` (the job's first image so far) comes every few steps; it is
    a PIL image so that the observer decides whether and how to encode it (off the event loop)."""

    step: int
    total: int
    preview: Image.Image | None = None


@dataclass(frozen=True)
class JobDone(JobEvent):
    result: GenerationResult

    @property
    def terminal(self) -> bool:
        return True


@dataclass(frozen=True)
class JobFailed(JobEvent):
    """``error`` is fit to show the member who asked (no internals)."""

    error: str

    @property
    def terminal(self) -> bool:
        return True


@dataclass(frozen=True)
class JobCancelled(JobEvent):
    """``by_user`` is who cancelled it (None: a manager or the system)."""

    by_user: int | None

    @property
    def terminal(self) -> bool:
        return True


Observer = Callable[[JobEvent], Awaitable[None] | None]


class JobWatch:
    """An observer to iterate over: ``async for event in watch`` yields a job's events in order and ends
    after its terminal event.

    Pass it to ``JobQueue.submit(..., observer=watch)`` or ``JobObservers.subscribe(job_id, watch)``.
    """

    def __init__(self) -> None:
        self._events: asyncio.Queue[JobEvent] = asyncio.Queue()
        self._ended = False

    def __call__(self, event: JobEvent) -> None:
        self._events.put_nowait(event)

    def __aiter__(self) -> AsyncIterator[JobEvent]:
        return self

    async def __anext__(self) -> JobEvent:
        if self._ended:
            raise StopAsyncIteration
        event = await self._events.get()
        self._ended = event.terminal
        return event


class JobObservers:
    """Who hears of each job, and the one way its events reach them.

    A job's observers (given to ``JobQueue.submit`` or added by ``subscribe``) hear its events from
    ``JobQueued`` to its terminal event; the events of a job without observers go to the listeners.
    """

    def __init__(self) -> None:
        self._observers: dict[int, list[Observer]] = {}  # by job id, from its JobQueued to its last event
        self._listeners: list[Observer] = []
        self._positions: dict[int, int] = {}  # the position each waiting job's observers were last told
        self._tasks: set[asyncio.Future[Any]] = set()  # async observers still running

    def subscribe(self, job_id: int, observer: Observer) -> None:
        """Send ``observer`` the future events of a queued or running job. Raises ``JobNotFound``."""
        observers = self._observers.get(job_id)
        if observers is None:
            raise JobNotFound(f"job {job_id} is not queued or running")
        observers.append(observer)

    def unsubscribe(self, job_id: int, observer: Observer) -> None:
        """Stop watching a job (its later events go to the listeners, as for a job nobody watches)."""
        observers = self._observers.get(job_id, [])
        if observer in observers:
            observers.remove(observer)

    def add_listener(self, listener: Observer) -> None:
        """Hear the events of every job that has no observer at the time: jobs resumed after a restart, or
        whose observer gave up (an interaction token expires after 15 minutes), so their results still
        reach their channel."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Observer) -> None:
        self._listeners.remove(listener)

    def announce_queued(self, job: JobRecord, observer: Observer | None, waiting: list[JobRecord]) -> None:
        """``job`` joined the queue, whose waiting jobs are now ``waiting`` (in fair order): ``observer`` (if
        any) hears this and what follows, and the jobs it went ahead of hear their new positions."""
        position = [queued.id for queued in waiting].index(job.id)
        self._observers[job.id] = [] if observer is None else [observer]
        self._positions[job.id] = position
        self.emit(JobQueued(job, position=position))
        self.publish_positions(waiting)

    def publish_positions(self, waiting: list[JobRecord]) -> None:
        """Tell the observers of each job in ``waiting`` (the queue in fair order) its new position, if it
        moved since they were last told. A job that left the queue is forgotten: should it come back
        (``JobQueue.requeue``), its position is told again."""
        told, self._positions = self._positions, {}
        for position, job in enumerate(waiting):
            self._positions[job.id] = position
            if told.get(job.id) != position:
                self.emit(JobPositionChanged(job, position=position))

    def emit(self, event: JobEvent) -> None:
        """Hand ``event`` to its job's observers, or to the listeners if it has none."""
        observers = self._observers.get(event.job.id) or self._listeners
        for observer in list(observers):
            self._notify(observer, event)
        if event.terminal:
            self._observers.pop(event.job.id, None)

    def _notify(self, observer: Observer, event: JobEvent) -> None:
        """Call one observer; nothing it does (raise, hang in a coroutine) reaches the queue or worker."""
        try:
            outcome = observer(event)
        except Exception:
            log.exception("observer %r failed on %s of job %s", observer, type(event).__name__, event.job.id)
            return
        if inspect.isawaitable(outcome):
            run_in_background(self._tasks, outcome, "an async observer failed")
