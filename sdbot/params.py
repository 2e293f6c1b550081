"""What a job asks for: its kind, its state and its parameters, typed, plus the limits they must keep.

``JobParams`` is the one description of a job that every layer shares: the service builds it from a member's
options, the job ledger stores it as JSON, the worker slices it into engine requests, the engine runs it and
writes it into each PNG's ``parameters``. Adding an option is adding a field here; the type checker then
shows every place that must handle it.

``check_params`` is the one place where limits are validated: the service calls it with the server's limits
before anything is charged, the engine with its absolute ones before any work. Each failure is an
``InvalidRequest`` (also a ``ValueError``) whose message says what is allowed.

This module imports nothing from ``sdbot`` but its errors, so every layer can depend on it.
"""

from __future__ import annotations

import enum
import json
import secrets
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from sdbot.errors import InvalidRequest, PromptRejected

MIN_STEPS, MAX_STEPS = 1, 150
MIN_GUIDANCE, MAX_GUIDANCE = 0.0, 30.0
MIN_SIDE, MAX_SIDE = 64, 2048
MIN_COUNT, MAX_COUNT = 1, 4
MAX_SEED = 2**32 - 1
MAX_PROMPT_LENGTH = 1000
MIN_STRENGTH = 0.05  # below this an image-to-image run changes nothing a member could see
ZOOM_FACTORS = (1.5, 2.0)  # Zoom Out's choices, as Midjourney offers them
MIN_LORA_WEIGHT, MAX_LORA_WEIGHT = -2.0, 2.0
MAX_LORAS = 10  # the most any server may allow (SDBOT_MAX_LORAS, default 3)
SHOWN_CHARACTERS = 40  # of a bad value quoted back in a refusal


class JobKind(enum.StrEnum):
    """What a member asked for. The text kinds run from the prompt alone; every other kind starts from a
    picture: the member's own (img2img) or an image of an earlier result (the buttons)."""

    TXT2IMG = "txt2img"
    REROLL = "reroll"
    REMIX = "remix"  # an earlier request again, with its seed, and the prompt the member edited
    IMG2IMG = "img2img"  # /imagine from the member's own picture
    VARY_SUBTLE = "vary_subtle"
    VARIATION = "variation"  # Vary (Strong); named before there was a subtle one
    UPSCALE_SUBTLE = "upscale_subtle"  # 2x by a super-resolution model, no diffusion
    UPSCALE = "upscale"  # Upscale (Creative): 2x with a light diffusion pass that invents detail
    ZOOM_OUT = "zoom_out"
    PAN = "pan"

    @property
    def from_image(self) -> bool:
        """Whether the job starts from a source picture (kept with the job until it ends)."""
        return self not in (JobKind.TXT2IMG, JobKind.REROLL, JobKind.REMIX)


class PanDirection(enum.StrEnum):
    """The side of a picture where Pan grows the canvas."""

    LEFT = "left"
    RIGHT = "right"
    UP = "up"
    DOWN = "down"


