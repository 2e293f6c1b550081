"""A real redis-server and real GPU worker processes for the tests and benchmarks of ``sdbot.remote``.

``RedisServer`` starts a throwaway Redis on a unix socket (no persistence) and can restart it on the same
socket; ``WorkerProcess`` runs ``python -m sdbot worker`` as users do. Each is stopped by its own process id.
Without ``redis-server`` the tests that need it skip with one line, except in CI, where that is a failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT = 10.0  # seconds


def redis_server_binary() -> str:
    """The redis-server to start; skips the calling test where there is none (fails in CI)."""
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is missing in CI: .ci/run installs Debian's redis-server")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    return binary


class RedisServer:
    """``redis-server --port 0 --unixsocket <folder>/redis.sock``, without persistence."""

    def __init__(self, binary: str, folder: Path) -> None:
        self._binary = binary
        self.folder = folder
        self.socket = folder / "redis.sock"
        self.url = f"unix://{self.socket}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        self.socket.unlink(missing_ok=True)
        command = [self._binary, "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700"]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self.folder)]
        log = open(self.folder / "redis.log", "ab")  # noqa: SIM115 (the server holds it)
        self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis(unix_socket_path=str(self.socket))
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self._process.poll() is not None:
                    raise RuntimeError("redis-server did not start; see redis.log") from None
                time.sleep(0.01)
        client.close()
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            process.wait(START_TIMEOUT)

    def restart(self) -> None:
        self.stop()
        self.start()

    def client(self) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.socket))


class WorkerProcess:
    """``python -m sdbot worker`` with its own settings, logging to ``<folder>/<name>.log``."""

    def __init__(self, name: str, url: str, model: Path | str, folder: Path, **environment: str) -> None:
        self.name = name
        self._folder = folder
        self._environment = {
            "SDBOT_REDIS_URL": url,
            "SDBOT_MODEL": str(model),
            "SDBOT_DEVICE": "cpu",
            "SDBOT_DTYPE": "float32",
            "SDBOT_WORKER_HEARTBEAT": "0.5",
            "SDBOT_SHUTDOWN_GRACE": "2",
            **environment,
        }
        self._arguments: list[str] = []
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *arguments: str) -> WorkerProcess:
        self._arguments = list(arguments)
        log = open(self._folder / f"{self.name}.log", "ab")  # noqa: SIM115 (the worker holds it)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sdbot", "worker", "--name", self.name, *self._arguments],
            cwd=REPO,
            env=os.environ | self._environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its engine process too: ``stop`` ends the whole group
        )
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def send(self, signum: int) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signum)

    def ensure_running(self) -> None:
        """Start it again if it died; let it go on if it was stopped (SIGSTOP)."""
        if self.running:
            self.send(signal.SIGCONT)
        else:
            self.stop()
            self.start(*self._arguments)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGCONT)
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(15)
        # The engine process is in the worker's group; after a SIGKILL of the worker it may outlive it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def log(self) -> str:
        return (self._folder / f"{self.name}.log").read_text(errors="replace")
