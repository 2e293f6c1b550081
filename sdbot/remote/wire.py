"""What the bot and its GPU workers write to each other in Redis: the keys, and every message as JSON plus
raw PNG bytes. Never pickle: anyone who can write to the Redis would run code in every worker.

Keys (``sdbot:`` prefix):

- ``workers``: a hash, worker name -> its announcement (``WorkerInfo``: host, GPU, models, heartbeat
  period, last seen), rewritten with every heartbeat; a worker that stops removes its entry.
- ``alive:<worker>``: the heartbeat, a ``WorkerStatus`` (idle or busy, its lease, images made) with a TTL
  of two heartbeat periods. Liveness is this key, never a message's age: a batch that runs for an hour on a
  live worker is never handed to another, and a worker that dies (SIGKILL, power loss, network cut) loses
  its key within two periods.
- ``batches:<worker>``: a stream with the consumer group ``workers``. The bot adds a batch only when it
  counts the worker idle, and the worker reads it (``XREADGROUP COUNT 1``) only when idle, so nothing waits
  in Redis that would undo the bot's fair order. The worker acknowledges and deletes the entry in the same
  ``MULTI`` that publishes its outcome.
- ``leases``: a hash, lease -> ``{"worker", "attempt"}``: the batch each worker may run now. A worker runs a
  batch only if its lease names it with the same attempt; the bot drops the lease when it gives up on it.
- ``control:<worker>``: a stream of cancels for the worker's running batch (``*``: whatever it runs).
- ``progress``: progress and previews of all workers, trimmed to its last ``PROGRESS_MAXLEN`` entries.
- ``results``: outcomes (done, failed, cancelled, released), never trimmed: the bot deletes each one it
  has read, so trimming cannot lose a job's end.
"""

from __future__ import annotations

import enum
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from PIL import Image
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from sdbot.errors import GenerationCancelled, GenerationFailed, WorkerLost
from sdbot.inference.types import (
    EngineRequest,
    GeneratedImage,
    GenerationResult,
    ModelInfo,
    Operation,
    Timings,
)
from sdbot.params import JobParams

GROUP = "workers"  # the consumer group of every worker's batch stream
PROGRESS_MAXLEN = 1000
CONTROL_MAXLEN = 100
ANY_LEASE = "*"  # a cancel for whatever a worker runs (the bot restarted)
MAX_ERROR = 2000  # characters of an error's text that cross the wire
CONNECT_TIMEOUT = 2.0  # seconds
SOCKET_TIMEOUT = 10.0  # seconds; more than any blocking read's BLOCK

Fields = dict[bytes, bytes]


@dataclass(frozen=True)
class Keys:
    prefix: str = "sdbot"

    @property
    def workers(self) -> str:
        return f"{self.prefix}:workers"

    @property
    def leases(self) -> str:
        return f"{self.prefix}:leases"

    @property
    def progress(self) -> str:
        return f"{self.prefix}:progress"

    @property
    def results(self) -> str:
        return f"{self.prefix}:results"

    def alive(self, worker: str) -> str:
        return f"{self.prefix}:alive:{worker}"

    def batches(self, worker: str) -> str:
        return f"{self.prefix}:batches:{worker}"

    def control(self, worker: str) -> str:
        return f"{self.prefix}:control:{worker}"


KEYS = Keys()


@dataclass(frozen=True)
class WorkerInfo:
    """A worker's announcement: what it is and which models it offers (``ModelInfo``: name, family profile,
    whether a safety checker sees its images). ``loaded``: the models surely on its GPU now (the model of
    its last batch). ``seen``: its last heartbeat (epoch seconds)."""

    name: str
    host: str
    device: str
    models: tuple[ModelInfo, ...]
    loaded: tuple[str, ...]
    heartbeat: float
    started: float
    seen: float = 0.0

    @property
    def ttl(self) -> float:
        """Seconds after its last heartbeat that the worker counts as gone."""
        return 2 * self.heartbeat

    @property
    def model_names(self) -> tuple[str, ...]:
        return tuple(model.name for model in self.models)

    def to_json(self) -> bytes:
        return _json(asdict(self) | {"models": [model.to_dict() for model in self.models]})

    @classmethod
    def from_json(cls, raw: bytes) -> WorkerInfo:
        values = json.loads(raw)
        models = tuple(ModelInfo.from_dict(model) for model in values["models"])
        return cls(**(values | {"models": models, "loaded": tuple(values["loaded"])}))


