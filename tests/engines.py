"""The tests' one set of engine doubles, each for a rule that a real engine cannot show on cue.

- ``StepEngine``: a fake that steps like the real engine (progress each step, ``should_cancel`` before each
  step), with exact timing and injected faults; its images are 8x8 squares whose colour encodes the seed.
- ``EngineWrapper`` and its kinds wrap a real engine: ``GatedEngine`` holds a run after its first step until
  the test opens its gate (``SteppedEngine``: after every step), ``CountingEngine`` records batch sizes,
  ``FaultyEngine`` fails the calls a fault picks.
- ``generate`` calls an engine the way tests mostly do: text to image, a request per ``JobParams``.
- ``CrashingEngine`` and ``HangingEngine`` stand for a CUDA fault and a hung kernel in the engine's process;
  ``load_crashing_engine``/``load_hanging_engine`` are the loaders ``EngineProcess`` takes by name.
"""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from PIL import Image

from sdbot.config import Settings
from sdbot.errors import GenerationCancelled, GenerationFailed
from sdbot.inference import families
from sdbot.inference.types import (
    CancelCheck,
    Engine,
    EngineRequest,
    GeneratedImage,
    GenerationResult,
    ModelInfo,
    Operation,
    Progress,
    ProgressCallback,
)
from sdbot.library import ModelLibrary
from sdbot.params import JobParams, image_seed

Fault = Callable[[Sequence[EngineRequest]], Exception | None]


def generate(engine: Engine, batch: Sequence[JobParams], **callbacks: Any) -> list[GenerationResult]:
    """One text-to-image call of ``engine``, a request per parameters."""
    return engine.run(Operation.GENERATE, [EngineRequest(params) for params in batch], **callbacks)


def poison(prompt: str, error: str = "poisoned") -> Fault:
    """A fault that fails any call containing ``prompt`` (a request the model chokes on)."""

    def fault(requests: Sequence[EngineRequest]) -> Exception | None:
        return GenerationFailed(error) if any(r.params.prompt == prompt for r in requests) else None

    return fault


def always(error: Exception) -> Fault:
    return lambda requests: error


def fake_library(name: str) -> dict[str, ModelInfo]:
    """The ``models`` of a fake engine: one unchecked SD 1.x model called ``name``."""
    return {name: ModelInfo(name, families.SD1, checked=False)}


