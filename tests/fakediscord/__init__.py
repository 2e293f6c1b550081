"""A loopback Discord (REST v10 + JSON gateway on aiohttp) that the real discord.py client connects to in
end-to-end tests, validating every request against Discord's OpenAPI spec. See README.md."""

from .commands import RefusedByClient, Upload
from .server import FakeDiscord, Rejection
from .state import Attachment, Channel, FakeClock, Interaction, Member, Message, Role, Rules, User

__all__ = [
    "Attachment",
    "Channel",
    "FakeClock",
    "FakeDiscord",
    "Interaction",
    "Member",
    "Message",
    "RefusedByClient",
    "Rejection",
    "Role",
    "Rules",
    "Upload",
    "User",
]
