"""Serialised access to one aiosqlite connection, shared by the repositories of a ``Database``.

aiosqlite runs statements one at a time on its own thread, but coroutines interleave between statements:
without a lock, one coroutine's statement could land inside another's transaction (and be rolled back with
it). Every repository call therefore takes the lock, and writes run in ``BEGIN IMMEDIATE`` transactions so
that the write lock of the file is held from the first read of a check to the commit of its result, even
against other connections and processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import aiosqlite

Parameters = Sequence[Any] | Mapping[str, Any]


class Gateway:
    """The connection plus the lock that keeps each repository call whole."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """Hold the file's write lock until the block ends; commit if it ends normally, else roll back."""
        async with self._lock:
            try:
                # Inside the try: a cancellation that arrives while BEGIN is on its way to SQLite's thread
                # must still roll back, or the connection would stay in a transaction nobody commits.
                await self.conn.execute("BEGIN IMMEDIATE")
                yield self.conn
            except BaseException:
                # No transaction to undo when BEGIN itself failed (the file stayed locked past the timeout).
                with contextlib.suppress(sqlite3.OperationalError):
                    await self.conn.execute("ROLLBACK")
                raise
            await self.conn.execute("COMMIT")

    @contextlib.asynccontextmanager
    async def reading(self) -> AsyncIterator[aiosqlite.Connection]:
        """Use the connection outside a transaction (one statement at a time), never inside another's."""
        async with self._lock:
            yield self.conn

    async def fetch_one(self, sql: str, params: Parameters = ()) -> sqlite3.Row | None:
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None

    async def fetch_all(self, sql: str, params: Parameters = ()) -> list[sqlite3.Row]:
        async with self.reading() as conn:
            return list(await conn.execute_fetchall(sql, params))

    async def write(self, sql: str, params: Parameters = ()) -> int:
        """Run one statement and return how many rows it changed.

        A lone statement is its own transaction in autocommit mode, and SQLite takes the write lock when the
        statement starts, so it needs no BEGIN/COMMIT round trips."""
        async with self.reading() as conn:
            cursor = await conn.execute(sql, params)
            return cursor.rowcount
