"""The single-image tools: Vary (Subtle/Strong), Upscale (Subtle/Creative), Zoom Out, Pan, Remix, and picking
one image of a grid.

Each click but a pick is a new job of whoever clicked (their quota, their place in the queue), made from a
finished job's parameters read back from the database, so the buttons work after a restart. Checks run
cheapest first, before anything is read or charged: the server allows the tool (upscaling may be off), the
job's model has the pipeline the tool needs (image-to-image for Vary and Upscale (Creative), inpainting for
Zoom Out and Pan), the image exists; then the clicked image is read from Discord, once, and the result's
size is checked against the server's budget. The image is kept with the job until it ends.

Strengths. Vary (Subtle) runs at 0.35 and Vary (Strong) at 0.7: image-to-image noises the picture to that
fraction of the schedule. With SD's schedule the picture keeps 0.71 of its signal against noise of 0.70 at
0.35 (a signal-to-noise ratio of 1.0: layout, colours and shapes stay, texture and small details are
redrawn, as Midjourney's Subtle does), and 0.29 against 0.96 at 0.7 (a ratio of 0.09: the palette and the
rough composition stay, shapes and poses may change, as its Strong). Upscale (Creative) runs at 0.3, a
light pass that invents detail at the new size; Zoom Out and Pan at 1.0 (the new area starts from noise;
the mask keeps the picture).

Sizes. A variation is made at the largest size with its image's aspect within the server's budget. Both
upscales double each side, so their image must fit the budget and the result may have up to four times it
(the one exception). Zoom Out makes the model's native pixel count at the image's aspect; Pan grows the
canvas by half, and both must fit the budget.
"""

from __future__ import annotations

import io
import math
from collections.abc import Awaitable, Callable
from dataclasses import replace

from PIL import Image

from sdbot.db import JobRecord
from sdbot.errors import InvalidRequest, NotAllowedHere
from sdbot.inference.canvas import native_canvas, pan_canvas
from sdbot.inference.families import SD1, FamilyProfile
from sdbot.params import JobKind, JobParams, Limits, PanDirection, min_steps
from sdbot.services.events import Observer
from sdbot.services.imagine import ImagineService
from sdbot.services.requests import Requester, RequestRules
from sdbot.services.settings import GuildSettings

VARY_STRENGTHS = {JobKind.VARY_SUBTLE: 0.35, JobKind.VARIATION: 0.7}
CREATIVE_UPSCALE_STRENGTH = 0.3
OUTPAINT_STRENGTH = 1.0
UPSCALE_FACTOR = 2
MAX_SOURCE_BYTES = 25 * 1024 * 1024

# Reads the clicked image's PNG bytes (from Discord), raising a domain error when it cannot.
SourceReader = Callable[[], Awaitable[bytes]]


