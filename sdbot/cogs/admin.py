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

from sdbot.cogs.admin_base import check_manager, guild_of, reply
from sdbot.cogs.admin_lists import BannedGroup, ChannelsGroup, ModelsGroup
from sdbot.cogs.admin_loras import LorasGroup, SamplerGroup, loras_text, sampler_text
from sdbot.cogs.admin_members import UserGroup
from sdbot.config import NSFW_POLICIES
from sdbot.services.dispatch import EngineView
from sdbot.services.requests import DEFAULT_PIXEL_BUDGET, parse_size
from sdbot.services.settings import GuildSettings, SettingsService
from sdbot.services.settings_schema import COUNT_RANGE, QUEUE_LIMIT_RANGE, QUOTA_RANGE, STEPS_RANGE
from sdbot.views.render import channel_list, relative_time, short

if TYPE_CHECKING:
    from sdbot.bot import SDBot

MAX_WORKERS_SHOWN = 12  # a line each, ~150 characters: well within a message's 2,000
MODEL_SIZES = "each model's sizes"
MAX_SIZE_CHOICES = (
    MODEL_SIZES,
    "512x512",
    "640x640",
    "768x768",
    "896x896",
    "1024x1024",
    "1536x1536",
    "2048x2048",
)
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
            f"Steps: {_steps_text(settings)}",
            f"Images per request: at most **{settings.max_count}**",
            f"Largest image: {_pixels_text(settings)}",
            f"Queued jobs per member: **{settings.user_queue_limit}**",
            f"Upscaling: **{'on' if settings.upscale_allowed else 'off'}**",
            f"Starting from members' own pictures: **{'on' if settings.uploads_allowed else 'off'}**",
            f"Channels: {channels}",
            f"Banned words: **{len(settings.banned_words)}** (`/sdadmin banned list`)",
            loras_text(settings),
            f"Default sampler: {sampler_text(settings)}",
        ]
    )


