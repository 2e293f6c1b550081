"""What a member may choose, for ``/imagine``'s autocomplete and ``/loras``: the models, sizes, LoRAs and
samplers this server offers, answered from the same rules as the checks (``sdbot.services.requests``), so
what is offered is what a request may use.

Nothing here knows about Discord: the cogs pass plain ids and the text typed so far.
"""

from __future__ import annotations

from sdbot.services.loras import FamilyAddons, LoraChoice
from sdbot.services.models import MAX_CHOICES, ModelChoice
from sdbot.services.requests import Requester, RequestRules, pixel_budget
from sdbot.services.settings import SettingsService


class ChoiceOffers:
    """The choices a member is offered while typing a request, and the add-ons ``/loras`` lists."""

    def __init__(self, settings: SettingsService, rules: RequestRules) -> None:
        self._settings = settings
        self._rules = rules

    async def model_choices(self, who: Requester, typed: str) -> list[ModelChoice]:
        return self._rules.models.choices(typed, await self._settings.get(who.guild_id))

    async def size_choices(self, who: Requester, model: str | None, typed: str) -> list[str]:
        """The model's sizes (its library default, then its family's) within the server's pixel budget."""
        settings = await self._settings.get(who.guild_id)
        entry = self._rules.chosen_model(model, settings)
        profile = self._rules.models.profile(entry.name)
        sizes = [entry.defaults(profile).size]
        sizes += [(size.width, size.height) for size in profile.size_presets] if profile else []
        budget = pixel_budget(settings, profile)
        shown = dict.fromkeys(f"{w}x{h}" for w, h in sizes if w * h <= budget)
        return [size for size in shown if typed.strip().lower() in size][:MAX_CHOICES]

    async def lora_choices(self, who: Requester, model: str | None, typed: str) -> list[LoraChoice]:
        """The LoRAs of the chosen model's family this server allows, by name or trigger word."""
        settings = await self._settings.get(who.guild_id)
        profile = self._rules.models.profile(self._rules.chosen_model(model, settings).name)
        return [] if profile is None else self._rules.loras.choices(typed, profile.family.value, settings)

    async def sampler_choices(self, who: Requester, model: str | None, typed: str) -> list[str]:
        """The samplers the chosen model can use, the one it gets by default first."""
        settings = await self._settings.get(who.guild_id)
        entry = self._rules.chosen_model(model, settings)
        info = self._rules.models.info(entry.name)
        offered = [] if info is None else list(info.samplers)
        default = self._rules.default_sampler(entry, settings)
        if default is not None:
            offered.insert(0, offered.pop(offered.index(default)))
        return [name for name in offered if typed.strip().casefold() in name.casefold()][:MAX_CHOICES]

    async def addons(self, who: Requester) -> list[FamilyAddons]:
        """For ``/loras``: the LoRAs (allowed here) and embeddings of each family of this server's models."""
        settings = await self._settings.get(who.guild_id)
        families = dict.fromkeys(
            profile.family
            for entry in self._rules.models.allowed(settings)
            if (profile := self._rules.models.profile(entry.name))
        )
        return [self._rules.loras.family_addons(family.value, settings) for family in families]
