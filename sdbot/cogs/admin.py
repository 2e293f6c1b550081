"""``/sdadmin``: a server's rules for the bot, for members with Manage Server.

Discord hides the group from everyone else (``default_permissions``), and every subcommand checks the
permission again when it runs, since a server can override who sees a command. Each change answers,
privately, with the new value; invalid values are refused by ``SettingsService`` with a message naming what
is allowed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from sdbot.config import NSFW_POLICIES
from sdbot.services.imagine import parse_size
from sdbot.services.settings import (
    COUNT_RANGE,
    QUEUE_LIMIT_RANGE,
    QUOTA_RANGE,
    STEPS_RANGE,
    GuildSettings,
    MemberOverride,
    SettingsService,
)
from sdbot.views.render import channel_list, short

if TYPE_CHECKING:
    from sdbot.bot import SDBot

MAX_SIZE_CHOICES = ("512x512", "640x640", "768x768", "896x896", "1024x1024")
POLICY_HELP = {
    "block": "flagged images are withheld",
    "spoiler": "flagged images are posted as spoilers",
    "allow": "flagged images are posted plainly in age-restricted channels, as spoilers elsewhere",
}


def settings_text(settings: GuildSettings) -> str:
    channels = channel_list(settings.channels) if settings.channels else "every channel"
    exempt = " (members with Manage Server are exempt)" if settings.managers_exempt else ""
    return "\n".join(
        [
            f"NSFW policy: **{settings.nsfw_policy}** ({POLICY_HELP[settings.nsfw_policy]})",
            f"Daily quota: **{settings.daily_quota}** images per member{exempt}",
            f"Steps: default **{settings.default_steps}**, max **{settings.max_steps}**",
            f"Images per request: at most **{settings.max_count}**",
            f"Largest image: **{settings.max_pixels:,}** pixels",
            f"Queued jobs per member: **{settings.user_queue_limit}**",
            f"Upscaling: **{'on' if settings.upscale_allowed else 'off'}**",
            f"Channels: {channels}",
            f"Banned words: **{len(settings.banned_words)}** (`/sdadmin banned list`)",
        ]
    )


def member_text(member: discord.abc.User, override: MemberOverride) -> str:
    quota = "the server's" if override.quota is None else f"**{override.quota}** images a day"
    blocked = "**blocked**" if override.blocked else "not blocked"
    return f"{member.mention}: quota {quota}, {blocked}."


async def _reply(interaction: discord.Interaction, text: str) -> None:
    await interaction.response.send_message(
        text, ephemeral=True, allowed_mentions=discord.AllowedMentions.none()
    )


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class Admin(
    commands.GroupCog, group_name="sdadmin", group_description="Set this server's rules for the bot."
):
    """Server settings, member rules and statistics."""

    channels = app_commands.Group(name="channels", description="Where the bot may be used.")
    banned = app_commands.Group(name="banned", description="Words and phrases prompts may not contain.")
    user = app_commands.Group(name="user", description="One member's quota, block and data.")

    def __init__(self, bot: SDBot) -> None:
        self.bot = bot
        super().__init__()

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        if interaction.guild_id is None:
            raise app_commands.NoPrivateMessage()
        if not interaction.permissions.manage_guild:
            raise app_commands.MissingPermissions(["manage_guild"])
        return True

    @property
    def _settings(self) -> SettingsService:
        return self.bot.settings_service

    @app_commands.command(name="show", description="Show this server's settings.")
    async def show(self, interaction: discord.Interaction) -> None:
        await _reply(interaction, settings_text(await self._settings.get(_guild(interaction))))

    @app_commands.command(name="nsfw", description="What to do with images the safety checker flags.")
    @app_commands.describe(policy="block: withhold; spoiler: blur; allow: plain in age-restricted channels")
    @app_commands.choices(policy=[app_commands.Choice(name=p, value=p) for p in NSFW_POLICIES])
    async def nsfw(self, interaction: discord.Interaction, policy: str) -> None:
        settings = await self._settings.set_nsfw_policy(_guild(interaction), policy)
        await _reply(
            interaction,
            f"NSFW policy is now **{settings.nsfw_policy}**: {POLICY_HELP[settings.nsfw_policy]}.",
        )

    @app_commands.command(name="quota", description="Images each member may generate per 24 hours.")
    @app_commands.describe(images="0 switches generation off for members")
    async def quota(
        self,
        interaction: discord.Interaction,
        images: app_commands.Range[int, QUOTA_RANGE[0], QUOTA_RANGE[1]],
    ) -> None:
        settings = await self._settings.set_daily_quota(_guild(interaction), images)
        await _reply(interaction, f"Daily quota is now **{settings.daily_quota}** images per member.")

    @app_commands.command(name="steps", description="Default and maximum denoising steps.")
    @app_commands.describe(
        default="Steps when a member gives none", maximum="Most steps a member may ask for"
    )
    async def steps(
        self,
        interaction: discord.Interaction,
        default: app_commands.Range[int, STEPS_RANGE[0], STEPS_RANGE[1]] | None = None,
        maximum: app_commands.Range[int, STEPS_RANGE[0], STEPS_RANGE[1]] | None = None,
    ) -> None:
        guild = _guild(interaction)
        settings = await self._settings.get(guild)
        # Apply in the order that keeps default <= max at every moment.
        if default is not None and maximum is not None and default > settings.max_steps:
            settings = await self._settings.set_max_steps(guild, maximum)
            maximum = None
        if default is not None:
            settings = await self._settings.set_default_steps(guild, default)
        if maximum is not None:
            settings = await self._settings.set_max_steps(guild, maximum)
        await _reply(
            interaction, f"Steps: default **{settings.default_steps}**, max **{settings.max_steps}**."
        )

    @app_commands.command(name="count", description="Most images per /imagine.")
    async def count(
        self,
        interaction: discord.Interaction,
        images: app_commands.Range[int, COUNT_RANGE[0], COUNT_RANGE[1]],
    ) -> None:
        settings = await self._settings.set_max_count(_guild(interaction), images)
        await _reply(interaction, f"Members may now ask for at most **{settings.max_count}** images at once.")

    @app_commands.command(name="queue-limit", description="Most jobs one member may have waiting.")
    async def queue_limit(
        self,
        interaction: discord.Interaction,
        jobs: app_commands.Range[int, QUEUE_LIMIT_RANGE[0], QUEUE_LIMIT_RANGE[1]],
    ) -> None:
        settings = await self._settings.set_user_queue_limit(_guild(interaction), jobs)
        await _reply(interaction, f"Members may now have **{settings.user_queue_limit}** job(s) waiting.")

    @app_commands.command(name="max-size", description="The largest image members may ask for.")
    @app_commands.describe(size="Width x height; sizes with more pixels than this are refused")
    @app_commands.choices(size=[app_commands.Choice(name=size, value=size) for size in MAX_SIZE_CHOICES])
    async def max_size(self, interaction: discord.Interaction, size: str) -> None:
        width, height = parse_size(size)
        settings = await self._settings.set_max_pixels(_guild(interaction), width * height)
        await _reply(interaction, f"The largest image is now **{settings.max_pixels:,}** pixels ({size}).")

    @app_commands.command(name="managers-exempt", description="Whether Manage Server members skip the quota.")
    async def managers_exempt(self, interaction: discord.Interaction, exempt: bool) -> None:
        settings = await self._settings.set_managers_exempt(_guild(interaction), exempt)
        state = "have no daily quota" if settings.managers_exempt else "have the same quota as everyone"
        await _reply(interaction, f"Members with Manage Server now {state}.")

    @app_commands.command(name="upscale", description="Allow or forbid the Upscale buttons.")
    async def upscale(self, interaction: discord.Interaction, allowed: bool) -> None:
        settings = await self._settings.set_upscale_allowed(_guild(interaction), allowed)
        await _reply(interaction, f"Upscaling is now **{'on' if settings.upscale_allowed else 'off'}**.")

    @app_commands.command(name="stats", description="Images in the last 24 hours, top members and the queue.")
    async def stats(self, interaction: discord.Interaction) -> None:
        stats = await self.bot.imagine.stats(_guild(interaction))
        done = stats.done
        speed = "n/a" if done.seconds_per_image is None else f"{done.seconds_per_image:.1f} s"
        lines = [
            f"Last 24 hours: **{done.images}** images in {done.jobs} job(s), {speed} per image.",
            f"Queue now: {stats.waiting} waiting, {stats.running} running.",
        ]
        if done.top_users:
            top = ", ".join(f"<@{user}> ({images})" for user, images in done.top_users)
            lines.append(f"Top members: {top}")
        await _reply(interaction, "\n".join(lines))

    # ----- channels

    @channels.command(name="add", description="Allow the bot in a channel (once any is listed, only there).")
    async def channels_add(self, interaction: discord.Interaction, channel: discord.TextChannel) -> None:
        settings = await self._settings.add_channel(_guild(interaction), channel.id)
        await _reply(interaction, f"Added {channel.mention}. {_channels_text(settings)}")

    @channels.command(name="remove", description="Stop allowing the bot in a channel.")
    async def channels_remove(self, interaction: discord.Interaction, channel: discord.TextChannel) -> None:
        settings = await self._settings.remove_channel(_guild(interaction), channel.id)
        await _reply(interaction, f"Removed {channel.mention}. {_channels_text(settings)}")

    # ----- banned words

    @banned.command(name="add", description="Ban a word or phrase from prompts (whole words, any case).")
    async def banned_add(
        self, interaction: discord.Interaction, word: app_commands.Range[str, 1, 100]
    ) -> None:
        settings = await self._settings.add_banned_word(_guild(interaction), word)
        await _reply(interaction, f"Banned. {len(settings.banned_words)} banned word(s) now.")

    @banned.command(name="remove", description="Allow a banned word or phrase again.")
    async def banned_remove(
        self, interaction: discord.Interaction, word: app_commands.Range[str, 1, 100]
    ) -> None:
        settings = await self._settings.remove_banned_word(_guild(interaction), word)
        await _reply(interaction, f"Removed. {len(settings.banned_words)} banned word(s) now.")

    @banned.command(name="list", description="List the banned words and phrases.")
    async def banned_list(self, interaction: discord.Interaction) -> None:
        words = sorted((await self._settings.get(_guild(interaction))).banned_words)
        if not words:
            await _reply(interaction, "No words are banned.")
            return
        text = ", ".join(f"`{short(word, 100)}`" for word in words)
        if len(text) > 1900:
            text = text[:1900].rsplit(", ", 1)[0] + ", …"
        await _reply(interaction, f"{len(words)} banned: {text}")

    # ----- one member

    @user.command(name="quota", description="Give a member their own daily quota (omit images to reset).")
    async def user_quota(
        self,
        interaction: discord.Interaction,
        member: discord.Member,
        images: app_commands.Range[int, QUOTA_RANGE[0], QUOTA_RANGE[1]] | None = None,
    ) -> None:
        override = await self._settings.set_member_quota(_guild(interaction), member.id, images)
        await _reply(interaction, member_text(member, override))

    @user.command(name="block", description="Stop a member from generating images here.")
    async def user_block(self, interaction: discord.Interaction, member: discord.Member) -> None:
        await _reply(
            interaction, member_text(member, await self._settings.block(_guild(interaction), member.id))
        )

    @user.command(name="unblock", description="Let a blocked member generate images again.")
    async def user_unblock(self, interaction: discord.Interaction, member: discord.Member) -> None:
        override = await self._settings.unblock(_guild(interaction), member.id)
        await _reply(interaction, member_text(member, override))

    @user.command(
        name="forget", description="Delete what the bot holds about a member here (jobs, quota, rules)."
    )
    async def user_forget(self, interaction: discord.Interaction, member: discord.Member) -> None:
        forgotten = await self.bot.imagine.forget(_guild(interaction), member.id)
        await _reply(
            interaction,
            f"Forgot {member.mention}: {forgotten.jobs} job(s), {forgotten.usage} quota record(s), "
            f"{forgotten.overrides} rule(s) deleted.",
        )


def _guild(interaction: discord.Interaction) -> int:
    assert interaction.guild_id is not None  # guaranteed by interaction_check
    return interaction.guild_id


def _channels_text(settings: GuildSettings) -> str:
    if not settings.channels:
        return "The bot may now be used in every channel."
    return f"Allowed channels: {channel_list(settings.channels)}."


async def setup(bot: SDBot) -> None:
    await bot.add_cog(Admin(bot))
