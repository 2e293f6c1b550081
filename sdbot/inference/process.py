"""The engine in a process of its own: ``EngineProcess`` is an ``Engine`` whose calls run in a child process
that loads the model and runs a ``DiffusersEngine`` there.

Why a process and not only a thread: in one process the bot's event loop and the engine share one interpreter
lock, and each time the loop handles an interaction or an upload, the thread that launches the model's kernels
waits for it (on the tiny test model the bot's images/s fell 10-20% behind a plain engine loop). In its own
process the engine has an interpreter to itself; a crash of it (a CUDA error, the kernel's OOM killer) fails
one call instead of taking the bot down; and a call stuck inside a step, which no thread can interrupt, ends
when its process is killed.

The two processes talk over one pipe, in pickled tuples:
- child to parent, once: ``("ready", models, device_name)`` (a ``ModelInfo`` per model: name, family
  profile, whether it is checked; and what it runs on) or ``("failed", error)``;
- parent to child: ``("call", operation, requests)``; the child answers ``("progress", step, total,
  previews)`` after every step, then ``("done", results)`` or ``("error", error)``.

Cancelling is a shared event: the parent sets it when ``should_cancel`` says so (checked on every message and
every ``POLL_INTERVAL``), and the engine in the child reads it after each step. A call that has not ended
``kill_after`` seconds after that is stuck: its process is killed and the call raises ``GenerationCancelled``.
A dead process is started again (the model loads again) by the next call.

Previews are rendered in the child when its engine offers them, at most every ``PREVIEW_INTERVAL`` (as often
as the worker hands progress to the event loop), and handed to the next progress report in the parent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
import pickle
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event
from typing import Any

from PIL import Image

from sdbot.config import Settings
from sdbot.errors import GenerationCancelled, GenerationFailed, ModelLoadFailed
from sdbot.inference.types import (
    CancelCheck,
    Engine,
    EngineRequest,
    GenerationResult,
    ModelInfo,
    Operation,
    Progress,
    ProgressCallback,
    device_name,
)
from sdbot.library import ModelLibrary
from sdbot.logs import setup_logging

log = logging.getLogger(__name__)

EngineLoader = Callable[[Settings, ModelLibrary | None], Engine]

POLL_INTERVAL = 0.5  # seconds between two checks of ``should_cancel`` while the child sends nothing
PREVIEW_INTERVAL = 0.2  # seconds; the worker's default progress interval
KILL_AFTER = 30.0  # seconds a call may go on after it was cancelled before its process is killed
STOP_WAIT = 5.0  # seconds ``close`` waits for the process to exit after asking it to
# Environment variables the child is started without: it never talks to Discord, and a process's environment
# is readable (``/proc/<pid>/environ``) long after it started.
CHILD_SECRETS = ("DISCORD_TOKEN",)


class EngineProcess:
    """An ``Engine`` that runs ``loader(settings, library)`` (default: ``load_engine``; ``library`` None: the
    settings' own) in a child process.

    ``start`` spawns the process and blocks until the model is loaded; ``close`` ends it. Calls are
    serialised, as ``DiffusersEngine`` serialises them. ``loader`` must be importable by name (the process
    is spawned)."""

    def __init__(
        self,
        settings: Settings,
        library: ModelLibrary | None = None,
        *,
        loader: EngineLoader | None = None,
        kill_after: float = KILL_AFTER,
    ) -> None:
        # The child needs no Discord token; it keeps the Hugging Face token for downloads.
        self._settings = dataclasses.replace(settings, discord_token=None)
        self._library = library
        self._loader = loader
        self._kill_after = kill_after
        self._context = multiprocessing.get_context("spawn")  # CUDA cannot be used in a forked child
        self._lock = threading.Lock()
        self._process: BaseProcess | None = None
        self._connection: Connection | None = None
        self._cancel: Event | None = None  # one per child, set to ask its running call to stop
        self._models: dict[str, ModelInfo] = {}
        self._device_name = ""

    @property
    def models(self) -> Mapping[str, ModelInfo]:
        """The child's models, as it reported them when it was ready."""
        return self._models

    @property
    def device_name(self) -> str:
        return self._device_name

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs."""
        process = self._process
        return process.pid if process is not None and process.is_alive() else None

    def start(self) -> EngineProcess:
        """Spawn the engine's process and wait until its model is loaded; raise ``ModelLoadFailed`` if it is
        not. Returns the engine itself, so that ``start`` can be the bot's engine factory."""
        with self._lock:
            self._spawn()
        return self

    def close(self) -> None:
        """End the engine's process. Safe to call at any time, also while a call runs (it then fails)."""
        self._end(STOP_WAIT)

    def _end(self, grace: float) -> None:
        """Close the pipe, give the child ``grace`` seconds to exit by itself, then terminate it."""
        process, connection, cancel = self._process, self._connection, self._cancel
        if process is None or connection is None or cancel is None:
            return
        self._process = self._connection = self._cancel = None
        cancel.set()  # a running call stops after its step
        connection.close()  # the child reads the end of the pipe and exits, running its clean-up
        process.join(grace)
        if process.is_alive():
            process.terminate()
            process.join(STOP_WAIT)
        if process.is_alive():
            process.kill()
            process.join()

    def run(
        self,
        operation: Operation,
        requests: Sequence[EngineRequest],
        on_progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> list[GenerationResult]:
        with self._lock:
            if should_cancel is not None and should_cancel():
                raise GenerationCancelled("cancelled before it started")
            connection, cancel = self._running_child()
            cancel.clear()
            try:
                connection.send(("call", operation, list(requests)))
            except OSError as error:
                raise self._lost() from error
            return self._await_result(connection, cancel, on_progress, should_cancel)

    def _spawn(self) -> None:
        parent_end, child_end = self._context.Pipe()
        cancel = self._context.Event()
        process = self._context.Process(
            target=serve,
            args=(self._settings, self._library, child_end, cancel, self._loader, logging.getLogger().level),
            name="sdbot-engine",
            daemon=True,  # ended when the bot exits; if the bot is killed, the closed pipe ends it
        )
        with _environment_without(CHILD_SECRETS):
            process.start()
        child_end.close()  # the child holds its end: a dead child now reads as end of file here
        try:
            message = _receive(parent_end)
        except EOFError:
            message = ("exited",)
        if message[0] != "ready":
            process.join()
            parent_end.close()
            if message[0] == "failed":
                raise message[1]
            raise ModelLoadFailed(
                f"the engine's process exited with code {process.exitcode} while loading the model"
            )
        _, models, self._device_name = message
        self._models = {info.name: info for info in models}
        self._process, self._connection, self._cancel = process, parent_end, cancel
        log.info("the engine runs in process %d", process.pid)

    def _running_child(self) -> tuple[Connection, Event]:
        """The pipe to a live child and its cancel event, starting a new child (loading the model again)
        if the last one died."""
        if self._process is None or not self._process.is_alive():
            self.close()
            try:
                self._spawn()
            except ModelLoadFailed as error:
                raise GenerationFailed(f"the engine could not be started again: {error}") from error
        assert self._connection is not None and self._cancel is not None
        return self._connection, self._cancel

    def _await_result(
        self,
        connection: Connection,
        cancel: Event,
        on_progress: ProgressCallback | None,
        should_cancel: CancelCheck | None,
    ) -> list[GenerationResult]:
        cancelled_at: float | None = None
        previews: list[Image.Image] | None = None  # rendered by the child, not yet handed to on_progress

        def hand_over() -> list[Image.Image]:
            nonlocal previews
            handed, previews = previews or [], None
            return handed

        while True:
            if cancelled_at is None and should_cancel is not None and should_cancel():
                cancel.set()
                cancelled_at = time.monotonic()
            if cancelled_at is not None and time.monotonic() - cancelled_at > self._kill_after:
                log.error("the engine ignored a cancel for %g s; killing its process", self._kill_after)
                self._end(0)
                raise GenerationCancelled(f"the engine did not stop within {self._kill_after:g} s")
            try:
                if not connection.poll(POLL_INTERVAL):
                    continue
                message = _receive(connection)
            except (EOFError, OSError):  # the child died, or ``close`` ended it
                raise self._lost() from None
            kind = message[0]
            if kind == "progress":
                _, step, total, rendered = message
                if rendered is not None:
                    previews = rendered
                if on_progress is not None:
                    on_progress(Progress(step, total, hand_over if previews is not None else None))
            elif kind == "done":
                return message[1]
            else:
                raise message[1]

    def _lost(self) -> GenerationFailed:
        """The child died during a call, or ``close`` ended it: clean up, and say so (the next call starts a
        new child)."""
        process = self._process
        if process is None:
            return GenerationFailed("the engine was closed")
        process.join(STOP_WAIT)  # its end of the pipe closed as it exited: its exit code comes right after
        code = process.exitcode
        self.close()
        log.error("the engine's process died (exit code %s); the next job starts it again", code)
        return GenerationFailed(
            f"the engine's process died (exit code {code}); it restarts with the next job"
        )


def serve(
    settings: Settings,
    library: ModelLibrary | None,
    connection: Connection,
    cancel: Event,
    loader: EngineLoader | None,
    log_level: int,
) -> None:
    """The child process: load the engine, say ready, then run calls until the pipe closes."""
    # Ctrl-C in a terminal reaches the whole process group; the bot decides when its engine stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    setup_logging(logging.getLevelName(log_level))
    try:
        engine = (loader or _default_loader())(settings, library)
    except Exception as error:
        connection.send(("failed", _portable(error)))
        return
    connection.send(("ready", list(engine.models.values()), device_name(engine)))
    with contextlib.suppress(EOFError, BrokenPipeError):  # the bot closed the pipe: it wants us gone
        while True:
            _, operation, requests = connection.recv()
            report = _Reporter(connection)
            try:
                results = engine.run(operation, requests, on_progress=report, should_cancel=cancel.is_set)
            except Exception as error:
                connection.send(("error", _portable(error)))
            else:
                connection.send(("done", results))


class _Reporter:
    """The child's progress callback: every step goes to the parent, with previews at most every
    ``PREVIEW_INTERVAL`` when the engine offers them."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._last_previews = -float("inf")

    def __call__(self, progress: Progress) -> None:
        previews = None
        now = time.monotonic()
        if progress.make_previews is not None and now - self._last_previews >= PREVIEW_INTERVAL:
            previews = progress.make_previews()
            self._last_previews = now
        self._connection.send(("progress", progress.step, progress.total, previews))


@contextlib.contextmanager
def _environment_without(names: tuple[str, ...]) -> Iterator[None]:
    """Leave ``names`` out of the environment while a child is spawned (it copies the environment as it
    starts); this process keeps them."""
    saved = {name: os.environ.pop(name) for name in names if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def _default_loader() -> EngineLoader:
    from sdbot.inference.engine import load_engine  # torch and diffusers: the child's imports only

    return load_engine


def _receive(connection: Connection) -> tuple[Any, ...]:
    message: tuple[Any, ...] = connection.recv()
    return message


def _portable(error: Exception) -> Exception:
    """``error`` as it can cross the pipe: itself with the child's traceback as a note (the parent logs it),
    or, if it does not pickle, a ``GenerationFailed`` that says what it was."""
    error.add_note("in the engine's process:\n" + "".join(traceback.format_exception(error)).rstrip())
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return GenerationFailed(f"{type(error).__name__}: {error}")
    return error
