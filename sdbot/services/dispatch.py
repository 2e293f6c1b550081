"""Running the queue's batches on every GPU there is: the bot's own engine and each live GPU worker.

The fair queue stays the single source of order. Each engine gets a lane (a ``Worker``) that takes the next
batch it can run only while it is idle, so with N engines at most N batches run at once and nothing waits
anywhere but in the queue: no worker holds a backlog that would undo the fair order. Without
``SDBOT_REDIS_URL`` the only lane is the local engine's, as it always was.

With Redis, the ``WorkerHub`` says which GPU workers are up; each gets a lane whose engine is a
``RemoteEngine``. A lane takes only jobs whose model its worker offers and, while another idle lane has that
model loaded already, leaves such jobs to it. A worker that is lost ends its lane: the batch it ran goes back
to the front of the queue (``WorkerLost``) and the next idle lane takes it.

A job runs on the model its parameters name (empty: the library's default). Each worker announces the
models it offers; the bot's own engine runs the library's models.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sdbot.config import Settings
from sdbot.db import JobRecord
from sdbot.errors import ModelUnavailable
from sdbot.inference.types import Engine, ModelInfo, device_name
from sdbot.library import ModelLibrary
from sdbot.remote.engine import RemoteEngine
from sdbot.remote.hub import WorkerHub
from sdbot.services.active_job import ActiveJob
from sdbot.services.jobs import JobQueue
from sdbot.services.worker import Worker

log = logging.getLogger(__name__)

LOCAL = "local"  # the lane of the bot's own engine
RECONCILE_INTERVAL = 1.0  # seconds between two looks at lanes that ended by themselves


class Availability(enum.Enum):
    READY = "ready"  # an engine that offers the model runs (or the bot's own engine is loading it)
    WAITING = "waiting"  # no GPU is reachable now: jobs wait in the queue until one is
    UNOFFERED = "unoffered"  # GPU workers are up, but none offers the model


@dataclass(frozen=True)
class EngineView:
    """One GPU as ``/sdadmin workers`` shows it."""

    name: str
    host: str
    device: str
    models: tuple[str, ...]
    loaded: tuple[str, ...]  # of ``models``, those on its GPU now
    up: bool
    jobs: tuple[int, ...]  # running now
    images: int  # made since it started
    last_seen: float | None  # epoch seconds; None for the bot's own engine


@dataclass(eq=False)
class _Lane:
    worker: Worker
    models: tuple[str, ...]
    loaded: Callable[[], tuple[str, ...]]  # the models on its GPU now, as last announced


class Dispatcher:
    """Feeds the queue to the local engine (``add_local``) and to the hub's GPU workers."""

    def __init__(
        self,
        queue: JobQueue,
        settings: Settings,
        library: ModelLibrary,
        hub: WorkerHub | None = None,
        *,
        learn: Callable[[Iterable[ModelInfo]], None] = lambda infos: None,
        progress_interval: float = 0.2,
    ) -> None:
        """``learn``: told the models (with their family profiles) of every engine that joins."""
        self._learn = learn
        self._queue = queue
        self._settings = settings
        self._library = library
        self._hub = hub
        self._progress_interval = progress_interval
        self._lanes: dict[str, _Lane] = {}
        self._following: asyncio.Task[None] | None = None
        self._local_expected = hub is None or settings.local_engine

    @property
    def hub(self) -> WorkerHub | None:
        return self._hub

    async def start(self) -> None:
        """Resume the jobs a previous run left unfinished, then follow the GPU workers (with Redis)."""
        await self._queue.restore()
        if self._hub is not None:
            await self._hub.start()
            self._following = asyncio.create_task(self._follow_workers(), name="sdbot-dispatch")

    async def add_local(self, engine: Engine) -> None:
        """The bot's own engine (loaded) becomes a lane. Its models count as loaded: it keeps them in its
        memory budgets, and its lane prefers the model it ran last."""
        models = tuple(engine.models)
        await self._add_lane(LOCAL, engine, models, lambda: models)

    async def stop(self) -> None:
        """Stop every lane (each running batch gets the shutdown grace), then let go of Redis."""
        if self._following is not None:
            self._following.cancel()
            await asyncio.gather(self._following, return_exceptions=True)
            self._following = None
        lanes, self._lanes = list(self._lanes.values()), {}
        await asyncio.gather(*(lane.worker.stop() for lane in lanes))
        if self._hub is not None:
            await self._hub.close()

    # ----- what members and admins are told

    def availability(self, model: str) -> Availability:
        """Whether a job for ``model`` (a library name) can run now, must wait for a GPU, or cannot run."""
        model = model or self._library.default
        if any(model in lane.models for lane in self._lanes.values()):
            return Availability.READY
        if self._hub is None or (self._local_expected and LOCAL not in self._lanes):
            return Availability.READY  # the bot's own engine is loading
        if not self._hub.reachable or not self._hub.up():
            return Availability.WAITING
        return Availability.UNOFFERED

    def admit(self, model: str) -> None:
        """Refuse a request no GPU can run: workers are up, but none offers its model."""
        if self.availability(model) is Availability.UNOFFERED:
            offered = sorted({name for lane in self._lanes.values() for name in lane.models})
            raise ModelUnavailable(model or self._library.default, offered)

    def waiting_for_gpu(self, job: JobRecord) -> bool:
        """No engine that can run the job is up: it waits in the queue until one is."""
        model = self._model_of(job)
        return self._hub is not None and not any(model in lane.models for lane in self._lanes.values())

    def views(self) -> list[EngineView]:
        views = []
        local = self._lanes.get(LOCAL)
        if local is not None:
            engine = local.worker.engine
            views.append(
                EngineView(
                    name="this bot's own GPU",
                    host="local",
                    device=device_name(engine),
                    models=local.models,
                    loaded=local.loaded(),
                    up=True,
                    jobs=tuple(job.id for job in local.worker.running),
                    images=local.worker.images_done,
                    last_seen=None,
                )
            )
        if self._hub is not None:
            for worker in self._hub.views():
                lane = self._lanes.get(worker.info.name)
                info = worker.info
                views.append(
                    EngineView(
                        name=info.name,
                        host=info.host,
                        device=info.device,
                        models=info.model_names,
                        loaded=info.loaded,
                        up=worker.up,
                        jobs=tuple(job.id for job in lane.worker.running) if lane is not None else (),
                        images=worker.images,
                        last_seen=info.seen,
                    )
                )
        return views

    def running_on(self) -> dict[int, str]:
        """Which lane runs each running job (by job id)."""
        return {job.id: name for name, lane in self._lanes.items() for job in lane.worker.running}

    # ----- lanes

    async def _follow_workers(self) -> None:
        assert self._hub is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._hub.changed.wait(), RECONCILE_INTERVAL)
            self._hub.changed.clear()
            await self._reconcile()

    async def _reconcile(self) -> None:
        """A lane for every worker that is up; none for one that is not, or whose lane ended."""
        assert self._hub is not None
        up = self._hub.up()
        for name, lane in list(self._lanes.items()):
            if name != LOCAL and (name not in up or lane.worker.ended):
                del self._lanes[name]
                await lane.worker.stop()
        loop = asyncio.get_running_loop()
        for name, info in up.items():
            if name not in self._lanes:
                engine = RemoteEngine(self._hub, info, loop, default_model=self._library.default)
                await self._add_lane(name, engine, info.model_names, functools.partial(self._loaded, name))

    def _loaded(self, worker: str) -> tuple[str, ...]:
        assert self._hub is not None
        info = self._hub.up().get(worker)
        return info.loaded if info is not None else ()

    async def _add_lane(
        self, name: str, engine: Engine, models: tuple[str, ...], loaded: Callable[[], tuple[str, ...]]
    ) -> None:
        lane = _Lane(
            Worker(
                self._queue,
                engine,
                self._settings,
                progress_interval=self._progress_interval,
                accepts=lambda job: self._accepts(lane, job),
            ),
            models,
            loaded,
        )
        self._lanes[name] = lane
        self._learn(engine.models.values())
        await lane.worker.start(resume=False)

    def _model_of(self, job: JobRecord) -> str:
        """The model a job runs on: the one its parameters name, else the library's default."""
        return job.params.model or self._library.default

    def _accepts(self, lane: _Lane, job: ActiveJob) -> bool:
        """A job for a model the lane offers, unless another idle lane has it loaded already."""
        model = self._model_of(job.record)
        if model not in lane.models:
            return False
        if model in lane.loaded():
            return True
        return not any(
            model in other.loaded() and not other.worker.running
            for other in self._lanes.values()
            if other is not lane
        )

