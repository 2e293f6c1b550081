"""sdbot: a self-hosted Stable Diffusion bot for Discord."""

__version__ = "0.1.0"
