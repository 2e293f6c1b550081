"""What the fake Discord knows: one guild with its channels, roles and members, the messages in it (with the
bytes of their attachments), the application commands a bot synced, and every interaction with its response.

Objects here are plain data that tests read to see what a user would see; the server mutates them, and
``to_json`` renders each in Discord's wire shape.
"""

from __future__ import annotations

import itertools
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# Permission bits (https://discord.com/developers/docs/topics/permissions).
ADMINISTRATOR = 1 << 3
MANAGE_GUILD = 1 << 5
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
MANAGE_MESSAGES = 1 << 13
EMBED_LINKS = 1 << 14
ATTACH_FILES = 1 << 15
READ_MESSAGE_HISTORY = 1 << 16
USE_APPLICATION_COMMANDS = 1 << 31
ALL_PERMISSIONS = (1 << 51) - 1
MEMBER_PERMISSIONS = (
    VIEW_CHANNEL
    | SEND_MESSAGES
    | EMBED_LINKS
    | ATTACH_FILES
    | READ_MESSAGE_HISTORY
    | USE_APPLICATION_COMMANDS
)

# Message flags.
EPHEMERAL = 1 << 6
LOADING = 1 << 7

DISCORD_EPOCH_MS = 1_420_070_400_000


class FakeClock:
    """Wall time plus an offset a test advances, so Discord's deadlines can pass without sleeping."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@dataclass
class Rules:
    """Discord's limits as the fake enforces them; a test may tighten one (a shorter edit window keeps a
    rate-limit test fast) but the defaults are Discord's."""

    ack_deadline: float = 3.0
    token_lifetime: float = 15 * 60.0
    attachment_size_limit: int = 10 * 1024 * 1024
    max_content: int = 2000
    max_action_rows: int = 5
    max_row_components: int = 5
    max_custom_id: int = 100
    edits_per_window: int = 5
    edit_window: float = 5.0


class Snowflakes:
    """Issues increasing snowflakes whose timestamps follow the fake clock."""

    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock
        self._counter = itertools.count()

    def next(self) -> int:
        millis = int(self._clock.now() * 1000) - DISCORD_EPOCH_MS
        return (millis << 22) | (next(self._counter) & 0x3FFFFF)


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


@dataclass
class User:
    id: int
    name: str
    bot: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "username": self.name,
            "discriminator": "0",
            "global_name": None if self.bot else self.name.title(),
            "avatar": None,
            "bot": self.bot,
            "public_flags": 0,
        }


@dataclass
class Role:
    id: int
    name: str
    permissions: int
    position: int

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "name": self.name,
            "color": 0,
            "hoist": False,
            "position": self.position,
            "permissions": str(self.permissions),
            "managed": False,
            "mentionable": False,
            "flags": 0,
        }


@dataclass
class Member:
    """A guild member; ``permissions`` is what Discord computes for them (all bits for an administrator)."""

    user: User
    roles: list[Role]
    joined_at: float

    @property
    def id(self) -> int:
        return self.user.id

    @property
    def name(self) -> str:
        return self.user.name

    @property
    def permissions(self) -> int:
        bits = 0
        for role in self.roles:
            bits |= role.permissions
        return ALL_PERMISSIONS if bits & ADMINISTRATOR else bits

    def has(self, permission: int) -> bool:
        return self.permissions & permission == permission

    def to_json(self, *, with_permissions: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "user": self.user.to_json(),
            "nick": None,
            "avatar": None,
            "roles": [str(role.id) for role in self.roles if role.position > 0],
            "joined_at": iso(self.joined_at),
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
        }
        if with_permissions:
            data["permissions"] = str(self.permissions)
        return data


@dataclass
class Channel:
    id: int
    guild_id: int
    name: str
    nsfw: bool = False
    position: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "type": 0,
            "guild_id": str(self.guild_id),
            "name": self.name,
            "position": self.position,
            "permission_overwrites": [],
            "nsfw": self.nsfw,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "parent_id": None,
            "flags": 0,
        }