class JobState(enum.StrEnum):
    """queued -> running -> done | failed | cancelled; a running job may go back to queued (restart)."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self not in (JobState.QUEUED, JobState.RUNNING)


def image_seed(seed: int, index: int) -> int:
    """The seed of image ``index`` of a request: ``seed + index``, wrapping past ``MAX_SEED`` so that every
    seed (even 2**32-1 with four images) is valid and each image can be reproduced alone with its own seed."""
    return (seed + index) % (MAX_SEED + 1)


def random_seed() -> int:
    """A seed for a request that named none."""
    return secrets.randbelow(MAX_SEED + 1)


@dataclass(frozen=True)
class JobParams:
    """Everything that decides a job's images.

    Image ``i`` uses ``image_seed(seed, i)``. ``seed`` is None only until the job is queued (the queue draws
    one, so that a resumed job makes the same images). ``strength`` is set for the kinds that start from an
    image: how far the result may move from it (1: nothing of it is kept). ``model`` is the library name
    of the model that makes the images (empty: the library's default, as jobs stored before there were
    several models). ``loras``: the LoRAs applied, by name, with their weights, in the member's order (the
    prompt holds no ``<lora:...>`` tags). ``sampler``: the sampler's name (``sdbot.inference.samplers``),
    None for the model's own scheduler. ``zoom`` or ``pan`` make an outpainting job: the picture shrunk by
    ``zoom`` in the middle of a canvas of ``width`` x ``height``, or that canvas grown on the ``pan`` side of
    it."""

    prompt: str
    negative_prompt: str = ""
    steps: int = 30
    guidance: float = 7.5
    width: int = 512
    height: int = 512
    seed: int | None = None
    count: int = 1
    strength: float | None = None
    model: str = ""
    loras: tuple[tuple[str, float], ...] = ()
    sampler: str | None = None
    zoom: float | None = None
    pan: PanDirection | None = None

    @property
    def outpaint(self) -> str | None:
        """What an outpainting job does, as PNG parameters and messages say it: ``zoom 2x``, ``pan left``."""
        if self.zoom is not None:
            return f"zoom {self.zoom:g}x"
        return None if self.pan is None else f"pan {self.pan}"

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    @property
    def pixels(self) -> int:
        return self.width * self.height

    def batch_key(self) -> tuple[object, ...]:
        """What requests must share to run in one pipeline call (one model with one set of LoRAs at the same
        weights, one sampler and schedule, one size, one outpainting); prompts, seeds and counts may
        differ."""
        return (
            self.model,
            tuple(sorted(self.loras)),
            self.sampler,
            self.steps,
            self.guidance,
            self.width,
            self.height,
            self.strength,
            self.outpaint,
        )

    def images(self, first: int, count: int) -> JobParams:
        """The parameters of images ``first .. first + count - 1`` alone: the same images, seeded from the
        first of them."""
        if self.seed is None:
            raise ValueError("a job's seed is drawn when it is queued")
        return replace(self, seed=image_seed(self.seed, first), count=count)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> JobParams:
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> JobParams:
        """Read stored parameters; a key this version does not know is an error, not silently dropped."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown job parameters: {', '.join(unknown)}")
        pan = values.get("pan")
        loras = tuple((str(name), float(weight)) for name, weight in values.get("loras", ()))
        return cls(**{**values, "pan": None if pan is None else PanDirection(pan), "loras": loras})


@dataclass(frozen=True)
class Limits:
    """The bounds a job's parameters must keep. ``ENGINE_LIMITS`` are what the engine accepts at all; a
    server's limits (its settings) are tighter, and a model's family adds its own
    (``sdbot.inference.families.model_limits``: its size multiple, whether it takes a negative prompt)."""

    max_steps: int = MAX_STEPS
    max_count: int = MAX_COUNT
    max_pixels: int = MAX_SIDE * MAX_SIDE
    size_multiple: int = 8
    max_loras: int = MAX_LORAS
    owner: str = "the engine"  # whose limits these are, as messages name them ("this server")
    negative_prompt: bool = True  # False: the model has no negative prompt to honour
    model: str = "the model"  # the model these limits are for, as messages name it


ENGINE_LIMITS = Limits()


