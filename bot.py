"""Entry point: load settings, set up logging, run the bot."""

import sys

from sdbot.config import load_settings
from sdbot.errors import ConfigError


def main() -> int:
    try:
        settings = load_settings()
    except ConfigError as error:
        print(f"sdbot: {error}", file=sys.stderr)
        return 2
    if not settings.discord_token:
        print("sdbot: DISCORD_TOKEN is not set: copy .env.example to .env and put your bot's token in it",
              file=sys.stderr)
        return 2
    raise SystemExit("sdbot: the Discord bot is not built yet")


if __name__ == "__main__":
    sys.exit(main())
