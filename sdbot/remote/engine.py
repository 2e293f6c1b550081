"""``RemoteEngine``: an ``Engine`` whose calls run on one GPU worker, through the bot's ``WorkerHub``.

``run`` blocks, like every engine's: the dispatcher calls it from the thread of the worker's lane, exactly as
it calls the local engine, so batching, out-of-memory halving, timeouts and shutdown grace work the same for
both. Talking to Redis happens on the event loop (the hub's asyncio client); the calling thread waits for
the call's events, hands progress and previews to ``on_progress``, and polls ``should_cancel`` every
``CANCEL_POLL`` seconds: a cancel goes to the worker at once, and the worker stops after its current step.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import queue
import secrets
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from PIL import Image

from sdbot.errors import GenerationCancelled
from sdbot.inference.types import (
    CancelCheck,
    EngineRequest,
    GenerationResult,
    ModelInfo,
    Operation,
    Progress,
    ProgressCallback,
)
from sdbot.remote import wire
from sdbot.remote.calls import RemoteCall
from sdbot.remote.hub import WorkerHub
from sdbot.remote.wire import Batch, ProgressEvent, WorkerInfo

CANCEL_POLL = 0.02  # seconds between two looks at ``should_cancel`` while the worker runs

T = TypeVar("T")


class RemoteEngine:
    """The GPU worker ``info.name`` as an ``Engine`` (see the module docstring)."""

    def __init__(
        self, hub: WorkerHub, info: WorkerInfo, loop: asyncio.AbstractEventLoop, *, default_model: str
    ) -> None:
        """``default_model``: the bot's default, named in requests that name none (the worker's own default
        may be another model)."""
        self._hub = hub
        self._loop = loop
        self._default_model = default_model
        self.info = info

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def models(self) -> Mapping[str, ModelInfo]:
        return {model.name: model for model in self.info.models}

    def run(
        self,
        operation: Operation,
        requests: Sequence[EngineRequest],
        on_progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> list[GenerationResult]:
        if should_cancel is not None and should_cancel():
            raise GenerationCancelled("cancelled before it started")
        # A request without a ref gets a name of its own: two such batches must never share a lease.
        refs = [request.ref or secrets.token_hex(8) for request in requests]
        call = self._on_loop(self._open(refs))
        named = [self._named(request) for request in requests]
        fields = wire.encode_batch(Batch(call.lease, call.attempt, operation, named))
        self._on_loop(self._hub.send(call, fields))
        return self._outcome(call, on_progress, should_cancel)

    def _named(self, request: EngineRequest) -> EngineRequest:
        if request.params.model:
            return request
        params = dataclasses.replace(request.params, model=self._default_model)
        return dataclasses.replace(request, params=params)

    async def _open(self, refs: list[str]) -> RemoteCall:
        return self._hub.open_call(self.name, refs)

    def _outcome(
        self, call: RemoteCall, on_progress: ProgressCallback | None, should_cancel: CancelCheck | None
    ) -> list[GenerationResult]:
        cancel_sent = False
        while True:
            if not cancel_sent and should_cancel is not None and should_cancel():
                asyncio.run_coroutine_threadsafe(self._hub.cancel(call), self._loop)
                cancel_sent = True
            try:
                event = call.events.get(timeout=CANCEL_POLL)
            except queue.Empty:
                continue
            if isinstance(event, BaseException):  # WorkerLost
                raise event
            if isinstance(event, ProgressEvent):
                if on_progress is not None:
                    previews = functools.partial(_previews, event.previews) if event.previews else None
                    on_progress(Progress(event.step, event.total, previews))
                continue
            return event.unwrap()

    def _on_loop(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()


def _previews(pngs: list[bytes]) -> list[Image.Image]:
    return [wire.decode_png(png) for png in pngs]
