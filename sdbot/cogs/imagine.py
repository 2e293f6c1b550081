"""``/imagine``: parse the interaction, call ``ImagineService``, hand over to delivery. (The buttons under
results are ``sdbot.cogs.tools``.)

Every request is acknowledged at once with a private "thinking" state, so a refusal (quota, banned word,
limits, a picture that cannot be used) reaches only the member who asked, through the tree's error handler;
an accepted job's private message then shows its queue position and progress, and its result is posted
publicly. A picture attached to ``image`` is downloaded only after every cheaper check has passed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from sdbot.errors import UploadRejected
from sdbot.params import (
    MAX_COUNT,
    MAX_GUIDANCE,
    MAX_PROMPT_LENGTH,
    MAX_SEED,
    MAX_STEPS,
    MIN_GUIDANCE,
    MIN_STRENGTH,
)
from sdbot.services.imagine import ImagineOptions, Requester, Upload

if TYPE_CHECKING:
    from sdbot.bot import SDBot


def requester(interaction: discord.Interaction) -> Requester:
    """Who is asking, where; slash commands and buttons of this bot only run in servers."""
    if interaction.guild_id is None or interaction.channel_id is None:
        raise app_commands.NoPrivateMessage()
    return Requester(
        guild_id=interaction.guild_id,
        channel_id=interaction.channel_id,
        user_id=interaction.user.id,
        is_manager=interaction.permissions.manage_guild,
    )


class Imagine(commands.Cog):
    """Image generation for members."""

    def __init__(self, bot: SDBot) -> None:
        self.bot = bot

    @app_commands.command(name="imagine", description="Generate images from a text prompt.")
    @app_commands.guild_only()
    @app_commands.describe(
        prompt="What to draw",
        negative="What to keep out of the image",
        steps="Denoising steps: more is slower and often finer (the server sets the default and the maximum)",
        guidance="How closely to follow the prompt (default 7.5)",
        seed="Start from this seed to repeat an image (random if omitted)",
        size="Width x height in pixels (the model's sizes are offered)",
        count="How many images",
        model="Which model draws it (the server's default if omitted)",
        image="Start from your own picture (PNG, JPEG or WebP); the size follows the picture",
        strength="With an image: how far to move from it, 0.05 (barely) to 1 (freely); default 0.6",
    )
    async def imagine(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, MAX_PROMPT_LENGTH],
        negative: app_commands.Range[str, 1, MAX_PROMPT_LENGTH] | None = None,
        steps: app_commands.Range[int, 1, MAX_STEPS] | None = None,
        guidance: app_commands.Range[float, MIN_GUIDANCE, MAX_GUIDANCE] | None = None,
        seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
        size: app_commands.Range[str, 1, 20] | None = None,
        count: app_commands.Range[int, 1, MAX_COUNT] = 1,
        model: app_commands.Range[str, 1, 100] | None = None,
        image: discord.Attachment | None = None,
        strength: app_commands.Range[float, MIN_STRENGTH, 1.0] | None = None,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        options = ImagineOptions(prompt, negative, steps, guidance, seed, size, count, model, strength)
        upload = None if image is None else Upload(image.size, _reader(image))
        tracker = self.bot.delivery.track(interaction)
        job = await self.bot.imagine.imagine(requester(interaction), options, upload=upload, observer=tracker)
        tracker.begin(job)

    @imagine.autocomplete("model")
    async def model_choices(
        self, interaction: discord.Interaction, typed: str
    ) -> list[app_commands.Choice[str]]:
        choices = await self.bot.imagine.model_choices(requester(interaction), typed)
        return [app_commands.Choice(name=choice.label, value=choice.name) for choice in choices]

    @imagine.autocomplete("size")
    async def size_choices(
        self, interaction: discord.Interaction, typed: str
    ) -> list[app_commands.Choice[str]]:
        model = getattr(interaction.namespace, "model", None)
        sizes = await self.bot.imagine.size_choices(requester(interaction), model, typed)
        return [app_commands.Choice(name=size, value=size) for size in sizes]


def _reader(attachment: discord.Attachment) -> Callable[[], Awaitable[bytes]]:
    async def read() -> bytes:
        try:
            return await attachment.read()
        except discord.HTTPException:
            raise UploadRejected("Your picture could not be fetched from Discord; try again.") from None

    return read


async def setup(bot: SDBot) -> None:
    await bot.add_cog(Imagine(bot))
