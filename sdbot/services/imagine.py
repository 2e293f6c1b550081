"""Turning a member's request (``/imagine`` or Reroll) into a queued job, under the server's rules
(``sdbot.services.requests``).

Checks run cheapest first and before anything is charged: who asks and where (``RequestRules.admit``), then
what they asked for (``RequestRules.check``). Only then is quota reserved, and the reservation goes to
``JobQueue.submit``, which refunds it if the job is not queued. A refused request therefore never costs
anything.

A member may start from their own picture (``/imagine image:``): it is checked, turned upright and fitted
by ``sdbot.services.uploads`` after every cheaper check and before anything is charged, and kept with the
job. Reroll acts on a finished job whose parameters are read back from the database (so it works after a
restart); the clicker becomes the new job's owner, with their own quota and place in the queue. The
single-image tools are in ``sdbot.services.edits``, which checks through ``RequestRules`` and submits
through ``ImagineService.submit``.

Nothing here knows about Discord: the cogs pass plain ids and bytes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

from sdbot.db import JobRecord
from sdbot.errors import InvalidRequest, NotAllowedHere
from sdbot.params import JobKind, JobParams, min_steps
from sdbot.services.admission import JobRequest
from sdbot.services.events import Observer
from sdbot.services.jobs import JobQueue
from sdbot.services.quotas import QuotaService
from sdbot.services.requests import ImagineOptions, Requester, RequestRules, Upload, parse_size
from sdbot.services.settings import GuildSettings
from sdbot.services.uploads import MEBIBYTE, check_declared_size, prepare_upload

T = TypeVar("T")

UPLOAD_STRENGTH = 0.6  # how far /imagine moves from a member's picture unless they say


class ImagineService:
    """Makes new jobs: checks a request by the server's rules, reserves quota and submits the job to the
    queue (``submit`` also for the edits' jobs)."""

    def __init__(
        self,
        rules: RequestRules,
        quotas: QuotaService,
        queue: JobQueue,
        *,
        max_upload_bytes: int = 10 * MEBIBYTE,
        admit: Callable[[str], None] | None = None,
    ) -> None:
        """``admit(model)`` raises ``ModelUnavailable`` when GPU workers are up but none offers the model."""
        self._max_upload_bytes = max_upload_bytes
        self._admit_model = admit
        self._rules = rules
        self._quotas = quotas
        self._queue = queue

    async def imagine(
        self,
        who: Requester,
        options: ImagineOptions,
        *,
        upload: Upload | None = None,
        observer: Observer | None = None,
    ) -> JobRecord:
        """A text-to-image job; with ``upload``, image-to-image from the member's picture (whose fitted
        size replaces the size option)."""
        settings = await self._rules.admit(who)
        if upload is not None and options.size:
            raise InvalidRequest("With an `image`, the size follows your picture: leave `size` out.")
        params = self._txt2img_params(options, settings)
        if upload is not None:
            return await self._from_upload(who, params, options.strength, upload, settings, observer)
        if options.strength is not None:
            raise InvalidRequest("`strength` goes with an `image`: how far to move from your picture.")
        return await self.submit(who, JobKind.TXT2IMG, params, observer=observer)

    async def reroll(self, who: Requester, job_id: int, *, observer: Observer | None = None) -> JobRecord:
        """The same request again with a new seed (from its prompt alone: a tool's own settings go)."""
        settings = await self._rules.admit(who)
        parent = await self._rules.parent(who, job_id)
        if parent.kind is JobKind.IMG2IMG:
            raise NotAllowedHere(
                "The picture that job started from is not kept: run `/imagine` with it again to reroll."
            )
        params = replace(
            parent.params,
            seed=None,
            strength=None,
            zoom=None,
            pan=None,
            model=self._rules.model_of(parent, settings),
        )
        self._rules.check(params, settings)
        return await self.submit(who, JobKind.REROLL, params, parent=parent, observer=observer)

    def _txt2img_params(self, options: ImagineOptions, settings: GuildSettings) -> JobParams:
        """The request's parameters: what the member set, else the server's default steps, else the model's
        own defaults (the library's for it, else its family's). Steps a member did not choose are capped at
        the server's maximum."""
        model = self._rules.models.resolve(options.model, settings)
        profile = self._rules.models.profile(model.name)
        if options.guidance is not None and profile is not None and not profile.uses_guidance:
            raise InvalidRequest(f"{model.name} ({profile.label}) takes no guidance: leave it out.")
        defaults = model.defaults(profile)
        width, height = parse_size(options.size) if options.size else defaults.size
        steps = _first(options.steps, settings.default_steps, defaults.steps)
        family = None if profile is None else profile.family.value
        prompt, loras = self._rules.loras.from_request(
            options.prompt.strip(), options.lora, options.lora_weight, family, settings
        )
        params = JobParams(
            prompt=prompt,
            negative_prompt=(options.negative or "").strip(),
            steps=steps if options.steps is not None else min(steps, settings.max_steps),
            guidance=_first(options.guidance, defaults.guidance),
            width=width,
            height=height,
            seed=options.seed,
            count=options.count,
            model=model.name,
            loras=loras,
            sampler=self._rules.sampler(options.sampler, model, settings),
        )
        self._rules.check(params, settings)
        return params

    async def _from_upload(
        self,
        who: Requester,
        params: JobParams,
        strength: float | None,
        upload: Upload,
        settings: GuildSettings,
        observer: Observer | None,
    ) -> JobRecord:
        """Image-to-image from the member's picture: read once (after every cheaper check), fitted to the
        server's pixel budget in the model's size multiple, and kept with the job."""
        if not settings.uploads_allowed:
            raise NotAllowedHere("Starting from your own picture is switched off on this server.")
        profile = self._rules.models.profile(params.model)
        if profile is not None and not profile.image_to_image:
            raise InvalidRequest(f"{params.model} ({profile.label}) cannot start from an image.")
        check_declared_size(upload.size, self._max_upload_bytes)
        strength = UPLOAD_STRENGTH if strength is None else strength
        # An image-to-image run denoises steps x strength times: keep at least one step.
        params = replace(params, strength=strength, steps=max(params.steps, min_steps(strength)))
        self._rules.check(params, settings)
        limits = self._rules.limits(settings, params.model)
        picture = await asyncio.to_thread(
            prepare_upload,
            await upload.read(),
            max_bytes=self._max_upload_bytes,
            max_pixels=limits.max_pixels,
            multiple=limits.size_multiple,
        )
        params = replace(params, width=picture.size[0], height=picture.size[1])
        self._rules.check(params, settings)
        return await self.submit(who, JobKind.IMG2IMG, params, source_png=picture.png, observer=observer)

    async def submit(
        self,
        who: Requester,
        kind: JobKind,
        params: JobParams,
        *,
        parent: JobRecord | None = None,
        source_png: bytes | None = None,
        observer: Observer | None,
    ) -> JobRecord:
        request = JobRequest(
            guild_id=who.guild_id,
            channel_id=who.channel_id,
            user_id=who.user_id,
            kind=kind,
            params=params,
            parent_id=None if parent is None else parent.id,
            source_png=source_png,
        )
        if self._admit_model is not None:  # a model no GPU offers is refused before it is charged
            self._admit_model(params.model)
        reservation = await self._quotas.reserve(
            who.guild_id, who.user_id, params.count, is_manager=who.is_manager
        )
        # From here the queue owns the reservation: it refunds it if the job is not queued.
        return await self._queue.submit(replace(request, reservation_id=reservation), observer=observer)


def _first(*values: T | None) -> T:
    """The first value that is set (the last one always is)."""
    return next(value for value in values if value is not None)
