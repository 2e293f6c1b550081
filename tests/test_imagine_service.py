"""New jobs (``sdbot.services.imagine``) under the server's rules (``sdbot.services.requests``), without
Discord: how a size option is read, each model's defaults and limits, and the sizes of jobs made from a
result's image (on a real database)."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from sdbot.config import Settings
from sdbot.db import JobEnding
from sdbot.errors import InvalidRequest, InvalidSetting
from sdbot.inference import families
from sdbot.inference.families import FamilyProfile
from sdbot.inference.types import ModelInfo
from sdbot.library import ModelEntry, ModelLibrary
from sdbot.params import JobKind, JobParams, JobState, check_params
from sdbot.services.imagine import ImagineService
from sdbot.services.models import ModelCatalog
from sdbot.services.requests import DEFAULT_PIXEL_BUDGET, ImagineOptions, Requester, parse_size
from tests.test_queue import ALICE, BOB, CHANNEL, GUILD, Stack, open_stack


def test_sizes_are_width_by_height():
    assert parse_size("768x512") == (768, 512)
    assert parse_size(" 512 X 768 ") == (512, 768)
    for bad in ("big", "512x", "512*512", "-64x64"):
        with pytest.raises(InvalidRequest, match="WIDTHxHEIGHT"):
            parse_size(bad)


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "red").save(buffer, format="PNG")
    return buffer.getvalue()


async def _done_job(stack: Stack, width: int, height: int) -> int:
    """A finished 1-image job of Alice's whose result buttons are clicked."""
    job = await stack.db.jobs.create(
        guild_id=GUILD,
        channel_id=CHANNEL,
        user_id=ALICE,
        kind=JobKind.TXT2IMG,
        params=JobParams("a red cat", steps=10, width=width, height=height, seed=5),
        image_count=1,
        now=1.0,
    )
    assert await stack.db.end_job(job.id, JobEnding(JobState.DONE, 2.0, [5], [False]))
    return job.id


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[tuple[ImagineService, Stack]]:
    stack = await open_stack(tmp_path / "sdbot.sqlite3", Settings(daily_quota=100))
    yield stack.imagine, stack
    await stack.db.close()


async def test_a_variation_of_an_upscale_is_made_within_the_servers_pixel_budget(service) -> None:
    _, stack = service
    who = Requester(GUILD, CHANNEL, BOB)
    budget = DEFAULT_PIXEL_BUDGET  # 768 x 768, a server's without a limit of its own (SD 1.x)
    parent = await _done_job(stack, 1536, 1024)  # an upscale of a 768x512 image

    async def upscaled() -> bytes:
        return _png(1536, 1024)

    job = await stack.edits.vary(who, parent, 0, upscaled, subtle=False)
    assert (job.params.width, job.params.height) == (936, 624)  # the largest 3:2 size within the budget
    assert job.params.pixels <= budget and job.params.width % 8 == job.params.height % 8 == 0
    with pytest.raises(InvalidRequest, match="too large to upscale on this server"):
        await stack.edits.upscale(who, parent, 0, upscaled, subtle=False)
    assert await stack.reserved_and_used(BOB) == (1, 0)  # the variation's image only


async def test_an_upscale_doubles_a_source_within_the_budget(service) -> None:
    _, stack = service
    parent = await _done_job(stack, 512, 768)

    async def image() -> bytes:
        return _png(512, 768)

    job = await stack.edits.upscale(Requester(GUILD, CHANNEL, BOB), parent, 0, image, subtle=False)
    assert (job.params.width, job.params.height, job.params.seed) == (1024, 1536, 5)


LIBRARY = ModelLibrary(
    (
        ModelEntry("sd15", "org/sd15", description="SD 1.5, all-round"),
        ModelEntry("sdxl", "org/sdxl", description="SDXL base", steps=25, guidance=6.0, size=(768, 768)),
        ModelEntry("anime", "org/anime", description="SD 1.5 anime fine-tune"),
    ),
    default="sd15",
)


@pytest.fixture
async def library_service(tmp_path: Path) -> AsyncIterator[tuple[ImagineService, Stack]]:
    stack = await open_stack(tmp_path / "sdbot.sqlite3", Settings(daily_quota=100), LIBRARY)
    yield stack.imagine, stack
    await stack.db.close()


async def test_a_request_gets_its_model_with_the_models_defaults(library_service) -> None:
    imagine, stack = library_service
    who = Requester(GUILD, CHANNEL, ALICE)
    plain = await imagine.imagine(who, ImagineOptions("a cat"))
    assert (plain.params.model, plain.params.steps, plain.params.guidance) == ("sd15", 30, 7.5)
    xl = await imagine.imagine(who, ImagineOptions("a cat", model="sdxl"))
    assert (xl.params.model, xl.params.steps, xl.params.guidance, xl.params.size) == (
        "sdxl",
        25,
        6.0,
        (768, 768),
    )
    mine = await imagine.imagine(
        who, ImagineOptions("a cat", model="sdxl", steps=9, guidance=2.0, size="512x512")
    )
    assert (mine.params.steps, mine.params.guidance, mine.params.size) == (9, 2.0, (512, 512))
    await stack.settings_service.set(GUILD, "user_queue_limit", 10)
    await stack.settings_service.set(GUILD, "default_steps", 12)  # the server's default wins over the model's
    assert (await imagine.imagine(who, ImagineOptions("a cat", model="sdxl"))).params.steps == 12


