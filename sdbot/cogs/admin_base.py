"""What every ``/sdadmin`` subcommand group shares: the permission check, run again when a command runs (a
server can override who sees a command), and the private reply.

Each area of the admin commands is an ``AdminGroup`` in a module of its own; the ``Admin`` cog
(``sdbot.cogs.admin``) adds them under ``/sdadmin``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands

from sdbot.services.settings import SettingsService

if TYPE_CHECKING:
    from sdbot.bot import SDBot


async def check_manager(interaction: discord.Interaction) -> bool:
    if interaction.guild_id is None:
        raise app_commands.NoPrivateMessage()
    if not interaction.permissions.manage_guild:
        raise app_commands.MissingPermissions(["manage_guild"])
    return True


async def reply(interaction: discord.Interaction, text: str) -> None:
    await interaction.response.send_message(
        text, ephemeral=True, allowed_mentions=discord.AllowedMentions.none()
    )


def guild_of(interaction: discord.Interaction) -> int:
    assert interaction.guild_id is not None  # guaranteed by check_manager
    return interaction.guild_id


class AdminGroup(app_commands.Group):
    """A subcommand group of ``/sdadmin``. Its commands are bound to the group, so the ``Admin`` cog's check
    does not run for them: the group runs it itself."""

    def __init__(self, bot: SDBot) -> None:
        super().__init__()
        self.bot = bot

    @property
    def settings(self) -> SettingsService:
        return self.bot.settings_service

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        return await check_manager(interaction)
