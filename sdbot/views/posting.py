"""Posting a done job's images exactly once, whatever Discord does meanwhile.

The images wait in the results folder beside the database (``sdbot.db.results``) until the message that
carries them is recorded (``JobLedger.delivered``, retried until written); then the folder goes. Posting
goes through the interaction's followup while its token works, else as a channel message (a reply to the
clicked message for a button) that mentions the requester.

When Discord fails the post (5xx, a 429 discord.py does not wait out, the network), it is tried again with
backoff (``FIRST_RETRY`` doubling to ``LAST_RETRY`` seconds) for ``Settings.post_retry`` seconds. A 413 (the
files are larger than the server takes) is tried again at once as JPEG. When posting is given up (that time
passed, a 413 as JPEG too, or a refusal that retrying cannot change, such as a deleted channel), the job ends
failed: its images are deleted and its quota refunded, and the caller tells the member.

The bot can stop between a post and its record (a kill -9): a start-up's ``find_posted`` then looks for the
message in the channel before posting again.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import enum
import io
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import NamedTuple

import aiohttp
import discord
from PIL import Image

from sdbot.config import Settings
from sdbot.db import JobRecord, StoredResult
from sdbot.services.ledger import JobLedger
from sdbot.services.models import ModelCatalog
from sdbot.services.settings import SettingsService
from sdbot.views.buttons import button_id, has_button
from sdbot.views.render import ResultMessage, done_text, result_message, tools_for, undelivered_text

log = logging.getLogger(__name__)

FIRST_RETRY = 1.0  # seconds before the second try of a failed post
LAST_RETRY = 60.0  # seconds between tries at most
JPEG_QUALITY = 90
HISTORY_LIMIT = 100  # messages a start-up reads after a job's end to find its result already posted
NETWORK_ERRORS = (aiohttp.ClientError, OSError, asyncio.TimeoutError)


class ImageForm(enum.Enum):
    """How the images are attached: as made, or as JPEG when Discord finds the PNGs too large."""

    PNG = "png"
    JPEG = "jpg"


class Posted(NamedTuple):
    """The outcome of posting a job's images: the message, or why posting was given up (the job is then
    failed and refunded)."""

    message_id: int | None
    failure: str = ""

    def status(self, job: JobRecord) -> str:
        """What the member's status message says about it."""
        if self.message_id is None:
            return undelivered_text(job, self.failure)
        return done_text(job, self.message_id)


