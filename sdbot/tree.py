"""The command tree and the one place where errors become what a Discord user reads.

Every slash command's error reaches ``SDTree.on_error``; button callbacks route theirs there too. Domain
errors (``sdbot/errors.py``) become short ephemeral messages; a failed check becomes "not permitted"; anything
else is logged with its traceback and the user gets a short apology. The answer is sent whether or not the
interaction was already acknowledged (a followup then), so no interaction is left "thinking".
``sync_if_changed`` syncs the commands to Discord only when they changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any

import aiohttp
import discord
from discord import AppCommandOptionType, app_commands

from sdbot.db.meta import MetaRepository
from sdbot.errors import (
    ChannelNotAllowed,
    GenerationFailed,
    InvalidRequest,
    InvalidSetting,
    JobNotFound,
    JobsPaused,
    ModelUnavailable,
    NotAllowedHere,
    NotPermitted,
    PromptRejected,
    QueueFull,
    QuotaExceeded,
)
from sdbot.params import shown
from sdbot.views.render import channel_list, relative_time

log = logging.getLogger(__name__)

APOLOGY = "Sorry, something went wrong on my side. It has been logged; please try again later."
RESTARTING = "The bot is restarting; please try again in a minute."
NOT_PERMITTED = "You are not permitted to do that."
MAX_MESSAGE = 2000  # characters Discord accepts in a message


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
        case JobsPaused():
            return f"New jobs are paused: {error}. Nothing was charged; please try again later."
        case Restarting():
            return RESTARTING
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
        case MalformedOption():
            return str(error)
        case app_commands.NoPrivateMessage():
            return "This command works only in a server."
        case app_commands.CheckFailure():  # includes MissingPermissions
            return NOT_PERMITTED
        case app_commands.TransformerError():
            return f"{shown(error.value)} is not a valid value for that option."
        case app_commands.CommandNotFound():
            return "That command no longer exists; Discord may still show an old list. Try again shortly."
    return None


async def send_ephemeral(interaction: discord.Interaction, content: str) -> None:
    """Answer privately, as a followup when the interaction was already acknowledged. The answer is cut to
    Discord's 2,000 characters: a longer one would be refused and leave the member "thinking"."""
    if len(content) > MAX_MESSAGE:
        content = content[: MAX_MESSAGE - 1] + "…"
    try:
        if interaction.response.is_done():
            await interaction.followup.send(content, ephemeral=True)
        else:
            await interaction.response.send_message(content, ephemeral=True)
    except (discord.HTTPException, aiohttp.ClientError, OSError, RuntimeError) as failure:
        # The token expired, the message was deleted, the network failed or the bot is closing its
        # connection (RuntimeError: session closed): nobody is left to tell.
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


class Restarting(app_commands.CheckFailure):
    """The bot is shutting down: it takes no new interaction (those in flight finish first)."""


class MalformedOption(app_commands.CheckFailure):
    """An option's value is not of the option's type: only a modified client sends that (Discord's own
    checks the types), and discord.py would fail on it before the command runs."""

    def __init__(self, name: str, value: object, expected: str) -> None:
        self.name, self.value, self.expected = name, value, expected
        super().__init__(f"The {name} option takes {expected}, not {shown(value)}.")


# What each option type's value must be in an interaction's data, and how a refusal names it.
_OPTION_VALUES: dict[int, tuple[Callable[[object], bool], str]] = {
    AppCommandOptionType.string.value: (lambda value: isinstance(value, str), "text"),
    AppCommandOptionType.integer.value: (lambda value: _is_number(value, whole=True), "a whole number"),
    AppCommandOptionType.number.value: (lambda value: _is_number(value, whole=False), "a number"),
    AppCommandOptionType.boolean.value: (lambda value: isinstance(value, bool), "true or false"),
    **{
        kind.value: (lambda value: str(value).isdigit(), "an id")
        for kind in (
            AppCommandOptionType.user,
            AppCommandOptionType.channel,
            AppCommandOptionType.role,
            AppCommandOptionType.mentionable,
            AppCommandOptionType.attachment,
        )
    },
}


def _is_number(value: object, *, whole: bool) -> bool:
    return not isinstance(value, bool) and isinstance(value, int if whole else int | float)


def check_option_types(options: list[dict[str, Any]]) -> None:
    """Raise ``MalformedOption`` for the first option (subcommands' included) whose value is not of its
    type."""
    for option in options:
        check_option_types(option.get("options") or [])
        rule = _OPTION_VALUES.get(option.get("type", 0))
        if rule is not None and "value" in option and not option.get("focused"):
            fits, expected = rule
            if not fits(option["value"]):
                raise MalformedOption(str(option.get("name", "?")), option["value"], expected)


class SDTree(app_commands.CommandTree):
    """The bot's command tree: all slash-command errors go through ``report_error``."""

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        """Runs first for every command: the client admits it (or refuses it while shutting down), then the
        options are checked against their types, which discord.py reads without checking them."""
        admit = getattr(interaction.client, "admit", None)
        if admit is not None:
            admit()
        data: Any = interaction.data or {}
        check_option_types(data.get("options") or [])
        return True

    async def on_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError, /
    ) -> None:
        await report_error(interaction, error)


COMMANDS_HASH_KEY = "commands_hash"


async def sync_if_changed(
    tree: app_commands.CommandTree[Any],
    meta: MetaRepository,
    application_id: int | None,
    dev_guild: int | None,
) -> None:
    """Sync the slash commands (to ``dev_guild`` when set, else globally) only when the command set changed
    since the last sync to the same place: Discord rate-limits syncs, and a restart changes nothing."""
    guild = None if dev_guild is None else discord.Object(dev_guild)
    if guild is not None:
        tree.copy_global_to(guild=guild)
    definitions = [command.to_dict(tree) for command in tree.get_commands(guild=guild)]
    digest = hashlib.sha256(json.dumps(definitions, sort_keys=True).encode()).hexdigest()
    place = f"guild {guild.id}" if guild is not None else "global"
    key = f"{COMMANDS_HASH_KEY}:{application_id}:{place}"
    if await meta.get(key) == digest:
        log.info("slash commands unchanged (%s); not syncing", place)
        return
    synced = await tree.sync(guild=guild)
    await meta.set(key, digest)
    log.info("synced %d slash command(s) (%s)", len(synced), place)
