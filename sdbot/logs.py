"""Logging set-up, shared by the bot's process and the engine's process, so both log alike.

Interaction tokens are credentials for 15 minutes (anyone holding one can post and edit as the bot in that
channel), and discord.py logs them at DEBUG: raw INTERACTION_CREATE payloads and webhook URLs. Every line
the bot's handler writes, at every level and from every library, goes through ``redact`` first.
"""

from __future__ import annotations

import logging
import re
from typing import TextIO

NOISY_LIBRARIES = ("discord", "diffusers", "transformers", "httpx", "urllib3", "aiosqlite")
FORMAT = "%(asctime)s %(levelname)-7s %(processName)s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
REDACTED = "[redacted]"
_TOKENS = (
    # Webhook and interaction callback URLs: /webhooks/<application id>/<token>, /interactions/<id>/<token>
    re.compile(r"(?P<keep>/(?:webhooks|interactions)/\d+/)[^/?#\s'\"]+"),
    # A payload's token field, as JSON or as a Python dict's repr (the gateway's IDENTIFY carries the bot's)
    re.compile(r"(?P<keep>['\"]token['\"]\s*:\s*['\"])[^'\"]+"),
    # An interaction token anywhere else: Discord's are base64 of "interaction:..."
    re.compile(r"(?P<keep>)aW50ZXJhY3Rpb24[\w.=-]+"),
)


def redact(text: str) -> str:
    """``text`` with every token in it replaced by ``[redacted]``."""
    for pattern in _TOKENS:
        text = pattern.sub(rf"\g<keep>{REDACTED}", text)
    return text


class RedactingFormatter(logging.Formatter):
    """Formats as usual (message, arguments, traceback), then redacts the whole line."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class _BotHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler ``setup_logging`` installs (so that calling it again replaces it)."""


def setup_logging(level: str, *, stream: TextIO | None = None) -> None:
    """Our own logs at ``level`` to ``stream`` (stderr); libraries' chatter at WARNING unless debugging.
    Prompts are logged only at DEBUG, tokens never (Settings keeps the bot's out of its repr; ``redact``
    takes the rest out of every line)."""
    root = logging.getLogger()
    for old in [handler for handler in root.handlers if isinstance(handler, _BotHandler)]:
        root.removeHandler(old)
    handler = _BotHandler(stream)
    handler.setFormatter(RedactingFormatter(FORMAT, DATE_FORMAT))
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in NOISY_LIBRARIES:
        logging.getLogger(noisy).setLevel(logging.NOTSET if level == "DEBUG" else logging.WARNING)
    # aiosqlite's DEBUG traces each statement twice with its parameters: noise, and a stored token among them.
    logging.getLogger("aiosqlite").setLevel(logging.INFO if level == "DEBUG" else logging.WARNING)
    # discord.client warns "PyNaCl is not installed": the bot has no voice features.
    logging.getLogger("discord.client").setLevel(logging.NOTSET if level == "DEBUG" else logging.ERROR)
