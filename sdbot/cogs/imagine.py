"""``/imagine`` and ``/loras``: parse the interaction, call ``ImagineService`` (``ChoiceOffers`` for
autocomplete and ``/loras``), hand over to delivery. (The buttons under results are ``sdbot.cogs.tools``.)

Every request is acknowledged at once with a private "thinking" state, so a refusal (quota, banned word,
limits, a picture that cannot be used) reaches only the member who asked, through the tree's error handler;
an accepted job's private message then shows its queue position and progress, and its result is posted
publicly. A picture attached to ``image`` is downloaded only after every cheaper check has passed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from sdbot.errors import UploadRejected
from sdbot.params import (
    MAX_COUNT,
    MAX_GUIDANCE,
    MAX_LORA_WEIGHT,
    MAX_PROMPT_LENGTH,
    MAX_SEED,
    MAX_STEPS,
    MIN_GUIDANCE,
    MIN_LORA_WEIGHT,
    MIN_STRENGTH,
)
from sdbot.services.loras import LoraChoice
from sdbot.services.models import ModelChoice
from sdbot.services.requests import ImagineOptions, Requester, Upload
from sdbot.views.render import addons_text

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
        lora="A LoRA for the model (type to search names and trigger words); or write <lora:NAME:WEIGHT>",
        lora_weight="How strongly the LoRA applies, from -2 to 2 (default 1)",
        sampler="The sampler (the model's default if omitted)",
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
        lora: app_commands.Range[str, 1, 200] | None = None,
        lora_weight: app_commands.Range[float, MIN_LORA_WEIGHT, MAX_LORA_WEIGHT] | None = None,
        sampler: app_commands.Range[str, 1, 40] | None = None,
    ) -> None:
        status = await interaction.response.defer(ephemeral=True, thinking=True)
        options = ImagineOptions(
            prompt,
            negative,
            steps,
            guidance,
            seed,
            size,
            count,
            model,
            strength,
            lora=lora,
            lora_weight=lora_weight,
            sampler=sampler,
        )
        upload = None if image is None else Upload(image.size, _reader(image))
        tracker = self.bot.delivery.track(interaction, status_message_id=status_message_id(status))
        job = await self.bot.imagine.imagine(requester(interaction), options, upload=upload, observer=tracker)
        tracker.begin(job)

    @imagine.autocomplete("model")
    async def model_choices(
        self, interaction: discord.Interaction, typed: str
    ) -> list[app_commands.Choice[str]]:
        return _labelled(await self.bot.offers.model_choices(requester(interaction), typed))

    @imagine.autocomplete("size")
    async def size_choices(
        self, interaction: discord.Interaction, typed: str
    ) -> list[app_commands.Choice[str]]:
        model = getattr(interaction.namespace, "model", None)
        sizes = await self.bot.offers.size_choices(requester(interaction), model, typed)
        return [app_commands.Choice(name=size, value=size) for size in sizes]

    @imagine.autocomplete("lora")
    async def lora_choices(
        self, interaction: discord.Interaction, typed: str
    ) -> list[app_commands.Choice[str]]:
        model = getattr(interaction.namespace, "model", None)
        return _labelled(await self.bot.offers.lora_choices(requester(interaction), model, typed))

    @imagine.autocomplete("sampler")
    async def sampler_choices(
        self, interaction: discord.Interaction, typed: str
    ) -> list[app_commands.Choice[str]]:
        model = getattr(interaction.namespace, "model", None)
        samplers = await self.bot.offers.sampler_choices(requester(interaction), model, typed)
        return [app_commands.Choice(name=name, value=name) for name in samplers]

    @app_commands.command(name="loras", description="The LoRAs and embeddings you can use, by model family.")
    @app_commands.guild_only()
    async def loras(self, interaction: discord.Interaction) -> None:
        families = await self.bot.offers.addons(requester(interaction))
        await interaction.response.send_message(addons_text(families), ephemeral=True)


def _labelled(choices: Sequence[ModelChoice | LoraChoice]) -> list[app_commands.Choice[str]]:
    """Autocomplete answers that show a label and send back a name."""
    return [app_commands.Choice(name=choice.label, value=choice.name) for choice in choices]


def _reader(attachment: discord.Attachment) -> Callable[[], Awaitable[bytes]]:
    async def read() -> bytes:
        try:
            return await attachment.read()
        except discord.HTTPException:
            raise UploadRejected("Your picture could not be fetched from Discord; try again.") from None

    return read


def status_message_id(callback: discord.InteractionCallbackResponse | None) -> int | None:
    """The id of the "thinking" message a deferral made: the member's status message."""
    return None if callback is None else callback.message_id


async def setup(bot: SDBot) -> None:
    await bot.add_cog(Imagine(bot))
