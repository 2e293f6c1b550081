"""The fake's gateway: Discord's websocket protocol in plain JSON text frames.

discord.py asks for ``compress=zlib-stream`` but only inflates binary frames, so text frames need no
compression. Supported: HELLO, IDENTIFY -> READY + GUILD_CREATE, HEARTBEAT -> ACK (after a short delay, as
answering instantly trips discord.py's "Can't keep up" warning through a timing race), RESUME (replaying
missed dispatches, then RESUMED), RECONNECT sent on request, and presence updates (recorded in
``presences``). Sessions outlive their socket so a client can
resume.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_MS = 41_250
HEARTBEAT_ACK_DELAY = 0.03
AUTHENTICATION_FAILED = 4004
CLIENT_LEFT_CODES = (1000, 1001)  # Discord ends the session (no resume) when the client closes with these


@dataclass
class Session:
    """One identified gateway session; ``events`` keeps every dispatch for replay on RESUME."""

    id: str
    events: list[dict[str, Any]] = field(default_factory=list)
    socket: web.WebSocketResponse | None = None

    @property
    def seq(self) -> int:
        return len(self.events)


class Gateway:
    """Accepts websocket connections and dispatches events to every connected session."""

    def __init__(
        self,
        *,
        token: str,
        ready_payload: Callable[[Session], dict[str, Any]],
        guild_payloads: Callable[[], list[dict[str, Any]]],
    ) -> None:
        self._token = token
        self._ready_payload = ready_payload
        self._guild_payloads = guild_payloads
        self.sessions: dict[str, Session] = {}
        self.opcodes_received: list[int] = []
        self.presences: list[dict[str, Any]] = []  # as sent at IDENTIFY and in every op 3, oldest first
        self._sockets: set[web.WebSocketResponse] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def connected(self) -> list[Session]:
        return [s for s in self.sessions.values() if s.socket is not None and not s.socket.closed]

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(autoping=True)
        await socket.prepare(request)
        self._sockets.add(socket)
        session: Session | None = None
        try:
            await socket.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": HEARTBEAT_INTERVAL_MS}}))
            async for frame in socket:
                if frame.type != WSMsgType.TEXT:
                    continue
                message = json.loads(frame.data)
                op = message["op"]
                self.opcodes_received.append(op)
                if op == 1:
                    self._spawn(self._ack_later(socket))
                elif op == 2:
                    if message["d"].get("presence"):
                        self.presences.append(message["d"]["presence"])
                    session = await self._identify(socket, message["d"])
                elif op == 3:
                    self.presences.append(message["d"])
                elif op == 6:
                    session = await self._resume(socket, message["d"])
        finally:
            self._sockets.discard(socket)
            if session is not None and session.socket is socket:
                session.socket = None
                if socket.close_code in CLIENT_LEFT_CODES:
                    del self.sessions[session.id]
        return socket

    async def _identify(self, socket: web.WebSocketResponse, data: dict[str, Any]) -> Session | None:
        if data.get("token") != self._token:
            await socket.close(code=AUTHENTICATION_FAILED, message=b"Authentication failed.")
            return None
        session = Session(id=secrets.token_hex(16), socket=socket)
        self.sessions[session.id] = session
        await self._send(session, "READY", self._ready_payload(session))
        for guild in self._guild_payloads():
            await self._send(session, "GUILD_CREATE", guild)
        return session

    async def _resume(self, socket: web.WebSocketResponse, data: dict[str, Any]) -> Session | None:
        session = self.sessions.get(data.get("session_id", ""))
        if session is None or data.get("token") != self._token:
            await socket.send_str(json.dumps({"op": 9, "d": False}))
            return None
        session.socket = socket
        for event in session.events[int(data.get("seq") or 0) :]:
            await socket.send_str(json.dumps(event))
        await self._send(session, "RESUMED", {})
        return session

    async def _ack_later(self, socket: web.WebSocketResponse) -> None:
        await asyncio.sleep(HEARTBEAT_ACK_DELAY)
        if not socket.closed:
            await socket.send_str(json.dumps({"op": 11}))

    async def _send(self, session: Session, event: str, data: dict[str, Any]) -> None:
        frame = {"op": 0, "s": session.seq + 1, "t": event, "d": data}
        session.events.append(frame)
        if session.socket is not None and not session.socket.closed:
            await session.socket.send_str(json.dumps(frame))

    async def dispatch(self, event: str, data: dict[str, Any]) -> int:
        """Send an event to every session (buffered for those between sockets); return how many are live."""
        for session in list(self.sessions.values()):
            await self._send(session, event, data)
        return len(self.connected)

    async def request_reconnect(self) -> None:
        """Send op 7 RECONNECT: the client closes and resumes its session."""
        for session in self.connected:
            assert session.socket is not None
            await session.socket.send_str(json.dumps({"op": 7, "d": None}))

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for socket in list(self._sockets):
            await socket.close()