@dataclass(frozen=True)
class WorkerStatus:
    """The heartbeat's value. ``token`` tells two runs of a worker with the same name apart; ``beat``
    counts heartbeats, so the bot knows a heartbeat is new."""

    token: str
    beat: int
    busy: bool
    lease: str | None = None
    images: int = 0  # images made since the worker started

    def to_json(self) -> bytes:
        return _json(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes) -> WorkerStatus:
        return cls(**json.loads(raw))


@dataclass(frozen=True)
class Batch:
    """One engine call for a worker, under ``lease`` (its ``attempt``-th run)."""

    lease: str
    attempt: int
    operation: Operation
    requests: list[EngineRequest]


def encode_batch(batch: Batch) -> Fields:
    fields: Fields = {}
    for index, request in enumerate(batch.requests):
        if request.source is not None:
            fields[f"source.{index}".encode()] = encode_png(request.source)
    meta = {
        "lease": batch.lease,
        "attempt": batch.attempt,
        "operation": batch.operation.value,
        "requests": [{"params": asdict(r.params), "ref": r.ref} for r in batch.requests],
    }
    return {b"meta": _json(meta), **fields}


def decode_batch(fields: Fields) -> Batch:
    meta = json.loads(fields[b"meta"])
    requests = []
    for index, request in enumerate(meta["requests"]):
        png = fields.get(f"source.{index}".encode())
        source = None if png is None else decode_png(png).convert("RGB")
        requests.append(EngineRequest(JobParams.from_dict(request["params"]), source, request["ref"]))
    return Batch(meta["lease"], meta["attempt"], Operation(meta["operation"]), requests)


@dataclass(frozen=True)
class ProgressEvent:
    """A step of a worker's batch; ``previews`` (PNG, one per request) come at most every 0.2 s."""

    worker: str
    lease: str
    attempt: int
    step: int
    total: int
    previews: list[bytes] = field(default_factory=list, repr=False)


def encode_progress(event: ProgressEvent) -> Fields:
    meta = {k: v for k, v in asdict(event).items() if k != "previews"} | {"previews": len(event.previews)}
    return {b"meta": _json(meta), **{f"preview.{i}".encode(): png for i, png in enumerate(event.previews)}}


def decode_progress(fields: Fields) -> ProgressEvent:
    meta = json.loads(fields[b"meta"])
    previews = [fields[f"preview.{i}".encode()] for i in range(meta.pop("previews"))]
    return ProgressEvent(**meta, previews=previews)


class OutcomeKind(enum.StrEnum):
    DONE = "done"
    FAILED = "failed"  # the engine raised: ``error_type`` says how the bot raises it again
    CANCELLED = "cancelled"  # the bot asked (cancel, timeout, shutdown)
    RELEASED = "released"  # the worker shuts down: the batch runs again elsewhere


class ErrorType(enum.StrEnum):
    FAILED = "failed"  # GenerationFailed: its text is fit for the member
    INVALID = "invalid"  # ValueError: the engine refused the parameters
    INTERNAL = "internal"  # anything else: details in the worker's log


@dataclass(frozen=True)
class Outcome:
    """How a worker's batch ended; ``results`` (done) has one result per request."""

    worker: str
    lease: str
    attempt: int
    kind: OutcomeKind
    error: str = ""
    error_type: ErrorType = ErrorType.FAILED
    results: list[GenerationResult] = field(default_factory=list, repr=False)

    @classmethod
    def of_error(cls, batch: Batch, worker: str, error: BaseException) -> Outcome:
        """The outcome of a run that raised ``error``."""
        text = str(error)[:MAX_ERROR]
        if isinstance(error, GenerationCancelled):
            return cls(worker, batch.lease, batch.attempt, OutcomeKind.CANCELLED, text)
        if isinstance(error, GenerationFailed):
            kind = ErrorType.FAILED
        elif isinstance(error, ValueError):
            kind = ErrorType.INVALID
        else:
            kind, text = ErrorType.INTERNAL, f"{type(error).__name__}: {text}"
        return cls(worker, batch.lease, batch.attempt, OutcomeKind.FAILED, text, kind)

    def unwrap(self) -> list[GenerationResult]:
        """The results, or the error the engine raised, raised again here."""
        match self.kind:
            case OutcomeKind.DONE:
                return self.results
            case OutcomeKind.CANCELLED:
                raise GenerationCancelled(self.error)
            case OutcomeKind.RELEASED:
                raise WorkerLost(f"worker {self.worker} shut down: {self.error}")
        if self.error_type is ErrorType.INVALID:
            raise ValueError(self.error)
        if self.error_type is ErrorType.INTERNAL:
            raise RuntimeError(f"on worker {self.worker}: {self.error}")
        raise GenerationFailed(self.error)


