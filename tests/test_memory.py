"""The memory manager's decisions, with a mover that records what it was asked to do (the engine tests move
real models)."""

from __future__ import annotations

import logging

import pytest

from sdbot.inference.memory import ModelMemory, Residence


class RecordingMover:
    def __init__(self) -> None:
        self.moves: list[tuple[str, str]] = []

    def to_device(self, name: str) -> None:
        self.moves.append(("device", name))

    def park(self, name: str) -> None:
        self.moves.append(("park", name))

    def drop(self, name: str) -> None:
        self.moves.append(("drop", name))

    def reload(self, name: str) -> None:
        self.moves.append(("reload", name))


def memory(device: int | None, parked: int | None, **sizes: int) -> tuple[ModelMemory, RecordingMover]:
    mover = RecordingMover()
    manager = ModelMemory(mover, device_budget=device, parked_budget=parked)
    for name, size in sizes.items():
        manager.add(name, size)
    return manager, mover


def places(manager: ModelMemory, *names: str) -> list[Residence]:
    return [manager.residence(name) for name in names]


def test_models_go_on_the_device_while_they_fit_the_rest_wait_in_cpu_memory() -> None:
    manager, mover = memory(10, None, a=4, b=4, c=4)
    assert places(manager, "a", "b", "c") == [Residence.DEVICE, Residence.DEVICE, Residence.PARKED]
    assert mover.moves == [("device", "a"), ("device", "b")]
    assert manager.used(Residence.DEVICE) == 8


def test_the_least_recently_used_model_makes_room() -> None:
    manager, mover = memory(10, None, a=4, b=4, c=4)
    mover.moves.clear()
    manager.acquire("a")  # used: b is now the least recently used on the device
    assert manager.acquire("c") > 0
    assert mover.moves == [("park", "b"), ("device", "c")]
    assert places(manager, "a", "b", "c") == [Residence.DEVICE, Residence.PARKED, Residence.DEVICE]
    assert manager.acquire("c") == 0.0  # already there: no move, no cost


def test_models_added_later_make_room_before_the_default() -> None:
    manager, mover = memory(8, None, default=4, second=4, third=4)
    mover.moves.clear()
    manager.acquire("third")
    assert mover.moves == [("park", "second"), ("device", "third")]


def test_past_the_cpu_budget_the_least_recently_used_parked_model_is_dropped_and_reloaded_later() -> None:
    manager, mover = memory(4, 4, a=4, b=4, c=4)
    assert places(manager, "a", "b", "c") == [Residence.DEVICE, Residence.PARKED, Residence.DROPPED]
    mover.moves.clear()
    manager.acquire("c")
    assert mover.moves == [("reload", "c"), ("park", "a"), ("device", "c"), ("drop", "b")]
    assert places(manager, "a", "b", "c") == [Residence.PARKED, Residence.DROPPED, Residence.DEVICE]


def test_without_budgets_every_model_stays_on_the_device() -> None:
    manager, _ = memory(None, None, a=4, b=40)
    assert places(manager, "a", "b") == [Residence.DEVICE, Residence.DEVICE]


def test_a_model_larger_than_the_budget_runs_alone_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    manager, _ = memory(10, None, small=4, huge=16)
    with caplog.at_level(logging.WARNING, logger="sdbot.inference.memory"):
        manager.acquire("huge")
    assert places(manager, "small", "huge") == [Residence.PARKED, Residence.DEVICE]
    assert "more than the GPU budget" in caplog.text