@dataclass
class Attachment:
    """An uploaded file; ``data`` holds its bytes, served back at ``url``."""

    id: int
    filename: str
    data: bytes
    url: str
    content_type: str | None = None
    description: str | None = None

    @property
    def spoiler(self) -> bool:
        return self.filename.startswith("SPOILER_")

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "filename": self.filename,
            "size": len(self.data),
            "url": self.url,
            "proxy_url": self.url,
        }
        if self.content_type:
            data["content_type"] = self.content_type
        if self.description:
            data["description"] = self.description
        return data


@dataclass
class Message:
    """A message as users see it. ``interaction`` is the interaction whose response or followup it is."""

    id: int
    channel_id: int
    guild_id: int
    author: User
    created_at: float
    content: str = ""
    embeds: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    flags: int = 0
    reference_id: int | None = None
    interaction: Interaction | None = None
    edited_at: float | None = None
    edits: int = 0
    deleted: bool = False
    contents: list[str] = field(default_factory=list)  # every content it has had, oldest first

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    @property
    def loading(self) -> bool:
        """True while a deferred response still shows "Bot is thinking..."."""
        return bool(self.flags & LOADING)

    @property
    def buttons(self) -> list[dict[str, Any]]:
        return [
            component
            for row in self.components
            for component in row.get("components", [])
            if component.get("type") == 2
        ]

    def button(self, label_or_custom_id: str) -> dict[str, Any]:
        for button in self.buttons:
            if label_or_custom_id in (button.get("custom_id"), button.get("label")):
                return button
        raise LookupError(f"message {self.id} has no button {label_or_custom_id!r}: {self.buttons}")

    def visible_to(self, user: User) -> bool:
        if not self.ephemeral:
            return True
        return self.interaction is not None and self.interaction.user.id == user.id

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "channel_id": str(self.channel_id),
            "author": self.author.to_json(),
            "content": self.content,
            "timestamp": iso(self.created_at),
            "edited_timestamp": iso(self.edited_at) if self.edited_at is not None else None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [attachment.to_json() for attachment in self.attachments],
            "embeds": self.embeds,
            "pinned": False,
            "type": 0,
            "flags": self.flags,
            "components": self.components,
        }
        if self.reference_id is not None:
            data["type"] = 19
            data["message_reference"] = {
                "type": 0,
                "message_id": str(self.reference_id),
                "channel_id": str(self.channel_id),
                "guild_id": str(self.guild_id),
            }
        if self.interaction is not None:
            data["webhook_id"] = str(self.author.id)
            data["application_id"] = str(self.author.id)
            data["interaction_metadata"] = {
                "id": str(self.interaction.id),
                "type": self.interaction.type,
                "user": self.interaction.user.user.to_json(),
                "authorizing_integration_owners": {"0": str(self.guild_id)},
            }
            if self.interaction.type == 2 and self.reference_id is None:
                data["type"] = 20
        return data


@dataclass
class Interaction:
    """An interaction a test sent and what the bot answered.

    ``response_type`` is the callback type (4 message, 5 deferred message, 6 deferred update, 7 update,
    9 modal), ``original`` the message ``@original`` refers to (the response message, or for a component
    interaction answered with 6/7 the message whose component was used), ``followups`` the followup messages.
    """

    id: int
    token: str
    type: int
    user: Member
    channel: Channel
    data: dict[str, Any]
    created_at: float
    source_message: Message | None = None
    response_type: int | None = None
    response_data: dict[str, Any] | None = None
    original: Message | None = None
    followups: list[Message] = field(default_factory=list)
    modal_submission: Interaction | None = None  # the MODAL_SUBMIT that answered this one's modal

    @property
    def acknowledged(self) -> bool:
        return self.response_type is not None

    @property
    def ephemeral(self) -> bool:
        """Whether the response (message or deferral) is visible only to the invoking user."""
        flags = (self.response_data or {}).get("flags") or 0
        return bool(int(flags) & EPHEMERAL)

    @property
    def modal(self) -> dict[str, Any] | None:
        return self.response_data if self.response_type == 9 else None

    @property
    def messages(self) -> list[Message]:
        """The response message (if the response created one) and the followups, oldest first."""
        own = [self.original] if self.original is not None and self.original.interaction is self else []
        return own + self.followups


def new_token() -> str:
    return "aW50ZXJhY3Rpb24" + secrets.token_urlsafe(48)
