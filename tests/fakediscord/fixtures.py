"""pytest fixtures for end-to-end tests on the fake Discord: load with
``pytest_plugins = ["tests.fakediscord.fixtures"]`` in tests/conftest.py.

- ``discord_spec`` (session): the OpenAPI validator, loaded once.
- ``fake_discord``: a started :class:`FakeDiscord` with discord.py pointed at it; fails the test at teardown
  if any request broke the spec or Discord's form rules.
- ``discord_bot``: a launcher ``await discord_bot(make_bot)`` that runs a real discord.py client in-process
  until it is ready, with ``restart()`` for restart tests; at teardown it closes the bot and fails the test if
  tasks or non-daemon threads it started are still alive.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import discord
import pytest

from .server import FakeDiscord
from .spec import SpecValidator, load_spec_validator

BotFactory = Callable[[], discord.Client | Awaitable[discord.Client]]

READY_TIMEOUT = 15.0
LEAK_GRACE = 2.0


@pytest.fixture(scope="session")
def discord_spec() -> SpecValidator:
    return load_spec_validator()


@pytest.fixture
async def fake_discord(discord_spec: SpecValidator) -> AsyncIterator[FakeDiscord]:
    fake = FakeDiscord(discord_spec)
    await fake.start()
    try:
        with fake.discord_pointed_here():
            yield fake
    finally:
        await fake.stop()
    if fake.violations:
        pytest.fail("requests Discord would reject:\n" + "\n".join(fake.violations), pytrace=False)


class RunningBot:
    """A discord.py client running against the fake; ``client`` is the current instance."""

    def __init__(self, fake: FakeDiscord, make_bot: BotFactory, guild_ready_timeout: float) -> None:
        self.fake = fake
        self._make_bot = make_bot
        self._guild_ready_timeout = guild_ready_timeout
        self.client: discord.Client | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> discord.Client:
        made = self._make_bot()
        client = await made if inspect.isawaitable(made) else made
        # discord.py waits this long after the last GUILD_CREATE before on_ready (2 s by default); the fake
        # sends its only guild at once, so a short wait loses nothing.
        client._connection.guild_ready_timeout = self._guild_ready_timeout
        self.client = client

        async def run() -> None:
            async with client:
                await client.start(self.fake.token)

        self._task = asyncio.create_task(run(), name=f"fake-discord-bot-{id(client)}")
        ready = asyncio.create_task(client.wait_until_ready())
        done, _ = await asyncio.wait(
            {ready, self._task}, timeout=READY_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
        if ready not in done:
            ready.cancel()
            if self._task in done:
                self._task.result()
                raise RuntimeError("the bot stopped before it was ready")
            await self.stop()
            raise TimeoutError(f"the bot was not ready within {READY_TIMEOUT} s")
        return client

    async def stop(self) -> None:
        """Close the client the way its owner would and wait for its run task to end."""
        if self.client is not None:
            await self.client.close()
        if self._task is not None:
            await self._task
        self.client, self._task = None, None

    async def restart(self) -> discord.Client:
        """Close the bot and start a fresh one from the same factory (same database, new process state)."""
        await self.stop()
        return await self.start()


class BotLauncher:
    """What the ``discord_bot`` fixture yields: call it with a factory to start a bot."""

    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake
        self.running: list[RunningBot] = []

    async def __call__(self, make_bot: BotFactory, *, guild_ready_timeout: float = 0.05) -> RunningBot:
        bot = RunningBot(self.fake, make_bot, guild_ready_timeout)
        self.running.append(bot)
        await bot.start()
        return bot

    async def stop_all(self) -> None:
        for bot in self.running:
            await bot.stop()


@dataclass
class Leftovers:
    """What a closed bot left running: tasks, non-daemon threads, and whether executor work was unfinished."""

    tasks: list[asyncio.Task[object]]
    threads: list[threading.Thread]
    executor_busy: bool

    def __bool__(self) -> bool:
        return bool(self.tasks or self.threads or self.executor_busy)

    def describe(self) -> str:
        lines = [repr(task) for task in self.tasks] + [repr(thread) for thread in self.threads]
        if self.executor_busy:
            lines.append("work still running in the loop's default executor")
        return "\n".join(lines)


async def find_leftovers(
    tasks_before: set[asyncio.Task[object]],
    threads_before: set[threading.Thread],
    *,
    grace: float = LEAK_GRACE,
) -> Leftovers:
    """Tasks and non-daemon threads started since the snapshot that outlive ``grace`` seconds.

    Idle workers of the loop's default executor are not leaks, but work still running on them is: the
    executor is shut down first (joining its idle threads at once) within the grace period.
    """
    loop = asyncio.get_running_loop()
    current = asyncio.current_task()
    deadline = loop.time() + grace
    executor_busy = False
    try:
        await asyncio.wait_for(loop.shutdown_default_executor(), grace)
    except TimeoutError:
        executor_busy = True

    def live_tasks() -> list[asyncio.Task[object]]:
        return [t for t in asyncio.all_tasks() if t not in tasks_before and t is not current and not t.done()]

    def live_threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t not in threads_before and t.is_alive() and not t.daemon]

    while (live_tasks() or live_threads()) and loop.time() < deadline:  # noqa: ASYNC110 (polls threads too)
        await asyncio.sleep(0.02)
    return Leftovers(live_tasks(), live_threads(), executor_busy)


@pytest.fixture
async def discord_bot(fake_discord: FakeDiscord) -> AsyncIterator[BotLauncher]:
    tasks_before = set(asyncio.all_tasks())
    threads_before = set(threading.enumerate())
    launcher = BotLauncher(fake_discord)
    yield launcher
    await launcher.stop_all()
    leftovers = await find_leftovers(tasks_before, threads_before)
    for task in leftovers.tasks:
        task.cancel()
    if leftovers:
        pytest.fail("the bot left these running after close():\n" + leftovers.describe(), pytrace=False)
