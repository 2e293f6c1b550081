"""The engine's contract: what a caller asks for and what it gets back.

The job worker talks to an ``Engine`` only through these types, so an in-process diffusers engine, the engine
in its own process and a remote backend are interchangeable. An engine holds a library of models, each
known by its name and described by a ``ModelInfo`` (its family profile among them). A call runs one
``Operation`` on a *batch*: several requests whose ``JobParams`` share their batch key (model, steps,
guidance, size, strength) but keep their own prompts and seeds. A request's images depend only on the
request itself, never on what else was in the batch (each image has its own seeded generator).

No discord and no asyncio here: an engine call blocks, and the worker runs it in a thread.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from PIL import Image

from sdbot.inference.families import FamilyProfile
from sdbot.params import JobParams

UPSCALE_FACTOR = 2  # how much an upscale enlarges its source


class Operation(enum.StrEnum):
    """What the engine does with a batch. Image-to-image operations resize each source to the request's
    size first (Lanczos), so an upscale is a request at ``UPSCALE_FACTOR`` times its source's size."""

    GENERATE = "generate"
    VARIATION = "variation"
    UPSCALE = "upscale"  # like a variation, but large: the VAE works in tiles (when enabled)
    # Upscale (Subtle): the super-resolution model enlarges each source to the request's size; no diffusion.
    SUPER_RESOLUTION = "super_resolution"
    # Zoom Out and Pan: the source is placed on the request's canvas (``JobParams.zoom``/``pan`` say how)
    # and the inpainting pipeline paints the rest; the source's own pixels are put back.
    OUTPAINT = "outpaint"


@dataclass(frozen=True)
class ModelInfo:
    """What the rest of the bot knows of a loaded model: its name, its family profile (sizes, defaults,
    capabilities), and whether a safety checker sees its images (False: the unchecked policy applies).
    ``samplers``: the samplers it can use (``sdbot.inference.samplers``; none: only its own scheduler),
    ``own_sampler``: what its own scheduler is called; ``tokenizer``: the JSON of the tokenizer whose window
    bounds its prompts (``sdbot.inference.prompt_limits``), None where prompts are not counted."""

    name: str
    profile: FamilyProfile
    checked: bool
    samplers: tuple[str, ...] = ()
    own_sampler: str = ""
    tokenizer: str | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "profile": self.profile.to_dict(),
            "checked": self.checked,
            "samplers": list(self.samplers),
            "own_sampler": self.own_sampler,
            "tokenizer": self.tokenizer,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelInfo:
        return cls(
            data["name"],
            FamilyProfile.from_dict(data["profile"]),
            data["checked"],
            tuple(data.get("samplers", ())),
            data.get("own_sampler", ""),
            data.get("tokenizer"),
        )


@dataclass(frozen=True)
class EngineRequest:
    """One request of a batch: ``params.count`` images, image ``i`` seeded ``image_seed(params.seed, i)``
    (a seed of None is drawn by the engine). ``source`` is the image that image-to-image operations start
    from; each image of the request starts from it. ``ref`` says what the request is for (a job and its
    first image): a remote engine names a batch's lease by its requests' refs, so that running the same
    requests again is a new attempt of the same lease; other engines ignore it."""

    params: JobParams
    source: Image.Image | None = field(default=None, repr=False)
    ref: str = ""


@dataclass(frozen=True)
class GeneratedImage:
    image: Image.Image
    seed: int
    nsfw: bool | None  # None: the model has no safety checker, so nobody knows
    png: bytes  # PNG with the A1111-style ``parameters`` text chunk


@dataclass(frozen=True)
class Timings:
    """Seconds spent in each phase of one engine call (shared by every request of a batch). ``switch``:
    bringing the batch's model onto the device first (moving it from CPU memory, or loading it again), 0
    when it was there. ``loras``: making the batch's LoRAs active (reading the files of those not loaded
    yet, switching adapters)."""

    switch: float = 0.0
    loras: float = 0.0
    denoise: float = 0.0
    decode: float = 0.0
    safety: float = 0.0
    total: float = 0.0


@dataclass(frozen=True)
class GenerationResult:
    """A request's images. ``notes``: what the member should be told about how it was made (a model that
    read the prompt without its weights)."""

    images: list[GeneratedImage]
    timings: Timings = field(default_factory=Timings)
    notes: tuple[str, ...] = ()

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
    """What the worker needs from a backend. ``models``: the loaded models by name, the library's default
    first (the model of requests whose ``JobParams.model`` is empty). ``run`` blocks and may raise
    ``GenerationFailed`` (out of memory, broken model), ``GenerationCancelled`` (``should_cancel`` returned
    True) or ``ValueError`` (an unknown model, parameters out of its range, or a batch whose requests do not
    share the batch key). It returns one result per request."""

    @property
    def models(self) -> Mapping[str, ModelInfo]: ...

    def run(
        self,
        operation: Operation,
        requests: Sequence[EngineRequest],
        on_progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> list[GenerationResult]: ...


def default_model(engine: Engine) -> str:
    """The name of the engine's default model: the first of its library."""
    return next(iter(engine.models))


def device_name(engine: Engine) -> str:
    """What an engine runs on, where it says (``DiffusersEngine.device_name``); engines that stand for one
    in tests say nothing."""
    return str(getattr(engine, "device_name", "") or "unknown device")
