"""Entry point: load the settings, set up logging, run the bot until Ctrl-C or a stop signal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import discord

from sdbot.config import Settings, load_settings
from sdbot.errors import ConfigError
from sdbot.inference.types import Engine
from sdbot.library import ModelLibrary, load_library
from sdbot.logs import setup_logging

if TYPE_CHECKING:
    from sdbot.bot import SDBot

log = logging.getLogger("sdbot")


@contextlib.contextmanager
def engine_factory(settings: Settings, library: ModelLibrary) -> Iterator[Callable[[], Engine]]:
    """How the bot gets its engine for the models of ``library``: in a process of its own (the default;
    ``SDBOT_ENGINE_PROCESS``), ended when the bot stops, or in the bot's own process."""
    if not settings.engine_process:
        from sdbot.inference.engine import load_engine

        yield lambda: load_engine(settings, library)
        return
    from sdbot.inference.process import EngineProcess

    engine = EngineProcess(settings, library)
    try:
        yield engine.start
    finally:
        engine.close()


async def run(settings: Settings, token: str, library: ModelLibrary | None = None) -> int:
    """Run the bot and its engine until the bot stops (see ``run_bot``); ``library`` defaults to the
    settings'."""
    from sdbot.bot import SDBot

    library = load_library(settings) if library is None else library
    with engine_factory(settings, library) as load_engine:
        return await run_bot(SDBot(settings, load_engine, library=library), token)


async def run_bot(bot: SDBot, token: str) -> int:
    """Run ``bot`` until it stops; 1 if it stopped itself because the model did not load."""
    with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows: Ctrl-C still works
        # ``docker stop`` sends SIGTERM: shut down as gracefully as on Ctrl-C.
        asyncio.get_running_loop().add_signal_handler(
            signal.SIGTERM, lambda: asyncio.ensure_future(bot.close())
        )
    try:
        async with bot:
            await bot.start(token)
    except discord.LoginFailure:
        print(
            "sdbot: Discord refused DISCORD_TOKEN: check the token in .env (Developer Portal, Bot)",
            file=sys.stderr,
        )
        return 2
    except discord.PrivilegedIntentsRequired:
        print("sdbot: Discord asked for privileged intents, which this bot does not use", file=sys.stderr)
        return 2
    except ConfigError as error:  # a setting found wrong at start-up (SDBOT_DB)
        print(f"sdbot: {error}", file=sys.stderr)
        return 2
    if bot.fatal_error is not None:
        print(f"sdbot: {bot.fatal_error}", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    try:
        settings = load_settings()
        library = load_library(settings)
    except ConfigError as error:
        print(f"sdbot: {error}", file=sys.stderr)
        return 2
    if not settings.discord_token:
        print(
            "sdbot: DISCORD_TOKEN is not set: copy .env.example to .env and put your bot token in it",
            file=sys.stderr,
        )
        return 2
    setup_logging(settings.log_level)
    log.info("starting with %r", settings)
    try:
        # asyncio.run cancels the bot's task on Ctrl-C, and ``async with bot`` then closes it in order.
        return asyncio.run(run(settings, settings.discord_token, library))
    except KeyboardInterrupt:
        log.info("stopped")
        return 0


if __name__ == "__main__":
    sys.exit(main())
