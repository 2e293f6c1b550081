"""The single-image tools and members' pictures as services, on a real database: each job's kind, size,
strength and seed, the refusals that read and charge nothing, and one image charged per job."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from sdbot.config import Settings
from sdbot.db import JobEnding
from sdbot.errors import InvalidRequest, NotAllowedHere, UploadRejected
from sdbot.inference.families import SD1
from sdbot.inference.types import ModelInfo
from sdbot.params import JobKind, JobParams, JobState, PanDirection
from sdbot.services.edits import SourceReader
from sdbot.services.requests import ImagineOptions, Requester, Upload
from tests.test_queue import ALICE, BOB, CHANNEL, GUILD, Stack, open_stack

BOB_HERE = Requester(GUILD, CHANNEL, BOB)


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "teal").save(buffer, format="PNG")
    return buffer.getvalue()


def source(width: int, height: int) -> SourceReader:
    async def read() -> bytes:
        return png(width, height)

    return read


async def never() -> bytes:
    raise AssertionError("a refused request read the image")


async def done_job(stack: Stack, width: int = 512, height: int = 512, kind: JobKind = JobKind.TXT2IMG) -> int:
    """A finished job of Alice's whose first image is clicked."""
    params = JobParams("a red cat", negative_prompt="blurry", steps=10, width=width, height=height, seed=5)
    job = await stack.db.jobs.create(
        guild_id=GUILD,
        channel_id=CHANNEL,
        user_id=ALICE,
        kind=kind,
        params=params,
        image_count=1,
        source_png=png(8, 8) if kind.from_image else None,
        now=1.0,
    )
    assert await stack.db.end_job(job.id, JobEnding(JobState.DONE, 2.0, [5], [False]))
    return job.id


async def charged(stack: Stack, user: int = BOB) -> int:
    reserved, used = await stack.reserved_and_used(user)
    return reserved + used


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    built = await open_stack(tmp_path / "sdbot.sqlite3", Settings(daily_quota=100))
    yield built
    await built.db.close()


async def test_vary_subtle_and_strong_draw_new_seeds_at_their_strengths(stack: Stack) -> None:
    parent = await done_job(stack)
    subtle = await stack.edits.vary(BOB_HERE, parent, 0, source(512, 512), subtle=True)
    strong = await stack.edits.vary(BOB_HERE, parent, 0, source(512, 512), subtle=False)
    assert (subtle.kind, subtle.params.strength) == (JobKind.VARY_SUBTLE, 0.35)
    assert (strong.kind, strong.params.strength) == (JobKind.VARIATION, 0.7)
    assert subtle.params.seed != 5 and subtle.params.prompt == "a red cat" and subtle.parent_id == parent
    assert subtle.user_id == BOB and await charged(stack) == 2  # one image each, the clicker's


async def test_both_upscales_double_the_image_and_keep_its_seed(stack: Stack) -> None:
    parent = await done_job(stack, 512, 768)
    subtle = await stack.edits.upscale(BOB_HERE, parent, 0, source(512, 768), subtle=True)
    creative = await stack.edits.upscale(BOB_HERE, parent, 0, source(512, 768), subtle=False)
    assert (subtle.kind, subtle.params.size, subtle.params.seed) == (JobKind.UPSCALE_SUBTLE, (1024, 1536), 5)
    assert subtle.params.strength is None  # no diffusion: the picture is not changed
    assert (creative.kind, creative.params.strength) == (JobKind.UPSCALE, 0.3)
    assert creative.params.size == (1024, 1536)


async def test_zoom_out_makes_the_native_pixel_count_and_pan_grows_by_half(stack: Stack) -> None:
    parent = await done_job(stack, 512, 768)
    zoom = await stack.edits.zoom_out(BOB_HERE, parent, 0, source(512, 768), 1.5)
    assert (zoom.kind, zoom.params.size, zoom.params.zoom) == (JobKind.ZOOM_OUT, (416, 624), 1.5)
    assert zoom.params.strength == 1.0 and zoom.params.outpaint == "zoom 1.5x"
    panned = await stack.edits.pan(BOB_HERE, parent, 0, source(512, 768), PanDirection.UP)
    assert (panned.kind, panned.params.size, panned.params.pan) == (JobKind.PAN, (512, 1152), PanDirection.UP)
    assert await charged(stack) == 2


async def test_results_past_the_servers_budget_are_refused_and_charge_nothing(stack: Stack) -> None:
    parent = await done_job(stack, 768, 768)
    with pytest.raises(InvalidRequest, match="makes it 1152x768, more than this server allows"):
        await stack.edits.pan(BOB_HERE, parent, 0, source(768, 768), PanDirection.RIGHT)
    await stack.settings_service.set(GUILD, "max_pixels", 256 * 256)
    with pytest.raises(InvalidRequest, match="Zooming out makes a 512x512 image with this model"):
        await stack.edits.zoom_out(BOB_HERE, parent, 0, source(256, 256), 2.0)
    with pytest.raises(InvalidRequest, match="too large to upscale"):
        await stack.edits.upscale(BOB_HERE, parent, 0, source(768, 768), subtle=True)
    assert await charged(stack) == 0


