"""``python -m tests.bot_process URL``: bot.py's ``main`` in a process of its own, with discord.py pointed at
the loopback fake Discord at ``URL``, for tests that kill the bot (SIGKILL) and start it again. Settings come
from the environment, as for bot.py."""

from __future__ import annotations

import sys

import discord
import yarl

import bot as entry
from tests.fakediscord.spec import API_PREFIX

if __name__ == "__main__":
    url = sys.argv[1]
    discord.http.Route.BASE = url + API_PREFIX
    gateway = url.replace("http://", "ws://", 1) + "/gateway"
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway)
    sys.exit(entry.main())
