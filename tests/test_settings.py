"""Server settings on a real SQLite file: defaults, validation, the cache, banned words, member overrides."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from sdbot.config import Settings
from sdbot.db import Database
from sdbot.db.guilds import LIST_SETTINGS, SCALAR_SETTINGS
from sdbot.errors import InvalidSetting
from sdbot.inference.addons import AddonKind, AddonLibrary
from sdbot.services.settings import GuildSettings, SettingsService, banned_word_in, defaults_from
from sdbot.services.settings_schema import LISTS, SCALARS

GUILD = 100


@pytest.fixture
def service(db: Database) -> SettingsService:
    return SettingsService(db, defaults_from(Settings(daily_quota=25, max_batch=2)))


def test_every_setting_has_one_declaration_of_its_stored_type() -> None:
    assert SCALARS.keys() | LISTS.keys() == {setting.name for setting in fields(GuildSettings)}
    assert SCALARS.keys() == SCALAR_SETTINGS.keys() and LISTS.keys() == LIST_SETTINGS.keys()
    for name, declared in SCALARS.items():
        declared_type = int if declared.bounds else str if declared.vocabulary else bool
        assert SCALAR_SETTINGS[name] is declared_type, name


async def test_a_server_that_changed_nothing_gets_the_configured_defaults(service: SettingsService) -> None:
    settings = await service.get(GUILD)
    assert settings == GuildSettings(daily_quota=25, max_count=2)
    assert settings.max_pixels is None  # each model's sizes decide
    assert settings.channel_allowed(12345)


async def test_changes_persist_and_other_servers_keep_defaults(
    db: Database, service: SettingsService
) -> None:
    await service.set(GUILD, "nsfw_policy", "Spoiler")
    await service.set(GUILD, "daily_quota", 5)
    await service.set(GUILD, "managers_exempt", False)
    await service.set(GUILD, "upscale_allowed", False)
    await service.set(GUILD, "uploads_allowed", False)
    await service.set(GUILD, "max_pixels", 512 * 512)
    await service.set(GUILD, "user_queue_limit", 7)
    await service.set(GUILD, "max_count", 1)
    fresh = await SettingsService(db, service.defaults).get(GUILD)
    assert (fresh.nsfw_policy, fresh.daily_quota, fresh.managers_exempt, fresh.upscale_allowed) == (
        "spoiler",
        5,
        False,
        False,
    )
    assert (fresh.max_pixels, fresh.user_queue_limit, fresh.max_count) == (512 * 512, 7, 1)
    assert not fresh.uploads_allowed
    assert await service.get(GUILD + 1) == service.defaults


async def test_reads_come_from_the_cache_and_every_write_invalidates_it(
    db: Database, service: SettingsService
) -> None:
    assert (await service.get(GUILD)).daily_quota == 25
    await db.guilds.set_value(GUILD, "daily_quota", 99)  # behind the service's back
    assert (await service.get(GUILD)).daily_quota == 25, "served from the cache"
    await service.set(GUILD, "max_count", 1)
    assert (await service.get(GUILD)).daily_quota == 99, "the write dropped the cached copy"
    await service.add(GUILD, "banned_words", "dragon")
    assert "dragon" in (await service.get(GUILD)).banned_words


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("nsfw_policy", "maybe", "block, spoiler, allow"),
        ("daily_quota", -1, "from 0 to 10,000"),
        ("daily_quota", 10_001, "from 0 to 10,000"),
        ("max_steps", 151, "from 1 to 150"),
        ("default_steps", 0, "from 1 to 150"),
        ("max_count", 5, "from 1 to 4"),
        ("max_pixels", 32 * 32, "from 4,096 to 4,194,304"),
        ("user_queue_limit", 51, "from 1 to 50"),
        ("daily_quota", True, "whole number"),
        ("daily_quota", None, "whole number"),  # only a setting whose default is None goes back to it
    ],
)
async def test_settings_refuse_values_out_of_range_and_say_what_is_allowed(
    service: SettingsService, name: str, value: object, message: str
) -> None:
    with pytest.raises(InvalidSetting, match=message):
        await service.set(GUILD, name, value)
    assert await service.get(GUILD) == service.defaults


async def test_default_steps_never_exceed_max_steps(service: SettingsService) -> None:
    await service.set(GUILD, "max_steps", 40)
    with pytest.raises(InvalidSetting, match="raise max steps first"):
        await service.set(GUILD, "default_steps", 45)
    await service.set(GUILD, "default_steps", 40)
    with pytest.raises(InvalidSetting, match="lower default steps first"):
        await service.set(GUILD, "max_steps", 39)
    settings = await service.get(GUILD)
    assert (settings.default_steps, settings.max_steps) == (40, 40)


async def test_reset_returns_settings_to_defaults_but_keeps_lists(service: SettingsService) -> None:
    await service.set(GUILD, "daily_quota", 3)
    await service.add(GUILD, "channels", 555)
    settings = await service.reset(GUILD)
    assert settings.daily_quota == 25
    assert settings.channels == {555}


async def test_channel_list_limits_where_the_bot_works(service: SettingsService) -> None:
    settings = await service.add(GUILD, "channels", 555)
    assert settings.channel_allowed(555) and not settings.channel_allowed(556)
    await service.add(GUILD, "channels", 555)
    settings = await service.remove(GUILD, "channels", 555)
    assert settings.channels == frozenset() and settings.channel_allowed(556)
    with pytest.raises(InvalidSetting, match="not in this server's channel list"):
        await service.remove(GUILD, "channels", 555)


async def test_banned_words_match_whole_words_case_insensitively(service: SettingsService) -> None:
    await service.add(GUILD, "banned_words", "  Cat ")
    await service.add(GUILD, "banned_words", "red   PANDA")
    await service.add(GUILD, "banned_words", "c++")
    settings = await service.get(GUILD)
    assert settings.banned_words == {"cat", "red panda", "c++"}
    assert banned_word_in("a CAT on a mat", settings) == "cat"
    assert banned_word_in("cat!", settings) == "cat"
    assert banned_word_in("a category of concatenation", settings) is None
    assert banned_word_in("the Red\tpanda sleeps", settings) == "red panda"
    assert banned_word_in("a red pandas den", settings) is None
    assert banned_word_in("code in c++ today", settings) == "c++"
    assert banned_word_in("code in c++x", settings) is None
    assert banned_word_in("anything", await service.get(GUILD + 1)) is None


async def test_banned_words_are_validated_and_removed(service: SettingsService) -> None:
    for bad in ("", "   ", "!!!"):
        with pytest.raises(InvalidSetting, match="letter or digit"):
            await service.add(GUILD, "banned_words", bad)
    with pytest.raises(InvalidSetting, match="at most 100 characters"):
        await service.add(GUILD, "banned_words", "x" * 101)
    await service.add(GUILD, "banned_words", "Dragon")
    settings = await service.remove(GUILD, "banned_words", "DRAGON")
    assert banned_word_in("a dragon", settings) is None
    with pytest.raises(InvalidSetting, match="'dragon' is not a banned word"):
        await service.remove(GUILD, "banned_words", "dragon")


async def test_a_model_or_lora_the_library_no_longer_has_can_still_be_disallowed(db: Database) -> None:
    await db.guilds.add_to_list(GUILD, "models", "retired")  # allowed before the library dropped it
    await db.guilds.add_to_list(GUILD, "loras", "old/style")
    service = SettingsService(db, model_names=("sd15",))
    assert (await service.remove(GUILD, "models", "retired")).models == frozenset()
    assert (await service.remove(GUILD, "loras", "old/style")).loras == frozenset()


async def test_member_overrides_set_and_clear(service: SettingsService) -> None:
    override = await service.member(GUILD, 7)
    assert (override.quota, override.blocked) == (None, False)
    override = await service.set_member_quota(GUILD, 7, 3)
    assert (override.quota, override.blocked) == (3, False)
    override = await service.set_blocked(GUILD, 7, True)
    assert (override.quota, override.blocked) == (3, True)
    await service.set_member_quota(GUILD, 7, None)
    override = await service.set_blocked(GUILD, 7, False)
    assert (override.quota, override.blocked) == (None, False)
    with pytest.raises(InvalidSetting, match="from 0 to 10,000"):
        await service.set_member_quota(GUILD, 7, -5)


async def test_loras_can_be_switched_off_or_limited_and_a_default_sampler_chosen(
    db: Database, tmp_path: Path
) -> None:
    key = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight"
    (tmp_path / "styles").mkdir()
    save_file({key: np.ones((1, 8), np.float16)}, str(tmp_path / "styles" / "ink.safetensors"))
    service = SettingsService(db, loras=AddonLibrary(tmp_path, AddonKind.LORA))
    assert (await service.get(GUILD)).lora_allowed("styles/ink")
    settings = await service.add(GUILD, "loras", "ink")  # found by its file name, stored by its full name
    assert settings.loras == {"styles/ink"}
    assert settings.lora_allowed("styles/ink") and not settings.lora_allowed("other")
    with pytest.raises(InvalidSetting, match="no LoRA 'missing' in the LoRA folder"):
        await service.add(GUILD, "loras", "missing")
    assert not (await service.set(GUILD, "loras_enabled", False)).lora_allowed("styles/ink")
    assert (await service.remove(GUILD, "loras", "styles/ink")).loras == frozenset()
    sampler = await service.set(GUILD, "default_sampler", "dpm++ 2m karras")
    assert sampler.default_sampler == "DPM++ 2M Karras"
    with pytest.raises(InvalidSetting, match="no sampler 'PLMS'; the samplers are Euler, Euler a"):
        await service.set(GUILD, "default_sampler", "PLMS")
    reset = await service.reset(GUILD)
    assert (reset.loras_enabled, reset.default_sampler) == (True, None)
