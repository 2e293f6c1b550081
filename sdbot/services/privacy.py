"""Data rights: deleting what the bot holds about a member of a server, when they (or an admin) ask.

Discord expects bots to honour such requests. A member's jobs (prompts, seeds, result message ids), quota
ledger and overrides go in one transaction. Jobs other members made from theirs (a reroll of their image)
stay, without the link to the deleted parent. A job of theirs still queued or running is deleted too; the
worker's later updates to it change nothing, so cancel it first when the bot should stop working on it.
"""

from __future__ import annotations

import logging

from sdbot.db import Database, ForgottenRows

log = logging.getLogger(__name__)


async def forget_user(db: Database, guild_id: int, user_id: int) -> ForgottenRows:
    """Delete a member's jobs, usage and overrides in one server, and say how many rows went."""
    forgotten = await db.forget_user(guild_id, user_id)
    log.info(
        "forgot user %s in guild %s: %d job(s), %d usage row(s), %d override(s)",
        user_id,
        guild_id,
        forgotten.jobs,
        forgotten.usage,
        forgotten.overrides,
    )
    return forgotten
