"""The bot's own log set-up (``sdbot.logs``): interaction tokens and the bot token never reach it, at any
level, whoever logs them (discord.py logs raw gateway payloads and webhook URLs at DEBUG)."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from sdbot.logs import NOISY_LIBRARIES, redact, setup_logging
from tests.test_bot_imagine import SMALL, result_of

pytest_plugins = ["tests.fakediscord.fixtures"]


@pytest.fixture
def bot_log() -> Iterator[io.StringIO]:
    """The log the bot configures at DEBUG, as ``SDBOT_LOG_LEVEL=DEBUG`` gives it; put back afterwards."""
    names = ("", *NOISY_LIBRARIES, "discord.client")
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    handlers = list(logging.getLogger().handlers)
    stream = io.StringIO()
    setup_logging("DEBUG", stream=stream)
    yield stream
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)
    for handler in logging.getLogger().handlers:
        if handler not in handlers:
            logging.getLogger().removeHandler(handler)


async def test_no_token_reaches_the_bots_debug_log(bot_log, start_sdbot, fake_discord):
    await start_sdbot()
    interaction = await fake_discord.slash("imagine", raw=True, prompt="a quiet harbour", **SMALL)
    await result_of(fake_discord, interaction)
    text = bot_log.getvalue()
    # What would have carried them was logged: the raw INTERACTION_CREATE and the followup's webhook URL.
    assert "WebSocket Event" in text and str(interaction.id) in text
    assert f"/webhooks/{fake_discord.application_id}/[redacted]" in text
    assert interaction.token not in text and fake_discord.token not in text


def test_redact_keeps_what_is_not_a_token() -> None:
    assert redact("GET /api/v10/webhooks/12/abcDEF-_x.y/messages/@original") == (
        "GET /api/v10/webhooks/12/[redacted]/messages/@original"
    )
    assert redact("POST /interactions/34/tok3n/callback?with_response=1") == (
        "POST /interactions/34/[redacted]/callback?with_response=1"
    )
    assert redact("{'id': '1', 'token': 'x', 'type': 2}") == "{'id': '1', 'token': '[redacted]', 'type': 2}"
    assert redact('{"token":"x.y.z"}') == '{"token":"[redacted]"}'
    assert redact("(7, 'aW50ZXJhY3Rpb246MTI6YWJj.x-y')") == "(7, '[redacted]')"
    assert redact("job 12 of user 34 is done") == "job 12 of user 34 is done"
