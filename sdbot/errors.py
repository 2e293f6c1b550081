"""Domain errors.

Every error a user can cause is one of these. Each carries the facts a message needs; the text a Discord
user reads is composed in one place (``sdbot/tree.py``), and ``str(error)`` is a plain one-line message
fit for the command line and the logs.
"""

from __future__ import annotations


class SdbotError(Exception):
    """Base of the errors whose message may be shown to the user who caused them."""


class ConfigError(SdbotError):
    """A setting in the environment or ``.env`` has a value that is not allowed."""


class InvalidSetting(SdbotError):
    """An admin tried to set a server setting to a value that is not allowed."""


class QuotaExceeded(SdbotError):
    """The user has no images left in their rolling 24-hour quota for this request."""

    def __init__(self, *, requested: int, left: int, limit: int, next_free_at: float | None) -> None:
        self.requested = requested
        self.left = left
        self.limit = limit
        self.next_free_at = next_free_at
        super().__init__(
            f"daily quota reached: {left} of {limit} images left today, {requested} requested"
        )


class QueueFull(SdbotError):
    """A queue limit (the user's own, or the global one) is reached."""

    def __init__(self, *, scope: str, limit: int, ahead: int) -> None:
        self.scope = scope  # "user" or "global"
        self.limit = limit
        self.ahead = ahead
        which = "you already have" if scope == "user" else "the queue already holds"
        super().__init__(f"queue full: {which} {ahead} job(s) waiting (limit {limit})")


class InvalidRequest(SdbotError, ValueError):
    """An option of a request is out of range or over this server's limit (steps, size, count, seed, ...).
    A ``ValueError`` too: the engine raises it for parameters it cannot run."""


class PromptRejected(InvalidRequest):
    """The prompt breaks a rule (empty, too long, a banned word)."""


class UploadRejected(InvalidRequest):
    """A member's picture cannot be used: not an image, too large, animated, damaged, too many pixels."""


class NotAllowedHere(SdbotError):
    """The bot may not be used in this channel, or by this user, or this feature is off."""


class ChannelNotAllowed(NotAllowedHere):
    """The server allows the bot only in ``allowed`` channels, and this is not one of them."""

    def __init__(self, allowed: frozenset[int]) -> None:
        self.allowed = allowed
        super().__init__(f"images can't be generated in this channel; allowed: {len(allowed)} channel(s)")


class NotPermitted(SdbotError):
    """The user lacks the permission this action needs (not their job, not an admin)."""


class JobNotFound(SdbotError):
    """A job id (from a button or a command) names no job, or a job the user cannot see."""


class JobsPaused(SdbotError):
    """New jobs are not taken for now: the bot cannot save the ends of jobs (a full disk, a locked
    database). ``str(error)`` says why."""


class ModelLoadFailed(SdbotError):
    """The configured model could not be loaded (missing, unreachable, gated, or not an SD model)."""


class GenerationFailed(SdbotError):
    """The engine could not produce the images (out of memory, a broken model, ...)."""


class GenerationCancelled(SdbotError):
    """A running generation was interrupted on request (cancel, timeout or shutdown)."""


class WorkerLost(SdbotError):
    """The GPU worker running a batch is gone (it died, stalled, shut down, or Redis is unreachable): the
    batch's jobs go back to the front of the queue and run again elsewhere."""


class ModelUnavailable(SdbotError):
    """GPU workers are connected, but none of them offers the model a request needs."""

    def __init__(self, model: str, offered: list[str]) -> None:
        self.model = model
        self.offered = offered
        others = ", ".join(offered) if offered else "none"
        super().__init__(f"no GPU worker offers the model {model} now (offered: {others})")