class EditService:
    """Turns a click on a result's image into a job: checked by ``RequestRules``, submitted by
    ``ImagineService``."""

    def __init__(self, rules: RequestRules, imagine: ImagineService) -> None:
        self._rules = rules
        self._imagine = imagine

    async def vary(
        self,
        who: Requester,
        job_id: int,
        index: int,
        source: SourceReader,
        *,
        subtle: bool,
        observer: Observer | None = None,
    ) -> JobRecord:
        """A new image close to image ``index`` of the job: a new seed, the same prompt and model."""
        kind = JobKind.VARY_SUBTLE if subtle else JobKind.VARIATION
        settings, parent, limits, _ = await self._admit(who, job_id, index, kind)
        png, (width, height) = await _read(source)
        size = _fit(width, height, limits.max_pixels, limits.size_multiple)
        params = self._params(parent, settings, size, strength=VARY_STRENGTHS[kind], seed=None)
        return await self._submit(who, kind, params, parent, png, settings, observer)

    async def upscale(
        self,
        who: Requester,
        job_id: int,
        index: int,
        source: SourceReader,
        *,
        subtle: bool,
        observer: Observer | None = None,
    ) -> JobRecord:
        """Image ``index`` at twice its size, with its own seed: by a super-resolution model (subtle: the
        picture is not changed) or with a light diffusion pass that invents detail (creative)."""
        kind = JobKind.UPSCALE_SUBTLE if subtle else JobKind.UPSCALE
        settings, parent, limits, _ = await self._admit(who, job_id, index, kind)
        png, (width, height) = await _read(source)
        if width * height > limits.max_pixels:
            raise InvalidRequest(
                f"This {width}x{height} image is too large to upscale on this server "
                f"(at most {limits.max_pixels:,} pixels before upscaling)."
            )
        multiple = limits.size_multiple
        size = _down_to(width * UPSCALE_FACTOR, multiple), _down_to(height * UPSCALE_FACTOR, multiple)
        params = self._params(
            parent,
            settings,
            size,
            strength=None if subtle else CREATIVE_UPSCALE_STRENGTH,
            seed=parent.seeds[index] if index < len(parent.seeds) else None,
        )
        limits = replace(limits, max_pixels=limits.max_pixels * UPSCALE_FACTOR**2)
        return await self._submit(who, kind, params, parent, png, settings, observer, limits)

    async def zoom_out(
        self,
        who: Requester,
        job_id: int,
        index: int,
        source: SourceReader,
        factor: float,
        *,
        observer: Observer | None = None,
    ) -> JobRecord:
        """Image ``index`` shrunk by ``factor`` into the middle of a canvas at the model's native size, the
        border painted by the model's inpainting pipeline."""
        settings, parent, limits, profile = await self._admit(who, job_id, index, JobKind.ZOOM_OUT)
        png, size = await _read(source)
        width, height = (profile or SD1).native_size
        canvas = native_canvas(size, width * height, limits.size_multiple)
        self._fits(canvas, limits, f"Zooming out makes a {canvas[0]}x{canvas[1]} image with this model")
        params = self._params(parent, settings, canvas, strength=OUTPAINT_STRENGTH, seed=None)
        params = replace(params, zoom=factor)
        return await self._submit(who, JobKind.ZOOM_OUT, params, parent, png, settings, observer)

    async def pan(
        self,
        who: Requester,
        job_id: int,
        index: int,
        source: SourceReader,
        direction: PanDirection,
        *,
        observer: Observer | None = None,
    ) -> JobRecord:
        """Image ``index`` with its canvas grown by half towards ``direction``, the new part painted in."""
        settings, parent, limits, _ = await self._admit(who, job_id, index, JobKind.PAN)
        png, size = await _read(source)
        canvas = pan_canvas(size, direction, limits.size_multiple)
        what = f"Panning this {size[0]}x{size[1]} image makes it {canvas[0]}x{canvas[1]}"
        self._fits(canvas, limits, what)
        params = self._params(parent, settings, canvas, strength=OUTPAINT_STRENGTH, seed=None)
        params = replace(params, pan=direction)
        return await self._submit(who, JobKind.PAN, params, parent, png, settings, observer)

    async def remix_prompts(self, who: Requester, job_id: int, index: int) -> tuple[str, str | None]:
        """What the Remix modal is prefilled with: the prompt, and the negative prompt where the model takes
        one (None: it does not, so the modal asks for none)."""
        _, parent, _, profile = await self._admit(who, job_id, index, JobKind.REMIX)
        negative = profile is None or profile.negative_prompt
        return parent.params.prompt, parent.params.negative_prompt if negative else None

    async def remix(
        self,
        who: Requester,
        job_id: int,
        index: int,
        prompt: str,
        negative: str | None,
        *,
        observer: Observer | None = None,
    ) -> JobRecord:
        """Image ``index`` made again from the edited prompt: its seed, size, model and settings."""
        settings, parent, _, _ = await self._admit(who, job_id, index, JobKind.REMIX)
        params = replace(
            parent.params,
            prompt=prompt.strip(),
            negative_prompt=parent.params.negative_prompt if negative is None else negative.strip(),
            seed=parent.seeds[index],
            count=1,
            model=self._rules.model_of(parent, settings),
        )
        self._rules.check(params, settings)
        return await self._imagine.submit(who, JobKind.REMIX, params, parent=parent, observer=observer)

    async def pick(self, who: Requester, job_id: int, index: int) -> tuple[JobRecord, GuildSettings]:
        """Image ``index`` of a grid, to post alone with the single-image tools (no job, nothing charged)."""
        settings = await self._rules.admit(who)
        return await self._rules.parent(who, job_id, index), settings

    async def _admit(
        self, who: Requester, job_id: int, index: int, kind: JobKind
    ) -> tuple[GuildSettings, JobRecord, Limits, FamilyProfile | None]:
        """The checks before anything is read: the member, the server's switch, the job and image, and
        what the job's model can do (once the engine has said: else the engine checks it when the job
        runs). Returns the server's limits for the model and its profile."""
        settings = await self._rules.admit(who)
        if kind in (JobKind.UPSCALE, JobKind.UPSCALE_SUBTLE) and not settings.upscale_allowed:
            raise NotAllowedHere("Upscaling is switched off on this server.")
        parent = await self._rules.parent(who, job_id, index)
        model = self._rules.model_of(parent, settings)
        profile = self._rules.models.profile(model)
        if kind is JobKind.REMIX and parent.kind.from_image:
            raise NotAllowedHere(
                "Remix makes an image again from its prompt; this one was made from a picture. "
                "Use Vary on it instead."
            )
        missing = _missing_pipeline(kind, profile)
        if profile is not None and missing is not None:
            raise NotAllowedHere(f"{model} ({profile.label}) has no {missing}.")
        return settings, parent, self._rules.limits(settings, model), profile

    def _params(
        self,
        parent: JobRecord,
        settings: GuildSettings,
        size: tuple[int, int],
        *,
        strength: float | None,
        seed: int | None,
    ) -> JobParams:
        params = parent.params
        # An image-to-image run denoises steps x strength times: keep at least one step.
        steps = params.steps if strength is None else max(params.steps, min_steps(strength))
        return replace(
            params,
            model=self._rules.model_of(parent, settings),
            steps=steps,
            width=size[0],
            height=size[1],
            seed=seed,
            count=1,
            strength=strength,
            zoom=None,
            pan=None,
        )

    @staticmethod
    def _fits(canvas: tuple[int, int], limits: Limits, what: str) -> None:
        if canvas[0] * canvas[1] > limits.max_pixels:
            raise InvalidRequest(f"{what}, more than this server allows ({limits.max_pixels:,} pixels).")

    async def _submit(
        self,
        who: Requester,
        kind: JobKind,
        params: JobParams,
        parent: JobRecord,
        png: bytes,
        settings: GuildSettings,
        observer: Observer | None,
        limits: Limits | None = None,
    ) -> JobRecord:
        self._rules.check(params, settings, limits)
        return await self._imagine.submit(who, kind, params, parent=parent, source_png=png, observer=observer)


