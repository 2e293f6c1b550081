"""``python -m sdbot worker``: a GPU worker that runs the bot's batches, taken from Redis.

The worker loads its engine in the same engine process the bot uses (``EngineProcess``: a hung kernel is
still killed here, on the worker's own machine), announces itself and its models, and then:

- beats every ``SDBOT_WORKER_HEARTBEAT`` seconds (its ``alive`` key lives two periods): the bot counts it
  gone when the key expires, whatever the worker was doing;
- reads its batch stream with ``XREADGROUP COUNT 1`` only while idle, and runs a batch only if the bot's
  lease names this worker and the batch's attempt (anything else is a leftover of a batch the bot gave up);
- sends progress at most every ``PROGRESS_INTERVAL`` seconds (and the last step), with previews as PNG
  (``ProgressSender``), and the outcome (images as raw PNG bytes) in the same ``MULTI`` that acknowledges
  and deletes the batch;
- stops the running batch after its current step when the bot cancels it (cancel, timeout, shutdown, the
  bot gave up on the lease, or the bot restarted), through a ``CancelSwitch``;
- reconnects by itself when Redis goes away, keeping a finished batch's outcome until it can be sent.

Stopping (SIGTERM, Ctrl-C): no new batch; the running one gets ``SDBOT_SHUTDOWN_GRACE`` seconds, then it
is interrupted and *released* (the bot runs it again elsewhere, first in line); then the worker signs off.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import importlib
import logging
import os
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from sdbot.config import Settings, redis_location
from sdbot.errors import GenerationCancelled, ModelLoadFailed
from sdbot.inference.process import EngineLoader, EngineProcess
from sdbot.inference.types import Engine, default_model, device_name
from sdbot.remote import wire
from sdbot.remote.progress import ProgressSender
from sdbot.remote.wire import KEYS, Batch, Keys, Outcome, OutcomeKind, WorkerInfo, WorkerStatus

log = logging.getLogger(__name__)

READ_BLOCK_MS = 1000  # how long one read of the batch or control stream waits
RETRY_DELAYS = (0.1, 0.2, 0.5, 1.0, 2.0)  # seconds between reconnection attempts, the last repeated


class GpuWorker:
    """Serves the bot's batches on ``engine`` until ``stop`` (see the module docstring)."""

    def __init__(self, settings: Settings, engine: Engine, *, name: str, keys: Keys = KEYS) -> None:
        assert settings.redis_url is not None
        self.name = name
        self._settings = settings
        self._engine = engine
        self._keys = keys
        self._redis = wire.open_redis(settings.redis_url)
        self._location = redis_location(settings.redis_url)
        info = WorkerInfo(
            name=name,
            host=socket.gethostname(),
            device=device_name(engine),
            models=tuple(engine.models.values()),
            loaded=(default_model(engine),),
            heartbeat=settings.worker_heartbeat,
            started=time.time(),
        )
        self._beacon = Beacon(self._redis, keys, info, self._status)
        self._images = 0
        self._running: Batch | None = None
        self._cancels = CancelSwitch(self._redis, keys, name, lambda: self._running)
        self._releasing = False  # the grace is over: a batch stopped now is released, not cancelled
        self._stopping = asyncio.Event()
        self._closed = False  # the heartbeat loop ends (a redis-py connect can swallow a task's cancel)
        self._registered = False
        self._progress = ProgressSender(self._redis, keys, name)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sdbot-worker-engine")

    def stop(self) -> None:
        """Take no new batch; give the running one the shutdown grace, then release it."""
        if self._stopping.is_set():
            return
        log.info("stopping: the running batch gets %g s", self._settings.shutdown_grace)
        self._stopping.set()
        asyncio.get_running_loop().call_later(self._settings.shutdown_grace, self._release_running)

    async def run(self) -> None:
        """Serve until ``stop`` is called, then sign off."""
        helpers = [
            asyncio.create_task(self._beat_forever(), name="sdbot-worker-beat"),
            asyncio.create_task(self._cancels.listen(), name="sdbot-worker-control"),
            asyncio.create_task(self._progress.run(), name="sdbot-worker-progress"),
        ]
        try:
            await self._serve()
        finally:
            self._closed = True
            self._cancels.stop()
            self._progress.stop()
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            await self._beacon.sign_off()
            self._executor.shutdown(wait=False)
            await self._redis.aclose()

    # ----- taking batches

    async def _serve(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                if not self._registered:
                    await self._register()
                    failures = 0
                replies = await self._redis.xreadgroup(
                    wire.GROUP, self.name, {self._keys.batches(self.name): ">"}, count=1, block=READ_BLOCK_MS
                )
                for _, entries in replies:
                    for entry, fields in entries:
                        await self._take(entry, fields)
            except RedisError as error:
                self._registered = False
                await self._wait_to_retry(failures, error)
                failures += 1

    async def _register(self) -> None:
        """Make sure the batch stream and its group exist (from the stream's start: a batch the bot added
        before the group existed is still read), then announce this worker with a heartbeat."""
        with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists
            await self._redis.xgroup_create(self._keys.batches(self.name), wire.GROUP, id="0", mkstream=True)
        await self._beacon.announce()
        self._registered = True
        log.info("worker %s serves the bot's batches from Redis at %s", self.name, self._location)

    async def _take(self, entry: bytes, fields: wire.Fields) -> None:
        stream = self._keys.batches(self.name)
        try:
            batch = wire.decode_batch(fields)
        except (ValueError, KeyError, TypeError) as error:
            log.error("dropping an unreadable batch %s: %s", entry, error)
            await self._drop(stream, entry)
            return
        lease = await self._redis.hget(self._keys.leases, batch.lease)
        if lease is None or wire.decode_lease(lease) != (self.name, batch.attempt):
            log.info(
                "skipping batch %s attempt %d: the bot no longer holds its lease", batch.lease, batch.attempt
            )
            await self._drop(stream, entry)
            return
        self._running = batch
        self._cancels.reset_for(batch)
        await self._beat_quietly()
        outcome = await asyncio.get_running_loop().run_in_executor(self._executor, self._run, batch)
        await self._publish(outcome, stream, entry)
        self._running = None
        if outcome.kind is OutcomeKind.DONE:
            self._images += sum(len(result.images) for result in outcome.results)
            model = batch.requests[0].params.model or default_model(self._engine)
            self._beacon.info = dataclasses.replace(self._beacon.info, loaded=(model,))
        await self._beat_quietly()

    def _run(self, batch: Batch) -> Outcome:
        """In the engine thread: run the batch, and say how it ended."""
        reporter = self._progress.reporter(batch)
        try:
            results = self._engine.run(batch.operation, batch.requests, reporter, self._cancels.is_on)
        except Exception as error:
            if isinstance(error, GenerationCancelled) and self._releasing:
                return Outcome(self.name, batch.lease, batch.attempt, OutcomeKind.RELEASED, str(error))
            if not isinstance(error, GenerationCancelled):
                log.warning("batch %s failed: %s", batch.lease, error, exc_info=error)
            return Outcome.of_error(batch, self.name, error)
        return Outcome(self.name, batch.lease, batch.attempt, OutcomeKind.DONE, results=results)

    async def _publish(self, outcome: Outcome, stream: str, entry: bytes) -> None:
        """Send the outcome, acknowledge and delete the batch, all at once; keep trying while Redis is away
        (up to the shutdown grace once stopping)."""
        await self._progress.sent()  # its last steps go first
        fields = wire.encode_outcome(outcome)
        failures = 0
        while True:
            try:
                async with self._redis.pipeline(transaction=True) as pipe:
                    pipe.xadd(self._keys.results, fields)
                    pipe.xack(stream, wire.GROUP, entry)
                    pipe.xdel(stream, entry)
                    await pipe.execute()
                return
            except RedisError as error:
                if self._releasing:
                    log.error("gave up sending the outcome of batch %s: %s", outcome.lease, error)
                    return
                await self._wait_to_retry(failures, error)
                failures += 1

    async def _drop(self, stream: str, entry: bytes) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xack(stream, wire.GROUP, entry)
            pipe.xdel(stream, entry)
            await pipe.execute()

    def _release_running(self) -> None:
        """The shutdown grace is over: interrupt the running batch; the bot runs it again elsewhere."""
        self._releasing = True
        if self._running is not None:
            log.warning("shutdown: releasing batch %s to the bot", self._running.lease)
            self._cancels.turn_on()

    # ----- heartbeats

    async def _beat_forever(self) -> None:
        while not self._closed:
            await asyncio.sleep(self._settings.worker_heartbeat)
            if self._registered:
                await self._beat_quietly()

    async def _beat_quietly(self) -> None:
        with contextlib.suppress(RedisError):  # the serving loop notices, and reconnects
            await self._beacon.beat()

    def _status(self) -> tuple[str | None, int]:
        """The lease of the running batch (None: idle) and the images made so far."""
        running = self._running
        return (running.lease if running is not None else None), self._images

    async def _wait_to_retry(self, failures: int, error: Exception) -> None:
        """Log the first failure of a row; wait a little longer after each (less once stopping)."""
        if failures == 0:
            log.warning("Redis at %s: %s; retrying", self._location, error)
        if self._stopping.is_set():
            await asyncio.sleep(RETRY_DELAYS[0])
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), _retry_delay(failures))


