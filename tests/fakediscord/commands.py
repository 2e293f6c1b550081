"""Turning a test's ``slash("sdadmin quota set", amount=5)`` into the ``data`` of an INTERACTION_CREATE, typed
and checked the way Discord's client does it against the command definitions the bot synced.

Discord's client refuses to send what the definitions forbid (a missing required option, an integer out of
range, a choice not offered, a command hidden by ``default_member_permissions``); such an invocation raises
:class:`RefusedByClient`. With ``raw=True`` those checks are skipped, so a test can send what a modified
client
or a stale command cache could (``steps=100000``, an empty prompt) and exercise the bot's own validation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .state import ADMINISTRATOR, Attachment, Channel, Member, Role

SUB_COMMAND, SUB_COMMAND_GROUP = 1, 2
STRING, INTEGER, BOOLEAN, USER, CHANNEL, ROLE, MENTIONABLE, NUMBER, ATTACHMENT = 3, 4, 5, 6, 7, 8, 9, 10, 11


class RefusedByClient(Exception):
    """Discord's client would not send this invocation."""


@dataclass(frozen=True)
class Upload:
    """A file a user attaches to an ATTACHMENT option."""

    filename: str
    data: bytes
    content_type: str | None = None


_PYTHON_TYPES: dict[int, tuple[type, ...]] = {
    STRING: (str,),
    INTEGER: (int,),
    NUMBER: (int, float),
    BOOLEAN: (bool,),
    USER: (Member,),
    CHANNEL: (Channel,),
    ROLE: (Role,),
    MENTIONABLE: (Member, Role),
    ATTACHMENT: (Upload,),
}


def _infer_type(value: Any) -> int:
    """The option type a raw value would have when no definition names it."""
    for option_type, python_types in _PYTHON_TYPES.items():
        if isinstance(value, bool) != (option_type == BOOLEAN):
            continue
        if isinstance(value, python_types):
            return option_type
    raise TypeError(f"cannot send {value!r} as an option value")


@dataclass
class Resolved:
    """The ``resolved`` block of an interaction: the objects that option values refer to."""

    store_upload: Callable[[Upload], Attachment]

    def __post_init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}

    def value_of(self, value: Any) -> Any:
        if isinstance(value, Member):
            self.data.setdefault("users", {})[str(value.id)] = value.user.to_json()
            member = value.to_json(with_permissions=True)
            del member["user"]
            self.data.setdefault("members", {})[str(value.id)] = member
            return str(value.id)
        if isinstance(value, Channel):
            channel = {key: value.to_json()[key] for key in ("id", "type", "name", "nsfw", "guild_id")}
            self.data.setdefault("channels", {})[str(value.id)] = channel | {"permissions": "0"}
            return str(value.id)
        if isinstance(value, Role):
            self.data.setdefault("roles", {})[str(value.id)] = value.to_json()
            return str(value.id)
        if isinstance(value, Upload):
            attachment = self.store_upload(value)
            self.data.setdefault("attachments", {})[str(attachment.id)] = attachment.to_json()
            return str(attachment.id)
        return value


def find_command(commands: list[dict[str, Any]], path: str) -> tuple[dict[str, Any], list[str]]:
    """The synced root command named by the first word of ``path``, and the remaining words."""
    root_name, *rest = path.split()
    for command in commands:
        if command["name"] == root_name and command.get("type", 1) == 1:
            return command, rest
    names = sorted(command["name"] for command in commands)
    raise RefusedByClient(f"no slash command /{root_name} is synced (synced: {names})")


def check_visible(command: dict[str, Any], member: Member) -> None:
    """Discord hides a command from members lacking its ``default_member_permissions``."""
    required = command.get("default_member_permissions")
    if required is None or member.has(ADMINISTRATOR):
        return
    if not member.has(int(required)):
        raise RefusedByClient(
            f"/{command['name']} is hidden from {member.name} (needs permissions {required})"
        )


def build_options(
    definition: dict[str, Any], path: list[str], values: dict[str, Any], resolved: Resolved, *, raw: bool
) -> list[dict[str, Any]]:
    """The ``options`` list for the command (or subcommand) ``definition``, ``path`` naming subcommands."""
    children = definition.get("options") or []
    if path:
        word, *rest = path
        for child in children:
            if child["name"] == word and child["type"] in (SUB_COMMAND, SUB_COMMAND_GROUP):
                options = build_options(child, rest, values, resolved, raw=raw)
                return [{"type": child["type"], "name": word, "options": options}]
        raise RefusedByClient(f"/{definition['name']} has no subcommand {word!r}")
    if not raw and any(child["type"] in (SUB_COMMAND, SUB_COMMAND_GROUP) for child in children):
        raise RefusedByClient(f"/{definition['name']} needs a subcommand: {[c['name'] for c in children]}")
    by_name = {child["name"]: child for child in children}
    sent = []
    for name, value in values.items():
        option = by_name.get(name)
        if option is None and not raw:
            raise RefusedByClient(f"/{definition['name']} has no option {name!r} (has {sorted(by_name)})")
        option_type = option["type"] if option is not None else _infer_type(value)
        if not raw:
            _check_value(option or {}, option_type, name, value)
        sent.append({"type": option_type, "name": name, "value": resolved.value_of(value)})
    if not raw:
        missing = [c["name"] for c in children if c.get("required") and c["name"] not in values]
        if missing:
            raise RefusedByClient(f"/{definition['name']} needs option(s) {missing}")
    return sent


def option_definition(definition: dict[str, Any], path: list[str], name: str) -> dict[str, Any]:
    """The definition of option ``name`` of the (sub)command ``path`` names below ``definition``."""
    children = definition.get("options") or []
    if path:
        word, *rest = path
        child = next(
            c for c in children if c["name"] == word and c["type"] in (SUB_COMMAND, SUB_COMMAND_GROUP)
        )
        return option_definition(child, rest, name)
    for child in children:
        if child["name"] == name:
            return child
    raise RefusedByClient(f"/{definition['name']} has no option {name!r}")


def mark_focused(options: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """Mark option ``name`` (in the innermost subcommand) as the one being typed in, as Discord's client
    does in an autocomplete interaction; returns it."""
    for option in options:
        if option["type"] in (SUB_COMMAND, SUB_COMMAND_GROUP):
            return mark_focused(option["options"], name)
        if option["name"] == name:
            option["focused"] = True
            return option
    raise RefusedByClient(f"no option {name!r} to focus")


def _check_value(option: dict[str, Any], option_type: int, name: str, value: Any) -> None:
    python_types = _PYTHON_TYPES[option_type]
    if not isinstance(value, python_types) or (isinstance(value, bool) and option_type != BOOLEAN):
        raise RefusedByClient(f"option {name!r} takes {python_types}, not {value!r}")
    choices = option.get("choices")
    if choices and value not in [choice["value"] for choice in choices]:
        raise RefusedByClient(f"option {name!r} offers {[c['value'] for c in choices]}, not {value!r}")
    if option_type in (INTEGER, NUMBER):
        low, high = option.get("min_value"), option.get("max_value")
        if (low is not None and value < low) or (high is not None and value > high):
            raise RefusedByClient(f"option {name!r} must be within [{low}, {high}], not {value!r}")
    if option_type == STRING:
        shortest = max(option.get("min_length") or 0, 1 if option.get("required") else 0)
        longest = option.get("max_length") or 6000
        if not shortest <= len(value) <= longest:
            raise RefusedByClient(f"option {name!r} must be {shortest}..{longest} characters long")