async def test_a_model_without_the_pipeline_a_tool_needs_is_refused_before_reading(stack: Stack) -> None:
    parent = await done_job(stack)
    model = stack.rules.models.library.default
    stack.rules.models.learn([ModelInfo(model, replace(SD1, image_to_image=False, inpaint=False), True)])
    with pytest.raises(NotAllowedHere, match="no inpainting pipeline: it can't zoom out or pan"):
        await stack.edits.pan(BOB_HERE, parent, 0, never, PanDirection.LEFT)
    with pytest.raises(NotAllowedHere, match="no inpainting pipeline"):
        await stack.edits.zoom_out(BOB_HERE, parent, 0, never, 2.0)
    with pytest.raises(NotAllowedHere, match="no image-to-image pipeline"):
        await stack.edits.vary(BOB_HERE, parent, 0, never, subtle=True)
    # Super-resolution needs no pipeline of the model.
    subtle = await stack.edits.upscale(BOB_HERE, parent, 0, source(512, 512), subtle=True)
    assert subtle.kind is JobKind.UPSCALE_SUBTLE and await charged(stack) == 1


async def test_remix_keeps_the_seed_and_settings_with_the_edited_prompt(stack: Stack) -> None:
    parent = await done_job(stack)
    assert await stack.edits.remix_prompts(BOB_HERE, parent, 0) == ("a red cat", "blurry")
    remix = await stack.edits.remix(BOB_HERE, parent, 0, " a blue cat ", "")
    assert (remix.kind, remix.params.prompt) == (JobKind.REMIX, "a blue cat")
    assert remix.params.negative_prompt == ""
    assert (remix.params.seed, remix.params.steps, remix.params.size) == (5, 10, (512, 512))
    model = stack.rules.models.library.default
    stack.rules.models.learn([ModelInfo(model, replace(SD1, negative_prompt=False), True)])
    assert await stack.edits.remix_prompts(BOB_HERE, parent, 0) == ("a red cat", None)
    from_picture = await done_job(stack, kind=JobKind.VARIATION)
    with pytest.raises(NotAllowedHere, match="made from a picture"):
        await stack.edits.remix_prompts(BOB_HERE, from_picture, 0)


async def test_an_upload_becomes_an_image_to_image_job_at_its_fitted_size(stack: Stack) -> None:
    upload = Upload(10_000, source(1024, 768))
    job = await stack.imagine.imagine(BOB_HERE, ImagineOptions("a lake", steps=10), upload=upload)
    assert (job.kind, job.params.size, job.params.strength) == (JobKind.IMG2IMG, (880, 664), 0.6)
    assert Image.open(io.BytesIO(await stack.db.jobs.source_png(job.id) or b"")).size == (880, 664)
    assert await charged(stack) == 1
    assert await stack.db.end_job(job.id, JobEnding(JobState.DONE, 3.0, [1], [False]))
    with pytest.raises(NotAllowedHere, match="not kept"):
        await stack.imagine.reroll(BOB_HERE, job.id)


async def test_an_upload_is_fitted_in_the_models_size_multiple(stack: Stack) -> None:
    model = stack.rules.models.library.default
    stack.rules.models.learn([ModelInfo(model, replace(SD1, size_multiple=64), True)])
    upload = Upload(10_000, source(1000, 700))
    job = await stack.imagine.imagine(BOB_HERE, ImagineOptions("a lake", steps=10), upload=upload)
    assert job.params.size == (896, 640)


async def test_bad_upload_requests_are_refused_before_downloading(stack: Stack) -> None:
    options = ImagineOptions("a lake", steps=10)
    with pytest.raises(UploadRejected, match=r"11\.0 MB"):
        await stack.imagine.imagine(BOB_HERE, options, upload=Upload(11 * 1024 * 1024, never))
    with pytest.raises(InvalidRequest, match="leave `size` out"):
        await stack.imagine.imagine(BOB_HERE, ImagineOptions("a lake", size="64x64"), upload=Upload(9, never))
    with pytest.raises(InvalidRequest, match="`strength` goes with an `image`"):
        await stack.imagine.imagine(BOB_HERE, ImagineOptions("a lake", strength=0.4))
    await stack.settings_service.set(GUILD, "uploads_allowed", False)
    with pytest.raises(NotAllowedHere, match="switched off on this server"):
        await stack.imagine.imagine(BOB_HERE, options, upload=Upload(100, never))
    assert await charged(stack) == 0
