"""The fake's REST v10 routes and the Discord rules they enforce.

Each handler interprets a request the way Discord does and answers in Discord's shapes (Content-Type exactly
``application/json``: discord.py decodes nothing else). Rules enforced here: acknowledgement within
``Rules.ack_deadline`` (else 404 Unknown interaction, 10062); interaction tokens valid for
``Rules.token_lifetime`` (else 401 Invalid Webhook Token, 50027); one acknowledgement per interaction (40060);
content length; action rows and buttons per row; custom_id length and uniqueness; no empty messages (50006);
the attachment size limit (413, 40005); editing only the bot's own messages (50005); and message edits per
channel per window (429 with ``retry_after``, ``Via`` and ``X-RateLimit-*`` headers, which discord.py needs
before it retries). Rate-limit headers go on 429 replies only, so discord.py does not pre-empt the limit and
its retry path is exercised.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .state import EPHEMERAL, LOADING, MANAGE_MESSAGES, Attachment, Channel, Interaction, Message

if TYPE_CHECKING:
    from .server import FakeDiscord

COMPONENTS_V2 = 1 << 15
ACTION_ROW, BUTTON, TEXT_INPUT, LABEL = 1, 2, 4, 18
APPLICATION_COMMAND, MESSAGE_COMPONENT, MODAL_SUBMIT = 2, 3, 5
MODAL = 9


class DiscordError(Exception):
    """An error reply in Discord's shape. ``bot_bug`` marks replies only a malformed request gets."""

    def __init__(
        self,
        status: int,
        code: int,
        message: str,
        *,
        detail: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
        bot_bug: bool = False,
    ) -> None:
        super().__init__(f"{status} {message} (code {code})" + (f": {detail}" if detail else ""))
        self.status, self.code, self.message, self.detail = status, code, message, detail
        self.headers = headers or {}
        self.extra = extra or {}
        self.bot_bug = bot_bug

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"message": self.message, "code": self.code, **self.extra}
        if self.detail:
            body["errors"] = {"_errors": [{"code": "INVALID_FORM_BODY", "message": self.detail}]}
        return body


def form_error(detail: str) -> DiscordError:
    return DiscordError(400, 50035, "Invalid Form Body", detail=detail, bot_bug=True)


def unknown(what: str, code: int) -> DiscordError:
    return DiscordError(404, code, f"Unknown {what}")