async def test_a_server_chooses_its_default_and_allowed_models(library_service) -> None:
    imagine, stack = library_service
    who = Requester(GUILD, CHANNEL, ALICE)
    await stack.settings_service.add(GUILD, "models", "sdxl")
    await stack.settings_service.add(GUILD, "models", "anime")
    await stack.settings_service.set(GUILD, "default_model", "anime")
    assert (await imagine.imagine(who, ImagineOptions("a cat"))).params.model == "anime"
    with pytest.raises(
        InvalidRequest, match=r"sd15 is not allowed on this server\. Models you can use: sdxl, anime"
    ):
        await imagine.imagine(who, ImagineOptions("a cat", model="sd15"))
    with pytest.raises(InvalidRequest, match="There is no model 'flux' here"):
        await imagine.imagine(who, ImagineOptions("a cat", model="flux"))
    assert await stack.reserved_and_used(ALICE) == (1, 0)  # the refusals cost nothing
    with pytest.raises(InvalidSetting, match="default model: choose another default first"):
        await stack.settings_service.remove(GUILD, "models", "anime")
    with pytest.raises(InvalidSetting, match="There is no model 'flux'"):
        await stack.settings_service.add(GUILD, "models", "flux")
    choices = await stack.offers.model_choices(who, "SD")
    assert [(c.name, c.label) for c in choices] == [
        ("sdxl", "sdxl: SDXL base"),
        ("anime", "anime: SD 1.5 anime fine-tune"),
    ]


async def test_a_reroll_keeps_its_model_while_the_server_offers_it(library_service) -> None:
    imagine, stack = library_service
    who = Requester(GUILD, CHANNEL, ALICE)
    job = await imagine.imagine(who, ImagineOptions("a cat", model="anime"))
    await stack.queue.cancel(job.id)
    assert (await imagine.reroll(who, job.id)).params.model == "anime"
    await stack.settings_service.add(GUILD, "models", "sd15")
    with pytest.raises(InvalidRequest, match="anime is not allowed on this server"):
        await imagine.reroll(who, job.id)


def learn(models: ModelCatalog, **profiles: FamilyProfile) -> None:
    """What the engine tells once it has loaded the models: their families."""
    models.learn(ModelInfo(name, profile, True) for name, profile in profiles.items())


async def test_size_choices_are_the_models_within_the_servers_budget(library_service) -> None:
    _, stack = library_service
    who = Requester(GUILD, CHANNEL, ALICE)
    assert await stack.offers.size_choices(who, "sdxl", "") == ["768x768"]  # its family not known yet
    learn(stack.rules.models, sdxl=families.SDXL, sd15=families.SD1)
    sizes = await stack.offers.size_choices(who, "sdxl", "")
    assert sizes == [
        "768x768",
        "1024x1024",
        "1152x896",
        "896x1152",
        "1216x832",
        "832x1216",
        "1344x768",
        "768x1344",
    ]
    assert await stack.offers.size_choices(who, "sdxl", "1152") == ["1152x896", "896x1152"]
    assert "1024x1024" not in await stack.offers.size_choices(who, "sd15", "")  # SD 1.x: within 768x768
    await stack.settings_service.set(GUILD, "max_pixels", 512 * 512)
    assert await stack.offers.size_choices(who, None, "") == ["512x512"]


async def test_a_models_family_gives_its_defaults_and_refuses_what_it_cannot_do(library_service) -> None:
    imagine, stack = library_service
    await stack.settings_service.set(GUILD, "user_queue_limit", 10)
    learn(stack.rules.models, sd15=families.FLUX_SCHNELL, sdxl=families.SDXL)
    who = Requester(GUILD, CHANNEL, ALICE)
    schnell = await imagine.imagine(who, ImagineOptions("a cat"))
    assert (schnell.params.steps, schnell.params.guidance, schnell.params.size) == (4, 0.0, (1024, 1024))
    xl = await imagine.imagine(who, ImagineOptions("a cat", model="sdxl", size=None))
    assert xl.params.size == (768, 768)  # the library's size for it wins over its family's
    with pytest.raises(InvalidRequest, match=r"sd15 \(Flux.1 schnell\) takes no guidance"):
        await imagine.imagine(who, ImagineOptions("a cat", guidance=5.0))
    with pytest.raises(InvalidRequest, match=r"sd15 \(Flux.1 schnell\) takes no negative prompt"):
        await imagine.imagine(who, ImagineOptions("a cat", negative="blurry"))
    with pytest.raises(InvalidRequest, match="multiple of 16"):
        await imagine.imagine(who, ImagineOptions("a cat", size="1000x1000"))
    assert await stack.reserved_and_used(ALICE) == (2, 0)


def _with_bad_crc(png: bytes) -> bytes:
    """``png`` with its image data chunk's checksum broken, as a damaged or hostile file has it."""
    data = png.index(b"IDAT") - 4  # the chunk starts with its length
    crc = data + 8 + int.from_bytes(png[data : data + 4], "big")
    return png[:crc] + bytes(b ^ 0xFF for b in png[crc : crc + 4]) + png[crc + 4 :]


@pytest.mark.parametrize("tool", ["vary", "upscale"])
async def test_a_source_with_a_bad_chunk_checksum_is_refused_clearly(service, tool: str) -> None:
    _, stack = service
    parent = await _done_job(stack, 64, 64)

    async def damaged() -> bytes:
        return _with_bad_crc(_png(64, 64))

    with pytest.raises(InvalidRequest, match="could not be read"):
        await getattr(stack.edits, tool)(Requester(GUILD, CHANNEL, BOB), parent, 0, damaged, subtle=False)
    assert await stack.reserved_and_used(BOB) == (0, 0)


def test_parameters_that_are_not_whole_numbers_are_refused_with_the_value_cut_short() -> None:
    with pytest.raises(InvalidRequest, match=r"Steps must be a whole number from 1 to 150 \(got 10\.5\)"):
        check_params(JobParams("a cat", steps=10.5))  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match="Size 'xxx") as refused:
        parse_size("x" * 3000)
    assert len(str(refused.value)) < 200
