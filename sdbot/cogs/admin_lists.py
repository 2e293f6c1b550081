"""``/sdadmin channels``, ``/sdadmin banned`` and ``/sdadmin model``: a server's lists (where the bot works,
which words prompts may not hold, which models members may use and the default one)."""

from __future__ import annotations

import discord
from discord import app_commands

from sdbot.cogs.admin_base import AdminGroup, guild_of, reply
from sdbot.services.settings import GuildSettings
from sdbot.views.render import channel_list, short


class ChannelsGroup(AdminGroup, name="channels", description="Where the bot may be used."):
    @app_commands.command(
        name="add", description="Allow the bot in a channel (once any is listed, only there)."
    )
    async def add(self, interaction: discord.Interaction, channel: discord.TextChannel) -> None:
        settings = await self.settings.add(guild_of(interaction), "channels", channel.id)
        await reply(interaction, f"Added {channel.mention}. {_channels_text(settings)}")

    @app_commands.command(name="remove", description="Stop allowing the bot in a channel.")
    async def remove(self, interaction: discord.Interaction, channel: discord.TextChannel) -> None:
        settings = await self.settings.remove(guild_of(interaction), "channels", channel.id)
        await reply(interaction, f"Removed {channel.mention}. {_channels_text(settings)}")


class BannedGroup(AdminGroup, name="banned", description="Words and phrases prompts may not contain."):
    @app_commands.command(
        name="add", description="Ban a word or phrase from prompts (whole words, any case)."
    )
    async def add(self, interaction: discord.Interaction, word: app_commands.Range[str, 1, 100]) -> None:
        settings = await self.settings.add(guild_of(interaction), "banned_words", word)
        await reply(interaction, f"Banned. {len(settings.banned_words)} banned word(s) now.")

    @app_commands.command(name="remove", description="Allow a banned word or phrase again.")
    async def remove(self, interaction: discord.Interaction, word: app_commands.Range[str, 1, 100]) -> None:
        settings = await self.settings.remove(guild_of(interaction), "banned_words", word)
        await reply(interaction, f"Removed. {len(settings.banned_words)} banned word(s) now.")

    @app_commands.command(name="list", description="List the banned words and phrases.")
    async def list_words(self, interaction: discord.Interaction) -> None:
        words = sorted((await self.settings.get(guild_of(interaction))).banned_words)
        if not words:
            await reply(interaction, "No words are banned.")
            return
        text = ", ".join(f"`{short(word, 100)}`" for word in words)
        if len(text) > 1900:
            text = text[:1900].rsplit(", ", 1)[0] + ", …"
        await reply(interaction, f"{len(words)} banned: {text}")


class ModelsGroup(AdminGroup, name="model", description="Which models members may use, and the default."):
    @app_commands.command(name="default", description="The model members get when they name none.")
    @app_commands.describe(model="A model of the library (omit it to use the library's default)")
    async def default(
        self, interaction: discord.Interaction, model: app_commands.Range[str, 1, 100] | None = None
    ) -> None:
        settings = await self.settings.set(guild_of(interaction), "default_model", model)
        await reply(interaction, _models_text(self, settings))

    @app_commands.command(
        name="allow", description="Let members use a model (once any is listed, only those)."
    )
    async def allow(self, interaction: discord.Interaction, model: app_commands.Range[str, 1, 100]) -> None:
        settings = await self.settings.add(guild_of(interaction), "models", model)
        await reply(interaction, _models_text(self, settings))

    @app_commands.command(name="disallow", description="Stop members from using a model.")
    async def disallow(
        self, interaction: discord.Interaction, model: app_commands.Range[str, 1, 100]
    ) -> None:
        settings = await self.settings.remove(guild_of(interaction), "models", model)
        await reply(interaction, _models_text(self, settings))

    @app_commands.command(name="list", description="The library's models and which are allowed here.")
    async def list_models(self, interaction: discord.Interaction) -> None:
        await reply(interaction, _models_text(self, await self.settings.get(guild_of(interaction))))

    @default.autocomplete("model")
    @allow.autocomplete("model")
    @disallow.autocomplete("model")
    async def model_names(
        self, interaction: discord.Interaction, typed: str
    ) -> list[app_commands.Choice[str]]:
        names = self.bot.rules.models.library.names
        found = [name for name in names if typed.strip().lower() in name.lower()][:25]
        return [app_commands.Choice(name=name, value=name) for name in found]


def _channels_text(settings: GuildSettings) -> str:
    if not settings.channels:
        return "The bot may now be used in every channel."
    return f"Allowed channels: {channel_list(settings.channels)}."


def _models_text(group: ModelsGroup, settings: GuildSettings) -> str:
    models = group.bot.rules.models
    default = models.default_for(settings).name
    lines = [f"Default model: **{default}**" + ("" if settings.default_model else " (the library's)")]
    for model in models.library.models:
        allowed = "allowed" if settings.model_allowed(model.name) else "not allowed"
        about = f": {short(model.description, 80)}" if model.description else ""
        lines.append(f"• **{model.name}**{about} ({allowed})")
    if not settings.models:
        lines.append("Every model is allowed (`/sdadmin model allow` limits members to the ones listed).")
    return "\n".join(lines[:40])
