"""FakeDiscord: the loopback Discord that the real discord.py client talks to in end-to-end tests.

It owns the aiohttp server (REST v10 under ``/api/v10``, the gateway at ``/gateway``, attachment bytes under
``/attachments``), the world a bot sees (one guild, its channels, roles and members), and the helpers a test
drives it with: :meth:`FakeDiscord.slash`, :meth:`FakeDiscord.click`, :meth:`FakeDiscord.wait_for_message`,
:meth:`FakeDiscord.wait_for_reply`. Every REST request is validated against Discord's OpenAPI spec
(:mod:`.spec`); a request the spec rejects, or one Discord would answer with 400 (a bot bug), is answered that
way and recorded in :attr:`FakeDiscord.violations`, which the pytest fixture turns into a test failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import traceback
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import discord
import yarl
from aiohttp import web

from .commands import (
    RefusedByClient,
    Resolved,
    Upload,
    build_options,
    check_visible,
    find_command,
    mark_focused,
    option_definition,
)
from .gateway import Gateway, Session
from .rest import (
    ACTION_ROW,
    BODY,
    BUTTON,
    LABEL,
    MODAL_SUBMIT,
    TEXT_INPUT,
    Body,
    DiscordError,
    Rest,
    UploadedFile,
    attachment_list,
    check_components,
    check_content,
    check_files,
    json_response,
    modal_text_inputs,
    rate_limit_reply,
    read_body,
    resolve_embeds,
)
from .spec import API_PREFIX, SpecValidator
from .state import (
    ADMINISTRATOR,
    EPHEMERAL,
    LOADING,
    MANAGE_GUILD,
    MANAGE_MESSAGES,
    MEMBER_PERMISSIONS,
    Attachment,
    Channel,
    FakeClock,
    Interaction,
    Member,
    Message,
    Role,
    Rules,
    Snowflakes,
    User,
    new_token,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_REQUEST_BYTES = 256 * 1024 * 1024
POLL_INTERVAL = 0.05


@dataclass(frozen=True)
class Rejection:
    """A non-2xx reply the fake gave, for tests that check how the bot met Discord's rules."""

    method: str
    path: str
    status: int
    code: int
    message: str