def workers_text(views: list[EngineView], redis: str | None, unreachable_since: float | None) -> str:
    """Each GPU: where it is, what it runs, and whether it is up; and the state of Redis."""
    if redis is None:
        lines = ["Only this bot's own GPU (`SDBOT_REDIS_URL` is not set)."]
    elif unreachable_since is not None:
        since = relative_time(unreachable_since)
        lines = [f"Redis ({redis}) is **unreachable** since {since}: new jobs wait for a GPU."]
    else:
        lines = [f"Redis: {redis}."]
    for view in views[:MAX_WORKERS_SHOWN]:
        if not view.up:
            state = "**offline**"
        elif view.jobs:
            state = f"busy (job {', '.join(str(job) for job in view.jobs)})"
        else:
            state = "idle"
        seen = "" if view.last_seen is None else f", seen {relative_time(view.last_seen)}"
        several = len(view.models) > 1  # then say which are on the GPU now
        models = ", ".join(
            short(model, 40) + (" (loaded)" if several and model in view.loaded else "")
            for model in view.models[:5]
        ) or "none"
        lines.append(
            f"**{short(view.name, 60)}** ({short(view.host, 40)}, {short(view.device, 40)}): {state}; "
            f"models {models}; {view.images} images{seen}"
        )
    if len(views) > MAX_WORKERS_SHOWN:
        lines.append(f"... and {len(views) - MAX_WORKERS_SHOWN} more.")
    if not views:
        lines.append("No GPU is connected.")
    return "\n".join(lines)


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class Admin(
    commands.GroupCog, group_name="sdadmin", group_description="Set this server's rules for the bot."
):
    """Server settings, member rules and statistics."""

    def __init__(self, bot: SDBot) -> None:
        self.bot = bot
        super().__init__()
        for group in (
            ChannelsGroup(bot),
            BannedGroup(bot),
            ModelsGroup(bot),
            LorasGroup(bot),
            SamplerGroup(bot),
            UserGroup(bot),
        ):
            self.app_command.add_command(group)

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        return await check_manager(interaction)

    @property
    def _settings(self) -> SettingsService:
        return self.bot.settings_service

    @app_commands.command(name="show", description="Show this server's settings.")
    async def show(self, interaction: discord.Interaction) -> None:
        await reply(interaction, settings_text(await self._settings.get(guild_of(interaction))))

    @app_commands.command(name="nsfw", description="What to do with images the safety checker flags.")
    @app_commands.describe(policy="block: withhold; spoiler: blur; allow: plain in age-restricted channels")
    @app_commands.choices(policy=[app_commands.Choice(name=p, value=p) for p in NSFW_POLICIES])
    async def nsfw(self, interaction: discord.Interaction, policy: str) -> None:
        settings = await self._settings.set(guild_of(interaction), "nsfw_policy", policy)
        await reply(
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
        settings = await self._settings.set(guild_of(interaction), "daily_quota", images)
        await reply(interaction, f"Daily quota is now **{settings.daily_quota}** images per member.")

    @app_commands.command(name="steps", description="Default and maximum denoising steps.")
    @app_commands.describe(
        default="Steps for every model when a member gives none (0: each model's own default)",
        maximum="Most steps a member may ask for",
    )
    async def steps(
        self,
        interaction: discord.Interaction,
        default: app_commands.Range[int, 0, STEPS_RANGE[1]] | None = None,
        maximum: app_commands.Range[int, STEPS_RANGE[0], STEPS_RANGE[1]] | None = None,
    ) -> None:
        guild = guild_of(interaction)
        settings = await self._settings.get(guild)
        # Apply in the order that keeps default <= max at every moment.
        if default and maximum is not None and default > settings.max_steps:
            settings = await self._settings.set(guild, "max_steps", maximum)
            maximum = None
        if default is not None:
            settings = await self._settings.set(guild, "default_steps", default or None)
        if maximum is not None:
            settings = await self._settings.set(guild, "max_steps", maximum)
        await reply(interaction, f"Steps: {_steps_text(settings)}.")

    @app_commands.command(name="count", description="Most images per /imagine.")
    async def count(
        self,
        interaction: discord.Interaction,
        images: app_commands.Range[int, COUNT_RANGE[0], COUNT_RANGE[1]],
    ) -> None:
        settings = await self._settings.set(guild_of(interaction), "max_count", images)
        await reply(interaction, f"Members may now ask for at most **{settings.max_count}** images at once.")

    @app_commands.command(name="queue-limit", description="Most jobs one member may have waiting.")
    async def queue_limit(
        self,
        interaction: discord.Interaction,
        jobs: app_commands.Range[int, QUEUE_LIMIT_RANGE[0], QUEUE_LIMIT_RANGE[1]],
    ) -> None:
        settings = await self._settings.set(guild_of(interaction), "user_queue_limit", jobs)
        await reply(interaction, f"Members may now have **{settings.user_queue_limit}** job(s) waiting.")

    @app_commands.command(name="max-size", description="The largest image members may ask for.")
    @app_commands.describe(size="Width x height; sizes with more pixels than this are refused")
    @app_commands.choices(size=[app_commands.Choice(name=size, value=size) for size in MAX_SIZE_CHOICES])
    async def max_size(self, interaction: discord.Interaction, size: str) -> None:
        width, height = (None, None) if size == MODEL_SIZES else parse_size(size)
        pixels = None if width is None or height is None else width * height
        settings = await self._settings.set(guild_of(interaction), "max_pixels", pixels)
        shown = "" if pixels is None else f" ({size})"
        await reply(interaction, f"The largest image is now {_pixels_text(settings)}{shown}.")

    @app_commands.command(name="managers-exempt", description="Whether Manage Server members skip the quota.")
    async def managers_exempt(self, interaction: discord.Interaction, exempt: bool) -> None:
        settings = await self._settings.set(guild_of(interaction), "managers_exempt", exempt)
        state = "have no daily quota" if settings.managers_exempt else "have the same quota as everyone"
        await reply(interaction, f"Members with Manage Server now {state}.")

    @app_commands.command(name="upscale", description="Allow or forbid the Upscale buttons.")
    async def upscale(self, interaction: discord.Interaction, allowed: bool) -> None:
        settings = await self._settings.set(guild_of(interaction), "upscale_allowed", allowed)
        await reply(interaction, f"Upscaling is now **{'on' if settings.upscale_allowed else 'off'}**.")

    @app_commands.command(name="uploads", description="Allow or forbid /imagine from a member's own picture.")
    async def uploads(self, interaction: discord.Interaction, allowed: bool) -> None:
        settings = await self._settings.set(guild_of(interaction), "uploads_allowed", allowed)
        state = "may" if settings.uploads_allowed else "may no longer"
        await reply(interaction, f"Members {state} start `/imagine` from their own picture.")

    @app_commands.command(name="stats", description="Images in the last 24 hours, top members and the queue.")
    async def stats(self, interaction: discord.Interaction) -> None:
        stats = await self.bot.records.stats(guild_of(interaction))
        done = stats.done
        speed = "n/a" if done.seconds_per_image is None else f"{done.seconds_per_image:.1f} s"
        lines = [
            f"Last 24 hours: **{done.images}** images in {done.jobs} job(s), {speed} per image.",
            f"Queue now: {stats.waiting} waiting, {stats.running} running.",
        ]
        if done.top_users:
            top = ", ".join(f"<@{user}> ({images})" for user, images in done.top_users)
            lines.append(f"Top members: {top}")
        await reply(interaction, "\n".join(lines))

    @app_commands.command(name="workers", description="The GPUs that run jobs: where, what, busy or idle.")
    async def workers(self, interaction: discord.Interaction) -> None:
        dispatcher = self.bot.dispatcher
        hub = dispatcher.hub
        redis, since = (None, None) if hub is None else (hub.location, hub.unreachable_since)
        await reply(interaction, workers_text(dispatcher.views(), redis, since))


def _pixels_text(settings: GuildSettings) -> str:
    if settings.max_pixels is None:
        return f"**what each model's sizes need** (at least {DEFAULT_PIXEL_BUDGET:,} pixels)"
    return f"**{settings.max_pixels:,}** pixels"


def _steps_text(settings: GuildSettings) -> str:
    default = "each model's own" if settings.default_steps is None else settings.default_steps
    return f"default **{default}**, max **{settings.max_steps}**"


async def setup(bot: SDBot) -> None:
    await bot.add_cog(Admin(bot))
