"""forget_user deletes one member's data in one server and nothing else."""

from __future__ import annotations

from sdbot.db import Database
from sdbot.params import JobKind, JobParams
from sdbot.services.privacy import forget_user
from sdbot.services.quotas import QuotaService
from sdbot.services.settings import SettingsService

GUILD, OTHER_GUILD = 100, 101
ALICE, BOB = 1, 2


async def test_forget_user_deletes_jobs_usage_and_overrides_in_that_server(db: Database) -> None:
    settings = SettingsService(db)
    quotas = QuotaService(db, settings, clock=lambda: 1000.0)

    async def activity(guild_id: int, user_id: int, parent_id: int | None = None) -> int:
        reservation = await quotas.reserve(guild_id, user_id, 1, is_manager=False)
        await quotas.commit(reservation)
        await settings.set_member_quota(guild_id, user_id, 5)
        job = await db.jobs.create(
            guild_id=guild_id,
            channel_id=9,
            user_id=user_id,
            kind=JobKind.REROLL if parent_id else JobKind.TXT2IMG,
            params=JobParams("private words"),
            image_count=1,
            parent_id=parent_id,
            reservation_id=reservation,
            now=1000.0,
        )
        return job.id

    alice_job = await activity(GUILD, ALICE)
    bob_reroll = await activity(GUILD, BOB, parent_id=alice_job)
    alice_elsewhere = await activity(OTHER_GUILD, ALICE)

    forgotten = await forget_user(db, GUILD, ALICE)

    assert (forgotten.jobs, forgotten.usage, forgotten.overrides) == (1, 1, 1)
    assert await db.jobs.get(alice_job) is None
    assert (await quotas.status(GUILD, ALICE, is_manager=False)).used == 0
    assert (await settings.member(GUILD, ALICE)).quota is None
    reroll = await db.jobs.get(bob_reroll)
    assert reroll is not None and reroll.parent_id is None, "Bob's job stays, unlinked from Alice's"
    assert (await quotas.status(GUILD, BOB, is_manager=False)).used == 1
    assert await db.jobs.get(alice_elsewhere) is not None
    assert (await settings.member(OTHER_GUILD, ALICE)).quota == 5
    assert (await forget_user(db, GUILD, ALICE)).jobs == 0
