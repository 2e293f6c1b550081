"""Logging set-up, shared by the bot's process and the engine's process, so both log alike."""

from __future__ import annotations

import logging

NOISY_LIBRARIES = ("discord", "diffusers", "transformers", "httpx", "urllib3", "aiosqlite")


def setup_logging(level: str) -> None:
    """Our own logs at ``level``; libraries' chatter at WARNING unless debugging. Prompts are logged only at
    DEBUG and the token never (Settings keeps it out of its repr)."""
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(processName)s %(name)s: %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
    )
    if level != "DEBUG":
        for noisy in NOISY_LIBRARIES:
            logging.getLogger(noisy).setLevel(logging.WARNING)
        # discord.client warns "PyNaCl is not installed": the bot has no voice features.
        logging.getLogger("discord.client").setLevel(logging.ERROR)
