"""Entry point: load the settings, set up logging, run the bot until Ctrl-C or a stop signal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

import discord

from sdbot.config import Settings, load_settings
from sdbot.errors import ConfigError

log = logging.getLogger("sdbot")


def setup_logging(level: str) -> None:
    """Our own logs at ``level``; libraries' chatter at WARNING unless debugging. Prompts are logged only at
    DEBUG and the token never (Settings keeps it out of its repr)."""
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%Y-%m-%d %H:%M:%S"
    )
    if level != "DEBUG":
        for noisy in ("discord", "diffusers", "transformers", "httpx", "urllib3", "aiosqlite"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        # discord.client warns "PyNaCl is not installed": the bot has no voice features.
        logging.getLogger("discord.client").setLevel(logging.ERROR)


async def run(settings: Settings, token: str) -> int:
    """Run until the bot stops; 1 if it stopped itself because the model did not load."""
    from sdbot.bot import SDBot
    from sdbot.inference.engine import load_engine

    bot = SDBot(settings, lambda: load_engine(settings))
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
    if bot.fatal_error is not None:
        print(f"sdbot: {bot.fatal_error}", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    try:
        settings = load_settings()
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
        return asyncio.run(run(settings, settings.discord_token))
    except KeyboardInterrupt:
        log.info("stopped")
        return 0


if __name__ == "__main__":
    sys.exit(main())