def _missing_pipeline(kind: JobKind, profile: FamilyProfile | None) -> str | None:
    """What a tool needs that the model lacks (None: nothing, or the engine has not said yet)."""
    if profile is None:
        return None
    if kind in (JobKind.ZOOM_OUT, JobKind.PAN) and not profile.inpaint:
        return "inpainting pipeline: it can't zoom out or pan"
    if kind in (JobKind.VARY_SUBTLE, JobKind.VARIATION, JobKind.UPSCALE) and not profile.image_to_image:
        return "image-to-image pipeline: it can't vary or upscale creatively"
    return None


async def _read(source: SourceReader) -> tuple[bytes, tuple[int, int]]:
    """The clicked image, read once (the dearest check, so the last), and its size."""
    png = await source()
    if len(png) > MAX_SOURCE_BYTES:
        raise InvalidRequest("That image is too large to work on.")
    try:
        with Image.open(io.BytesIO(png)) as image:
            image.verify()
            return png, image.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise InvalidRequest("That image could not be read; it may have been replaced or damaged.") from None


def _down_to(value: int, multiple: int) -> int:
    return max(multiple, value - value % multiple)


def _fit(width: int, height: int, max_pixels: int, multiple: int) -> tuple[int, int]:
    """The largest size with ``width:height``'s aspect within ``max_pixels``, never larger than it is, in
    whole multiples of ``multiple``."""
    scale = min(1.0, math.sqrt(max_pixels / (width * height)))
    return _down_to(int(width * scale), multiple), _down_to(int(height * scale), multiple)