UNKNOWN_INTERACTION = 10062
UNKNOWN_MESSAGE = 10008
UNKNOWN_CHANNEL = 10003
UNKNOWN_WEBHOOK = 10015


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON reply whose Content-Type has no charset parameter (discord.py requires exactly this)."""
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        headers={"Content-Type": "application/json", **(headers or {})},
    )


@dataclass
class UploadedFile:
    filename: str
    content_type: str | None
    data: bytes


@dataclass
class Body:
    """A request body: the JSON document (from ``payload_json`` for multipart) and the uploaded files."""

    json: Any = None
    files: dict[int, UploadedFile] = field(default_factory=dict)
    payload_json: str | None = None
    raw: bytes = b""


BODY = web.RequestKey("body", Body)
_FILE_FIELD = re.compile(r"^files\[(\d+)\]$")


async def read_body(request: web.Request) -> Body:
    if request.content_type == "multipart/form-data":
        body = Body()
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            data = await part.read()  # type: ignore[union-attr]
            if part.name == "payload_json":
                body.payload_json = data.decode()
                body.json = json.loads(body.payload_json)
            elif part.name and (match := _FILE_FIELD.match(part.name)):
                body.files[int(match[1])] = UploadedFile(
                    filename=part.filename or "file", content_type=part.headers.get("Content-Type"), data=data
                )
        return body
    raw = await request.read()
    return Body(json=json.loads(raw) if raw and request.content_type == "application/json" else None, raw=raw)


class Rest:
    """Route handlers over the fake's state."""

    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake

    def routes(self) -> list[web.RouteDef]:
        api = "/api/v10"
        webhook = api + "/webhooks/{app}/{token}"
        channel = api + "/channels/{channel}"
        return [
            web.get(api + "/users/@me", self.get_me),
            web.get(api + "/users/{user}", self.get_user),
            web.get(api + "/oauth2/applications/@me", self.get_application),
            web.get(api + "/gateway", self.get_gateway),
            web.get(api + "/gateway/bot", self.get_gateway),
            web.get(api + "/applications/{app}/commands", self.get_commands),
            web.put(api + "/applications/{app}/commands", self.put_commands),
            web.get(api + "/applications/{app}/guilds/{guild}/commands", self.get_commands),
            web.put(api + "/applications/{app}/guilds/{guild}/commands", self.put_commands),
            web.post(api + "/interactions/{interaction}/{token}/callback", self.interaction_callback),
            web.post(webhook, self.create_followup),
            web.get(webhook + "/messages/{message}", self.get_webhook_message),
            web.patch(webhook + "/messages/{message}", self.edit_webhook_message),
            web.delete(webhook + "/messages/{message}", self.delete_webhook_message),
            web.get(channel, self.get_channel),
            web.get(channel + "/messages", self.list_messages),
            web.post(channel + "/messages", self.create_channel_message),
            web.get(channel + "/messages/{message}", self.get_channel_message),
            web.patch(channel + "/messages/{message}", self.edit_channel_message),
            web.delete(channel + "/messages/{message}", self.delete_channel_message),
            web.get(api + "/guilds/{guild}/members/{user}", self.get_member),
            web.get("/attachments/{channel}/{attachment}/{filename}", self.get_attachment),
        ]

    # -- identity -------------------------------------------------------------------------------------

    def _require_bot(self, request: web.Request) -> None:
        if request.headers.get("Authorization") != f"Bot {self.fake.token}":
            raise DiscordError(401, 0, "401: Unauthorized")

    async def get_me(self, request: web.Request) -> web.Response:
        self._require_bot(request)
        return json_response(
            self.fake.bot_user.to_json() | {"verified": True, "mfa_enabled": False, "flags": 0}
        )

    async def get_user(self, request: web.Request) -> web.Response:
        self._require_bot(request)
        user_id = int(request.match_info["user"])
        for user in [self.fake.bot_user, *(member.user for member in self.fake.members.values())]:
            if user.id == user_id:
                return json_response(user.to_json())
        raise unknown("User", 10013)

    async def get_application(self, request: web.Request) -> web.Response:
        self._require_bot(request)
        fake = self.fake
        return json_response(
            {
                "id": str(fake.application_id),
                "name": fake.bot_user.name,
                "description": "",
                "icon": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": fake.owner.user.to_json(),
                "verify_key": "0" * 64,
                "flags": 0,
                "team": None,
                "summary": "",
                "bot": fake.bot_user.to_json(),
            }
        )

    async def get_gateway(self, request: web.Request) -> web.Response:
        return json_response(
            {
                "url": self.fake.gateway_url,
                "shards": 1,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": 1000,
                    "reset_after": 0,
                    "max_concurrency": 1,
                },
            }
        )

    async def get_member(self, request: web.Request) -> web.Response:
        self._require_bot(request)
        self._guild(request)
        user_id = int(request.match_info["user"])
        for member in [self.fake.bot_member, *self.fake.members.values()]:
            if member.id == user_id:
                return json_response(member.to_json())
        raise unknown("Member", 10007)

    # -- application commands -------------------------------------------------------------------------

    def _guild(self, request: web.Request) -> int:
        guild_id = int(request.match_info["guild"])
        if guild_id != self.fake.guild_id:
            raise unknown("Guild", 10004)
        return guild_id

    def _scope(self, request: web.Request) -> int | None:
        if int(request.match_info["app"]) != self.fake.application_id:
            raise DiscordError(403, 50001, "Missing Access")
        return self._guild(request) if "guild" in request.match_info else None

    async def get_commands(self, request: web.Request) -> web.Response:
        self._require_bot(request)
        return json_response(self.fake.synced_commands.get(self._scope(request), []))

    async def put_commands(self, request: web.Request) -> web.Response:
        self._require_bot(request)
        scope = self._scope(request)
        definitions = request[BODY].json or []
        previous = {command["name"]: command for command in self.fake.synced_commands.get(scope, [])}
        commands = []
        for definition in definitions:
            command_id = previous[definition["name"]]["id"] if definition["name"] in previous else None
            command = {
                "type": 1,
                "default_member_permissions": None,
                "nsfw": False,
                "description": "",
                "options": [],
                **definition,
                "id": command_id or str(self.fake.snowflakes.next()),
                "application_id": str(self.fake.application_id),
                "version": str(self.fake.snowflakes.next()),
            }
            if scope is not None:
                command["guild_id"] = str(scope)
            commands.append(command)
        self.fake.synced_commands[scope] = commands
        self.fake.notify()
        return json_response(commands)

    # -- interactions ---------------------------------------------------------------------------------

    def _interaction(self, interaction_id: int, token: str) -> Interaction:
        interaction = self.fake.interactions.get(interaction_id)
        if interaction is None or interaction.token != token:
            raise unknown("interaction", UNKNOWN_INTERACTION)
        if self.fake.clock.now() - interaction.created_at > self.fake.rules.ack_deadline:
            raise unknown("interaction", UNKNOWN_INTERACTION)
        return interaction

    async def interaction_callback(self, request: web.Request) -> web.Response:
        interaction = self._interaction(int(request.match_info["interaction"]), request.match_info["token"])
        if interaction.acknowledged:
            raise DiscordError(400, 40060, "Interaction has already been acknowledged.", bot_bug=True)
        body: Body = request[BODY]
        callback_type = body.json["type"]
        data = body.json.get("data") or {}
        # A modal opened from a button submits as a component interaction of that button's message.
        is_component = interaction.source_message is not None
        if callback_type in (6, 7) and not is_component:
            raise form_error(f"callback type {callback_type} only answers a component interaction")
        if (callback_type == 8) != (interaction.type == 4):
            raise form_error("an autocomplete interaction is answered with choices (8), and only it")
        if callback_type == 8 and len(data.get("choices") or []) > 25:
            raise form_error("at most 25 autocomplete choices")
        if callback_type == MODAL:
            check_modal(interaction, data)
        message: Message | None = None
        flags = int(data.get("flags") or 0) & EPHEMERAL
        if callback_type == 4:
            message = await self.fake.create_message(
                interaction.channel, data, body.files, interaction=interaction, flags=flags
            )
            interaction.original = message
        elif callback_type == 5:
            message = await self.fake.create_message(
                interaction.channel, {}, {}, interaction=interaction, flags=flags | LOADING
            )
            interaction.original = message
        elif callback_type in (6, 7):
            interaction.original = message = interaction.source_message
            if callback_type == 7 and message is not None:
                await self.fake.edit_message(message, data, body.files, rate_limited=False)
        interaction.response_type = callback_type
        interaction.response_data = data
        self.fake.notify()
        if request.query.get("with_response") not in ("1", "true"):
            return web.Response(status=204)
        reply: dict[str, Any] = {
            "interaction": {"id": str(interaction.id), "type": interaction.type},
            "resource": {"type": callback_type},
        }
        if message is not None:
            reply["interaction"] |= {
                "response_message_id": str(message.id),
                "response_message_loading": message.loading,
                "response_message_ephemeral": message.ephemeral,
            }
            if callback_type != 6:
                reply["resource"]["message"] = message.to_json()
        return json_response(reply)

    def _webhook_interaction(self, request: web.Request) -> Interaction:
        token = request.match_info["token"]
        interaction = self.fake.interactions_by_token.get(token)
        if interaction is None or int(request.match_info["app"]) != self.fake.application_id:
            raise unknown("Webhook", UNKNOWN_WEBHOOK)
        if self.fake.clock.now() - interaction.created_at > self.fake.rules.token_lifetime:
            raise DiscordError(401, 50027, "Invalid Webhook Token")
        if not interaction.acknowledged:
            raise unknown("Webhook", UNKNOWN_WEBHOOK)
        return interaction

    def _webhook_message(self, request: web.Request) -> tuple[Interaction, Message]:
        interaction = self._webhook_interaction(request)
        wanted = request.match_info["message"]
        if wanted == "@original":
            message = interaction.original
        else:
            candidates = [interaction.original, *interaction.followups]
            message = next((m for m in candidates if m is not None and m.id == int(wanted)), None)
        if message is None or message.deleted:
            raise unknown("Message", UNKNOWN_MESSAGE)
        return interaction, message

    async def create_followup(self, request: web.Request) -> web.Response:
        interaction = self._webhook_interaction(request)
        self.fake.check_post()
        body: Body = request[BODY]
        original = interaction.original
        if original is not None and original.loading and original.interaction is interaction:
            # The first followup after a "thinking" deferral replaces the loading message.
            message = await self.fake.complete_deferred(original, body.json, body.files)
        else:
            flags = int(body.json.get("flags") or 0) & EPHEMERAL
            message = await self.fake.create_message(
                interaction.channel, body.json, body.files, interaction=interaction, flags=flags
            )
            interaction.followups.append(message)
        self.fake.notify()
        if request.query.get("wait") in ("1", "true"):
            return json_response(message.to_json())
        return web.Response(status=204)

    async def get_webhook_message(self, request: web.Request) -> web.Response:
        _, message = self._webhook_message(request)
        return json_response(message.to_json())

    async def edit_webhook_message(self, request: web.Request) -> web.Response:
        _, message = self._webhook_message(request)
        body: Body = request[BODY]
        if message.loading:
            await self.fake.complete_deferred(message, body.json, body.files)
        else:
            await self.fake.edit_message(message, body.json, body.files, rate_limited=True)
        return json_response(message.to_json())

    async def delete_webhook_message(self, request: web.Request) -> web.Response:
        _, message = self._webhook_message(request)
        await self.fake.delete_message(message)
        return web.Response(status=204)

    # -- channels ---------------------------------------------------------------------------------------

    def _channel(self, request: web.Request) -> Channel:
        channel_id = int(request.match_info["channel"])
        for channel in self.fake.channels.values():
            if channel.id == channel_id:
                return channel
        raise unknown("Channel", UNKNOWN_CHANNEL)

    def _channel_message(self, request: web.Request) -> Message:
        channel = self._channel(request)
        message = self.fake.message_by_id.get(int(request.match_info["message"]))
        if message is None or message.deleted or message.ephemeral or message.channel_id != channel.id:
            raise unknown("Message", UNKNOWN_MESSAGE)
        return message

    async def get_channel(self, request: web.Request) -> web.Response:
        self._require_bot(request)
        return json_response(self._channel(request).to_json())

    async def list_messages(self, request: web.Request) -> web.Response:
        self._require_bot(request)
        channel = self._channel(request)
        limit = int(request.query.get("limit", "50"))
        before = int(request.query.get("before", str(1 << 63)))
        after = int(request.query.get("after", "0"))
        messages = [m for m in self.fake.channel_messages(channel) if after < m.id < before]
        newest_first = sorted(messages, key=lambda m: m.id, reverse=True)[:limit]
        return json_response([m.to_json() for m in newest_first])

    async def create_channel_message(self, request: web.Request) -> web.Response:
        self._require_bot(request)
        channel = self._channel(request)
        self.fake.check_post()
        body: Body = request[BODY]
        reference = body.json.get("message_reference")
        reference_id = None
        if reference is not None:
            target = self.fake.message_by_id.get(int(reference["message_id"]))
            if target is None or target.deleted or target.channel_id != channel.id:
                if reference.get("fail_if_not_exists", True):
                    raise DiscordError(
                        400, 50035, "Invalid Form Body", detail="message_reference: Unknown message"
                    )
            else:
                reference_id = target.id
        message = await self.fake.create_message(channel, body.json, body.files, reference_id=reference_id)
        return json_response(message.to_json())

    async def get_channel_message(self, request: web.Request) -> web.Response:
        self._require_bot(request)
        return json_response(self._channel_message(request).to_json())

    async def edit_channel_message(self, request: web.Request) -> web.Response:
        self._require_bot(request)
        message = self._channel_message(request)
        if message.author.id != self.fake.bot_user.id:
            raise DiscordError(403, 50005, "Cannot edit a message authored by another user", bot_bug=True)
        body: Body = request[BODY]
        await self.fake.edit_message(message, body.json, body.files, rate_limited=True)
        return json_response(message.to_json())

    async def delete_channel_message(self, request: web.Request) -> web.Response:
        self._require_bot(request)
        message = self._channel_message(request)
        if message.author.id != self.fake.bot_user.id and not self.fake.bot_member.has(MANAGE_MESSAGES):
            raise DiscordError(403, 50013, "Missing Permissions", bot_bug=True)
        await self.fake.delete_message(message)
        return web.Response(status=204)

    async def get_attachment(self, request: web.Request) -> web.Response:
        attachment = self.fake.attachments.get(int(request.match_info["attachment"]))
        if attachment is None or attachment.filename != request.match_info["filename"]:
            raise web.HTTPNotFound()
        await self.fake.attachment_download()
        return web.Response(
            body=attachment.data, content_type=attachment.content_type or "application/octet-stream"
        )


