"""The services, and the one place that builds them: the bot, the tests and the benchmarks all call
``open_services`` (or ``build_services`` on an open database), so they run the same wiring."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sdbot.config import Settings
from sdbot.db import Database
from sdbot.inference.addons import AddonKind, AddonLibrary
from sdbot.library import ModelLibrary, load_library
from sdbot.remote.hub import WorkerHub
from sdbot.services.dispatch import Dispatcher
from sdbot.services.edits import EditService
from sdbot.services.imagine import ImagineService
from sdbot.services.jobs import JobQueue
from sdbot.services.loras import LoraCatalog
from sdbot.services.member_jobs import MemberJobs
from sdbot.services.models import ModelCatalog
from sdbot.services.offers import ChoiceOffers
from sdbot.services.quotas import QuotaService
from sdbot.services.requests import RequestRules
from sdbot.services.server_records import ServerRecords
from sdbot.services.settings import SettingsService, defaults_from
from sdbot.services.uploads import MEBIBYTE


@dataclass(frozen=True)
class Services:
    db: Database
    settings: Settings
    settings_service: SettingsService
    quotas: QuotaService
    queue: JobQueue
    models: ModelCatalog
    rules: RequestRules
    offers: ChoiceOffers
    imagine: ImagineService
    edits: EditService
    member_jobs: MemberJobs
    records: ServerRecords
    dispatcher: Dispatcher


def build_services(
    db: Database,
    settings: Settings,
    library: ModelLibrary | None = None,
    clock: Callable[[], float] = time.time,
) -> Services:
    """The services over ``db``; ``library`` defaults to the one the settings name. With
    ``SDBOT_REDIS_URL`` the dispatcher also feeds the GPU workers behind it."""
    library = load_library(settings) if library is None else library
    loras = LoraCatalog(
        AddonLibrary(settings.lora_dir, AddonKind.LORA),
        AddonLibrary(settings.embeddings_dir, AddonKind.EMBEDDING),
        settings.max_loras,
    )
    settings_service = SettingsService(db, defaults_from(settings), library.names, loras.loras)
    quotas = QuotaService(db, settings_service, clock)
    queue = JobQueue(db, quotas, settings, settings_service, clock)
    models = ModelCatalog(library)
    hub = WorkerHub(settings.redis_url) if settings.redis_url else None
    dispatcher = Dispatcher(queue, settings, library, hub, learn=models.learn)
    rules = RequestRules(db, settings_service, queue, models, loras)
    imagine = ImagineService(
        rules,
        quotas,
        queue,
        max_upload_bytes=settings.max_upload_mb * MEBIBYTE,
        admit=dispatcher.admit,
    )
    return Services(
        db,
        settings,
        settings_service,
        quotas,
        queue,
        models,
        rules,
        ChoiceOffers(settings_service, rules),
        imagine,
        EditService(rules, imagine),
        MemberJobs(rules, quotas, queue),
        ServerRecords(db, queue, clock),
        dispatcher,
    )


async def open_services(
    settings: Settings, library: ModelLibrary | None = None, clock: Callable[[], float] = time.time
) -> Services:
    """Open the settings' database and build the services over it."""
    return build_services(await Database.open(settings.db_path), settings, library, clock)
