"""The engine's contract: what a caller asks for and what it gets back.

The job worker talks to an ``Engine`` only through these types, so an in-process diffusers engine and a
future remote backend are interchangeable. A call takes a *batch*: several requests that share the batch
key (steps, guidance, size, strength) but keep their own prompts and seeds. A request's images depend only on
the request itself, never on what else was in the batch (each image has its own seeded generator).

No discord and no asyncio here: an engine call blocks, and the worker runs it in a thread.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from PIL import Image

MIN_STEPS, MAX_STEPS = 1, 150
MIN_GUIDANCE, MAX_GUIDANCE = 0.0, 30.0
MIN_SIDE, MAX_SIDE = 64, 2048
MIN_COUNT, MAX_COUNT = 1, 4
MAX_SEED = 2**32 - 1
VARIATION_STRENGTH = 0.6
UPSCALE_STRENGTH = 0.3
UPSCALE_FACTOR = 2


def image_seed(seed: int, index: int) -> int:
    """The seed of image ``index`` of a request: ``seed + index``, wrapping past ``MAX_SEED`` so that every
    seed (even 2**32-1 with four images) is valid and each image can be reproduced alone with its own seed."""
    return (seed + index) % (MAX_SEED + 1)


def random_seed() -> int:
    """A seed for a request that named none."""
    return secrets.randbelow(MAX_SEED + 1)


@dataclass(frozen=True)
class GenerateRequest:
    """Text to image. Image ``i`` of the request uses ``image_seed(seed, i)``, that is ``seed + i``."""

    prompt: str
    negative_prompt: str = ""
    steps: int = 30
    guidance: float = 7.5
    width: int = 512
    height: int = 512
    seed: int | None = None  # None: the engine draws one in 0..2**32-1
    count: int = 1


@dataclass(frozen=True)
class ImageToImageRequest:
    """Image to image from ``source``: a variation (new seed, strength ~0.6) or an upscale (2x, low strength).

    For an upscale the engine resizes ``source`` by ``UPSCALE_FACTOR`` first, so the output is twice its size.
    """

    source: Image.Image
    prompt: str
    negative_prompt: str = ""
    steps: int = 30
    guidance: float = 7.5
    seed: int | None = None
    strength: float = VARIATION_STRENGTH


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
    """What the worker needs from a backend. Every method blocks and may raise ``GenerationFailed``
    (out of memory, broken model), ``GenerationCancelled`` (``should_cancel`` returned True) or
    ``ValueError`` (parameters out of range, or a batch whose requests do not share the batch key)."""

    @property
    def model_name(self) -> str: ...

    @property
    def has_safety_checker(self) -> bool: ...

    def generate(
        self,
        requests: Sequence[GenerateRequest],
        on_progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> list[GenerationResult]: ...

    def variation(
        self,
        requests: Sequence[ImageToImageRequest],
        on_progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> list[GenerationResult]: ...

    def upscale(
        self,
        requests: Sequence[ImageToImageRequest],
        on_progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> list[GenerationResult]: ...
