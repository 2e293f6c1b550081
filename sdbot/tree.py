"""The command tree and the one place where errors become what a Discord user reads.

Every slash command's error reaches ``SDTree.on_error``; button callbacks route theirs there too. Domain
errors (``sdbot/errors.py``) become short ephemeral messages; a failed check becomes "not permitted"; anything
else is logged with its traceback and the user gets a short apology. The answer is sent whether or not the
interaction was already acknowledged (a followup then), so no interaction is left "thinking".
"""

from __future__ import annotations

import logging

import discord
from discord import app_commands

from sdbot.errors import (
    ChannelNotAllowed,
    GenerationFailed,
    InvalidRequest,
    InvalidSetting,
    JobNotFound,
    ModelLoading,
    ModelUnavailable,
    NotAllowedHere,
    NotPermitted,
    PromptRejected,
    QueueFull,
    QuotaExceeded,
)
from sdbot.views.render import channel_list, relative_time

log = logging.getLogger(__name__)

APOLOGY = "Sorry, something went wrong on my side. It has been logged; please try again later."
NOT_PERMITTED = "You are not permitted to do that."


def _quota_text(error: QuotaExceeded) -> str:
    if error.limit == 0:
        return "Image generation is switched off for you on this server (daily quota 0)."
    text = (
        f"Daily quota reached: you have {error.left} of {error.limit} images left "
        f"and asked for {error.requested}."
    )
    if error.next_free_at is not None:
        text += f" The next image frees up {relative_time(error.next_free_at)}."
    return text


def _queue_full_text(error: QueueFull) -> str:
    if error.scope == "user":
        return (
            f"You already have {error.ahead} job(s) waiting (this server allows {error.limit}). "
            "Wait for one to finish or `/cancel` one."
        )
    return f"The queue is full ({error.ahead} jobs waiting, limit {error.limit}). Please try again shortly."


def user_message(error: BaseException) -> str | None:
    """The text for an error a user caused, or None for one that is our fault."""
    if isinstance(error, app_commands.CommandInvokeError):
        error = error.original
    match error:
        case QuotaExceeded():
            return _quota_text(error)
        case QueueFull():
            return _queue_full_text(error)
        case PromptRejected():
            return f"Prompt rejected: {error}."
        case ModelLoading():
            return "The model is still loading. Please try again in a minute."
        case ModelUnavailable():
            return f"No GPU offers the model **{error.model}** right now, so nothing was queued or charged."
        case GenerationFailed():
            return f"Generation failed: {error}. Nothing was charged."
        case NotPermitted():
            return str(error) or NOT_PERMITTED
        case ChannelNotAllowed():
            return f"Images can't be generated in this channel. Try {channel_list(error.allowed)}."
        case NotAllowedHere() | JobNotFound() | InvalidSetting() | InvalidRequest():
            return str(error)
        case app_commands.NoPrivateMessage():
            return "This command works only in a server."
        case app_commands.CheckFailure():  # includes MissingPermissions
            return NOT_PERMITTED
        case app_commands.TransformerError():
            return f"{error.value!r} is not a valid value for that option."
        case app_commands.CommandNotFound():
            return "That command no longer exists; Discord may still show an old list. Try again shortly."
    return None


async def send_ephemeral(interaction: discord.Interaction, content: str) -> None:
    """Answer privately, as a followup when the interaction was already acknowledged."""
    try:
        if interaction.response.is_done():
            await interaction.followup.send(content, ephemeral=True)
        else:
            await interaction.response.send_message(content, ephemeral=True)
    except discord.HTTPException as failure:
        # The token expired or the message was deleted: nobody is left to tell.
        log.warning("could not deliver an error message to interaction %s: %s", interaction.id, failure)


async def report_error(interaction: discord.Interaction, error: BaseException) -> None:
    """Tell the user what went wrong; log what is ours to fix."""
    text = user_message(error)
    if text is None:
        original = error.original if isinstance(error, app_commands.CommandInvokeError) else error
        log.error("unexpected error in %s", _describe(interaction), exc_info=original)
        text = APOLOGY
    else:
        log.debug("refused %s: %s", _describe(interaction), text)
    await send_ephemeral(interaction, text)


def _describe(interaction: discord.Interaction) -> str:
    if interaction.command is not None:
        return f"/{interaction.command.qualified_name}"
    custom_id = interaction.data.get("custom_id") if interaction.data else None
    return f"component {custom_id!r}" if custom_id else f"interaction {interaction.id}"


class SDTree(app_commands.CommandTree):
    """The bot's command tree: all slash-command errors go through ``report_error``."""

    async def on_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError, /
    ) -> None:
        await report_error(interaction, error)
