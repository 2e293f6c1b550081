"""The order jobs run in: round-robin across users, first-in first-out within each user (``FairOrder``).

It also decides what runs next (``FairOrder.next_batch``): the next job in that order and the jobs right
after it that can share its engine call, or a job of the model already on the GPU, sparing a model switch,
as long as no job is passed over more than ``MAX_PASSED_OVER`` times for it.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable
from typing import Any

from sdbot.services.active_job import ActiveJob

MAX_PASSED_OVER = 2  # batches a job may be passed over for a job of a model already loaded


class FairOrder:
    """Round-robin across users, first-in first-out within each user.

    Users take turns in the order they were last served (the one served longest ago first); a user never
    served yet goes before everyone already served, so a newcomer's first job waits behind at most the job
    now running. The order of the waiting jobs is: every user's first job in turn order, then every user's
    second job in the same order, and so on, which is exactly the order the worker takes them in.

    Jobs put back at the *front* (their GPU worker was lost while running them) go before all of that, in
    the order they were put back: they had their turn already.
    """

    def __init__(self) -> None:
        self._front: list[ActiveJob] = []
        self._waiting: dict[int, list[ActiveJob]] = {}
        self._last_served: dict[int, int] = {}
        self._joined: dict[int, int] = {}
        self._ticks = itertools.count()

    def __len__(self) -> int:
        return len(self._front) + sum(len(jobs) for jobs in self._waiting.values())

    def add(self, job: ActiveJob, *, front: bool = False) -> None:
        """Queue ``job`` behind the user's older jobs (by id, so a resumed job keeps its place), or at the
        front of the whole order."""
        if front:
            self._front.append(job)
            return
        jobs = self._waiting.setdefault(job.user_id, [])
        if not jobs:
            self._joined[job.user_id] = next(self._ticks)
        bisect.insort(jobs, job, key=lambda queued: queued.id)

    def remove(self, job: ActiveJob) -> None:
        if job in self._front:
            self._front.remove(job)
        else:
            self._waiting[job.user_id].remove(job)

    def waiting_of(self, user_id: int, guild_id: int) -> int:
        mine = [*self._front, *self._waiting.get(user_id, ())]
        return sum(1 for job in mine if job.user_id == user_id and job.record.guild_id == guild_id)

    def order(self) -> list[ActiveJob]:
        users = sorted((user for user, jobs in self._waiting.items() if jobs), key=self._turn)
        ordered: list[ActiveJob] = list(self._front)
        for depth in itertools.count():
            row = [self._waiting[user][depth] for user in users if len(self._waiting[user]) > depth]
            if not row:
                return ordered
            ordered.extend(row)
        raise AssertionError("unreachable")

    def next_batch(
        self,
        max_images: int,
        batch_key: Callable[[ActiveJob], Any],
        prefer: Callable[[ActiveJob], bool] | None = None,
        accepts: Callable[[ActiveJob], bool] | None = None,
    ) -> list[ActiveJob]:
        """Take the next job in fair order and the jobs right after it with the same batch key, while their
        images fit in ``max_images`` (the first job is taken whatever its size). ``accepts``: the jobs this
        engine can run (the ones for its models); the others are left to other engines.

        ``prefer`` (the jobs whose model is already on the GPU) may put a later job first, sparing a model
        switch, but only past jobs passed over fewer than ``MAX_PASSED_OVER`` times: no job waits more than
        that many batches longer than the fair order would make it."""
        order = self.order()
        if accepts is not None:
            order = [job for job in order if accepts(job)]
        if not order:
            return []
        first = _first_preferred(order, prefer) if prefer is not None else 0
        for passed in order[:first]:
            passed.passed_over += 1
        head = order[first]
        key = batch_key(head)
        batch = [head]
        images = head.image_count
        for job in order[first + 1 :]:
            if batch_key(job) != key or images + job.image_count > max_images:
                break
            batch.append(job)
            images += job.image_count
        self._take(batch)
        return batch

    def _take(self, jobs: list[ActiveJob]) -> None:
        """Remove ``jobs`` (taken in ``order()``) and move their users to the back of the turn order (a job
        from the front had its turn already)."""
        for job in jobs:
            if job in self._front:
                self._front.remove(job)
                continue
            self._waiting[job.user_id].remove(job)
            self._last_served[job.user_id] = next(self._ticks)

    def forget_turns(self) -> None:
        """With nothing queued or running, past turns no longer matter."""
        self._last_served.clear()
        self._joined.clear()
        self._waiting.clear()
        self._front.clear()

    def _turn(self, user_id: int) -> tuple[int, int]:
        return (self._last_served.get(user_id, -1), self._joined[user_id])


def _first_preferred(order: list[ActiveJob], prefer: Callable[[ActiveJob], bool]) -> int:
    """The index of the job to run first: the first preferred one that passes over only jobs that may still
    be passed over; else the first in fair order."""
    for index, job in enumerate(order):
        if prefer(job):
            return index
        if job.passed_over >= MAX_PASSED_OVER:
            return 0
    return 0
