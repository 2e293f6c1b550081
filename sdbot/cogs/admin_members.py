"""``/sdadmin user``: one member's quota, block and data."""

from __future__ import annotations

import discord
from discord import app_commands

from sdbot.cogs.admin_base import AdminGroup, guild_of, reply
from sdbot.services.settings import MemberOverride
from sdbot.services.settings_schema import QUOTA_RANGE


class UserGroup(AdminGroup, name="user", description="One member's quota, block and data."):
    @app_commands.command(
        name="quota", description="Give a member their own daily quota (omit images to reset)."
    )
    async def quota(
        self,
        interaction: discord.Interaction,
        member: discord.Member,
        images: app_commands.Range[int, QUOTA_RANGE[0], QUOTA_RANGE[1]] | None = None,
    ) -> None:
        override = await self.settings.set_member_quota(guild_of(interaction), member.id, images)
        await reply(interaction, member_text(member, override))

    @app_commands.command(name="block", description="Stop a member from generating images here.")
    async def block(self, interaction: discord.Interaction, member: discord.Member) -> None:
        override = await self.settings.set_blocked(guild_of(interaction), member.id, True)
        await reply(interaction, member_text(member, override))

    @app_commands.command(name="unblock", description="Let a blocked member generate images again.")
    async def unblock(self, interaction: discord.Interaction, member: discord.Member) -> None:
        override = await self.settings.set_blocked(guild_of(interaction), member.id, False)
        await reply(interaction, member_text(member, override))

    @app_commands.command(
        name="forget", description="Delete what the bot holds about a member here (jobs, quota, rules)."
    )
    async def forget(self, interaction: discord.Interaction, member: discord.Member) -> None:
        forgotten = await self.bot.records.forget(guild_of(interaction), member.id)
        await reply(
            interaction,
            f"Forgot {member.mention}: {forgotten.jobs} job(s), {forgotten.usage} quota record(s), "
            f"{forgotten.overrides} rule(s) deleted.",
        )


def member_text(member: discord.abc.User, override: MemberOverride) -> str:
    quota = "the server's" if override.quota is None else f"**{override.quota}** images a day"
    blocked = "**blocked**" if override.blocked else "not blocked"
    return f"{member.mention}: quota {quota}, {blocked}."
