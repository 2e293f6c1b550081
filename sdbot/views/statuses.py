"""Members' private status messages across a restart.

A job's status message ("Queued...", "Generating...") is ephemeral: only the interaction's token can edit it,
and only for Discord's 15 minutes. So that a restart (even a kill -9) does not leave it saying "Generating"
for good, the token is kept in the database (``sdbot.db.statuses``) from the moment the job is queued until
its status is final; after a restart, the status says what happened: resumed, posted, or refunded. The token
is a credential: it is kept only while valid, deleted once the status is final, and never logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import discord

from sdbot.db import Database, JobRecord, StatusMessage
from sdbot.services.endings import WRITE_ERRORS
from sdbot.views.budget import EditPriority, EditSlot
from sdbot.views.posting import NETWORK_ERRORS

log = logging.getLogger(__name__)

TOKEN_LIFETIME = 14 * 60.0  # Discord's is 15 minutes; keep a margin for slow uploads


class StatusNotes:
    """Keeps status messages' tokens while they are needed, and edits those messages after a restart."""

    def __init__(
        self,
        client: discord.Client,
        db: Database,
        edit_slot: EditSlot,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._db = db
        self._edit_slot = edit_slot
        self._clock = clock

    async def remember(self, job: JobRecord, interaction: discord.Interaction, message_id: int) -> None:
        """Keep what editing the job's status message after a restart needs, while its token is valid."""
        status = StatusMessage(
            job.id,
            interaction.application_id,
            interaction.token,
            message_id,
            expires_at=interaction.created_at.timestamp() + TOKEN_LIFETIME,
        )
        try:
            await self._db.statuses.save(status)
        except WRITE_ERRORS as error:  # it only helps after a restart: the job goes on without it
            log.warning("job %s: could not keep its status message for a restart: %s", job.id, error)

    async def forget(self, job_id: int) -> None:
        """The job's status is final: its token is no longer needed."""
        try:
            await self._db.statuses.delete(job_id)
        except WRITE_ERRORS as error:  # it expires anyway: start-up and the hourly pruning delete it
            log.warning("job %s: could not delete its status message's token: %s", job_id, error)

    async def note(self, job: JobRecord, text: str, *, final: bool) -> bool:
        """Show ``text`` on the job's kept status message; False if there is none (or it is gone).
        ``final``: the status will not change again, so its token goes."""
        try:
            status = await self._db.statuses.get(job.id, self._clock())
        except WRITE_ERRORS as error:
            log.warning("job %s: could not read its status message: %s", job.id, error)
            return False
        if status is None:
            return False
        shown = True
        webhook = discord.Webhook.partial(status.application_id, status.token, client=self._client)
        try:
            async with self._edit_slot(job.channel_id, lambda: EditPriority.OUTCOME):
                await webhook.edit_message(status.message_id, content=text, view=None, attachments=[])
        except (discord.HTTPException, *NETWORK_ERRORS) as failure:
            log.info("job %s: its status message can no longer be edited: %s", job.id, failure)
            shown, final = False, True  # the token no longer works
        if final:
            await self.forget(job.id)
        return shown
