"""The SQLite layer on a real temporary file: migrations, connection settings, the jobs and meta tables."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from pathlib import Path

import aiosqlite
import pytest

from sdbot.db import Database, JobEnding, StatusMessage, StoredImage, StoredResult, connect, migrate
from sdbot.db.connection import Migration, load_migrations
from sdbot.db.database import SOURCE_GRACE, sources_folder
from sdbot.errors import ConfigError
from sdbot.params import JobKind, JobParams, JobState

PARAMS = JobParams("a cat")


async def _schema(conn: aiosqlite.Connection) -> list[tuple[str, str]]:
    async with conn.execute("SELECT name, sql FROM sqlite_master ORDER BY name") as cursor:
        return [(row[0], row[1]) for row in await cursor.fetchall()]


async def _pragma(conn: aiosqlite.Connection, name: str) -> object:
    async with conn.execute(f"PRAGMA {name}") as cursor:
        row = await cursor.fetchone()
    assert row is not None
    return row[0]


async def test_open_creates_folder_and_applies_every_migration(tmp_path: Path) -> None:
    path = tmp_path / "data" / "nested" / "bot.sqlite3"
    db = await Database.open(path)
    await db.close()
    assert path.is_file()
    conn = await connect(path)
    try:
        assert await _pragma(conn, "user_version") == len(load_migrations())
        names = {name for name, _ in await _schema(conn)}
        assert {
            "guild_settings",
            "guild_channels",
            "banned_words",
            "member_overrides",
            "usage",
            "jobs",
            "meta",
        } <= names
    finally:
        await conn.close()


async def test_connection_uses_wal_busy_timeout_and_foreign_keys(tmp_path: Path) -> None:
    conn = await connect(tmp_path / "bot.sqlite3")
    try:
        assert await _pragma(conn, "journal_mode") == "wal"
        assert await _pragma(conn, "busy_timeout") == 5000
        assert await _pragma(conn, "foreign_keys") == 1
    finally:
        await conn.close()


async def test_running_migrations_again_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "bot.sqlite3"
    await (await Database.open(path)).close()
    conn = await connect(path)
    try:
        before = await _schema(conn)
        version = await migrate(conn)
        assert version == len(load_migrations())
        assert await _schema(conn) == before
    finally:
        await conn.close()


async def test_database_from_a_newer_sdbot_stops_start_up(tmp_path: Path) -> None:
    path = tmp_path / "bot.sqlite3"
    await (await Database.open(path)).close()
    conn = await connect(path)
    await conn.execute("PRAGMA user_version = 99")
    await conn.close()
    with pytest.raises(ConfigError, match=r"schema version 99 .* newer sdbot"):
        await Database.open(path)


async def test_a_failing_migration_leaves_the_schema_untouched(tmp_path: Path) -> None:
    conn = await connect(tmp_path / "bot.sqlite3")
    try:
        broken = [
            Migration(1, "0001_ok.sql", "CREATE TABLE first (id INTEGER);"),
            Migration(
                2, "0002_broken.sql", "CREATE TABLE second (id INTEGER);\nINSERT INTO nowhere VALUES (1);"
            ),
        ]
        with pytest.raises(aiosqlite.OperationalError):
            await migrate(conn, broken)
        assert await _schema(conn) == []
        assert await _pragma(conn, "user_version") == 0
        assert await migrate(conn, broken[:1]) == 1
        assert [name for name, _ in await _schema(conn)] == ["first"]
    finally:
        await conn.close()


async def test_job_round_trip_and_lifecycle(db: Database) -> None:
    job = await db.jobs.create(
        guild_id=1,
        channel_id=2,
        user_id=3,
        kind=JobKind.VARIATION,
        params=JobParams("a red fox", steps=4, seed=7, count=2, strength=0.6),
        image_count=2,
        reservation_id=11,
        source_png=b"\x89PNG fake",
        now=100.0,
    )
    assert (job.state, job.params.prompt, job.reservation_id, job.created_at) == (
        "queued",
        "a red fox",
        11,
        100.0,
    )
    assert await db.jobs.source_png(job.id) == b"\x89PNG fake"
    [stored] = list(sources_folder(db.path).iterdir())  # a file beside the database, not a row's blob
    assert stored.read_bytes() == b"\x89PNG fake"
    assert await db.jobs.mark_running(job.id, 101.0)
    assert await db.end_job(job.id, JobEnding(JobState.DONE, 103.0, [7, 8], [False, None]))
    assert [waiting.id for waiting in await db.jobs.undelivered()] == [job.id]
    await db.jobs.set_message(job.id, 555)
    assert await db.jobs.undelivered() == []
    done = await db.jobs.get(job.id)
    assert done is not None
    assert (done.state, done.seeds, done.nsfw, done.message_id) == ("done", [7, 8], [False, None], 555)
    assert (done.started_at, done.finished_at) == (101.0, 103.0)
    assert await db.jobs.source_png(job.id) is None, "the source image is dropped once the job is finished"
    assert not stored.exists()


async def test_a_job_that_cannot_be_stored_leaves_no_picture_behind(db: Database) -> None:
    with pytest.raises(sqlite3.IntegrityError):  # its parent does not exist
        await db.jobs.create(
            guild_id=1,
            channel_id=2,
            user_id=3,
            kind=JobKind.VARIATION,
            params=PARAMS,
            image_count=1,
            parent_id=999,
            source_png=b"\x89PNG",
            now=1.0,
        )
    assert list(sources_folder(db.path).iterdir()) == []


async def test_start_up_deletes_pictures_no_unfinished_job_needs(tmp_path: Path) -> None:
    path = tmp_path / "bot.sqlite3"
    db = await Database.open(path)
    queued = await db.jobs.create(
        guild_id=1,
        channel_id=2,
        user_id=3,
        kind=JobKind.UPSCALE,
        params=PARAMS,
        image_count=1,
        source_png=b"\x89PNG kept",
        now=1.0,
    )
    await db.close()
    folder = sources_folder(path)
    old, young = folder / "0123456789abcdef0123456789abcdef.png", folder / ".half-written.png.partial"
    old.write_bytes(b"left by a crash")
    young.write_bytes(b"being written")
    os.utime(old, (time.time() - SOURCE_GRACE - 60,) * 2)

    db = await Database.open(path)
    try:
        assert not old.exists() and young.exists()
        assert await db.jobs.source_png(queued.id) == b"\x89PNG kept"
    finally:
        await db.close()


async def test_schema_3_keeps_every_job_its_parent_links_and_id_counter(tmp_path: Path) -> None:
    path = tmp_path / "bot.sqlite3"
    conn = await connect(path)
    await migrate(conn, load_migrations()[:2])
    insert = (
        "INSERT INTO jobs (guild_id, channel_id, user_id, kind, parent_id, params, image_count, state, "
        "seeds, source_png, created_at) VALUES (1, 2, 3, ?, ?, ?, 1, ?, ?, ?, 1.0)"
    )
    await conn.execute(insert, ("txt2img", None, PARAMS.to_json(), "done", "[5]", None))
    await conn.execute(insert, ("variation", 1, PARAMS.to_json(), "queued", "[]", b"\x89PNG from v1"))
    await conn.execute(insert, ("txt2img", None, PARAMS.to_json(), "done", "[6]", None))
    await conn.execute("DELETE FROM jobs WHERE id = 3")  # the newest id must still never come back
    await conn.close()

    db = await Database.open(path)
    try:
        parent, queued = await db.jobs.get(1), await db.jobs.get(2)
        assert parent is not None and parent.seeds == [5]
        assert queued is not None and (queued.kind, queued.parent_id) == (JobKind.VARIATION, 1)
        assert await db.jobs.source_png(2) == b"\x89PNG from v1"  # queued before the upgrade: still runs
        fresh = await db.jobs.create(
            guild_id=1, channel_id=2, user_id=3, kind=JobKind.TXT2IMG, params=PARAMS, image_count=1, now=2
        )
        assert fresh.id == 4
        assert await db.end_job(2, JobEnding(JobState.DONE, 3.0, [9], [False]))
        assert await db.jobs.source_png(2) is None
    finally:
        await db.close()


async def test_a_finished_job_cannot_change_state_again(db: Database) -> None:
    job = await db.jobs.create(
        guild_id=1, channel_id=2, user_id=3, kind=JobKind.TXT2IMG, params=PARAMS, image_count=1, now=1.0
    )
    assert await db.end_job(job.id, JobEnding(JobState.CANCELLED, 2.0))
    assert not await db.jobs.mark_running(job.id, 3.0)
    assert not await db.end_job(job.id, JobEnding(JobState.DONE, 3.0, [1], [False]))
    assert not await db.end_job(job.id, JobEnding(JobState.FAILED, 3.0, error="late"))
    stored = await db.jobs.get(job.id)
    assert stored is not None and stored.state == "cancelled" and stored.error is None


async def test_unfinished_jobs_survive_a_restart_oldest_first(tmp_path: Path) -> None:
    path = tmp_path / "bot.sqlite3"
    db = await Database.open(path)
    ids = []
    for n in range(4):
        job = await db.jobs.create(
            guild_id=1,
            channel_id=2,
            user_id=n,
            kind=JobKind.TXT2IMG,
            params=JobParams(f"job {n}"),
            image_count=1,
            now=float(n),
        )
        ids.append(job.id)
    await db.jobs.mark_running(ids[0], 10.0)
    await db.end_job(ids[1], JobEnding(JobState.FAILED, 11.0, error="out of memory"))
    await db.close()

    db = await Database.open(path)
    try:
        assert [job.id for job in await db.jobs.unfinished()] == [ids[0], ids[2], ids[3]]
        assert await db.jobs.requeue(ids[0])
        requeued = await db.jobs.get(ids[0])
        assert requeued is not None and requeued.state == "queued" and requeued.started_at is None
        failed = await db.jobs.get(ids[1])
        assert failed is not None and failed.error == "out of memory"
    finally:
        await db.close()


async def test_stored_parameters_read_back_typed_and_unknown_ones_are_refused(db: Database) -> None:
    params = JobParams("a fox", negative_prompt="blurry", steps=9, guidance=3.5, width=96, height=64, seed=5)
    job = await db.jobs.create(
        guild_id=1, channel_id=2, user_id=3, kind=JobKind.TXT2IMG, params=params, image_count=1, now=1.0
    )
    stored = await db.jobs.get(job.id)
    assert stored is not None and stored.params == params
    assert (stored.kind, stored.state) == (JobKind.TXT2IMG, JobState.QUEUED)
    with pytest.raises(ValueError, match="unknown job parameters: sampler_v9"):
        JobParams.from_json('{"prompt": "x", "sampler_v9": "?"}')


async def test_job_ids_are_never_reused(db: Database) -> None:
    first = await db.jobs.create(
        guild_id=1, channel_id=2, user_id=3, kind=JobKind.TXT2IMG, params=PARAMS, image_count=1, now=1
    )
    await db.jobs.delete_for_user(1, 3)
    second = await db.jobs.create(
        guild_id=1, channel_id=2, user_id=4, kind=JobKind.TXT2IMG, params=PARAMS, image_count=1, now=2
    )
    assert second.id > first.id
    assert await db.jobs.get(first.id) is None


async def test_stats_count_done_jobs_since_a_moment(db: Database) -> None:
    async def finished(
        user_id: int, images: int, created: float, seconds: float, state: str = "done"
    ) -> None:
        job = await db.jobs.create(
            guild_id=1,
            channel_id=2,
            user_id=user_id,
            kind=JobKind.TXT2IMG,
            params=PARAMS,
            image_count=images,
            now=created,
        )
        await db.jobs.mark_running(job.id, created)
        if state == "done":
            ending = JobEnding(JobState.DONE, created + seconds, list(range(images)), [False] * images)
        else:
            ending = JobEnding(JobState.FAILED, created + seconds, error="boom")
        await db.end_job(job.id, ending)

    await finished(10, 4, created=50.0, seconds=100.0)  # before the period
    await finished(10, 2, created=100.0, seconds=4.0)
    await finished(20, 4, created=110.0, seconds=8.0)
    await finished(20, 1, created=120.0, seconds=2.0)
    await finished(30, 3, created=130.0, seconds=9.0, state="failed")

    stats = await db.jobs.stats(1, since=100.0)
    assert (stats.jobs, stats.images) == (3, 7)
    assert stats.seconds_per_image == pytest.approx(14.0 / 7)
    assert stats.top_users == [(20, 5), (10, 2)]
    empty = await db.jobs.stats(2, since=0.0)
    assert (empty.jobs, empty.images, empty.seconds_per_image, empty.top_users) == (0, 0, None, [])


async def test_meta_values_persist(tmp_path: Path) -> None:
    path = tmp_path / "bot.sqlite3"
    db = await Database.open(path)
    assert await db.meta.get("commands_hash") is None
    await db.meta.set("commands_hash", "abc")
    await db.meta.set("commands_hash", "def")
    await db.close()
    db = await Database.open(path)
    try:
        assert await db.meta.get("commands_hash") == "def"
    finally:
        await db.close()


async def test_a_write_cancelled_as_its_transaction_begins_leaves_later_writes_committed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bot.sqlite3"
    db, other = await Database.open(path), await Database.open(path)
    try:
        cancelled = asyncio.create_task(db.members.set_quota(1, 2, 5))
        await asyncio.sleep(0)  # its BEGIN is on the way to SQLite's thread
        cancelled.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await cancelled
        await db.meta.set("commands_hash", "abc")
        assert await other.meta.get("commands_hash") == "abc", "another connection sees the write"
        await db.members.set_quota(1, 2, 7)
        assert (await other.members.get(1, 2)).quota == 7
    finally:
        await db.close()
        await other.close()


async def _reserved_job(db: Database, images: int = 2) -> tuple[int, int]:
    """A queued job of user 3 with ``images`` reserved; (job id, reservation id)."""
    reserved = await db.usage.reserve(1, 3, images, limit=None, since=0.0, now=1.0)
    assert reserved.reservation_id is not None
    job = await db.jobs.create(
        guild_id=1,
        channel_id=2,
        user_id=3,
        kind=JobKind.TXT2IMG,
        params=JobParams("a cat", count=images),
        image_count=images,
        reservation_id=reserved.reservation_id,
        now=1.0,
    )
    return job.id, reserved.reservation_id


async def _counted(db: Database) -> tuple[int, int]:
    window = await db.usage.window(1, 3, since=0.0)
    return window.reserved, window.used


async def test_a_job_end_and_its_quota_are_one_write(db: Database) -> None:
    done, _ = await _reserved_job(db)
    assert await db.end_job(done, JobEnding(JobState.DONE, 2.0, [1, 2], [False, False]))
    assert await _counted(db) == (0, 2)
    failed, _ = await _reserved_job(db)
    assert await db.end_job(failed, JobEnding(JobState.FAILED, 2.0, error="boom"))
    assert await _counted(db) == (0, 2)  # refunded
    assert not await db.end_job(failed, JobEnding(JobState.DONE, 3.0, [1, 2], [False, False]))
    assert await _counted(db) == (0, 2)  # an ended job's quota is not settled again


async def test_a_done_job_whose_images_cannot_be_posted_ends_failed_and_refunded(db: Database) -> None:
    job_id, _ = await _reserved_job(db)
    await db.end_job(job_id, JobEnding(JobState.DONE, 2.0, [1, 2], [False, False]))
    assert await db.abandon_delivery(job_id, "Discord refused the images")
    job = await db.jobs.get(job_id)
    assert job is not None and (job.state, job.error) == ("failed", "Discord refused the images")
    assert await _counted(db) == (0, 0) and await db.jobs.undelivered() == []
    assert not await db.abandon_delivery(job_id, "twice")


async def test_result_files_appear_whole_and_read_back(db: Database) -> None:
    images = [StoredImage(b"\x89PNG one", 7, False), StoredImage(b"\x89PNG two", 8, None)]
    kept = StoredResult(images, ("a note on how they were made",))
    assert await db.results.load(5) is None
    await db.results.save(5, kept)
    assert await db.results.load(5) == kept
    (db.results.root / "6.partial").mkdir()  # a save a crash interrupted
    await db.results.remove_partial()
    assert sorted(path.name for path in db.results.root.iterdir()) == ["5"]
    await db.results.delete(5)
    assert await db.results.load(5) is None


async def test_status_messages_are_read_only_while_their_token_is_valid(db: Database) -> None:
    job_id, _ = await _reserved_job(db)
    status = StatusMessage(job_id, application_id=9, token="secret", message_id=77, expires_at=100.0)
    await db.statuses.save(status)
    assert "secret" not in repr(status)
    assert await db.statuses.get(job_id, now=99.0) == status
    assert await db.statuses.get(job_id, now=100.0) is None and await db.statuses.valid(now=100.0) == []
    assert await db.statuses.prune(now=100.0) == 1
    await db.statuses.save(status)
    await db.jobs.delete_for_user(1, 3)  # the job goes, and its status message with it
    assert await db.statuses.valid(now=0.0) == []


async def test_an_empty_file_becomes_a_new_database_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "sdbot.sqlite3"
    path.write_bytes(b"")  # a failed copy or restore, more likely than a wish for a fresh start
    db = await Database.open(path)
    await db.close()
    assert f"SDBOT_DB={str(path)!r} is an empty file: starting a new database in it" in caplog.text
