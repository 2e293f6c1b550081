"""The engine's contract: what a caller asks for and what it gets back.

The job worker talks to an ``Engine`` only through these types, so an in-process diffusers engine, the engine
in its own process and a remote backend are interchangeable. A call runs one ``Operation`` on a *batch*:
several requests whose ``JobParams`` share their batch key (steps, guidance, size, strength) but keep their
own prompts and seeds. A request's images depend only on the request itself, never on what else was in the
batch (each image has its own seeded generator).

No discord and no asyncio here: an engine call blocks, and the worker runs it in a thread.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from PIL import Image

from sdbot.params import JobParams

UPSCALE_FACTOR = 2  # how much an upscale enlarges its source


class Operation(enum.StrEnum):
    """What the engine does with a batch. Image-to-image operations resize each source to the request's
    size first (Lanczos), so an upscale is a request at ``UPSCALE_FACTOR`` times its source's size."""

    GENERATE = "generate"
    VARIATION = "variation"
    UPSCALE = "upscale"  # like a variation, but large: the VAE works in tiles (when enabled)


@dataclass(frozen=True)
class EngineRequest:
    """One request of a batch: ``params.count`` images, image ``i`` seeded ``image_seed(params.seed, i)``
    (a seed of None is drawn by the engine). ``source`` is the image that image-to-image operations start
    from; each image of the request starts from it."""

    params: JobParams
    source: Image.Image | None = field(default=None, repr=False)


@dataclass(frozen=True)
class GeneratedImage:
    image: Image.Image
    seed: int
    nsfw: bool | None  # None: the model has no safety checker, so nobody knows
    png: bytes  # PNG with the A1111-style ``parameters`` text chunk


@dataclass(frozen=True)
class Timings:
    """Seconds spent in each phase of one engine call (shared by every request of a batch)."""

    denoise: float = 0.0
    decode: float = 0.0
    safety: float = 0.0
    total: float = 0.0


@dataclass(frozen=True)
class GenerationResult:
    images: list[GeneratedImage]
    timings: Timings = field(default_factory=Timings)

    @property
    def seeds(self) -> list[int]:
        return [image.seed for image in self.images]

    @property
    def nsfw(self) -> list[bool | None]:
        return [image.nsfw for image in self.images]


@dataclass(frozen=True)
class Progress:
    """Reported after each denoising step.

    Every few steps a preview is due: ``make_previews`` then renders one per request (its first image) from
    the live latents. Call it during the callback only, and only when someone will see the previews: the
    caller that throttles its progress reports should not pay for previews it drops."""

    step: int
    total: int
    make_previews: Callable[[], list[Image.Image]] | None = None


ProgressCallback = Callable[[Progress], None]
CancelCheck = Callable[[], bool]


class Engine(Protocol):
    """What the worker needs from a backend. ``run`` blocks and may raise ``GenerationFailed`` (out of memory,
    broken model), ``GenerationCancelled`` (``should_cancel`` returned True) or ``ValueError`` (parameters out
    of range, or a batch whose requests do not share the batch key). It returns one result per request."""

    @property
    def model_name(self) -> str: ...

    @property
    def has_safety_checker(self) -> bool: ...

    def run(
        self,
        operation: Operation,
        requests: Sequence[EngineRequest],
        on_progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> list[GenerationResult]: ...