class StepEngine:
    """A fake engine that steps like the real one."""

    models = fake_library("step-engine")

    def __init__(self, *, step_seconds: float = 0.0, fault: Fault | None = None) -> None:
        self.step_seconds = step_seconds
        self.fault = fault
        self.calls: list[list[str]] = []  # the prompts of each call, one per image
        self.operations: list[Operation] = []
        self.threads: set[threading.Thread] = set()
        self.step_started: list[float] = []
        self.sources: list[tuple[int, int]] = []
        self.previews_rendered = 0  # previews are offered on every step but the last, as the engine does

    def run(
        self,
        operation: Operation,
        requests: Sequence[EngineRequest],
        on_progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> list[GenerationResult]:
        self.threads.add(threading.current_thread())
        self.operations.append(operation)
        self.calls.append([r.params.prompt for r in requests for _ in range(r.params.count)])
        self.sources.extend(r.source.size for r in requests if r.source is not None)
        if self.fault is not None and (error := self.fault(requests)) is not None:
            raise error
        total = requests[0].params.steps
        for step in range(1, total + 1):
            if should_cancel is not None and should_cancel():
                raise GenerationCancelled(f"cancelled after step {step - 1} of {total}")
            self.step_started.append(time.monotonic())
            time.sleep(self.step_seconds)
            if on_progress is not None:
                on_progress(Progress(step, total, self._render_previews if step < total else None))
        return [
            GenerationResult([_square(image_seed(r.params.seed or 0, i)) for i in range(r.params.count)])
            for r in requests
        ]

    def _render_previews(self) -> list[Image.Image]:
        self.previews_rendered += 1
        return [Image.new("RGB", (4, 4))]


def _square(seed: int) -> GeneratedImage:
    image = Image.new("RGB", (8, 8), (seed % 256, 0, 0))
    png = io.BytesIO()
    image.save(png, format="PNG")
    return GeneratedImage(image, seed=seed, nsfw=False, png=png.getvalue())


class EngineWrapper:
    """A real engine behind a wrapper that changes one thing about its runs (subclasses say which)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @property
    def models(self) -> Mapping[str, ModelInfo]:
        return self._engine.models

    def run(
        self,
        operation: Operation,
        requests: Sequence[EngineRequest],
        on_progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> list[GenerationResult]:
        return self._engine.run(operation, requests, on_progress, should_cancel)


class GatedEngine(EngineWrapper):
    """Each run waits after its first step until the test opens ``gate`` (or the run is cancelled), so a test
    can look at a running job. ``paused``: a run has reached a step."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.gate = threading.Event()
        self.paused = threading.Event()

    def run(
        self,
        operation: Operation,
        requests: Sequence[EngineRequest],
        on_progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> list[GenerationResult]:
        def progress(report: Any) -> None:
            if on_progress is not None:
                on_progress(report)
            self.paused.set()
            while not self._may_go_on(timeout=0.02):
                if should_cancel is not None and should_cancel():
                    return

        return super().run(operation, requests, progress, should_cancel)

    def _may_go_on(self, timeout: float) -> bool:
        """Whether the run may go past this step, waiting at most ``timeout`` seconds to be let."""
        return self.gate.wait(timeout)


class SteppedEngine(GatedEngine):
    """Pauses after each step until the test allows the next one (``steps``)."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.steps = threading.Semaphore(0)

    def _may_go_on(self, timeout: float) -> bool:
        return self.steps.acquire(timeout=timeout)


class FaultyEngine(GatedEngine):
    """Fails the calls ``fault`` picks, the way a broken model or a prompt it chokes on does; the others run
    (through the gate, which starts open)."""

    def __init__(self, engine: Engine, fault: Fault) -> None:
        super().__init__(engine)
        self._fault = fault
        self.gate.set()

    def run(
        self,
        operation: Operation,
        requests: Sequence[EngineRequest],
        on_progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> list[GenerationResult]:
        error = self._fault(requests)
        if error is not None:
            raise error
        return super().run(operation, requests, on_progress, should_cancel)


class CountingEngine(EngineWrapper):
    """Records how many images each text-to-image call made, and the models of every call's requests."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.sizes: list[int] = []
        self.batch_models: list[list[str]] = []  # each call's requests' models

    def run(
        self,
        operation: Operation,
        requests: Sequence[EngineRequest],
        on_progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> list[GenerationResult]:
        if operation is Operation.GENERATE:
            self.sizes.append(sum(request.params.count for request in requests))
        self.batch_models.append([request.params.model for request in requests])
        return super().run(operation, requests, on_progress, should_cancel)


class CrashingEngine:
    """Exits its process, as a CUDA fault or the kernel's OOM killer would, on the prompt "crash"."""

    models = fake_library("crashing")

    def run(self, operation, requests, on_progress=None, should_cancel=None) -> list[GenerationResult]:
        if requests[0].params.prompt == "crash":
            os._exit(3)
        return [GenerationResult([]) for _ in requests]


class HangingEngine:
    """Reports one step, then never ends and never looks at ``should_cancel``: a kernel that hangs."""

    models = fake_library("hanging")

    def run(self, operation, requests, on_progress=None, should_cancel=None) -> list[GenerationResult]:
        on_progress(Progress(1, 10))
        time.sleep(3600)
        return []


def load_crashing_engine(settings: Settings, library: ModelLibrary | None) -> CrashingEngine:
    return CrashingEngine()


def load_hanging_engine(settings: Settings, library: ModelLibrary | None) -> HangingEngine:
    return HangingEngine()


def load_step_engine(settings: Settings, library: ModelLibrary | None) -> StepEngine:
    """A ``StepEngine`` for a worker process (``--engine tests.engines:load_step_engine``)."""
    return StepEngine()