def check_params(params: JobParams, limits: Limits = ENGINE_LIMITS) -> None:
    """Raise ``InvalidRequest`` naming the first parameter outside ``limits`` (and the engine's ranges);
    ``PromptRejected`` for the prompts."""
    server = limits.owner != ENGINE_LIMITS.owner
    if not isinstance(params.prompt, str) or not isinstance(params.negative_prompt, str):
        raise PromptRejected("the prompt must be text")
    if not params.prompt.strip():
        raise PromptRejected("the prompt is empty")
    for label, text in (("prompt", params.prompt), ("negative prompt", params.negative_prompt)):
        if len(text) > MAX_PROMPT_LENGTH:
            raise PromptRejected(
                f"the {label} has {len(text):,} characters; the most is {MAX_PROMPT_LENGTH:,}"
            )
    if params.negative_prompt.strip() and not limits.negative_prompt:
        raise InvalidRequest(f"{limits.model} takes no negative prompt: leave it out.")
    _check_range("Steps", params.steps, MIN_STEPS, min(MAX_STEPS, limits.max_steps), server, whole=True)
    _check_range("Guidance", params.guidance, MIN_GUIDANCE, MAX_GUIDANCE, False)
    if params.seed is not None:
        _check_range("The seed", params.seed, 0, MAX_SEED, False, whole=True)
    _check_range(
        "The image count", params.count, MIN_COUNT, min(MAX_COUNT, limits.max_count), server, whole=True
    )
    for label, side in (("width", params.width), ("height", params.height)):
        if not MIN_SIDE <= side <= MAX_SIDE or side % limits.size_multiple:
            raise InvalidRequest(
                f"The {label} must be a multiple of {limits.size_multiple} from {MIN_SIDE} to {MAX_SIDE}, "
                f"not {side}."
            )
    _check_loras(params.loras, limits, server)
    if params.pixels > limits.max_pixels:
        raise InvalidRequest(
            f"{params.width}x{params.height} is larger than {limits.owner} allows "
            f"({limits.max_pixels:,} pixels; {params.pixels:,} asked)."
        )
    if params.zoom is not None and params.pan is not None:
        raise InvalidRequest("A job zooms out or pans, not both.")
    if params.zoom is not None and params.zoom not in ZOOM_FACTORS:
        offered = " or ".join(f"{factor:g}x" for factor in ZOOM_FACTORS)
        raise InvalidRequest(f"Zoom Out is {offered}, not {params.zoom:g}x.")
    if params.strength is not None:
        if not MIN_STRENGTH <= params.strength <= 1:
            raise InvalidRequest(f"The strength must be from {MIN_STRENGTH:g} to 1, not {params.strength:g}.")
        if int(params.steps * params.strength) < 1:
            raise InvalidRequest(
                f"{params.steps} steps at strength {params.strength:g} leave no denoising step: "
                f"use at least {min_steps(params.strength)} steps."
            )


def _check_loras(loras: tuple[tuple[str, float], ...], limits: Limits, server: bool) -> None:
    names = [name for name, _ in loras]
    if len(set(names)) < len(names):
        raise InvalidRequest("Each LoRA may be named once per request.")
    if len(loras) > min(MAX_LORAS, limits.max_loras):
        where = " on this server" if server else ""
        most = min(MAX_LORAS, limits.max_loras)
        raise InvalidRequest(f"{len(loras)} LoRAs asked; at most {most} per request{where}.")
    for name, weight in loras:
        _check_range(f"The weight of LoRA {name}", weight, MIN_LORA_WEIGHT, MAX_LORA_WEIGHT, False)


def min_steps(strength: float) -> int:
    """The fewest steps that leave at least one denoising step at ``strength`` (an image-to-image run
    denoises ``int(steps * strength)`` times)."""
    steps = 1
    while int(steps * strength) < 1:
        steps += 1
    return steps


def _check_range(
    label: str, value: float, low: float, high: float, server: bool, *, whole: bool = False
) -> None:
    """``value`` must be a number (``whole``: an integer) within ``low..high``: a modified client can send
    any JSON type for any option."""
    where = " on this server" if server else ""
    bounds = f"from {_shown(low)} to {_shown(high)}{where}"
    if isinstance(value, bool) or not isinstance(value, int if whole else int | float):
        kind = "a whole number" if whole else "a number"
        raise InvalidRequest(f"{label} must be {kind} {bounds} (got {shown(value)}).")
    if not low <= value <= high:
        raise InvalidRequest(f"{label} must be {bounds} (got {_shown(value)}).")


def _shown(value: object) -> str:
    """A number as a member typed it: whole numbers in full (a seed is ten digits), others short."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return f"{value:g}" if isinstance(value, float) else shown(value)


def shown(value: object, limit: int = SHOWN_CHARACTERS) -> str:
    """Anything a member sent, quoted for a refusal and cut to ``limit`` characters: a modified client can
    send thousands, and a message holds 2,000."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
