"""A member's own jobs once they are submitted: where they wait (``/queue``), cancelling one (``/cancel``
and the Cancel button), the quota left (``/quota``), and whether a result's message is theirs to delete
(the Delete button). Nothing here makes a job.

Nothing here knows about Discord: the cogs pass plain ids.
"""

from __future__ import annotations

from dataclasses import dataclass

from sdbot.db import JobRecord
from sdbot.errors import JobNotFound, NotPermitted
from sdbot.services.jobs import JobQueue
from sdbot.services.quotas import QuotaService, QuotaStatus
from sdbot.services.requests import MessageFacts, Requester, RequestRules


@dataclass(frozen=True)
class QueueOverview:
    waiting: int
    running: int
    mine: list[tuple[JobRecord, int | None]]  # the member's jobs here, with their position (None: running)


class MemberJobs:
    """What a member may see and do about their jobs in a server; a manager may cancel anyone's."""

    def __init__(self, rules: RequestRules, quotas: QuotaService, queue: JobQueue) -> None:
        self._rules = rules
        self._quotas = quotas
        self._queue = queue

    async def cancel(self, who: Requester, job_id: int | None = None) -> JobRecord:
        """Cancel ``job_id``, or the member's newest queued or running job. A manager may cancel anyone's
        job in their server; others only their own."""
        if job_id is None:
            mine = [job for job, _ in self.overview(who).mine]
            if not mine:
                raise JobNotFound("You have no job queued or running here.")
            job_id = max(job.id for job in mine)
        job = await self._rules.job(job_id)
        if job is None or job.guild_id != who.guild_id:
            raise JobNotFound(f"There is no job {job_id} in this server.")
        if job.finished:
            raise JobNotFound(f"Job {job_id} is already {job.state}.")
        if job.user_id != who.user_id and not who.is_manager:
            raise NotPermitted("That job is not yours.")
        return await self._queue.cancel(job_id, by_user=None if who.is_manager else who.user_id)

    def overview(self, who: Requester) -> QueueOverview:
        queued = self._queue.queued()
        running = self._queue.running()
        mine: list[tuple[JobRecord, int | None]] = [
            (job, None) for job in running if job.user_id == who.user_id and job.guild_id == who.guild_id
        ]
        mine += [
            (job, position)
            for position, job in enumerate(queued)
            if job.user_id == who.user_id and job.guild_id == who.guild_id
        ]
        return QueueOverview(waiting=len(queued), running=len(running), mine=mine)

    async def quota(self, who: Requester) -> QuotaStatus:
        return await self._quotas.status(who.guild_id, who.user_id, is_manager=who.is_manager)

    async def may_delete(
        self, who: Requester, job_id: int, message: MessageFacts, *, moderator: bool
    ) -> JobRecord:
        """The job whose message the member wants gone, if it is theirs to delete (anyone's with Manage
        Messages). The button names the job, but whose the message is decides: the member it was made for
        (a result or a picked image sent through their interaction), else, for a message the bot posted
        in the channel, the owner of the job whose result it is."""
        job = await self._rules.parent(who, job_id)
        if moderator:
            return job
        owner = message.made_for
        if owner is None and job.message_id == message.id:
            owner = job.user_id
        if owner is None:
            raise JobNotFound("That button does not belong to this message.")
        if owner != who.user_id:
            raise NotPermitted("That is not yours to delete.")
        return job
