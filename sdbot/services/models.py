"""The model library as members and admins meet it: which model a request gets, and what may be chosen.

A request names a model or leaves it to the server: the server's default if it set one (and the library
still has it), else the library's. A server may limit its members to some models. Autocomplete answers come
from the same rules as the checks, so a member is offered only what will be accepted.

Each model's family profile (sizes, defaults, what it can do) comes from the engine once it has loaded the
model (``learn``); until then the model's profile is unknown, requests are checked by the server's limits
alone, and the engine checks the rest when the job runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sdbot.errors import InvalidRequest
from sdbot.inference.families import FamilyProfile
from sdbot.inference.prompt_limits import PromptWindow
from sdbot.inference.types import ModelInfo
from sdbot.library import ModelEntry, ModelLibrary
from sdbot.services.settings import GuildSettings

MAX_CHOICES = 25  # Discord shows at most 25 autocomplete answers


@dataclass(frozen=True)
class ModelChoice:
    """One autocomplete answer: the value sent back, and what the member reads."""

    name: str
    label: str


class ModelCatalog:
    """Resolves and lists the library's models under a server's rules."""

    def __init__(self, library: ModelLibrary) -> None:
        self.library = library
        self._infos: dict[str, ModelInfo] = {}
        self._windows: dict[str, PromptWindow] = {}

    def learn(self, infos: Iterable[ModelInfo]) -> None:
        """What the engine found when it loaded the models: their profiles, samplers and tokenizers."""
        for info in infos:
            self._infos[info.name] = info
            self._windows[info.name] = PromptWindow(info.profile, info.tokenizer)

    def info(self, name: str) -> ModelInfo | None:
        """What the engine told of the model, once it has loaded it."""
        return self._infos.get(name)

    def profile(self, name: str) -> FamilyProfile | None:
        """The model's family profile, once the engine has loaded it."""
        info = self._infos.get(name)
        return None if info is None else info.profile

    def window(self, name: str) -> PromptWindow | None:
        """How much of a prompt the model reads, counted in its tokens, once the engine has loaded it."""
        return self._windows.get(name)

    def default_for(self, settings: GuildSettings) -> ModelEntry:
        """The model a request of this server gets when it names none."""
        chosen = settings.default_model
        if chosen is not None and self.library.get(chosen) is not None:
            return self.library[chosen]
        allowed = self.allowed(settings)
        default = self.library[self.library.default]
        return default if default in allowed or not allowed else allowed[0]

    def allowed(self, settings: GuildSettings) -> list[ModelEntry]:
        """The library's models this server's members may use, in the library's order."""
        return [model for model in self.library.models if settings.model_allowed(model.name)]

    def resolve(self, name: str | None, settings: GuildSettings) -> ModelEntry:
        """The model for a request: ``name`` if given (it must exist and be allowed here), else the
        server's default."""
        if name is None:
            return self.default_for(settings)
        model = self.library.get(name.strip())
        if model is None:
            raise InvalidRequest(f"There is no model {name!r} here. {self._offer(settings)}")
        if not settings.model_allowed(model.name):
            raise InvalidRequest(f"{model.name} is not allowed on this server. {self._offer(settings)}")
        return model

    def choices(self, typed: str, settings: GuildSettings) -> list[ModelChoice]:
        """Autocomplete: the allowed models whose name or description holds what was typed."""
        needle = typed.strip().lower()
        found = [
            model
            for model in self.allowed(settings)
            if needle in model.name.lower() or needle in model.description.lower()
        ]
        return [ModelChoice(model.name, self._label(model)) for model in found[:MAX_CHOICES]]

    def _label(self, model: ModelEntry) -> str:
        """Name, family and description, within Discord's 100 characters for a choice."""
        profile = self.profile(model.name)
        label = model.name if profile is None else f"{model.name} ({profile.label})"
        if model.description:
            label += f": {model.description}"
        return label if len(label) <= 100 else label[:99] + "…"

    def _offer(self, settings: GuildSettings) -> str:
        names = [model.name for model in self.allowed(settings)]
        shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        return f"Models you can use: {shown}."
