"""Members' own view of the bot: ``/queue`` (what waits, where their jobs are), ``/cancel`` and ``/quota``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from sdbot.cogs.imagine import requester
from sdbot.views.render import relative_time, short

if TYPE_CHECKING:
    from sdbot.bot import SDBot

MAX_JOBS_LISTED = 10  # a member may have 50 waiting; ten lines keep /queue within Discord's 2,000 characters


class Queue(commands.Cog):
    """Member commands about their jobs and quota."""

    def __init__(self, bot: SDBot) -> None:
        self.bot = bot

    @app_commands.command(name="queue", description="Show how many jobs are waiting and where yours are.")
    @app_commands.guild_only()
    async def queue(self, interaction: discord.Interaction) -> None:
        overview = self.bot.member_jobs.overview(requester(interaction))
        lines = [f"{overview.waiting} job(s) waiting, {overview.running} running."]
        for job, position in overview.mine[:MAX_JOBS_LISTED]:
            where = "running now" if position is None else f"position {position + 1}"
            model = f" ({short(job.params.model, 40)})" if job.params.model else ""
            lines.append(f"• Job {job.id}: **{short(job.params.prompt, 100)}**{model}, {where}")
        if len(overview.mine) > MAX_JOBS_LISTED:
            lines.append(f"… and {len(overview.mine) - MAX_JOBS_LISTED} more of yours.")
        if not overview.mine:
            lines.append("You have no jobs waiting here.")
        await interaction.response.send_message("\n".join(lines), ephemeral=True)

    @app_commands.command(name="cancel", description="Cancel your queued or running job.")
    @app_commands.guild_only()
    @app_commands.describe(job="The job number (your newest job if omitted)")
    async def cancel(
        self, interaction: discord.Interaction, job: app_commands.Range[int, 1] | None = None
    ) -> None:
        cancelled = await self.bot.member_jobs.cancel(requester(interaction), job)
        prompt = short(cancelled.params.prompt, 100)
        await interaction.response.send_message(
            f"Cancelled job {cancelled.id} (**{prompt}**). Nothing was charged.", ephemeral=True
        )

    @app_commands.command(name="quota", description="Show how many images you have left today.")
    @app_commands.guild_only()
    async def quota(self, interaction: discord.Interaction) -> None:
        status = await self.bot.member_jobs.quota(requester(interaction))
        if status.limit is None:
            text = "You have no daily image limit on this server."
        else:
            text = f"You have **{status.left}** of {status.limit} images left in the last 24 hours"
            in_progress = f", {status.reserved} in progress" if status.reserved else ""
            text += f" ({status.used} used{in_progress})."
            if status.next_free_at is not None:
                text += f" The next one frees up {relative_time(status.next_free_at)}."
        await interaction.response.send_message(text, ephemeral=True)


async def setup(bot: SDBot) -> None:
    await bot.add_cog(Queue(bot))
