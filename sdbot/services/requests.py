"""A member's request as the services receive it (who asks and where, the options they typed, their picture,
the message a button sits on), and the server's rules that every request meets, whether it makes a new job
(``sdbot.services.imagine``), works on a result's image (``sdbot.services.edits``) or acts on a job.

The rules: new jobs are taken (they are paused while the bot cannot save its work), the member is not
blocked, the channel is allowed (``RequestRules.admit``, which depends only on who asks and where); a button
names a job of this server, read back from the database so buttons work after a restart
(``RequestRules.parent``); the prompt has no banned word, and steps, guidance, seed, size and count are
within the engine's range and the server's limits narrowed by the model's family (``RequestRules.check``).
Every refusal is a domain error whose text the command tree shows to the member.

Nothing here knows about Discord: the cogs pass plain ids and bytes.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sdbot.db import Database, JobRecord
from sdbot.errors import (
    ChannelNotAllowed,
    InvalidRequest,
    JobNotFound,
    JobsPaused,
    NotAllowedHere,
    PromptRejected,
)
from sdbot.inference.families import FamilyProfile, model_limits
from sdbot.library import ModelEntry
from sdbot.params import JobParams, JobState, Limits, check_params, shown
from sdbot.services.jobs import JobQueue
from sdbot.services.loras import LoraCatalog
from sdbot.services.models import ModelCatalog
from sdbot.services.settings import GuildSettings, SettingsService, banned_word_in

DEFAULT_PIXEL_BUDGET = 768 * 768  # a server's largest image, unless it set one or the model needs more
_SIZE = re.compile(r"\s*([0-9]{1,5})\s*[x×]\s*([0-9]{1,5})\s*", re.IGNORECASE)
MAX_JOB_ID = 2**63 - 1  # SQLite's largest id; a larger one (a forged button, a raw option) names no job


@dataclass(frozen=True)
class Upload:
    """A member's picture: the size Discord declares for it, and ``read``, which downloads it (raising a
    domain error when it cannot)."""

    size: int
    read: Callable[[], Awaitable[bytes]]


@dataclass(frozen=True)
class MessageFacts:
    """What Discord says about the message a button sits on: its id, and the member whose interaction made
    it (None: the bot posted it in the channel)."""

    id: int
    made_for: int | None = None


@dataclass(frozen=True)
class Requester:
    """Who asks, and where. ``is_manager``: Manage Server (quota exemption, cancelling others' jobs)."""

    guild_id: int
    channel_id: int
    user_id: int
    is_manager: bool = False


@dataclass(frozen=True)
class ImagineOptions:
    """``/imagine``'s options as typed; None means "the server's default"."""

    prompt: str
    negative: str | None = None
    steps: int | None = None
    guidance: float | None = None
    seed: int | None = None
    size: str | None = None
    count: int = 1
    model: str | None = None
    strength: float | None = None  # with an uploaded picture: how far to move from it
    lora: str | None = None
    lora_weight: float | None = None
    sampler: str | None = None


def parse_size(size: str) -> tuple[int, int]:
    """``"768x512"`` -> (768, 512); raises ``InvalidRequest`` for anything else."""
    match = _SIZE.fullmatch(size) if isinstance(size, str) else None
    if match is None:
        raise InvalidRequest(f"Size {shown(size)} is not WIDTHxHEIGHT, such as 512x768.")
    return int(match[1]), int(match[2])


def pixel_budget(settings: GuildSettings, profile: FamilyProfile | None) -> int:
    """The most pixels a job of this server may have: the server's own limit where it set one, else enough
    for the model's family's sizes (SDXL's 1024x1024) and at least ``DEFAULT_PIXEL_BUDGET``."""
    if settings.max_pixels is not None:
        return settings.max_pixels
    family = max((width * height for width, height in profile.size_presets), default=0) if profile else 0
    return max(DEFAULT_PIXEL_BUDGET, family)


class RequestRules:
    """The server's rules for any request: who may ask where, which job a button may act on, and what a
    job's parameters may be (the model, its sampler, the limits and banned words)."""

    def __init__(
        self,
        db: Database,
        settings: SettingsService,
        queue: JobQueue,
        models: ModelCatalog,
        loras: LoraCatalog,
    ) -> None:
        self._db = db
        self._settings = settings
        self._queue = queue
        self.models = models
        self.loras = loras

    async def admit(self, who: Requester) -> GuildSettings:
        """The checks that depend on who asks and where, not on what they asked for."""
        if self._queue.paused is not None:
            raise JobsPaused(self._queue.paused)
        if (await self._settings.member(who.guild_id, who.user_id)).blocked:
            raise NotAllowedHere("You are blocked from generating images on this server.")
        settings = await self._settings.get(who.guild_id)
        if not settings.channel_allowed(who.channel_id):
            raise ChannelNotAllowed(settings.channels)
        return settings

    async def parent(self, who: Requester, job_id: int, index: int | None = None) -> JobRecord:
        """A job of this server a button may act on; with ``index``, one of its images must exist."""
        job = await self.job(job_id)
        if job is None or job.guild_id != who.guild_id:
            raise JobNotFound("That job no longer exists (its data may have been deleted).")
        if index is not None and (job.state is not JobState.DONE or not 0 <= index < job.image_count):
            raise JobNotFound("That image no longer exists.")
        return job

    async def job(self, job_id: int) -> JobRecord | None:
        """The stored job ``job_id`` names, in any server (None: none, or an id no job can have)."""
        return await self._db.jobs.get(job_id) if 0 < job_id <= MAX_JOB_ID else None

    def model_of(self, parent: JobRecord, settings: GuildSettings) -> str:
        """The model a job made from ``parent`` runs: the parent's, if it is still offered here."""
        return self.models.resolve(parent.params.model or None, settings).name

    def chosen_model(self, name: str | None, settings: GuildSettings) -> ModelEntry:
        """For autocomplete: the model named so far, else the server's default."""
        try:
            return self.models.resolve(name, settings)
        except InvalidRequest:
            return self.models.default_for(settings)

    def sampler(self, chosen: str | None, model: ModelEntry, settings: GuildSettings) -> str | None:
        """The sampler a request gets: the member's, else the server's default, else the library's for the
        model (each only where the model can use it), else None: the model's own scheduler."""
        if chosen is None:
            return self.default_sampler(model, settings)
        info = self.models.info(model.name)
        if info is None:
            return chosen.strip()  # the engine checks it
        offered = {name.casefold(): name for name in info.samplers}
        if chosen.strip().casefold() not in offered:
            others = ", ".join(info.samplers) if info.samplers else f"none but its own ({info.own_sampler})"
            raise InvalidRequest(
                f"{model.name} ({info.profile.label}) cannot use {chosen!r}; its samplers: {others}."
            )
        return offered[chosen.strip().casefold()]

    def default_sampler(self, model: ModelEntry, settings: GuildSettings) -> str | None:
        info = self.models.info(model.name)
        offered = () if info is None else info.samplers
        return next((name for name in (settings.default_sampler, model.sampler) if name in offered), None)

    def limits(self, settings: GuildSettings, model: str) -> Limits:
        """The server's limits narrowed by the model's family (once the engine has told it)."""
        profile = self.models.profile(model)
        limits = Limits(
            max_steps=settings.max_steps,
            max_count=settings.max_count,
            max_pixels=pixel_budget(settings, profile),
            max_loras=self.loras.max_loras,
            owner="this server",
        )
        return limits if profile is None else model_limits(profile, limits, model)

    def check(self, params: JobParams, settings: GuildSettings, limits: Limits | None = None) -> None:
        """The server's limits for the model (``limits``: other than its usual ones) and its banned words."""
        check_params(params, self.limits(settings, params.model) if limits is None else limits)
        word = banned_word_in(params.prompt, settings)
        if word is not None:
            raise PromptRejected(f'"{word}" is banned on this server')
        profile = self.models.profile(params.model)
        # LoRAs the request keeps from an earlier job must still be here and allowed
        self.loras.check(params.loras, None if profile is None else profile.family.value, settings)
        window = self.models.window(params.model)
        if window is not None:
            window.check("prompt", params.prompt)
            window.check("negative prompt", params.negative_prompt)
