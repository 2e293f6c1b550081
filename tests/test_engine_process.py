"""``EngineProcess``: the engine in a child process gives what the engine in this process gives (same pixels,
progress, previews, errors), stops on cancel, and survives its child dying or hanging.

The child is spawned for real and loads the tiny model through ``load_engine``, as the bot runs it. Two fake
engines (a child that crashes, one that hangs) stand for faults a real model cannot be made to show on cue;
they are loaded in the child by name, as ``load_engine`` is.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdbot.config import Settings
from sdbot.errors import GenerationCancelled, GenerationFailed, ModelLoadFailed
from sdbot.inference.process import EngineProcess
from sdbot.inference.types import EngineRequest, GenerationResult, Operation, Progress
from sdbot.params import JobParams
from tests.conftest import tiny_settings
from tests.engines import generate, load_crashing_engine, load_hanging_engine

SIZE = 64


def request(prompt: str = "a red cat", **options: object) -> JobParams:
    return JobParams(prompt, **{"width": SIZE, "height": SIZE, "steps": 3, "seed": 7, **options})


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> Iterator[EngineProcess]:
    engine = EngineProcess(tiny_settings(tiny_model_dir)).start()
    yield engine
    engine.close()


def test_the_child_gives_the_same_images_as_the_engine_in_this_process(engine, tiny_engine) -> None:
    batch = [request(count=2), request("a blue dog", seed=2**32 - 1)]
    remote, local = generate(engine, batch), generate(tiny_engine, batch)
    assert engine.models == tiny_engine.models
    for theirs, ours in zip(remote, local, strict=True):
        assert theirs.seeds == ours.seeds and theirs.nsfw == ours.nsfw
        for a, b in zip(theirs.images, ours.images, strict=True):
            assert np.array_equal(pixels(a.image), pixels(b.image))
            assert a.png == b.png  # the same parameters chunk too


def test_image_to_image_sends_the_source_across(engine, tiny_engine) -> None:
    [source] = generate(tiny_engine, [request()])
    params = request(steps=4, seed=3, strength=0.3, width=2 * SIZE, height=2 * SIZE)
    upscale = [EngineRequest(params, source.images[0].image)]
    [remote] = engine.run(Operation.UPSCALE, upscale)
    [local] = tiny_engine.run(Operation.UPSCALE, upscale)
    assert remote.images[0].image.size == (2 * SIZE, 2 * SIZE)
    assert np.array_equal(pixels(remote.images[0].image), pixels(local.images[0].image))


def test_every_step_is_reported_and_previews_come_for_each_request(engine) -> None:
    reports: list[Progress] = []
    previews: list[list[Image.Image]] = []

    def on_progress(progress: Progress) -> None:
        reports.append(progress)
        if progress.make_previews is not None:
            previews.append(progress.make_previews())

    generate(engine, [request(steps=6), request("a blue dog", steps=6)], on_progress=on_progress)
    total = reports[0].total
    assert [p.step for p in reports] == list(range(1, total + 1))
    assert previews and all(len(shown) == 2 for shown in previews)
    assert all(preview.size == (SIZE // 2, SIZE // 2) for shown in previews for preview in shown)


def test_cancel_stops_the_child_within_a_few_steps_and_the_next_call_runs(engine) -> None:
    reports: list[Progress] = []
    with pytest.raises(GenerationCancelled):
        generate(
            engine, [request(steps=100)], on_progress=reports.append, should_cancel=lambda: len(reports) >= 2
        )
    assert 2 <= len(reports) < 20
    [result] = generate(engine, [request()], should_cancel=lambda: False)
    assert result.seeds == [7]


def test_a_call_cancelled_before_it_starts_sends_nothing(engine) -> None:
    reports: list[Progress] = []
    with pytest.raises(GenerationCancelled, match="before it started"):
        generate(engine, [request()], on_progress=reports.append, should_cancel=lambda: True)
    assert reports == []


def test_errors_keep_their_type_and_message(engine) -> None:
    with pytest.raises(ValueError, match=r"Steps must be from 1 to 150 \(got 0\)"):
        generate(engine, [request(steps=0)])
    assert generate(engine, [request()])  # the child is still serving


def test_a_model_that_cannot_load_raises_model_load_failed_and_leaves_no_process(tmp_path) -> None:
    engine = EngineProcess(tiny_settings(tmp_path / "missing.safetensors"))
    with pytest.raises(ModelLoadFailed, match="no such file"):
        engine.start()
    assert engine.pid is None


# Fault injection: engines the child loads by name instead of the model (tests.engines).


def test_a_child_that_dies_in_a_call_fails_that_call_and_the_next_starts_a_new_one(tmp_path) -> None:
    engine = EngineProcess(Settings(db_path=tmp_path / "db"), loader=load_crashing_engine).start()
    try:
        first = engine.pid
        with pytest.raises(GenerationFailed, match="exit code 3"):
            generate(engine, [request("crash")])
        assert engine.pid is None
        assert generate(engine, [request("fine")]) == [GenerationResult([])]
        assert engine.pid not in (None, first)
    finally:
        engine.close()


def test_a_child_killed_between_calls_is_started_again_by_the_next_call(tmp_path) -> None:
    engine = EngineProcess(Settings(db_path=tmp_path / "db"), loader=load_crashing_engine).start()
    try:
        first = engine.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while engine.pid is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert generate(engine, [request("fine")]) == [GenerationResult([])]
        assert engine.pid not in (None, first)
    finally:
        engine.close()


def test_a_call_that_ignores_its_cancel_is_ended_by_killing_the_child(tmp_path) -> None:
    engine = EngineProcess(
        Settings(db_path=tmp_path / "db"), loader=load_hanging_engine, kill_after=0.5
    ).start()
    reports: list[Progress] = []
    try:
        started = time.monotonic()
        with pytest.raises(GenerationCancelled, match=r"did not stop within 0\.5 s"):
            generate(engine, [request()], on_progress=reports.append, should_cancel=lambda: bool(reports))
        assert time.monotonic() - started < 10  # kill_after, then SIGTERM
        assert engine.pid is None
    finally:
        engine.close()


def test_close_ends_the_child(tmp_path) -> None:
    engine = EngineProcess(Settings(db_path=tmp_path / "db"), loader=load_crashing_engine).start()
    pid = engine.pid
    assert pid is not None
    engine.close()
    assert engine.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_the_child_starts_without_the_discord_token(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    # docker compose's env_file puts the token in the bot's environment; the engine never needs it.
    monkeypatch.setenv("DISCORD_TOKEN", "the-bots-secret-token")
    engine = EngineProcess(Settings(db_path=tmp_path / "db"), loader=load_crashing_engine).start()
    try:
        environment = Path(f"/proc/{engine.pid}/environ").read_bytes()
        assert b"DISCORD_TOKEN" not in environment and b"the-bots-secret-token" not in environment
        assert os.environ["DISCORD_TOKEN"] == "the-bots-secret-token"  # the bot's own is left alone
    finally:
        engine.close()
