"""A job while this process has it queued or running: ``ActiveJob``.

The queue keeps one per job from the moment it is queued until its end is recorded, its record in step with
what happens to the job; the fair order ranks them, and the worker collects the images of each job's
batches on it until the job has them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from sdbot.inference.types import GeneratedImage, GenerationResult, Timings
from sdbot.params import JobState

if TYPE_CHECKING:
    from sdbot.db import JobEnding, JobRecord
    from sdbot.params import JobParams


@dataclass(eq=False)
class ActiveJob:
    """A job of this process that is queued or running (for the worker; observers see ``JobRecord``s)."""

    record: JobRecord
    finished: bool = False  # set, synchronously, by whoever finishes the job first
    passed_over: int = 0  # batches that ran before it though it was first in fair order
    images: dict[int, list[GeneratedImage]] = field(default_factory=dict)  # by first image index
    timings: list[Timings] = field(default_factory=list)

    @property
    def id(self) -> int:
        return self.record.id

    @property
    def user_id(self) -> int:
        return self.record.user_id

    @property
    def image_count(self) -> int:
        return self.record.image_count

    @property
    def params(self) -> JobParams:
        return self.record.params

    def add_images(self, first: int, images: list[GeneratedImage], timings: Timings) -> bool:
        """Keep images ``first..`` of this job; True once every image of the job is in."""
        self.images[first] = images
        self.timings.append(timings)
        return sum(len(part) for part in self.images.values()) >= self.image_count

    def result(self) -> GenerationResult:
        images = [image for first in sorted(self.images) for image in self.images[first]]
        return GenerationResult(images=images, timings=_sum_timings(self.timings))

    def mark_running(self, now: float) -> None:
        self.record = replace(self.record, state=JobState.RUNNING, started_at=now)

    def mark_queued(self) -> None:
        """Back in the queue: the job runs again from the start, so the images of the run it left go."""
        self.images.clear()
        self.timings.clear()
        self.record = replace(self.record, state=JobState.QUEUED, started_at=None)

    def mark_ended(self, ending: JobEnding) -> None:
        self.record = replace(
            self.record,
            state=ending.state,
            finished_at=ending.finished_at,
            seeds=list(ending.seeds),
            nsfw=list(ending.nsfw),
            error=ending.error,
        )


def _sum_timings(parts: list[Timings]) -> Timings:
    return Timings(
        switch=sum(part.switch for part in parts),
        loras=sum(part.loras for part in parts),
        denoise=sum(part.denoise for part in parts),
        decode=sum(part.decode for part in parts),
        safety=sum(part.safety for part in parts),
        total=sum(part.total for part in parts),
    )
