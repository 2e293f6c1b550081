"""``/sdadmin lora`` and ``/sdadmin sampler``: whether members may use LoRAs and which, and the sampler a
request gets when it names none."""

from __future__ import annotations

import discord
from discord import app_commands

from sdbot.cogs.admin_base import AdminGroup, guild_of, reply
from sdbot.inference.samplers import ALL_SAMPLERS
from sdbot.services.settings import GuildSettings
from sdbot.views.render import short

MAX_CHOICES = 25
MAX_LISTED = 30


class LorasGroup(AdminGroup, name="lora", description="Whether members may use LoRAs, and which."):
    @app_commands.command(name="enabled", description="Switch LoRAs on or off on this server.")
    async def enabled(self, interaction: discord.Interaction, enabled: bool) -> None:
        settings = await self.settings.set(guild_of(interaction), "loras_enabled", enabled)
        await reply(interaction, loras_text(settings))

    @app_commands.command(
        name="allow", description="Let members use a LoRA (once any is listed, only those)."
    )
    @app_commands.describe(lora="A LoRA of the LoRA folder")
    async def allow(self, interaction: discord.Interaction, lora: app_commands.Range[str, 1, 200]) -> None:
        settings = await self.settings.add(guild_of(interaction), "loras", lora)
        await reply(interaction, loras_text(settings))

    @app_commands.command(name="disallow", description="Take a LoRA off the list of allowed ones.")
    async def disallow(self, interaction: discord.Interaction, lora: app_commands.Range[str, 1, 200]) -> None:
        settings = await self.settings.remove(guild_of(interaction), "loras", lora)
        await reply(interaction, loras_text(settings))

    @app_commands.command(name="list", description="Whether LoRAs are on, and which are allowed.")
    async def list_loras(self, interaction: discord.Interaction) -> None:
        await reply(interaction, loras_text(await self.settings.get(guild_of(interaction))))

    @allow.autocomplete("lora")
    @disallow.autocomplete("lora")
    async def lora_names(
        self, interaction: discord.Interaction, typed: str
    ) -> list[app_commands.Choice[str]]:
        needle = typed.strip().casefold()
        names = [name for name in self.bot.rules.loras.loras.addons() if needle in name.casefold()]
        return [app_commands.Choice(name=name, value=name) for name in names[:MAX_CHOICES]]


class SamplerGroup(AdminGroup, name="sampler", description="The sampler members get when they name none."):
    @app_commands.command(name="default", description="The sampler for every model that can use it.")
    @app_commands.describe(sampler="Omit it to give each model its own default again")
    async def default(
        self, interaction: discord.Interaction, sampler: app_commands.Range[str, 1, 40] | None = None
    ) -> None:
        settings = await self.settings.set(guild_of(interaction), "default_sampler", sampler)
        await reply(interaction, f"Default sampler: {sampler_text(settings)}.")

    @default.autocomplete("sampler")
    async def sampler_names(
        self, interaction: discord.Interaction, typed: str
    ) -> list[app_commands.Choice[str]]:
        names = dict.fromkeys(sampler.name for sampler in ALL_SAMPLERS)
        found = [name for name in names if typed.strip().casefold() in name.casefold()]
        return [app_commands.Choice(name=name, value=name) for name in found[:MAX_CHOICES]]


def loras_text(settings: GuildSettings) -> str:
    if not settings.loras_enabled:
        return "LoRAs are **off** on this server (`/sdadmin lora enabled` switches them on)."
    if not settings.loras:
        return (
            "LoRAs are **on**: members may use every LoRA of the folder (`/sdadmin lora allow` limits them)."
        )
    names = sorted(settings.loras)
    shown = ", ".join(short(name, 60) for name in names[:MAX_LISTED])
    more = f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else ""
    return f"LoRAs are **on**, limited to: {shown}{more}."


def sampler_text(settings: GuildSettings) -> str:
    if settings.default_sampler is None:
        return "**each model's own**"
    return f"**{settings.default_sampler}** (for the models that can use it; others keep their own)"