class CancelSwitch:
    """Whether the running batch must stop, which the engine asks after each step (``is_on``). The bot turns
    it on through the worker's control stream (``listen``, until ``stop``), the worker itself when the
    shutdown grace is over (``turn_on``). Cancels are remembered a while: one may come before its batch."""

    def __init__(self, redis: Redis, keys: Keys, worker: str, running: Callable[[], Batch | None]) -> None:
        """``running``: the batch the worker runs now (None: idle)."""
        self._redis = redis
        self._stream = keys.control(worker)
        self._running = running
        self._on = threading.Event()  # read by the engine thread
        self._cancelled: collections.deque[wire.Cancel] = collections.deque(maxlen=64)
        self._stopped = False  # the loop ends (a redis-py connect can swallow a task's cancel)

    def is_on(self) -> bool:
        return self._on.is_set()

    def turn_on(self) -> None:
        self._on.set()

    def reset_for(self, batch: Batch) -> None:
        """``batch`` starts: on if the bot cancelled it while it was on its way here, off otherwise."""
        if any(cancel.applies_to(batch) for cancel in self._cancelled):
            self._on.set()
        else:
            self._on.clear()

    def stop(self) -> None:
        self._stopped = True

    async def listen(self) -> None:
        """Read the bot's cancels, from the first one sent after the worker started."""
        cursor: bytes | str | None = None
        failures = 0
        while not self._stopped:
            try:
                if cursor is None:
                    last = await self._redis.xrevrange(self._stream, count=1)
                    cursor = last[0][0] if last else "0-0"
                replies = await self._redis.xread({self._stream: cursor}, block=READ_BLOCK_MS)
                failures = 0
            except RedisError:
                await asyncio.sleep(_retry_delay(failures))
                failures += 1
                continue
            for _, entries in replies:
                for entry, fields in entries:
                    cursor = entry
                    self._on_cancel(wire.decode_cancel(fields))

    def _on_cancel(self, cancel: wire.Cancel) -> None:
        if cancel.lease != wire.ANY_LEASE:  # one lease's cancel may come before its batch; "*" never does
            self._cancelled.append(cancel)
        running = self._running()
        if running is not None and cancel.applies_to(running):
            log.info("the bot cancels batch %s", running.lease)
            self._on.set()


