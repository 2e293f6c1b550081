"""``SDBot``: the Discord client that owns the bot's resources, their start-up order and their shutdown order.

Start-up (``setup_hook``, before the gateway connects): open the database (migrations run), build the
services, resume the jobs a previous run left unfinished, start loading the model in a thread (logging
progress; until it is loaded, requests are answered "the model is still loading"), load the cogs (one that
fails is logged and skipped), register the persistent result buttons, and sync the slash commands: to
``SDBOT_DEV_GUILD`` when set, else globally, and only when the command set differs from the one last synced
(its hash is kept in the database). When the model is loaded the dispatcher starts feeding it. With
``SDBOT_REDIS_URL`` the GPU workers behind Redis take jobs from the start, requests are accepted at once
(they wait in the queue while no GPU is up), and the bot loads its own model only with
``SDBOT_LOCAL_ENGINE=1``. A heartbeat file beside the database tells
``python -m sdbot health`` (Docker's HEALTHCHECK) whether the bot is alive and connected. Quota ledger rows
that left the 24-hour window are deleted at start-up and then hourly, so a bot that runs for weeks keeps its
database small.

Shutdown (``close``): the dispatcher stops (each running batch gets ``SDBOT_SHUTDOWN_GRACE`` seconds, else it
stays queued for the next start), deliveries in flight finish, the gateway closes, then the database.

No privileged intents: slash commands and buttons arrive as interactions.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import discord
from discord.ext import commands

from sdbot.config import Settings
from sdbot.db import Database
from sdbot.errors import JobNotFound
from sdbot.health import Heartbeat, heartbeat_path, write_heartbeat
from sdbot.inference.types import Engine
from sdbot.library import ModelLibrary, load_library
from sdbot.services import open_services
from sdbot.services.dispatch import Dispatcher
from sdbot.services.edits import EditService
from sdbot.services.imagine import ImagineService
from sdbot.services.jobs import JobQueue
from sdbot.services.quotas import QuotaService
from sdbot.services.settings import SettingsService
from sdbot.tree import SDTree, report_error
from sdbot.views.buttons import ButtonHandler, JobButton, is_job_button
from sdbot.views.delivery import Delivery

log = logging.getLogger(__name__)

COGS = ("sdbot.cogs.imagine", "sdbot.cogs.tools", "sdbot.cogs.queue", "sdbot.cogs.admin")
LOAD_LOG_INTERVAL = 15.0  # seconds between "still loading" log lines
HEARTBEAT_INTERVAL = 20.0  # seconds between heartbeats (the health check allows 120)
PRUNE_INTERVAL = 60 * 60.0  # seconds between deletions of quota ledger rows older than the window
COMMANDS_HASH_KEY = "commands_hash"

EngineFactory = Callable[[], Engine]


class SDBot(commands.Bot):
    """The bot. Give it the settings and a way to get the engine (``engine_factory`` is called in a thread:
    ``lambda: load_engine(settings)`` in production, an already loaded engine in tests)."""

    def __init__(
        self,
        settings: Settings,
        engine_factory: EngineFactory,
        *,
        library: ModelLibrary | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        intents = discord.Intents.none()
        intents.guilds = True  # channels (is it age-restricted?) and permissions; not privileged
        super().__init__(
            command_prefix=commands.when_mentioned,
            help_command=None,
            intents=intents,
            tree_cls=SDTree,
            allowed_mentions=discord.AllowedMentions.none(),
        )
        self.settings = settings
        self.library = load_library(settings) if library is None else library
        self.clock = clock
        self._engine_factory = engine_factory
        self.fatal_error: BaseException | None = None  # why the bot stopped itself (the model did not load)
        self._model_task: asyncio.Task[None] | None = None
        self._housekeeping: list[asyncio.Task[None]] = []  # heartbeat, ledger pruning
        self._closing: asyncio.Future[None] | None = None
        self.job_buttons: ButtonHandler | None = None  # set by the imagine cog while it is loaded
        self.db: Database
        self.settings_service: SettingsService
        self.quotas: QuotaService
        self.queue: JobQueue
        self.dispatcher: Dispatcher
        self.imagine: ImagineService
        self.edits: EditService
        self.delivery: Delivery

    async def setup_hook(self) -> None:
        services = await open_services(self.settings, self.library, self.clock)
        self.db = services.db
        log.info("database %s ready (schema version %d)", self.db.path, self.db.schema_version)
        self.settings_service = services.settings_service
        self.quotas = services.quotas
        self.queue = services.queue
        self.imagine = services.imagine
        self.edits = services.edits
        self.dispatcher = services.dispatcher
        self.delivery = Delivery(
            self,
            self.db,
            self.settings_service,
            services.models,
            self.settings,
            self.clock,
            waiting_for_gpu=self.dispatcher.waiting_for_gpu,
        )
        self.queue.add_listener(self.delivery.on_unwatched)
        await self.dispatcher.start()
        remote = self.dispatcher.hub is not None
        if remote:
            self.imagine.mark_ready()  # jobs wait in the queue until a GPU is up
        if not remote or self.settings.local_engine:
            self._model_task = asyncio.create_task(self._load_model(), name="sdbot-load-model")
        self._housekeeping = [
            asyncio.create_task(self._beat(), name="sdbot-heartbeat"),
            asyncio.create_task(self._prune_ledger(), name="sdbot-prune-ledger"),
        ]
        for name in COGS:
            try:
                await self.load_extension(name)
            except commands.ExtensionError:
                log.exception("could not load %s; the bot runs without it", name)
        self.add_dynamic_items(JobButton)
        await self._sync_commands()

    async def _load_model(self) -> None:
        """Load the engine off the event loop, then feed it jobs and accept requests."""
        log.info("loading the model %s ...", self.settings.model)
        started = time.monotonic()
        # A thread of its own, ended once the model is in (the loop's default executor would keep one idle).
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sdbot-load-model")
        loading = asyncio.get_running_loop().run_in_executor(executor, self._engine_factory)
        try:
            while True:
                done, _ = await asyncio.wait({loading}, timeout=LOAD_LOG_INTERVAL)
                if done:
                    break
                log.info("still loading the model (%.0f s so far) ...", time.monotonic() - started)
            engine = loading.result()
        except Exception as error:
            log.error("could not load the model %s: %s", self.settings.model, error)
            self.fatal_error = error
            await self.wait_until_ready()  # closing while start() still connects breaks its requests
            await self.close()
            return
        finally:
            executor.shutdown(wait=False)
        log.info("models %s loaded in %.1f s", ", ".join(engine.models), time.monotonic() - started)
        await self.dispatcher.add_local(engine)  # the catalog learns its models' profiles
        # What is loaded by now (modules, discord.py's caches, the model's Python objects when it runs in
        # this process) lives as long as the bot. Out of the collector's sight, a full collection pauses the
        # loop for ~1 ms instead of ~300 ms (torch, diffusers and transformers alone are 400,000 objects).
        # Collect first, so that what loading left behind is freed rather than kept for good.
        gc.collect()
        gc.freeze()
        self.imagine.mark_ready()
        log.info("accepting requests")

    async def _sync_commands(self) -> None:
        """Sync only when the command set changed since the last sync to the same place."""
        guild = None if self.settings.dev_guild is None else discord.Object(self.settings.dev_guild)
        if guild is not None:
            self.tree.copy_global_to(guild=guild)
        definitions = [command.to_dict(self.tree) for command in self.tree.get_commands(guild=guild)]
        digest = hashlib.sha256(json.dumps(definitions, sort_keys=True).encode()).hexdigest()
        place = f"guild {guild.id}" if guild is not None else "global"
        key = f"{COMMANDS_HASH_KEY}:{self.application_id}:{place}"
        if await self.db.meta.get(key) == digest:
            log.info("slash commands unchanged (%s); not syncing", place)
            return
        synced = await self.tree.sync(guild=guild)
        await self.db.meta.set(key, digest)
        log.info("synced %d slash command(s) (%s)", len(synced), place)

    async def _beat(self) -> None:
        """Keep the heartbeat fresh; remove it when the bot stops, so the health check says so at once."""
        try:
            while True:
                self._write_heartbeat()
                await asyncio.sleep(HEARTBEAT_INTERVAL)
        finally:
            heartbeat_path(self.settings.db_path).unlink(missing_ok=True)

    async def _prune_ledger(self) -> None:
        """Delete the quota ledger's rows that left the window, now and every ``PRUNE_INTERVAL``. Checks
        read only the window either way: a failed prune is logged and tried again next time."""
        while True:
            try:
                pruned = await self.quotas.prune()
            except Exception:
                log.exception("could not prune the quota ledger")
            else:
                log.debug("pruned %d quota ledger row(s)", pruned)
            await asyncio.sleep(PRUNE_INTERVAL)

    def _write_heartbeat(self) -> None:
        heartbeat = Heartbeat(
            at=time.time(),  # wall time: the checker is another process reading the clock
            connected=self.is_ready() and self.ws is not None and self.ws.open,
            model_ready=self.imagine.ready,
            queued=len(self.queue.queued()),
        )
        try:
            write_heartbeat(heartbeat_path(self.settings.db_path), heartbeat)
        except OSError as error:
            log.warning("could not write the heartbeat: %s", error)

    async def on_ready(self) -> None:
        log.info("connected as %s to %d server(s)", self.user, len(self.guilds))
        self._write_heartbeat()

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """A button press discord.py will not route to a ``JobButton`` (a custom_id that is forged, from an
        older version, or not on the message) still gets an answer."""
        if interaction.type is not discord.InteractionType.component or interaction.data is None:
            return
        custom_id = str(interaction.data.get("custom_id", ""))
        if is_job_button(custom_id) and _message_has(interaction.message, custom_id):
            return
        await report_error(interaction, JobNotFound("This button is no longer valid."))

    async def close(self) -> None:
        """Stop in order: model loader, dispatcher (with grace), deliveries, gateway, database.
        Safe to call more than once (``async with bot`` calls it again after ``start`` returns)."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close_in_order())
        await asyncio.shield(self._closing)

    async def _close_in_order(self) -> None:
        if self._model_task is not None:
            self._model_task.cancel()  # also when it is the one closing us: it awaits this task, shielded
            await asyncio.gather(self._model_task, return_exceptions=True)
        for task in self._housekeeping:
            task.cancel()
        await asyncio.gather(*self._housekeeping, return_exceptions=True)
        if hasattr(self, "dispatcher"):
            await self.dispatcher.stop()
        if hasattr(self, "delivery"):
            await self.delivery.close()
        await super().close()
        if hasattr(self, "db"):
            await self.db.close()
        log.info("shut down")


def _message_has(message: discord.Message | None, custom_id: str) -> bool:
    if message is None:
        return False
    return any(
        getattr(child, "custom_id", None) == custom_id
        for row in message.components
        for child in getattr(row, "children", ())
    )
