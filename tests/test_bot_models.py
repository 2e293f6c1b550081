"""End to end through the loopback Discord with a library of two families (SD 1.x and Flux schnell): the
model option and its autocomplete, a server default chosen by an admin, a family's refusal, batches that never
mix models, and a model switch under a memory budget that holds one model at a time."""

from __future__ import annotations

import asyncio

from sdbot.inference.memory import Residence
from sdbot.inference.pngmeta import read_parameters
from tests.engines import CountingEngine
from tests.test_bot_admin import admin
from tests.test_bot_imagine import ephemeral_answer, result_of

pytest_plugins = ["tests.fakediscord.fixtures"]

SMALL = {"size": "64x64", "steps": 2}


async def test_members_choose_among_families_and_batches_never_mix_models(
    start_sdbot, fake_discord, tiny_family, tmp_path
):
    from sdbot.inference.engine import load_engine
    from tests.conftest import tiny_settings

    models = tmp_path / "models.toml"
    models.write_text(
        f'[models.sd]\nsource = "{tiny_family("sd1")}"\ndescription = "all-round"\n\n'
        f'[models.flux]\nsource = "{tiny_family("flux-schnell")}"\n',
        encoding="utf-8",
    )
    # One model at a time on the device and none parked in CPU memory: each switch loads from disk.
    settings = tiny_settings(tiny_family("sd1"), models_file=models, gpu_memory=1, cpu_memory=1)
    engine = load_engine(settings)
    counting = CountingEngine(engine)
    await start_sdbot(counting, models_file=models)

    offered = await fake_discord.autocomplete("imagine", "model", "")
    assert [c["name"] for c in offered] == ["sd (SD 1.x): all-round", "flux (Flux.1 schnell)"]
    sizes = await fake_discord.autocomplete("imagine", "size", "", model="flux")
    assert sizes[0]["value"] == "1024x1024"
    assert "Default model: **flux**" in await admin(fake_discord, "model default", model="flux")
    refused = await fake_discord.slash("imagine", prompt="a cat", negative="blurry", **SMALL, raw=True)
    assert "flux (Flux.1 schnell) takes no negative prompt" in await ephemeral_answer(fake_discord, refused)

    asked = [
        await fake_discord.slash("imagine", prompt="a fox", **SMALL, raw=True),
        await fake_discord.slash("imagine", prompt="a dog", model="sd", user="bob", **SMALL, raw=True),
        await fake_discord.slash("imagine", prompt="an owl", user="manager", **SMALL, raw=True),
    ]
    results = await asyncio.gather(*(result_of(fake_discord, interaction) for interaction in asked))
    made_by = [read_parameters(result.attachments[0].data).model for result in results]
    assert made_by == ["flux", "sd", "flux"]
    assert all(len(set(call)) == 1 for call in counting.batch_models), counting.batch_models
    assert {engine.residence("sd"), engine.residence("flux")} == {Residence.DEVICE, Residence.DROPPED}
