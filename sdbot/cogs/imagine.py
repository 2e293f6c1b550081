"""``/imagine`` and the result buttons: parse the interaction, call ``ImagineService``, hand over to delivery.

Every request is acknowledged at once with a private "thinking" state, so a refusal (quota, banned word,
limits) reaches only the member who asked, through the tree's error handler; an accepted job's private message
then shows its queue position and progress, and its result is posted publicly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from sdbot.errors import JobNotFound
from sdbot.params import MAX_COUNT, MAX_GUIDANCE, MAX_PROMPT_LENGTH, MAX_SEED, MAX_STEPS, MIN_GUIDANCE
from sdbot.services.imagine import ImagineOptions, Requester
from sdbot.views.buttons import Action
from sdbot.views.render import find_image

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

    async def cog_load(self) -> None:
        self.bot.job_buttons = self

    async def cog_unload(self) -> None:
        self.bot.job_buttons = None

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
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        options = ImagineOptions(prompt, negative, steps, guidance, seed, size, count, model)
        tracker = self.bot.delivery.track(interaction)
        job = await self.bot.imagine.imagine(requester(interaction), options, observer=tracker)
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

    async def on_job_button(
        self, interaction: discord.Interaction, action: Action, job_id: int, index: int | None
    ) -> None:
        """A result or cancel button was pressed (see ``sdbot.views.buttons``)."""
        who = requester(interaction)
        service = self.bot.imagine
        if action is Action.DELETE:
            await service.may_delete(who, job_id, moderator=interaction.permissions.manage_messages)
            await interaction.response.defer()
            await interaction.delete_original_response()
            return
        if action is Action.CANCEL:
            job = await service.cancel(who, job_id)
            await interaction.response.edit_message(
                content=f"Job {job.id} was cancelled. Nothing was charged.", view=None, attachments=[]
            )
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        tracker = self.bot.delivery.track(interaction, reply_to=interaction.message)
        if action is Action.REROLL:
            job = await service.reroll(who, job_id, observer=tracker)
        else:
            if index is None:
                raise JobNotFound("This button does not say which image it is for.")
            attachments = interaction.message.attachments if interaction.message is not None else []
            attachment = find_image(attachments, job_id, index)

            async def read_source() -> bytes:
                if attachment is None:
                    raise JobNotFound("That image is no longer on this message.")
                try:
                    return await attachment.read()
                except discord.HTTPException:
                    raise JobNotFound(
                        "That image could not be fetched from Discord; please try again."
                    ) from None

            submit = service.upscale if action is Action.UPSCALE else service.variation
            job = await submit(who, job_id, index, read_source, observer=tracker)
        tracker.begin(job)


async def setup(bot: SDBot) -> None:
    await bot.add_cog(Imagine(bot))