class Beacon:
    """A worker's presence in Redis: its announcement and heartbeat (one ``MULTI``: the ``alive`` key with a
    TTL of two periods, and the announcement with its last-seen time) and its sign-off. ``token`` tells this
    process from another with the same name."""

    def __init__(
        self, redis: Redis, keys: Keys, info: WorkerInfo, status: Callable[[], tuple[str | None, int]]
    ) -> None:
        self.info = info
        self._redis = redis
        self._keys = keys
        self._status = status
        self._token = secrets.token_hex(8)
        self._beats = 0

    async def announce(self) -> None:
        """The first heartbeat; ``_NameTaken`` while another live worker has this name."""
        holder = await self._redis.get(self._keys.alive(self.info.name))
        if holder is not None and WorkerStatus.from_json(holder).token != self._token:
            raise _NameTaken(
                f"another worker named {self.info.name} is alive; waiting for its heartbeat to end"
            )
        await self.beat()

    async def beat(self) -> None:
        self._beats += 1
        lease, images = self._status()
        status = WorkerStatus(self._token, self._beats, busy=lease is not None, lease=lease, images=images)
        info = dataclasses.replace(self.info, seen=time.time())
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._keys.alive(info.name), status.to_json(), px=int(info.ttl * 1000))
            pipe.hset(self._keys.workers, info.name, info.to_json())
            await pipe.execute()

    async def sign_off(self) -> None:
        with contextlib.suppress(RedisError):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hdel(self._keys.workers, self.info.name)
                pipe.delete(self._keys.alive(self.info.name))
                await pipe.execute()
            log.info("worker %s signed off", self.info.name)


class _NameTaken(RedisError):
    """Another live worker has this worker's name (retried like a connection failure: it may be this
    worker's own previous run, whose heartbeat has not expired yet)."""


def run_worker(settings: Settings, *, name: str | None = None, engine: str | None = None) -> int:
    """Load the engine in its process and serve until SIGTERM or Ctrl-C; 1 if the model does not load.
    ``engine``: ``module:function`` that makes the engine from the settings (default: the diffusers
    engine), as benchmarks and tests run a simulated one."""
    loader = _loader(engine) if engine is not None else None
    process = EngineProcess(settings, loader=loader)
    try:
        process.start()
    except ModelLoadFailed as error:
        print(f"sdbot: {error}", file=sys.stderr)
        return 1
    try:
        worker = GpuWorker(settings, process, name=name or settings.worker_name or _default_name())
        asyncio.run(_serve_until_signalled(worker))
    finally:
        process.close()
    return 0


async def _serve_until_signalled(worker: GpuWorker) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, worker.stop)
    await worker.run()


def _retry_delay(failures: int) -> float:
    return RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)]


def _default_name() -> str:
    """Unique on this machine (two workers for two GPUs of one box), stable for nothing else: set
    ``SDBOT_WORKER_NAME`` to keep a worker's name across restarts."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _loader(spec: str) -> EngineLoader:
    module, _, function = spec.partition(":")
    loaded: EngineLoader = getattr(importlib.import_module(module), function)
    return loaded
