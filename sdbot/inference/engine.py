"""The in-process diffusers engine: a library of models of any family, batches of requests in, PNGs with
seeds, NSFW flags and timings out.

The engine loads the operator's model library (``sdbot.library``). Each request names its model
(``JobParams.model``; empty: the library's default), and a batch is of one model (the model is part of the
batch key). Before a batch runs, the memory manager
(``sdbot.inference.memory``) brings its model onto the device, parking or dropping the least recently used
others to keep within the memory budgets; the seconds that took are each result's ``Timings.switch``. A
model's runner (``sdbot.inference.runner``) then makes the images. Models are loaded (and moved) by the
``ModelLoader`` (``sdbot.inference.loading``), which applies the memory and speed options. One
super-resolution upscaler (``sdbot.inference.upscalers``, from ``SDBOT_UPSCALER``) serves Upscale (Subtle)
for every model.

Calls block. The engine serialises them with a lock, so one worker thread (or several) may call it.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import replace

import torch

from sdbot.config import DEFAULT_UPSCALER, Settings
from sdbot.errors import GenerationCancelled, GenerationFailed
from sdbot.inference.batch import Batch
from sdbot.inference.families import Size
from sdbot.inference.loading import ModelLoader, free_memory, memory_budgets, model_size, resolve_placement
from sdbot.inference.memory import ModelMemory, Residence
from sdbot.inference.runner import ModelRunner
from sdbot.inference.types import (
    CancelCheck,
    EngineRequest,
    GenerationResult,
    ModelInfo,
    Operation,
    ProgressCallback,
)
from sdbot.inference.upscalers import LanczosUpscaler, Upscaler, load_upscaler
from sdbot.inference.validation import check_batch
from sdbot.library import ModelEntry, ModelLibrary, load_library
from sdbot.params import MAX_COUNT, JobParams

log = logging.getLogger(__name__)

WARM_UP_STEPS = 2


class DiffusersEngine:
    """Runs the models of ``library``, loaded (and moved) by ``loader`` within the budgets (bytes; None: no
    bound). The default model loads first, so it is the last to make room. Build it with ``load_engine``."""

    def __init__(
        self,
        loader: ModelLoader,
        library: ModelLibrary,
        *,
        device_budget: int | None = None,
        parked_budget: int | None = None,
        upscaler: Upscaler | None = None,
    ) -> None:
        self._loader = loader
        self.upscaler = upscaler or LanczosUpscaler()
        default = library[library.default]
        self._entries: dict[str, ModelEntry] = {
            entry.name: entry for entry in (default, *(e for e in library.models if e is not default))
        }
        self._runners: dict[str, ModelRunner] = {}
        self._infos: dict[str, ModelInfo] = {}
        self._memory = ModelMemory(self, device_budget=device_budget, parked_budget=parked_budget)
        self._lock = threading.Lock()
        for name, entry in self._entries.items():
            runner = self._runners[name] = loader.load(entry)
            self._infos[name] = runner.info
            self._memory.add(name, model_size(runner.model))

    @property
    def models(self) -> Mapping[str, ModelInfo]:
        return self._infos

    @property
    def device(self) -> torch.device:
        return self._loader.placement.device

    @property
    def dtype(self) -> torch.dtype:
        return self._loader.placement.dtype

    @property
    def device_name(self) -> str:
        """The GPU's name (or the device's kind), as ``/sdadmin workers`` shows it."""
        device = self.device
        return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type

    def residence(self, model: str) -> Residence:
        """Where ``model``'s weights are now: on the device, parked in CPU memory, or dropped."""
        return self._memory.residence(model)

    def runner(self, model: str) -> ModelRunner:
        """The runner of ``model``, on the device (tests and benchmarks look inside)."""
        with self._lock:
            self._memory.acquire(model)
            return self._runners[model]

    def run(
        self,
        operation: Operation,
        requests: Sequence[EngineRequest],
        on_progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> list[GenerationResult]:
        model = check_batch(operation, requests, self._infos)
        batch = Batch.plan(operation, list(requests))
        with self._lock:
            if should_cancel is not None and should_cancel():
                raise GenerationCancelled("cancelled before it started")
            try:
                switch = self._memory.acquire(model)
                runner = self._runners[model]
                if operation is Operation.SUPER_RESOLUTION:
                    return runner.super_resolve(batch, self.upscaler, on_progress, switch=switch)
                return runner.run(batch, on_progress, should_cancel, switch=switch)
            except RuntimeError as error:
                if not _is_out_of_memory(error):
                    raise
                # The traceback keeps every frame of the failed run alive, and with them its tensors: let
                # those go, so that emptying the cache hands their memory back.
                traceback.clear_frames(error.__traceback__)
                free_memory()
                raise GenerationFailed(
                    "out of GPU memory: try fewer images or a smaller size "
                    "(admins: SDBOT_GPU_MEMORY, SDBOT_OFFLOAD and SDBOT_ATTENTION_SLICING lower memory use)"
                ) from error

    def warm_up(self, model: str, batch_sizes: Sequence[int] = (1,), size: Size | None = None) -> float:
        """Short generations of ``model`` at ``size`` (default: its native size) and each batch size, so that
        compilation and allocator growth happen before the first user waits. After two sizes torch.compile
        makes the batch dimension dynamic, so warming up 1 and the largest batch covers the sizes between.
        Returns the seconds taken."""
        started = time.perf_counter()
        width, height = size or self._infos[model].profile.native_size
        params = JobParams("warm-up", steps=WARM_UP_STEPS, width=width, height=height, seed=0, model=model)
        for images in batch_sizes:
            counts = [min(MAX_COUNT, images - first) for first in range(0, images, MAX_COUNT)]
            self.run(Operation.GENERATE, [EngineRequest(replace(params, count=n)) for n in counts])
        return time.perf_counter() - started

    # The memory manager's moves (``sdbot.inference.memory.Mover``), called with the lock held.

    def to_device(self, name: str) -> None:
        self._loader.to_device(self._runners[name])

    def park(self, name: str) -> None:
        self._loader.park(self._runners[name])

    def drop(self, name: str) -> None:
        del self._runners[name]
        free_memory()

    def reload(self, name: str) -> None:
        self._runners[name] = self._loader.load(self._entries[name])


def load_engine(settings: Settings, library: ModelLibrary | None = None) -> DiffusersEngine:
    """Load the models of ``library`` (default: the settings', ``SDBOT_MODELS`` or ``SDBOT_MODEL`` alone) onto
    the chosen device, with the memory and speed options, within the memory budgets.

    Raises ``ModelLoadFailed`` with a one-line reason when a model cannot be loaded.
    """
    placement = resolve_placement(settings.device, settings.dtype)
    loader = ModelLoader(settings, placement)
    device_budget, parked_budget = memory_budgets(settings, placement)
    upscaler = load_upscaler(
        settings.upscaler,
        placement.device,
        placement.dtype,
        default=DEFAULT_UPSCALER,
        token=settings.hf_token,
    )
    engine = DiffusersEngine(
        loader,
        load_library(settings) if library is None else library,
        device_budget=device_budget,
        parked_budget=parked_budget,
        upscaler=upscaler,
    )
    for info in engine.models.values():
        log.info(
            "loaded %s (%s) on %s as %s, %s",
            info.name,
            info.profile.label,
            placement.device,
            str(placement.dtype).removeprefix("torch."),
            engine.residence(info.name),
        )
    if loader.compiles:
        sizes = sorted({1, settings.max_batch})
        for name in engine.models:
            log.info("compiling %s (warm-up generations at batch sizes %s)...", name, sizes)
            log.info("warm-up took %.1f s", engine.warm_up(name, batch_sizes=sizes))
    return engine


def _is_out_of_memory(error: RuntimeError) -> bool:
    """CUDA raises ``OutOfMemoryError``; MPS raises a plain RuntimeError saying "out of memory"."""
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower()
