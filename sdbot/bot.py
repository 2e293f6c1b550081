"""``SDBot``: the Discord client that owns the bot's resources, their start-up order and their shutdown order.

Start-up: ``login`` opens the database first (migrations run), so that a bad ``SDBOT_DB`` stops start-up at
once in one line, then logs in to Discord, trying again with backoff (and saying so) while Discord cannot be
reached. ``setup_hook`` builds the services, queues again the jobs a previous run left unfinished (one whose
images were kept is recorded done, never run twice), starts loading the model in a thread (logging
progress), loads the cogs (one that fails is logged and skipped), registers the persistent result buttons,
syncs the slash commands (to ``SDBOT_DEV_GUILD`` when set, else globally, and only when the command set
differs from the one last synced: its hash is kept in the database), and starts posting what a previous run
left unposted. Requests are queued from the start; while the model loads they wait, and say so, and the
dispatcher feeds the engine once it is loaded. With ``SDBOT_REDIS_URL`` the GPU workers behind Redis take jobs
from the start (jobs wait in the queue, and say so, while no GPU is up), and the bot loads its own model only
with ``SDBOT_LOCAL_ENGINE=1``. ``sdbot.housekeeping`` keeps the presence (loading / ready / busy / paused),
the heartbeat file that ``python -m sdbot health`` reads, and the hourly pruning of the quota ledger and of
expired status message tokens.

Shutdown (``close``): new interactions are refused ("restarting") and those in flight get
``HANDLER_GRACE`` seconds to finish; then the dispatcher stops (each running batch gets
``SDBOT_SHUTDOWN_GRACE`` seconds, else it stays queued for the next start), deliveries in flight finish,
the gateway closes, then the database.

No privileged intents: slash commands and buttons arrive as interactions.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import aiohttp
import discord
from discord.ext import commands

from sdbot.config import Settings
from sdbot.db import Database
from sdbot.errors import JobNotFound
from sdbot.health import heartbeat_path
from sdbot.housekeeping import Housekeeping
from sdbot.inference.types import Engine
from sdbot.library import ModelLibrary, load_library
from sdbot.services import build_services
from sdbot.services.dispatch import Dispatcher
from sdbot.services.edits import EditService
from sdbot.services.imagine import ImagineService
from sdbot.services.jobs import JobQueue
from sdbot.services.member_jobs import MemberJobs
from sdbot.services.offers import ChoiceOffers
from sdbot.services.quotas import QuotaService
from sdbot.services.requests import RequestRules
from sdbot.services.server_records import ServerRecords
from sdbot.services.settings import SettingsService
from sdbot.tree import Restarting, SDTree, report_error, sync_if_changed
from sdbot.views.buttons import ButtonHandler, JobButton, has_button, is_job_button
from sdbot.views.delivery import Delivery
from sdbot.views.presence import BotState

log = logging.getLogger(__name__)

COGS = ("sdbot.cogs.imagine", "sdbot.cogs.tools", "sdbot.cogs.queue", "sdbot.cogs.admin")
LOAD_LOG_INTERVAL = 15.0  # seconds between "still loading" log lines
HANDLER_GRACE = 10.0  # seconds shutdown gives interaction handlers in flight
LOGIN_RETRY_FIRST = 2.0  # seconds before logging in again when Discord cannot be reached, doubling
LOGIN_RETRY_LAST = 60.0  # seconds between tries at most
UNREACHABLE = (aiohttp.ClientConnectionError, asyncio.TimeoutError, discord.DiscordServerError)

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
            status=BotState.LOADING.status,
            activity=BotState.LOADING.activity,
        )
        self.settings = settings
        self.library = load_library(settings) if library is None else library
        self.clock = clock
        self._engine_factory = engine_factory
        self.fatal_error: BaseException | None = None  # why the bot stopped itself (the model did not load)
        self.model_ready = False  # the model is loaded and the dispatcher feeds it
        self.accepting = True  # interactions are handled (no longer once shutdown began)
        self._handlers: set[asyncio.Task[object]] = set()  # interaction handlers in flight
        self._model_task: asyncio.Task[None] | None = None
        self._closing: asyncio.Future[None] | None = None
        self.job_buttons: ButtonHandler | None = None  # set by the imagine cog while it is loaded
        self.db: Database
        self.settings_service: SettingsService
        self.quotas: QuotaService
        self.queue: JobQueue
        self.rules: RequestRules
        self.offers: ChoiceOffers
        self.imagine: ImagineService
        self.edits: EditService
        self.member_jobs: MemberJobs
        self.records: ServerRecords
        self.delivery: Delivery
        self.housekeeping: Housekeeping

    async def login(self, token: str) -> None:
        """Open the database, then log in to Discord, trying again with backoff while it cannot be reached
        (no route, DNS, refused, or Discord's own 5xx). A ``ConfigError`` says what is wrong with
        ``SDBOT_DB``."""
        if not hasattr(self, "db"):
            self.db = await Database.open(self.settings.db_path)
            log.info("database %s ready (schema version %d)", self.db.path, self.db.schema_version)
        delay = LOGIN_RETRY_FIRST
        while True:
            try:
                await super().login(token)
                return
            except UNREACHABLE as error:
                log.warning(
                    "cannot reach Discord at %s (%s): check the network and DNS; trying again in %g s",
                    discord.http.Route.BASE,
                    error,
                    delay,
                )
            await self.http.close()  # it closes its connector too: the next login makes a new one
            self.http.connector = discord.utils.MISSING
            await asyncio.sleep(delay)
            delay = min(delay * 2, LOGIN_RETRY_LAST)
            if self._closing is not None:  # stopped while waiting: ``connect`` then returns at once
                return

    async def setup_hook(self) -> None:
        services = build_services(self.db, self.settings, self.library, self.clock)
        self.settings_service = services.settings_service
        self.quotas = services.quotas
        self.queue = services.queue
        self.dispatcher: Dispatcher = services.dispatcher
        self.rules = services.rules
        self.offers = services.offers
        self.imagine = services.imagine
        self.edits = services.edits
        self.member_jobs = services.member_jobs
        self.records = services.records
        self.delivery = Delivery(
            self,
            self.db,
            self.queue.ledger,
            self.settings_service,
            services.models,
            self.settings,
            model_ready=lambda: self.model_ready,
            waiting_for_gpu=self.dispatcher.waiting_for_gpu,
            clock=self.clock,
        )
        self.queue.observers.add_listener(self.delivery.on_unwatched)
        await self.dispatcher.start()  # resumes unfinished jobs before any request: they keep their places
        if self.dispatcher.hub is None or self.settings.local_engine:
            self._model_task = asyncio.create_task(self._load_model(), name="sdbot-load-model")
        else:
            self.model_ready = True  # no model of its own: the GPU workers' engines run the jobs
        self.housekeeping = Housekeeping(
            self,
            self.db,
            self.quotas,
            self.queue,
            heartbeat_file=heartbeat_path(self.settings.db_path),
            model_ready=lambda: self.model_ready,
            clock=self.clock,
        )
        self.housekeeping.start()
        for name in COGS:
            try:
                await self.load_extension(name)
            except commands.ExtensionError:
                log.exception("could not load %s; the bot runs without it", name)
        self.add_dynamic_items(JobButton)
        await sync_if_changed(self.tree, self.db.meta, self.application_id, self.settings.dev_guild)
        self.delivery.spawn(self.delivery.recover(), "sdbot-recover")

    async def _load_model(self) -> None:
        """Load the engine off the event loop, then let the dispatcher feed it jobs."""
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
        self.model_ready = True
        log.info("the model is ready: running the queue")

    async def on_ready(self) -> None:
        log.info("connected as %s to %d server(s)", self.user, len(self.guilds))
        self.housekeeping.write_heartbeat()

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """A button press discord.py will not route to a ``JobButton`` (a custom_id that is forged, from an
        older version, or not on the message) still gets an answer."""
        if interaction.type is not discord.InteractionType.component or interaction.data is None:
            return
        custom_id = str(interaction.data.get("custom_id", ""))
        if is_job_button(custom_id) and has_button(interaction.message, custom_id):
            return
        await report_error(interaction, JobNotFound("This button is no longer valid."))

    def admit(self) -> None:
        """Called first by every interaction handler (commands, buttons): shutdown waits for the handler's
        task; once shutdown has begun, it refuses with ``Restarting``."""
        if not self.accepting:
            raise Restarting()
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)

    async def close(self) -> None:
        """Stop in order: new interactions, the handlers in flight (with grace), the model loader, the
        dispatcher (with grace), deliveries, the gateway, the database. Safe to call more than once (``async
        with bot`` calls it again after ``start`` returns)."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close_in_order())
        await asyncio.shield(self._closing)

    async def _close_in_order(self) -> None:
        self.accepting = False
        if self._handlers:
            _, late = await asyncio.wait(set(self._handlers), timeout=HANDLER_GRACE)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self._model_task is not None:
            self._model_task.cancel()  # also when it is the one closing us: it awaits this task, shielded
            await asyncio.gather(self._model_task, return_exceptions=True)
        if hasattr(self, "housekeeping"):
            await self.housekeeping.stop()
        if hasattr(self, "dispatcher"):
            await self.dispatcher.stop()
        if hasattr(self, "delivery"):
            await self.delivery.close()
        await super().close()
        if hasattr(self, "db"):
            await self.db.close()
        log.info("shut down")