class ResultPoster:
    """Posts done jobs' images, records their messages and deletes their files, or gives up on them."""

    def __init__(
        self,
        client: discord.Client,
        ledger: JobLedger,
        settings_service: SettingsService,
        models: ModelCatalog,
        settings: Settings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._ledger = ledger
        self._settings_service = settings_service
        self._models = models
        self._settings = settings
        self._clock = clock

    async def post(
        self,
        job: JobRecord,
        result: StoredResult,
        *,
        followup: discord.Webhook | None = None,
        reply_to: discord.Message | None = None,
    ) -> Posted:
        """Post the images of ``job`` (``result``): through ``followup`` (an interaction's, its token
        still valid) when given, else to the job's channel with a mention (a reply to ``reply_to``, if
        given)."""
        deadline = self._clock() + self._settings.post_retry
        form, delay = ImageForm.PNG, FIRST_RETRY
        while True:
            try:
                message = await self._post_once(job, result, form, followup, reply_to)
                break
            except discord.HTTPException as failure:
                if followup is not None and failure.status != 413:
                    log.info("job %s: followup failed (%s); posting to the channel instead", job.id, failure)
                    followup = None
                    continue
                if failure.status == 413 and form is ImageForm.PNG:
                    log.info("job %s: Discord found the images too large; sending them as JPEG", job.id)
                    form = ImageForm.JPEG
                    continue
                if not _worth_retrying(failure) or self._clock() >= deadline:
                    return await self._give_up(job, _reason(failure))
                log.warning("job %s: could not post its images (%s); trying again", job.id, failure)
            except NETWORK_ERRORS as failure:
                if self._clock() >= deadline:
                    return await self._give_up(job, f"Discord could not be reached ({failure})")
                log.warning("job %s: could not reach Discord (%s); trying again", job.id, failure)
            await asyncio.sleep(delay)
            delay = min(delay * 2, LAST_RETRY)
        await self._ledger.delivered(job.id, message.id)
        return Posted(message.id)

    async def find_posted(self, job: JobRecord) -> int | None:
        """The id of the job's result message if it is in its channel already (posted by a run that stopped
        before recording it), or None. The message is recognised by the job's own Delete button."""
        channel = await self.channel(job.channel_id)
        since = datetime.datetime.fromtimestamp((job.finished_at or job.created_at) - 1, datetime.UTC)
        wanted = button_id(job.id)
        user = self._client.user
        with contextlib.suppress(discord.HTTPException, *NETWORK_ERRORS):
            async for message in channel.history(limit=HISTORY_LIMIT, after=since, oldest_first=True):
                if user is not None and message.author.id == user.id and has_button(message, wanted):
                    return message.id
        return None

    async def channel(self, channel_id: int) -> discord.abc.Messageable:
        channel = self._client.get_channel(channel_id)
        if channel is None:
            with contextlib.suppress(discord.HTTPException, *NETWORK_ERRORS):
                channel = await self._client.fetch_channel(channel_id)
        if isinstance(channel, discord.abc.Messageable):
            return channel
        return self._client.get_partial_messageable(channel_id)

    async def _post_once(
        self,
        job: JobRecord,
        result: StoredResult,
        form: ImageForm,
        followup: discord.Webhook | None,
        reply_to: discord.Message | None,
    ) -> discord.Message:
        channel = await self.channel(job.channel_id)
        if form is ImageForm.JPEG:
            result = await asyncio.to_thread(_as_jpeg, result)
        render = await self._render(job, result, form, channel, mention=followup is None)
        if followup is not None:
            return await followup.send(**render.fields(), wait=True)
        reference = None if reply_to is None else reply_to.to_reference(fail_if_not_exists=False)
        return await channel.send(**render.fields(), reference=reference)

    async def _render(
        self,
        job: JobRecord,
        result: StoredResult,
        form: ImageForm,
        channel: discord.abc.Messageable,
        *,
        mention: bool,
    ) -> ResultMessage:
        guild = await self._settings_service.get(job.guild_id)
        is_nsfw = getattr(channel, "is_nsfw", None)
        profile = self._models.profile(job.params.model or self._models.library.default)
        return result_message(
            job,
            result,
            policy=guild.nsfw_policy,
            unchecked_policy=self._settings.unchecked_policy,
            age_restricted=bool(is_nsfw()) if callable(is_nsfw) else False,
            tools=tools_for(job, guild, profile),
            mention=mention,
            extension=form.value,
        )

    async def _give_up(self, job: JobRecord, reason: str) -> Posted:
        """End the job failed and refunded, its images deleted."""
        log.error("job %s: giving up posting its images: %s", job.id, reason)
        await self._ledger.undeliverable(job.id, f"its images could not be posted: {reason}")
        return Posted(None, reason)


def _worth_retrying(failure: discord.HTTPException) -> bool:
    """Discord's own faults and a rate limit discord.py did not wait out pass; a refusal (a deleted
    channel, a missing permission) does not."""
    return failure.status >= 500 or failure.status == 429


def _reason(failure: discord.HTTPException) -> str:
    if failure.status == 413:
        return "Discord found them too large for this server, even as JPEG"
    return f"Discord answered {failure.status} {failure.text or ''}".strip()


def _as_jpeg(result: StoredResult) -> StoredResult:
    """The images as JPEG (no alpha), about a fifth of the PNG's size for a photo-like image."""
    converted = []
    for image in result.images:
        buffer = io.BytesIO()
        with Image.open(io.BytesIO(image.png)) as decoded:
            decoded.convert("RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY)
        converted.append(replace(image, png=buffer.getvalue()))
    return replace(result, images=converted)

