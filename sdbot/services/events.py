"""What happens to a job, as its observers hear it: the ``JobEvent`` types and ``JobWatch``.

A job's events come in order: ``JobQueued``, then any ``JobPositionChanged`` while it waits, ``JobStarted``
and ``JobProgress`` while it runs, and exactly one terminal event (``JobDone``, ``JobFailed`` or
``JobCancelled``). An observer is any callable that takes an event; ``JobWatch`` is one to iterate over.
Nothing here knows about Discord.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PIL import Image

from sdbot.inference.types import GenerationResult

if TYPE_CHECKING:
    from sdbot.db import JobRecord


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

    Pass it to ``JobQueue.submit(..., observer=watch)`` or ``JobQueue.subscribe(job_id, watch)``.
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
