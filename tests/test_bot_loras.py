"""End to end through the loopback Discord: LoRAs asked for in the prompt and with the option, their
autocomplete and the sampler's, /loras, an admin limiting LoRAs, reroll keeping them, and the refusals that
queue and charge nothing."""

from __future__ import annotations

import asyncio

import pytest

from sdbot.inference.pngmeta import read_parameters
from tests.test_bot_admin import admin
from tests.test_bot_imagine import ephemeral_answer, result_of
from tests.tiny_loras import save_diffusers_lora, save_embedding, save_kohya_lora

pytest_plugins = ["tests.fakediscord.fixtures"]

SMALL = {"size": "64x64", "steps": 2}


@pytest.fixture
async def bot_with_loras(start_sdbot, tiny_model_dir, tiny_pipeline, tmp_path):
    """The bot on an engine whose LoRA folder holds styles/ink (kohya, trigger word "inky") and grain
    (diffusers), and whose embeddings folder holds badhands; at most one LoRA a request."""
    from sdbot.inference.engine import load_engine
    from tests.conftest import tiny_settings

    loras, embeddings = tmp_path / "loras", tmp_path / "embeddings"
    save_kohya_lora(
        tiny_pipeline,
        loras / "styles" / "ink.safetensors",
        seed=1,
        metadata={"modelspec.trigger_phrase": "inky"},
    )
    save_diffusers_lora(tiny_pipeline, loras / "grain.safetensors", seed=2)
    save_embedding(embeddings / "badhands.safetensors", 32, 2, seed=3)
    folders = {"lora_dir": loras, "embeddings_dir": embeddings, "max_loras": 1}
    engine = load_engine(tiny_settings(tiny_model_dir, **folders))
    return await start_sdbot(engine, **folders)


async def test_loras_from_the_prompt_and_the_option_reach_the_images_and_their_pngs(
    bot_with_loras, fake_discord
) -> None:
    offered = await fake_discord.autocomplete("imagine", "lora", "ink")
    assert [(c["name"], c["value"]) for c in offered] == [("styles/ink (triggers: inky)", "styles/ink")]
    assert [c["value"] for c in await fake_discord.autocomplete("imagine", "lora", "")] == [
        "grain",
        "styles/ink",
    ]
    karras = await fake_discord.autocomplete("imagine", "sampler", "karras")
    assert [c["value"] for c in karras] == ["DPM++ 2M Karras", "DPM++ 2M SDE Karras", "DPM++ SDE Karras"]

    tagged = await fake_discord.slash(
        "imagine", prompt="a cat <lora:ink:0.7>", sampler="DPM++ 2M Karras", negative="badhands", **SMALL
    )
    optioned = await fake_discord.slash("imagine", prompt="a cat", lora="grain", lora_weight=-0.5, **SMALL)
    first, second = await asyncio.gather(result_of(fake_discord, tagged), result_of(fake_discord, optioned))
    written = read_parameters(first.attachments[0].data)
    assert written.prompt == "a cat"
    assert [(lora.name, lora.weight) for lora in written.loras] == [("styles/ink", 0.7)]
    assert (written.sampler, written.schedule_type) == ("DPM++ 2M", "Karras")
    assert written.embeddings.keys() == {"badhands"}
    assert "LoRAs: styles/ink 0.7" in first.content and "DPM++ 2M Karras" in first.content
    assert [(lora.name, lora.weight) for lora in read_parameters(second.attachments[0].data).loras] == [
        ("grain", -0.5)
    ]

    await fake_discord.click(first, "Reroll")
    reroll = await fake_discord.wait_for_message(
        lambda m: m is not first and not m.ephemeral and bool(m.attachments) and "Reroll" in m.content
    )
    again = read_parameters(reroll.attachments[0].data)
    assert (again.loras, again.sampler) == (written.loras, written.sampler)

    listed = await ephemeral_answer(fake_discord, await fake_discord.slash("loras"))
    assert "**SD 1.x**" in listed and "styles/ink (triggers: inky)" in listed and "badhands" in listed


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"prompt": "a cat <lora:nope>"}, "There is no LoRA 'nope' here"),
        (
            {"prompt": "a cat", "lora": "grain", "lora_weight": 3.0},
            "The weight of LoRA grain must be from -2 to 2",
        ),
        ({"prompt": "<lora:ink> a cat", "lora": "styles/ink"}, "Each LoRA may be named once"),
        ({"prompt": "<lora:ink> <lora:grain> a cat"}, "2 LoRAs asked; at most 1 per request on this server"),
        ({"prompt": "a cat <lora:ink:0.5:1>"}, "one weight for the whole LoRA"),
        ({"prompt": "a cat", "sampler": "Heun"}, "cannot use 'Heun'; its samplers: Euler, Euler a"),
        ({"prompt": "zq " * 300}, "the prompt has 600 tokens; SD 1.x models read at most 450"),
    ],
)
async def test_a_request_a_lora_or_sampler_cannot_serve_is_refused_and_charges_nothing(
    bot_with_loras, fake_discord, options, says
) -> None:
    refused = await fake_discord.slash("imagine", raw=True, options={**options, **SMALL})
    assert says in await ephemeral_answer(fake_discord, refused)
    status = await bot_with_loras.client.quotas.status(
        fake_discord.guild_id, fake_discord.members["alice"].id, is_manager=False
    )
    assert status.used == status.reserved == 0


async def test_admins_switch_loras_off_or_limit_them(bot_with_loras, fake_discord) -> None:
    assert "limited to: grain" in await admin(fake_discord, "lora allow", lora="grain")
    refused = await fake_discord.slash("imagine", prompt="a cat <lora:ink>", **SMALL)
    assert "The LoRA styles/ink is not allowed on this server" in await ephemeral_answer(
        fake_discord, refused
    )
    assert [c["value"] for c in await fake_discord.autocomplete("imagine", "lora", "")] == ["grain"]
    assert "LoRAs are **off**" in await admin(fake_discord, "lora enabled", enabled=False)
    refused = await fake_discord.slash("imagine", prompt="a cat", lora="grain", **SMALL)
    assert "LoRAs are switched off on this server" in await ephemeral_answer(fake_discord, refused)
    assert "**DPM++ 2M**" in await admin(fake_discord, "sampler default", sampler="dpm++ 2m")
    offered = await fake_discord.autocomplete("imagine", "sampler", "")
    assert offered[0]["value"] == "DPM++ 2M"  # the server's default is offered first
