"""The buttons under results and the Remix modal: parse the click, call the services, hand over to delivery.

Every tool but Pick, Remix's first step and Delete is acknowledged at once with a private "thinking" state,
so a refusal reaches only the member who clicked, through the tree's error handler; the new job's result is
posted as a reply to the clicked message. Pick posts the chosen image alone, publicly, with the single-image
tools (nothing is generated). Remix answers with a modal; its submission, which may come after a restart, is
read by the ``on_interaction`` listener (see ``sdbot.views.remix``).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from sdbot.cogs.imagine import requester, status_message_id
from sdbot.db import JobRecord
from sdbot.errors import JobNotFound
from sdbot.services.edits import SourceReader
from sdbot.services.events import Observer
from sdbot.services.requests import MessageFacts, Requester
from sdbot.views.buttons import Action, image_view
from sdbot.views.remix import RemixModal, remix_submission
from sdbot.views.render import find_image, picked_text, tools_for
from sdbot.views.tracker import JobTracker

if TYPE_CHECKING:
    from sdbot.bot import SDBot


class ImageTools(commands.Cog):
    """Reroll, Pick, Vary, Upscale, Zoom Out, Pan, Remix, Delete and Cancel."""

    def __init__(self, bot: SDBot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        self.bot.job_buttons = self

    async def cog_unload(self) -> None:
        self.bot.job_buttons = None

    async def on_job_button(
        self, interaction: discord.Interaction, action: Action, job_id: int, index: int | None
    ) -> None:
        """A result or cancel button was pressed (see ``sdbot.views.buttons``)."""
        who = requester(interaction)
        if action is Action.DELETE:
            moderator = interaction.permissions.manage_messages
            facts = _message_facts(interaction)
            await self.bot.member_jobs.may_delete(who, job_id, facts, moderator=moderator)
            await interaction.response.defer()
            await interaction.delete_original_response()
            return
        if action is Action.CANCEL:
            job = await self.bot.member_jobs.cancel(who, job_id)
            await interaction.response.edit_message(
                content=f"Job {job.id} was cancelled. Nothing was charged.", view=None, attachments=[]
            )
            return
        if action is Action.REROLL:
            tracker = await self._track(interaction)
            tracker.begin(await self.bot.imagine.reroll(who, job_id, observer=tracker))
            return
        if index is None:
            raise JobNotFound("This button does not say which image it is for.")
        if action is Action.REMIX:
            prompt, negative = await self.bot.edits.remix_prompts(who, job_id, index)
            await interaction.response.send_modal(RemixModal(job_id, index, prompt, negative))
        elif action is Action.PICK:
            await self._pick(interaction, who, job_id, index)
        else:
            tracker = await self._track(interaction)
            source = _image_reader(interaction, job_id, index)
            tracker.begin(await self._edit(action, who, job_id, index, source, tracker))

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """A Remix modal was submitted: its edited prompt makes the new job."""
        submission = remix_submission(interaction)
        if submission is None:
            return
        try:
            self.bot.admit()  # refuses while the bot shuts down
            tracker = await self._track(interaction)
            job = await self.bot.edits.remix(
                requester(interaction),
                submission.job_id,
                submission.index,
                submission.prompt,
                submission.negative,
                observer=tracker,
            )
            tracker.begin(job)
        except Exception as error:
            await self.bot.tree.on_error(interaction, error)  # type: ignore[arg-type]

    async def _edit(
        self,
        action: Action,
        who: Requester,
        job_id: int,
        index: int,
        source: SourceReader,
        observer: Observer,
    ) -> JobRecord:
        edits = self.bot.edits
        if action in (Action.VARY, Action.VARY_SUBTLE):
            subtle = action is Action.VARY_SUBTLE
            return await edits.vary(who, job_id, index, source, subtle=subtle, observer=observer)
        if action in (Action.UPSCALE, Action.UPSCALE_SUBTLE):
            subtle = action is Action.UPSCALE_SUBTLE
            return await edits.upscale(who, job_id, index, source, subtle=subtle, observer=observer)
        if action.zoom is not None:
            return await edits.zoom_out(who, job_id, index, source, action.zoom, observer=observer)
        if action.pan is not None:
            return await edits.pan(who, job_id, index, source, action.pan, observer=observer)
        raise JobNotFound("This button is no longer valid.")

    async def _track(self, interaction: discord.Interaction) -> JobTracker:
        """Acknowledge the click privately ("thinking") and follow the job it makes, posted as a reply."""
        status = await interaction.response.defer(ephemeral=True, thinking=True)
        return self.bot.delivery.track(
            interaction, reply_to=interaction.message, status_message_id=status_message_id(status)
        )

    async def _pick(self, interaction: discord.Interaction, who: Requester, job_id: int, index: int) -> None:
        """Post image ``index`` of a grid alone, with the single-image tools: free, no new job."""
        job, settings = await self.bot.edits.pick(who, job_id, index)
        attachment = _attachment(interaction, job_id, index)
        await interaction.response.defer(thinking=True)
        data = await _read(attachment)
        models = self.bot.rules.models
        tools = tools_for(job, settings, models.profile(job.params.model or models.library.default))
        await interaction.followup.send(
            picked_text(job, index, interaction.user.id),
            file=discord.File(io.BytesIO(data), filename=attachment.filename),
            view=image_view(job_id, index, tools),
            allowed_mentions=discord.AllowedMentions.none(),
        )


def _attachment(interaction: discord.Interaction, job_id: int, index: int) -> discord.Attachment:
    attachments = interaction.message.attachments if interaction.message is not None else []
    attachment = find_image(attachments, job_id, index)
    if attachment is None:
        raise JobNotFound("That image is no longer on this message.")
    return attachment


def _image_reader(interaction: discord.Interaction, job_id: int, index: int) -> SourceReader:
    """Reads the clicked image from the message, when the service has made every cheaper check."""

    async def read() -> bytes:
        return await _read(_attachment(interaction, job_id, index))

    return read


async def _read(attachment: discord.Attachment) -> bytes:
    try:
        return await attachment.read()
    except discord.HTTPException:
        raise JobNotFound("That image could not be fetched from Discord; please try again.") from None


async def setup(bot: SDBot) -> None:
    await bot.add_cog(ImageTools(bot))


def _message_facts(interaction: discord.Interaction) -> MessageFacts:
    """The clicked message as Discord sent it with the click (a client cannot alter it)."""
    message = interaction.message
    if message is None:
        return MessageFacts(0)
    metadata = message.interaction_metadata
    return MessageFacts(message.id, None if metadata is None else metadata.user.id)
