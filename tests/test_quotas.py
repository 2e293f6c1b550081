"""Rolling daily quotas on a real SQLite file, with a clock the tests move by hand."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sdbot.config import Settings
from sdbot.db import Database
from sdbot.errors import QuotaExceeded
from sdbot.services.quotas import WINDOW_SECONDS, QuotaService
from sdbot.services.settings import SettingsService, defaults_from

GUILD, USER = 100, 200
T0 = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def settings(db: Database) -> SettingsService:
    return SettingsService(db, defaults_from(Settings(daily_quota=10)))


@pytest.fixture
def quotas(db: Database, settings: SettingsService, clock: Clock) -> QuotaService:
    return QuotaService(db, settings, clock)


async def test_reserve_up_to_the_limit_then_refuse_with_what_is_left(
    quotas: QuotaService, clock: Clock
) -> None:
    await quotas.reserve(GUILD, USER, 4, is_manager=False)
    clock.now += 60
    await quotas.reserve(GUILD, USER, 4, is_manager=False)
    with pytest.raises(QuotaExceeded) as refused:
        await quotas.reserve(GUILD, USER, 3, is_manager=False)
    error = refused.value
    assert (error.requested, error.left, error.limit) == (3, 2, 10)
    assert error.next_free_at == T0 + WINDOW_SECONDS
    await quotas.reserve(GUILD, USER, 2, is_manager=False)
    status = await quotas.status(GUILD, USER, is_manager=False)
    assert (status.limit, status.used, status.reserved, status.left) == (10, 0, 10, 0)


async def test_refunded_images_do_not_count_and_committed_ones_do(quotas: QuotaService) -> None:
    first = await quotas.reserve(GUILD, USER, 4, is_manager=False)
    second = await quotas.reserve(GUILD, USER, 4, is_manager=False)
    assert await quotas.commit(first)
    assert await quotas.refund(second)
    assert not await quotas.commit(second), "a refunded reservation stays refunded"
    assert not await quotas.refund(first), "a committed reservation stays committed"
    status = await quotas.status(GUILD, USER, is_manager=False)
    assert (status.used, status.reserved, status.left) == (4, 0, 6)


async def test_committing_fewer_images_gives_the_rest_back(quotas: QuotaService) -> None:
    partial = await quotas.reserve(GUILD, USER, 4, is_manager=False)
    nothing = await quotas.reserve(GUILD, USER, 2, is_manager=False)
    assert await quotas.commit(partial, images=1)
    assert await quotas.commit(nothing, images=0)
    status = await quotas.status(GUILD, USER, is_manager=False)
    assert (status.used, status.reserved, status.left) == (1, 0, 9)


async def test_images_free_up_exactly_when_they_leave_the_window(quotas: QuotaService, clock: Clock) -> None:
    await quotas.reserve(GUILD, USER, 6, is_manager=False)  # at T0
    clock.now = T0 + 3600
    last = await quotas.reserve(GUILD, USER, 4, is_manager=False)
    await quotas.commit(last)

    clock.now = T0 + WINDOW_SECONDS - 0.001
    with pytest.raises(QuotaExceeded) as refused:
        await quotas.reserve(GUILD, USER, 1, is_manager=False)
    assert refused.value.next_free_at == T0 + WINDOW_SECONDS

    clock.now = T0 + WINDOW_SECONDS
    status = await quotas.status(GUILD, USER, is_manager=False)
    assert (status.used, status.reserved, status.left) == (4, 0, 6), "an old reservation no longer counts"
    assert status.next_free_at == T0 + 3600 + WINDOW_SECONDS
    await quotas.reserve(GUILD, USER, 6, is_manager=False)


async def test_managers_are_exempt_unless_the_server_says_otherwise(
    quotas: QuotaService, settings: SettingsService
) -> None:
    for _ in range(3):
        await quotas.reserve(GUILD, USER, 4, is_manager=True)
    status = await quotas.status(GUILD, USER, is_manager=True)
    assert (status.limit, status.left, status.reserved) == (None, None, 12)
    await settings.set(GUILD, "managers_exempt", False)
    with pytest.raises(QuotaExceeded):
        await quotas.reserve(GUILD, USER, 1, is_manager=True)


async def test_a_personal_quota_beats_the_server_quota_and_the_exemption(
    quotas: QuotaService, settings: SettingsService
) -> None:
    await settings.set_member_quota(GUILD, USER, 2)
    with pytest.raises(QuotaExceeded) as refused:
        await quotas.reserve(GUILD, USER, 3, is_manager=True)
    assert refused.value.limit == 2
    await settings.set_member_quota(GUILD, USER, None)
    assert await quotas.limit_for(GUILD, USER, is_manager=False) == 10


async def test_server_quota_defaults_to_the_configured_value_until_set(
    quotas: QuotaService, settings: SettingsService
) -> None:
    assert await quotas.limit_for(GUILD, USER, is_manager=False) == 10
    await settings.set(GUILD, "daily_quota", 0)
    with pytest.raises(QuotaExceeded) as refused:
        await quotas.reserve(GUILD, USER, 1, is_manager=False)
    assert (refused.value.limit, refused.value.left, refused.value.next_free_at) == (0, 0, None)
    assert await quotas.limit_for(GUILD + 1, USER, is_manager=False) == 10


async def test_quotas_are_per_member_and_per_server(quotas: QuotaService) -> None:
    await quotas.reserve(GUILD, USER, 10, is_manager=False)
    await quotas.reserve(GUILD, USER + 1, 10, is_manager=False)
    await quotas.reserve(GUILD + 1, USER, 10, is_manager=False)
    for guild, user in ((GUILD, USER), (GUILD, USER + 1), (GUILD + 1, USER)):
        status = await quotas.status(guild, user, is_manager=False)
        assert (status.reserved, status.left) == (10, 0)
    assert (await quotas.status(GUILD + 1, USER + 1, is_manager=False)).left == 10


async def test_prune_deletes_only_rows_that_left_the_window(
    db: Database, quotas: QuotaService, clock: Clock
) -> None:
    for user in range(5):
        await quotas.reserve(GUILD, user, 1, is_manager=False)
    clock.now = T0 + WINDOW_SECONDS / 2
    kept = await quotas.reserve(GUILD, 99, 1, is_manager=False)
    clock.now = T0 + WINDOW_SECONDS
    assert await quotas.prune() == 5
    assert await quotas.commit(kept)
    assert (await quotas.status(GUILD, 99, is_manager=False)).used == 1


async def test_two_hundred_concurrent_reservations_across_connections_give_exactly_ten(
    tmp_path: Path, clock: Clock
) -> None:
    path = tmp_path / "shared.sqlite3"
    databases = [await Database.open(path) for _ in range(4)]
    try:
        services = [
            QuotaService(db, SettingsService(db, defaults_from(Settings(daily_quota=10))), clock)
            for db in databases
        ]

        async def attempt(n: int) -> bool:
            try:
                await services[n % len(services)].reserve(GUILD, USER, 1, is_manager=False)
            except QuotaExceeded:
                return False
            return True

        results = await asyncio.gather(*(attempt(n) for n in range(200)))
        assert sum(results) == 10
        status = await services[0].status(GUILD, USER, is_manager=False)
        assert (status.reserved, status.left) == (10, 0)
    finally:
        for db in databases:
            await db.close()