# -- message payload rules ------------------------------------------------------------------------------


def check_components(components: list[dict[str, Any]], flags: int, rules: Any) -> None:
    """At most 5 action rows of at most 5 buttons; custom_ids at most 100 characters and unique."""
    if flags & COMPONENTS_V2:
        return
    if len(components) > rules.max_action_rows:
        raise form_error(f"components: at most {rules.max_action_rows} action rows, got {len(components)}")
    seen: set[str] = set()
    for index, row in enumerate(components):
        if row.get("type") != ACTION_ROW:
            raise form_error(f"components/{index}: top-level components must be action rows")
        children = row.get("components") or []
        buttons = [child for child in children if child.get("type") == BUTTON]
        if len(buttons) > rules.max_row_components or not children:
            raise form_error(f"components/{index}: an action row holds 1..{rules.max_row_components} buttons")
        for child in children:
            custom_id = child.get("custom_id")
            if custom_id is None:
                continue
            if len(custom_id) > rules.max_custom_id:
                raise form_error(f"custom_id {custom_id[:20]!r}...: at most {rules.max_custom_id} characters")
            if custom_id in seen:
                raise form_error(f"custom_id {custom_id!r} is used twice in one message")
            seen.add(custom_id)


def modal_text_inputs(components: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The text inputs of a modal's (or a modal submission's) components: in action rows or in labels."""
    inputs = []
    for component in components:
        children = component.get("components") or [component.get("component") or {}]
        inputs += [child for child in children if child.get("type") == TEXT_INPUT]
    return inputs


def check_modal(interaction: Interaction, data: dict[str, Any]) -> None:
    """Discord's rules for a modal beyond the spec's shapes: only a slash command or a component opens one,
    its inputs' custom_ids are unique, and a prefilled value keeps its input's length bounds."""
    if interaction.type not in (APPLICATION_COMMAND, MESSAGE_COMPONENT):
        raise form_error(f"a modal cannot answer an interaction of type {interaction.type}")
    seen: set[str] = set()
    for text_input in modal_text_inputs(data.get("components") or []):
        custom_id = text_input["custom_id"]
        if custom_id in seen:
            raise form_error(f"custom_id {custom_id!r} is used twice in one modal")
        seen.add(custom_id)
        value, longest = text_input.get("value"), text_input.get("max_length")
        if value is not None and longest is not None and len(value) > longest:
            raise form_error(f"{custom_id}: prefilled with {len(value)} characters, max_length {longest}")


def check_content(content: str | None, rules: Any) -> None:
    if content is not None and len(content) > rules.max_content:
        raise form_error(f"content: must be {rules.max_content} or fewer in length, got {len(content)}")


def check_files(files: dict[int, UploadedFile], rules: Any) -> None:
    for upload in files.values():
        if len(upload.data) > rules.attachment_size_limit:
            raise DiscordError(413, 40005, "Request entity too large")


def attachment_list(
    payload: dict[str, Any],
    files: dict[int, UploadedFile],
    existing: list[Attachment],
    store: Any,
    channel_id: int,
) -> list[Attachment]:
    """The attachments a create or edit leaves on a message.

    ``payload["attachments"]`` lists what to keep: entries whose id is an existing attachment's id, and
    entries whose id is the index of an uploaded ``files[n]`` part (with its filename). Without that key, an
    edit keeps
    the existing attachments and appends the uploads.
    """
    listed = payload.get("attachments")
    if listed is None:
        return existing + [store(upload.filename, upload, None, channel_id) for upload in files.values()]
    by_id = {attachment.id: attachment for attachment in existing}
    kept: list[Attachment] = []
    used: set[int] = set()
    for entry in listed:
        entry_id = int(entry["id"])
        if entry_id in files and entry_id not in used:
            used.add(entry_id)
            upload = files[entry_id]
            kept.append(
                store(entry.get("filename") or upload.filename, upload, entry.get("description"), channel_id)
            )
        elif entry_id in by_id:
            kept.append(by_id[entry_id])
        else:
            raise form_error(f"attachments: {entry_id} is neither an upload index nor an attachment here")
    kept += [
        store(files[index].filename, files[index], None, channel_id) for index in files if index not in used
    ]
    return kept


def resolve_embeds(embeds: list[dict[str, Any]], attachments: list[Attachment]) -> list[dict[str, Any]]:
    """Embeds as Discord stores them: typed ``rich``, ``attachment://name`` links pointing at the file."""
    urls = {f"attachment://{attachment.filename}": attachment.url for attachment in attachments}
    resolved = []
    for embed in embeds:
        embed = {"type": "rich", **embed}
        for key in ("image", "thumbnail"):
            media = embed.get(key)
            if media and media.get("url") in urls:
                embed[key] = {**media, "url": urls[media["url"]], "proxy_url": urls[media["url"]]}
        resolved.append(embed)
    return resolved


def rate_limit_reply(retry_after: float, bucket: str, limit: int) -> DiscordError:
    """The 429 discord.py retries: JSON ``retry_after`` plus ``Via`` and ``X-RateLimit-*`` headers."""
    headers = {
        "Via": "1.1 google",
        "Retry-After": str(max(1, round(retry_after))),
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": f"{time.time() + retry_after:.3f}",
        "X-RateLimit-Reset-After": f"{retry_after:.3f}",
        "X-RateLimit-Bucket": bucket,
        "X-RateLimit-Scope": "shared",
    }
    return DiscordError(
        429,
        0,
        "You are being rate limited.",
        headers=headers,
        extra={"retry_after": round(retry_after, 3), "global": False},
    )