class FakeDiscord:
    """One fake Discord with one guild.

    Members (``fake.members[name]``): ``alice`` and ``bob`` (plain members), ``manager`` (Manage Server),
    ``moderator`` (Manage Messages), ``owner`` (the guild owner, Administrator). Channels
    (``fake.channels[name]``): ``general``, ``art`` and ``nsfw`` (age-restricted).
    """

    def __init__(self, spec: SpecValidator | None, *, rules: Rules | None = None) -> None:
        self.spec = spec
        self.rules = rules or Rules()
        self.clock = FakeClock()
        self.snowflakes = Snowflakes(self.clock)
        self.token = f"{new_token()[:24]}.fake.{new_token()[:27]}"
        self.violations: list[str] = []
        self.rejections: list[Rejection] = []
        self.interactions: dict[int, Interaction] = {}
        self.interactions_by_token: dict[str, Interaction] = {}
        self.messages: list[Message] = []
        self.message_by_id: dict[int, Message] = {}
        self.attachments: dict[int, Attachment] = {}
        self.synced_commands: dict[int | None, list[dict[str, Any]]] = {}
        self._edit_times: dict[int, deque[float]] = {}
        self._post_failures: deque[DiscordError] = deque()  # the next message posts' answers (refuse_posts)
        self._downloads_gate: asyncio.Event | None = None  # attachment downloads wait for it (hold_downloads)
        self.downloads_held = 0
        self._changed = asyncio.Event()
        self._build_world()
        self.gateway = Gateway(
            token=self.token,
            ready_payload=self._ready_payload,
            guild_payloads=lambda: [self._guild_payload()],
        )
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- the world --------------------------------------------------------------------------------------

    def _build_world(self) -> None:
        now = self.clock.now()
        self.guild_id = self.snowflakes.next()
        self.application_id = self.snowflakes.next()
        self.bot_user = User(self.application_id, "sdbot-test", bot=True)
        everyone = Role(self.guild_id, "@everyone", MEMBER_PERMISSIONS, 0)
        self.roles = {
            "everyone": everyone,
            "bot": Role(self.snowflakes.next(), "sdbot", MEMBER_PERMISSIONS | MANAGE_MESSAGES, 1),
            "managers": Role(self.snowflakes.next(), "Managers", MEMBER_PERMISSIONS | MANAGE_GUILD, 2),
            "moderators": Role(self.snowflakes.next(), "Moderators", MEMBER_PERMISSIONS | MANAGE_MESSAGES, 3),
            "admins": Role(self.snowflakes.next(), "Admins", ADMINISTRATOR, 4),
        }
        role_names = {
            "alice": [],
            "bob": [],
            "manager": ["managers"],
            "moderator": ["moderators"],
            "owner": ["admins"],
        }
        self.members = {
            name: Member(User(self.snowflakes.next(), name), [everyone] + [self.roles[r] for r in extra], now)
            for name, extra in role_names.items()
        }
        self.owner = self.members["owner"]
        self.bot_member = Member(self.bot_user, [everyone, self.roles["bot"]], now)
        self.channels = {
            name: Channel(self.snowflakes.next(), self.guild_id, name, nsfw=name == "nsfw", position=index)
            for index, name in enumerate(["general", "art", "nsfw"])
        }

    def _ready_payload(self, session: Session) -> dict[str, Any]:
        return {
            "v": 10,
            "user": self.bot_user.to_json() | {"verified": True, "mfa_enabled": False, "flags": 0},
            "session_id": session.id,
            "session_type": "normal",
            "resume_gateway_url": self.gateway_url,
            "guilds": [{"id": str(self.guild_id), "unavailable": True}],
            "application": {"id": str(self.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "geo_ordered_rtc_regions": [],
        }

    def _guild_payload(self) -> dict[str, Any]:
        members = [self.bot_member, *self.members.values()]
        return {
            "id": str(self.guild_id),
            "name": "Fake Guild",
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "owner_id": str(self.owner.id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "roles": [role.to_json() for role in self.roles.values()],
            "emojis": [],
            "stickers": [],
            "features": [],
            "mfa_level": 0,
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "vanity_url_code": None,
            "description": None,
            "banner": None,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": "en-US",
            "public_updates_channel_id": None,
            "nsfw_level": 0,
            "premium_progress_bar_enabled": False,
            "joined_at": discord.utils.utcnow().isoformat(),
            "large": False,
            "unavailable": False,
            "member_count": len(members),
            "members": [member.to_json() for member in members],
            "channels": [channel.to_json() for channel in self.channels.values()],
            "threads": [],
            "presences": [],
            "voice_states": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }

    # -- lifecycle --------------------------------------------------------------------------------------

    @property
    def gateway_url(self) -> str:
        return self.url.replace("http://", "ws://", 1) + "/gateway"

    async def start(self, port: int = 0) -> None:
        """Listen on ``port`` of 127.0.0.1 (0: any free one)."""
        app = web.Application(middlewares=[self._middleware], client_max_size=MAX_REQUEST_BYTES)
        app.add_routes(Rest(self).routes())
        app.add_routes([web.get("/gateway", self.gateway.handle)])
        self._runner = web.AppRunner(app, shutdown_timeout=1.0, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    async def stop(self) -> None:
        await self.gateway.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @contextlib.contextmanager
    def discord_pointed_here(self) -> Iterator[None]:
        """Point discord.py's REST base and default gateway at this fake; restore both afterwards."""
        old_base, old_gateway = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
        discord.http.Route.BASE = self.url + API_PREFIX
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)
        try:
            yield
        finally:
            discord.http.Route.BASE = old_base
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway

    # -- request pipeline -------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not request.path.startswith(API_PREFIX):
            return await handler(request)
        try:
            body = await read_body(request)
            request[BODY] = body
            problems = self._spec_problems(request, body)
            if problems:
                self.violations.extend(f"{request.method} {request.path}: {p}" for p in problems)
                raise DiscordError(400, 50035, "Invalid Form Body", detail="; ".join(problems))
            return await handler(request)
        except DiscordError as error:
            return self._reject(request, error)
        except web.HTTPException:
            raise
        except Exception:
            # A crash in the fake must fail the test, not be retried by discord.py (it retries 5xx for ~25 s).
            self.violations.append(
                f"{request.method} {request.path}: the fake crashed\n{traceback.format_exc()}"
            )
            return self._reject(request, DiscordError(400, 0, "fake Discord crashed"))

    def _spec_problems(self, request: web.Request, body: Body) -> list[str]:
        if self.spec is None:
            return []
        return self.spec.validate(
            request.method,
            request.path,
            query=request.query,
            headers=request.headers,
            content_type=request.content_type,
            body=body.raw,
            payload_json=body.payload_json,
        )

    def _reject(self, request: web.Request, error: DiscordError) -> web.Response:
        self.rejections.append(Rejection(request.method, request.path, error.status, error.code, str(error)))
        if error.bot_bug:
            self.violations.append(f"{request.method} {request.path}: {error}")
        log.info("fake Discord rejected %s %s: %s", request.method, request.path, error)
        return json_response(error.body(), status=error.status, headers=error.headers)

    # -- messages (used by the REST routes) -------------------------------------------------------------

    def store_attachment(
        self, filename: str, upload: UploadedFile, description: str | None, channel_id: int
    ) -> Attachment:
        attachment_id = self.snowflakes.next()
        attachment = Attachment(
            id=attachment_id,
            filename=filename,
            data=upload.data,
            url=f"{self.url}/attachments/{channel_id}/{attachment_id}/{filename}",
            content_type=upload.content_type,
            description=description,
        )
        self.attachments[attachment_id] = attachment
        return attachment

    def _apply(self, message: Message, payload: dict[str, Any], files: dict[int, UploadedFile]) -> None:
        """Check a create/edit payload against Discord's rules and write it into ``message``."""
        payload = payload or {}
        check_content(payload.get("content"), self.rules)
        check_files(files, self.rules)
        flags = message.flags | int(payload.get("flags") or 0) & ~(EPHEMERAL | LOADING)
        if "components" in payload:
            check_components(payload["components"] or [], flags, self.rules)
        attachments = attachment_list(
            payload, files, message.attachments, self.store_attachment, message.channel_id
        )
        if "content" in payload:
            message.content = payload["content"] or ""
            message.contents.append(message.content)
        if "components" in payload:
            message.components = payload["components"] or []
        message.attachments = attachments
        if "embeds" in payload:
            message.embeds = payload["embeds"] or []
        message.embeds = resolve_embeds(message.embeds, message.attachments)
        message.flags = flags

    async def create_message(
        self,
        channel: Channel,
        payload: dict[str, Any],
        files: dict[int, UploadedFile],
        *,
        interaction: Interaction | None = None,
        flags: int = 0,
        reference_id: int | None = None,
    ) -> Message:
        message = Message(
            id=self.snowflakes.next(),
            channel_id=channel.id,
            guild_id=self.guild_id,
            author=self.bot_user,
            created_at=self.clock.now(),
            flags=flags,
            reference_id=reference_id,
            interaction=interaction,
        )
        self._apply(message, payload, files)
        if not (
            flags & LOADING
            or message.content
            or message.embeds
            or message.attachments
            or message.components
            or payload.get("sticker_ids")
            or payload.get("poll")
        ):
            raise DiscordError(400, 50006, "Cannot send an empty message", bot_bug=True)
        self.messages.append(message)
        self.message_by_id[message.id] = message
        if not message.ephemeral:
            await self.gateway.dispatch("MESSAGE_CREATE", self._message_event(message))
        self.notify()
        return message

    async def edit_message(
        self, message: Message, payload: dict[str, Any], files: dict[int, UploadedFile], *, rate_limited: bool
    ) -> Message:
        if rate_limited:
            self._count_edit(message.channel_id)
        self._apply(message, payload, files)
        message.edits += 1
        message.edited_at = self.clock.now()
        if not message.ephemeral:
            await self.gateway.dispatch("MESSAGE_UPDATE", self._message_event(message))
        self.notify()
        return message

    async def complete_deferred(
        self, message: Message, payload: dict[str, Any], files: dict[int, UploadedFile]
    ) -> Message:
        """Replace a "thinking" message with its real content (no edit is counted, as on Discord)."""
        self._apply(message, payload, files)
        message.flags &= ~LOADING
        if not message.ephemeral:
            await self.gateway.dispatch("MESSAGE_UPDATE", self._message_event(message))
        self.notify()
        return message

    async def delete_message(self, message: Message) -> None:
        message.deleted = True
        if not message.ephemeral:
            await self.gateway.dispatch(
                "MESSAGE_DELETE",
                {
                    "id": str(message.id),
                    "channel_id": str(message.channel_id),
                    "guild_id": str(self.guild_id),
                },
            )
        self.notify()

    def refuse_posts(self, status: int, times: int = 1, *, retry_after: float = 1.0) -> None:
        """Answer the next ``times`` message posts (channel messages and followups) with ``status``, as
        Discord does when it fails (5xx) or rate-limits (429, waited out by discord.py for ``retry_after``
        seconds)."""
        if status == 429:
            failure = rate_limit_reply(retry_after, "fake-posts", 5)
        else:
            failure = DiscordError(status, 0, "Service Unavailable" if status >= 500 else "Refused")
        self._post_failures.extend([failure] * times)

    def hold_downloads(self) -> asyncio.Event:
        """Hold every attachment download (a slow CDN) until the returned event is set; ``downloads_held``
        counts those waiting."""
        self._downloads_gate = asyncio.Event()
        return self._downloads_gate

    async def attachment_download(self) -> None:
        """Wait while downloads are held."""
        gate = self._downloads_gate
        if gate is not None and not gate.is_set():
            self.downloads_held += 1
            self.notify()
            try:
                await gate.wait()
            finally:
                self.downloads_held -= 1

    def check_post(self) -> None:
        """Raise the failure ``refuse_posts`` queued for this post, if any."""
        if self._post_failures:
            raise self._post_failures.popleft()

    def _count_edit(self, channel_id: int) -> None:
        now = self.clock.now()
        window = self._edit_times.setdefault(channel_id, deque())
        while window and window[0] <= now - self.rules.edit_window:
            window.popleft()
        if len(window) >= self.rules.edits_per_window:
            retry_after = max(window[0] + self.rules.edit_window - now, 0.001)
            raise rate_limit_reply(retry_after, f"fake-edits-{channel_id}", self.rules.edits_per_window)
        window.append(now)

    def _message_event(self, message: Message) -> dict[str, Any]:
        return message.to_json() | {"guild_id": str(self.guild_id), "member": self.bot_member.to_json()}

    def channel_messages(self, channel: Channel) -> list[Message]:
        return [m for m in self.messages if m.channel_id == channel.id and not m.deleted and not m.ephemeral]

    # -- what a test drives -----------------------------------------------------------------------------

    def notify(self) -> None:
        """Wake every waiter: something a test may be waiting for changed."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(self, probe: Callable[[], T | None], *, timeout: float = 10.0) -> T:  # noqa: ASYNC109
        """Return ``probe()``'s first truthy result, re-evaluated on every change in the fake and every
        ``POLL_INTERVAL`` (so a probe may also read the bot's own state)."""
        async with asyncio.timeout(timeout):
            while True:
                changed = self._changed
                result = probe()
                if result:
                    return result
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), POLL_INTERVAL)

    async def wait_for_message(
        self, predicate: Callable[[Message], bool] = lambda _: True, *, timeout: float = 10.0  # noqa: ASYNC109
    ) -> Message:
        """The oldest live message (ephemeral ones included) that satisfies ``predicate`` now or later;
        edits count, so ``lambda m: m.attachments`` waits for the images to land."""
        return await self.wait_for(
            lambda: next((m for m in self.messages if not m.deleted and predicate(m)), None), timeout=timeout
        )

    async def wait_for_ack(self, interaction: Interaction, *, timeout: float = 10.0) -> Interaction:  # noqa: ASYNC109
        """Wait until the bot acknowledged ``interaction`` (any callback type)."""
        return await self.wait_for(lambda: interaction if interaction.acknowledged else None, timeout=timeout)

    async def wait_for_reply(self, interaction: Interaction, *, timeout: float = 10.0) -> Message:  # noqa: ASYNC109
        """The message ``@original`` refers to once it is no longer "thinking" (type 7: the updated one)."""

        def ready() -> Message | None:
            original = interaction.original
            return original if original is not None and not original.loading else None

        return await self.wait_for(ready, timeout=timeout)

    def commands(self, *, guild: bool = True) -> list[dict[str, Any]]:
        """The synced command definitions: the guild's (default) or the global ones."""
        return self.synced_commands.get(self.guild_id if guild else None, [])

    def take_violations(self) -> list[str]:
        """Return and clear the recorded violations (for a test that provokes one on purpose)."""
        taken, self.violations = self.violations, []
        return taken

    def member(self, who: Member | str | None) -> Member:
        if who is None:
            return self.members["alice"]
        return self.members[who] if isinstance(who, str) else who

    def channel(self, where: Channel | str | None) -> Channel:
        if where is None:
            return self.channels["general"]
        return self.channels[where] if isinstance(where, str) else where

    async def slash(
        self,
        name: str,
        /,
        *,
        user: Member | str | None = None,
        channel: Channel | str | None = None,
        raw: bool = False,
        options: dict[str, Any] | None = None,
        **values: Any,
    ) -> Interaction:
        """Invoke a synced slash command as ``user`` (default alice) in ``channel`` (default general).

        ``name`` is the command path: ``"imagine"`` or ``"sdadmin quota set"`` (group and subcommand).
        Option values come as keyword arguments, or in ``options`` for names that are not identifiers or
        clash with ``user``/``channel``/``raw``; pass a ``Member``, ``Channel``, ``Role`` or ``Upload`` for
        USER, CHANNEL, ROLE or ATTACHMENT options. Guild commands win over global ones of the same name.
        Raises ``RefusedByClient`` for what Discord's client would not send, unless ``raw=True``.
        """
        member, where = self.member(user), self.channel(channel)
        values = {**values, **(options or {})}
        data = self._command_data(name, member, where, values, raw=raw)
        return await self._dispatch_interaction(2, member, where, data)

    async def autocomplete(
        self,
        name: str,
        /,
        focused: str,
        typed: str = "",
        *,
        user: Member | str | None = None,
        channel: Channel | str | None = None,
        **values: Any,
    ) -> list[dict[str, Any]]:
        """Type ``typed`` into option ``focused`` of a slash command (the other options as filled in so far)
        and return the choices the bot answers with, as Discord's client asks for them (an
        APPLICATION_COMMAND_AUTOCOMPLETE interaction). Raises ``RefusedByClient`` for an option without
        autocomplete, which Discord's client would never ask about."""
        member, where = self.member(user), self.channel(channel)
        data = self._command_data(name, member, where, {**values, focused: typed}, raw=True)
        option = mark_focused(data["options"], focused)
        definition = option_definition(self._find(name)[0], name.split()[1:], focused)
        if not definition.get("autocomplete"):
            raise RefusedByClient(f"option {focused!r} of /{name} has no autocomplete")
        if definition["type"] != option["type"]:
            raise RefusedByClient(f"option {focused!r} is typed {definition['type']}, not {option['type']}")
        interaction = await self._dispatch_interaction(4, member, where, data)
        await self.wait_for_ack(interaction)
        assert interaction.response_data is not None
        return list(interaction.response_data["choices"])

    def _find(self, name: str) -> tuple[dict[str, Any], list[str]]:
        """A synced command by path; guild commands win over global ones of the same name."""
        guild_commands = self.commands(guild=True)
        scope = (
            guild_commands
            if name.split()[0] in {c["name"] for c in guild_commands}
            else self.commands(guild=False)
        )
        return find_command(scope, name)

    def _command_data(
        self, name: str, member: Member, where: Channel, values: dict[str, Any], *, raw: bool
    ) -> dict[str, Any]:
        command, path = self._find(name)
        if not raw:
            check_visible(command, member)
        resolved = Resolved(store_upload=lambda upload: self._store_upload(upload, where))
        data: dict[str, Any] = {
            "id": command["id"],
            "name": command["name"],
            "type": 1,
            "options": build_options(command, path, values, resolved, raw=raw),
        }
        if "guild_id" in command:
            data["guild_id"] = command["guild_id"]
        if resolved.data:
            data["resolved"] = resolved.data
        return data

    async def click(
        self, message: Message, label_or_custom_id: str, /, *, user: Member | str | None = None
    ) -> Interaction:
        """Press a button on ``message`` (found by custom_id or label) as ``user`` (default alice)."""
        member = self.member(user)
        if message.deleted:
            raise LookupError(f"message {message.id} was deleted")
        if not message.visible_to(member.user):
            raise LookupError(f"{member.name} cannot see ephemeral message {message.id}")
        button = message.button(label_or_custom_id)
        if button.get("disabled"):
            raise LookupError(f"button {label_or_custom_id!r} is disabled")
        if "custom_id" not in button:
            raise LookupError(f"button {label_or_custom_id!r} is a link, not an interaction")
        data = {"custom_id": button["custom_id"], "component_type": BUTTON}
        where = next(c for c in self.channels.values() if c.id == message.channel_id)
        return await self._dispatch_interaction(3, member, where, data, source=message)

    async def submit_modal(self, opened: Interaction, values: dict[str, str] | None = None) -> Interaction:
        """Submit the modal the bot answered ``opened`` with, as its user: each text input sends its value in
        ``values`` (by custom_id), else what the bot prefilled. Refused (``RefusedByClient``) as Discord's
        client would: no modal, submitted already, a required input empty, a value outside its lengths."""
        modal = opened.modal
        if modal is None:
            raise RefusedByClient(f"interaction {opened.id} was not answered with a modal")
        if opened.modal_submission is not None:
            raise RefusedByClient("that modal was submitted already")
        values = dict(values or {})
        components = []
        for component in modal["components"]:
            submitted = [
                {"type": TEXT_INPUT, "custom_id": text_input["custom_id"], "value": value}
                for text_input in modal_text_inputs([component])
                for value in [_modal_value(text_input, values.pop(text_input["custom_id"], None))]
            ]
            if component["type"] == ACTION_ROW:
                components.append({"type": ACTION_ROW, "components": submitted})
            elif component["type"] == LABEL and submitted:
                components.append({"type": LABEL, "component": submitted[0]})
        if values:
            raise RefusedByClient(f"the modal has no text inputs {sorted(values)}")
        data = {"custom_id": modal["custom_id"], "components": components}
        submission = await self._dispatch_interaction(
            MODAL_SUBMIT, opened.user, opened.channel, data, source=opened.source_message
        )
        opened.modal_submission = submission
        return submission

    def _store_upload(self, upload: Upload, channel: Channel) -> Attachment:
        return self.store_attachment(
            upload.filename, UploadedFile(upload.filename, upload.content_type, upload.data), None, channel.id
        )

    async def _dispatch_interaction(
        self, kind: int, member: Member, channel: Channel, data: dict[str, Any], source: Message | None = None
    ) -> Interaction:
        interaction = Interaction(
            id=self.snowflakes.next(),
            token=new_token(),
            type=kind,
            user=member,
            channel=channel,
            data=data,
            created_at=self.clock.now(),
            source_message=source,
        )
        self.interactions[interaction.id] = interaction
        self.interactions_by_token[interaction.token] = interaction
        payload: dict[str, Any] = {
            "id": str(interaction.id),
            "application_id": str(self.application_id),
            "type": kind,
            "data": data,
            "guild_id": str(self.guild_id),
            "guild": {"id": str(self.guild_id), "locale": "en-US", "features": []},
            "channel_id": str(channel.id),
            "channel": channel.to_json(),
            "member": member.to_json(with_permissions=True),
            "token": interaction.token,
            "version": 1,
            "app_permissions": str(self.bot_member.permissions),
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(self.guild_id)},
            "context": 0,
            "attachment_size_limit": self.rules.attachment_size_limit,
        }
        if source is not None:
            payload["message"] = source.to_json()
        if not await self.gateway.dispatch("INTERACTION_CREATE", payload):
            raise RuntimeError("no bot is connected to the fake gateway")
        return interaction

    async def user_deletes(self, message: Message, *, user: Member | str = "moderator") -> None:
        """A member deletes ``message`` in Discord's client (their own, or any with Manage Messages)."""
        member = self.member(user)
        own = message.author.id == member.id
        if not own and not member.has(MANAGE_MESSAGES):
            raise PermissionError(f"{member.name} cannot delete message {message.id}")
        await self.delete_message(message)

    async def reconnect_gateway(self) -> None:
        """Ask connected clients to reconnect (op 7); they resume their sessions."""
        await self.gateway.request_reconnect()


def _modal_value(text_input: dict[str, Any], value: str | None) -> str:
    """What Discord's client submits for a text input: the typed value, else the prefilled one; refused
    where the input's rules forbid it (an optional input may stay empty)."""
    value = (text_input.get("value") or "") if value is None else value
    shortest, longest = text_input.get("min_length") or 0, text_input.get("max_length") or 4000
    if value and not shortest <= len(value) <= longest:
        raise RefusedByClient(
            f"text input {text_input['custom_id']!r} takes {shortest}..{longest} characters, not {len(value)}"
        )
    if not value and text_input.get("required", True):
        raise RefusedByClient(f"text input {text_input['custom_id']!r} is required")
    return value
