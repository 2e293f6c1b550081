"""Quota benchmark: the cost of reserve + commit on a database with a long history against an empty one.

In one run it creates two SQLite files: ``full`` with 10,000 members and 1,000,000 ledger rows spread over
the past 48 hours (half inside the 24-hour window, about 50 reservations per member there; half history
not pruned yet), and ``empty``. It then times ``QuotaService.reserve`` followed by ``commit`` for random
members, alternating between the two databases so that both see the same machine load, and prints p50 and
p99 of each and the ratio of the p99s. Targets: full p99 under 5 ms and under 2x the empty p99. Finally it
times ``QuotaService.prune`` clearing the history.

The seeding writes rows straight into the ledger table in one ``executemany`` transaction: a million calls to
``reserve`` would take minutes and measure nothing new. Run: ``python bench/quota.py [--ops N] [--rows N]``.
The last line is machine-readable: ``p99_ms=<x> empty_p99_ms=<y> ratio=<z>``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Swap the script's own folder (where bench/queue.py would shadow the standard library) for the repo root.
sys.path.pop(0)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sdbot.db import Database
from sdbot.services.quotas import WINDOW_SECONDS, QuotaService
from sdbot.services.settings import GuildSettings, SettingsService

GUILD = 1
HISTORY_SECONDS = 2 * WINDOW_SECONDS


def seed(path: Path, users: int, rows: int, now: float) -> float:
    """Fill the ledger; returns the seconds it took."""
    started = time.perf_counter()
    rng = random.Random(1)
    states = ("committed",) * 8 + ("refunded", "reserved")
    age = HISTORY_SECONDS
    conn = sqlite3.connect(path)
    with conn:
        conn.executemany(
            "INSERT INTO usage (guild_id, user_id, images, state, created_at) VALUES (?, ?, ?, ?, ?)",
            (
                (GUILD, n % users, rng.randint(1, 4), rng.choice(states), now - age * rng.random())
                for n in range(rows)
            ),
        )
    conn.close()
    return time.perf_counter() - started


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def reserve_and_commit(quotas: QuotaService, user_id: int) -> float:
    started = time.perf_counter()
    reservation = await quotas.reserve(GUILD, user_id, 1, is_manager=False)
    await quotas.commit(reservation)
    return (time.perf_counter() - started) * 1000


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--ops", type=int, default=3_000, help="timed reserve+commit pairs per database")
    args = parser.parse_args()

    defaults = GuildSettings(daily_quota=10_000)  # the check runs in full; no request is refused
    now = time.time()
    with tempfile.TemporaryDirectory() as folder:
        full = await Database.open(Path(folder) / "full.sqlite3")
        empty = await Database.open(Path(folder) / "empty.sqlite3")
        try:
            seconds = seed(full.path, args.users, args.rows, now)
            print(f"seeded {args.rows:,} ledger rows for {args.users:,} members in {seconds:.1f} s")
            services = {
                name: QuotaService(db, SettingsService(db, defaults))
                for name, db in (("full", full), ("empty", empty))
            }
            rng = random.Random(2)
            for quotas in services.values():  # warm the page cache and the settings cache
                for _ in range(200):
                    await reserve_and_commit(quotas, rng.randrange(args.users))
            timings: dict[str, list[float]] = {name: [] for name in services}
            for _ in range(args.ops):
                user_id = rng.randrange(args.users)
                for name, quotas in services.items():
                    timings[name].append(await reserve_and_commit(quotas, user_id))
            started = time.perf_counter()
            pruned = await services["full"].prune()
            elapsed = time.perf_counter() - started
            print(f"prune: deleted {pruned:,} rows older than the window in {elapsed:.1f} s")
        finally:
            await full.close()
            await empty.close()

    for name, samples in timings.items():
        print(
            f"{name:>5}: p50 {percentile(samples, 0.50):.3f} ms  p99 {percentile(samples, 0.99):.3f} ms  "
            f"mean {statistics.fmean(samples):.3f} ms  ({len(samples):,} reserve+commit pairs)"
        )
    p99, empty_p99 = percentile(timings["full"], 0.99), percentile(timings["empty"], 0.99)
    print(f"p99_ms={p99:.3f} empty_p99_ms={empty_p99:.3f} ratio={p99 / empty_p99:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
