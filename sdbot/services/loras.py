"""LoRAs and embeddings as members and admins meet them: which LoRAs a request gets, and what may be chosen.

A member asks for LoRAs in the prompt (``<lora:NAME:WEIGHT>``, as in AUTOMATIC1111's web UI) or with
``/imagine``'s ``lora`` and ``lora_weight`` options; both end up in the job's ``loras``, and the prompt keeps
no tags. A LoRA must be in the LoRA folder, made for the family of the request's model, and allowed on the
server; otherwise the request is refused with a message that says which and why, before anything is
queued or charged. Autocomplete answers come from the same rules, so a member is offered only what will be
accepted, with each LoRA's trigger words.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sdbot.errors import InvalidRequest, NotAllowedHere
from sdbot.inference.addon_families import FAMILY_LABELS
from sdbot.inference.addons import Addon, AddonLibrary
from sdbot.inference.prompt_syntax import LoraRequest, split_loras
from sdbot.services.settings import GuildSettings

MAX_CHOICES = 25  # Discord shows at most 25 autocomplete answers
MAX_LABEL = 100  # characters of an autocomplete answer


@dataclass(frozen=True)
class FamilyAddons:
    """What ``/loras`` lists for one family: its LoRAs that the server allows, and its embeddings."""

    label: str
    loras: list[Addon]
    embeddings: list[Addon]


@dataclass(frozen=True)
class LoraChoice:
    """One autocomplete answer: the LoRA's name, and what the member reads (name and trigger words)."""

    name: str
    label: str


class LoraCatalog:
    """The LoRA and embedding folders under a server's rules."""

    def __init__(self, loras: AddonLibrary, embeddings: AddonLibrary, max_loras: int) -> None:
        self.loras = loras
        self.embeddings = embeddings
        self.max_loras = max_loras  # per request (SDBOT_MAX_LORAS); check_params enforces it

    def from_request(
        self,
        prompt: str,
        option: str | None,
        weight: float | None,
        family: str | None,
        settings: GuildSettings,
    ) -> tuple[str, tuple[LoraRequest, ...]]:
        """The prompt without its LoRA tags, and the LoRAs the tags and the options ask for (the tags' first),
        each checked (``check``)."""
        text, tagged = split_loras(prompt)
        requested = list(tagged)
        if option is not None and option.strip():
            requested.append((option.strip(), 1.0 if weight is None else weight))
        elif weight is not None:
            raise InvalidRequest("`lora_weight` needs a `lora` to weigh: choose one in the `lora` option.")
        return text, self.check(requested, family, settings)

    def check(
        self, requested: Sequence[LoraRequest], family: str | None, settings: GuildSettings
    ) -> tuple[LoraRequest, ...]:
        """``requested`` by their names in the folder. Raises ``InvalidRequest`` for a LoRA that is not in
        the folder or not for ``family`` (None: not known yet, the engine checks it), ``NotAllowedHere``
        for one the server does not allow."""
        if requested and not settings.loras_enabled:
            raise NotAllowedHere("LoRAs are switched off on this server.")
        checked = []
        for name, weight in requested:
            lora = self.loras.find(name)
            if lora is None:
                raise InvalidRequest(f"There is no LoRA {name!r} here: `/loras` lists them.")
            if family is not None and lora.family != family:
                raise InvalidRequest(
                    f"The LoRA {lora.name} is for {_label(lora.family)} models, and this model is "
                    f"{_label(family)}: `/loras` lists the LoRAs of each family."
                )
            if not settings.lora_allowed(lora.name):
                raise NotAllowedHere(f"The LoRA {lora.name} is not allowed on this server.")
            checked.append((lora.name, weight))
        return tuple(checked)

    def choices(self, typed: str, family: str, settings: GuildSettings) -> list[LoraChoice]:
        """Autocomplete: the family's LoRAs allowed here whose name or trigger words hold what was typed."""
        if not settings.loras_enabled:
            return []
        needle = typed.strip().casefold()
        found = [
            lora
            for lora in self.usable(family, settings)
            if needle in lora.name.casefold() or any(needle in word.casefold() for word in lora.triggers)
        ]
        return [LoraChoice(lora.name, describe(lora)) for lora in found[:MAX_CHOICES]]

    def family_addons(self, family: str, settings: GuildSettings) -> FamilyAddons:
        loras = self.usable(family, settings) if settings.loras_enabled else []
        return FamilyAddons(_label(family), loras, self.embeddings.for_family(family))

    def usable(self, family: str, settings: GuildSettings) -> list[Addon]:
        """The family's LoRAs that members of this server may use, in name order."""
        return [lora for lora in self.loras.for_family(family) if settings.lora_allowed(lora.name)]


def describe(lora: Addon) -> str:
    """The name, then the trigger words, within Discord's 100 characters for a choice."""
    label = lora.name if not lora.triggers else f"{lora.name} (triggers: {', '.join(lora.triggers)})"
    return label if len(label) <= MAX_LABEL else label[: MAX_LABEL - 1] + "…"


def _label(family: str) -> str:
    return FAMILY_LABELS.get(family, family)