def encode_outcome(outcome: Outcome) -> Fields:
    fields: Fields = {}
    results = []
    for r, result in enumerate(outcome.results):
        images = []
        for i, image in enumerate(result.images):
            fields[f"png.{r}.{i}".encode()] = image.png
            images.append({"seed": image.seed, "nsfw": image.nsfw})
        results.append({"images": images, "timings": asdict(result.timings)})
    meta = {k: v for k, v in asdict(outcome).items() if k != "results"} | {"results": results}
    return {b"meta": _json(meta), **fields}


def decode_outcome(fields: Fields) -> Outcome:
    meta = json.loads(fields[b"meta"])
    results = [
        GenerationResult(
            images=[
                _image(fields[f"png.{r}.{i}".encode()], image["seed"], image["nsfw"])
                for i, image in enumerate(result["images"])
            ],
            timings=Timings(**result["timings"]),
        )
        for r, result in enumerate(meta.pop("results"))
    ]
    outcome = Outcome(**meta)
    return replace(
        outcome, kind=OutcomeKind(outcome.kind), error_type=ErrorType(outcome.error_type), results=results
    )


def lease_name(run: str, refs: Sequence[str]) -> str:
    """``<bot run>:<refs>``: the same requests make the same lease within one run of the bot."""
    return f"{run}:{'|'.join(refs)}"


def encode_lease(worker: str, attempt: int) -> bytes:
    return _json({"worker": worker, "attempt": attempt})


def decode_lease(raw: bytes) -> tuple[str, int]:
    values = json.loads(raw)
    return str(values["worker"]), int(values["attempt"])


@dataclass(frozen=True)
class Cancel:
    """Stop attempt ``attempt`` of ``lease`` (a later attempt of the same lease runs on); with ``ANY_LEASE``,
    whatever runs unless its lease is of the bot run ``keep`` (a restarted bot cancels what its previous run
    left running)."""

    lease: str
    attempt: int = 0
    keep: str | None = None

    def applies_to(self, batch: Batch) -> bool:
        if self.lease == ANY_LEASE:
            return self.keep is None or not batch.lease.startswith(f"{self.keep}:")
        return (self.lease, self.attempt) == (batch.lease, batch.attempt)


def outcome_lease(fields: Fields) -> tuple[str, str, int]:
    """The worker, lease and attempt of an outcome, read alone (for one whose images do not decode)."""
    meta = json.loads(fields[b"meta"])
    return str(meta["worker"]), str(meta["lease"]), int(meta["attempt"])


def encode_cancel(lease: str, attempt: int = 0, *, keep: str | None = None) -> Fields:
    return {b"meta": _json(asdict(Cancel(lease, attempt, keep)))}


def decode_cancel(fields: Fields) -> Cancel:
    return Cancel(**json.loads(fields[b"meta"]))


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def decode_png(png: bytes) -> Image.Image:
    """Opened lazily: the pixels are decoded only if someone looks at them (the bot posts the bytes)."""
    return Image.open(io.BytesIO(png))


def _image(png: bytes, seed: int, nsfw: bool | None) -> GeneratedImage:
    return GeneratedImage(decode_png(png), seed=seed, nsfw=nsfw, png=png)


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def open_redis(url: str) -> Redis:
    """An asyncio client that fails fast when Redis is away (the callers' loops retry, and liveness is
    timed by them), with one immediate retry for a pooled connection that a Redis restart closed."""
    return Redis.from_url(
        url,
        socket_connect_timeout=CONNECT_TIMEOUT,
        socket_timeout=SOCKET_TIMEOUT,
        retry=Retry(NoBackoff(), 1),
    )
