"""Which models are on the GPU, which wait in CPU memory, and which are dropped: the engine's memory manager.

An engine holds several models, and a GPU rarely holds them all. Each model is in one of three places:
- on the device, ready to run;
- in CPU memory ("parked"): moving it back costs a copy over PCIe (about a second for SDXL's 7 GB);
- dropped: only its profile is kept, and it is loaded again from its source when a job needs it.

Two budgets bound the weights (not the activations, which the margin below the device's memory is for): the
device budget (``SDBOT_GPU_MEMORY``) and the budget of parked models (``SDBOT_CPU_MEMORY``). When a job needs
a model that is not on the device, the least recently used models on the device are parked until it fits;
then, while parked models exceed their budget, the least recently used of them are dropped. A model larger
than the whole device budget still runs (alone), with a warning. ``acquire`` returns the seconds the switch
took, which the engine reports in each result's timings.

The manager decides; the engine moves (``Mover``). No torch here.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

log = logging.getLogger(__name__)


class Residence(StrEnum):
    DEVICE = "device"
    PARKED = "parked"  # in CPU memory
    DROPPED = "dropped"


class Mover(Protocol):
    """What the manager asks of the engine, by model name."""

    def to_device(self, name: str) -> None: ...

    def park(self, name: str) -> None: ...

    def drop(self, name: str) -> None: ...

    def reload(self, name: str) -> None:
        """Load a dropped model again, into CPU memory."""


@dataclass
class _Model:
    size: int  # bytes of weights
    residence: Residence


class ModelMemory:
    """Keeps models within a device budget and a parked budget (bytes; None: unbounded), least recently
    used out first."""

    def __init__(self, mover: Mover, *, device_budget: int | None, parked_budget: int | None) -> None:
        self._mover = mover
        self._device_budget = device_budget
        self._parked_budget = parked_budget
        self._models: OrderedDict[str, _Model] = OrderedDict()  # least recently used first

    def add(self, name: str, size: int) -> None:
        """Take on a model just loaded into CPU memory: onto the device if it fits beside the models there,
        else it stays parked (or is dropped, past the parked budget). Models added later count as less
        recently used: the library's first (default) model is the last to make room."""
        model = self._models[name] = _Model(size, Residence.PARKED)
        self._models.move_to_end(name, last=False)
        if self._device_budget is None or self.used(Residence.DEVICE) + size <= self._device_budget:
            self._mover.to_device(name)
            model.residence = Residence.DEVICE
        self._trim_parked()

    def residence(self, name: str) -> Residence:
        return self._models[name].residence

    def used(self, residence: Residence) -> int:
        """Bytes of the models in ``residence``."""
        return sum(model.size for model in self._models.values() if model.residence is residence)

    def acquire(self, name: str) -> float:
        """Put ``name`` on the device (making room) as the most recently used model; the seconds it took."""
        model = self._models[name]
        self._models.move_to_end(name)
        if model.residence is Residence.DEVICE:
            return 0.0
        started = time.perf_counter()
        if model.residence is Residence.DROPPED:
            self._mover.reload(name)
            model.residence = Residence.PARKED
        self._make_room(name, model.size)
        self._mover.to_device(name)
        model.residence = Residence.DEVICE
        self._trim_parked()
        seconds = time.perf_counter() - started
        log.info("model %s is on the device after %.2f s", name, seconds)
        return seconds

    def _make_room(self, name: str, size: int) -> None:
        budget = self._device_budget
        if budget is None:
            return
        for other, model in list(self._models.items()):
            if self.used(Residence.DEVICE) + size <= budget:
                return
            if other != name and model.residence is Residence.DEVICE:
                log.info("parking model %s in CPU memory to make room for %s", other, name)
                self._mover.park(other)
                model.residence = Residence.PARKED
        if size > budget:
            log.warning(
                "model %s needs %.1f GiB, more than the GPU budget of %.1f GiB (SDBOT_GPU_MEMORY): "
                "it runs alone",
                name,
                size / 2**30,
                budget / 2**30,
            )

    def _trim_parked(self) -> None:
        budget = self._parked_budget
        if budget is None:
            return
        for other, model in list(self._models.items()):
            if self.used(Residence.PARKED) <= budget:
                return
            if model.residence is Residence.PARKED:
                log.info(
                    "dropping model %s from CPU memory (SDBOT_CPU_MEMORY); it loads again when needed", other
                )
                self._mover.drop(other)
                model.residence = Residence.DROPPED
