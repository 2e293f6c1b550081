"""Zoom Out and Pan canvases: sizes, masks, and the picture's own pixels kept exactly where they belong."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sdbot.inference.canvas import Box, native_canvas, pan, pan_canvas, zoom_out
from sdbot.params import PanDirection


def noise(size: tuple[int, int], seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def region(image: Image.Image, box: Box) -> np.ndarray:
    return np.asarray(image)[box.top : box.bottom, box.left : box.right]


def inset(box: Box, band: int, sides: frozenset[str]) -> Box:
    left = box.left + band * ("left" in sides)
    top = box.top + band * ("top" in sides)
    right = box.right - band * ("right" in sides)
    bottom = box.bottom - band * ("bottom" in sides)
    return Box(left, top, right - left, bottom - top)


def test_zoom_out_2x_centres_the_picture_at_half_size_on_a_native_canvas() -> None:
    canvas = native_canvas((1024, 1024), 512 * 512, 8)  # an upscale comes back at the native size
    plan = zoom_out(canvas, 2)
    assert plan.canvas == (512, 512)
    assert plan.placed == Box(128, 128, 256, 256)
    assert plan.label == "zoom 2x"


def test_zoom_out_1_5x_keeps_the_aspect_at_the_native_pixel_count() -> None:
    plan = zoom_out(native_canvas((512, 768), 512 * 512, 8), 1.5)
    assert plan.canvas == (416, 624)
    assert plan.placed.size == (277, 416)
    assert plan.placed.left == (416 - 277) // 2 and plan.placed.top == (624 - 416) // 2
    assert plan.label == "zoom 1.5x"


@pytest.mark.parametrize(
    ("direction", "canvas", "placed"),
    [
        (PanDirection.LEFT, (768, 512), Box(256, 0, 512, 512)),
        (PanDirection.RIGHT, (768, 512), Box(0, 0, 512, 512)),
        (PanDirection.UP, (512, 768), Box(0, 256, 512, 512)),
        (PanDirection.DOWN, (512, 768), Box(0, 0, 512, 512)),
    ],
)
def test_pan_grows_the_canvas_by_half_on_one_side(
    direction: PanDirection, canvas: tuple[int, int], placed: Box
) -> None:
    assert pan_canvas((512, 512), direction, multiple=8) == canvas
    plan = pan(canvas, (512, 512), direction)
    assert (plan.canvas, plan.placed, plan.label) == (canvas, placed, f"pan {direction}")


def test_pan_extension_is_a_whole_multiple() -> None:
    assert pan_canvas((200, 64), PanDirection.RIGHT, multiple=16) == (296, 64)  # 100 -> 96
    with pytest.raises(ValueError, match="does not extend"):
        pan((64, 64), (64, 64), PanDirection.LEFT)


def test_mask_paints_the_new_area_and_a_band_along_the_seam_only() -> None:
    plan = pan(pan_canvas((64, 64), PanDirection.LEFT, 8), (64, 64), PanDirection.LEFT)
    mask = np.asarray(plan.mask())
    assert plan.canvas == (96, 64) and plan.band == 8
    assert (mask[:, : 32 + 8] == 255).all()  # new area and the band at the seam
    assert (mask[:, 32 + 8 :] == 0).all()  # the rest of the picture, up to its far edge, is kept

    zoom = zoom_out((64, 64), 2)
    mask = np.asarray(zoom.mask())
    kept = inset(zoom.placed, zoom.band, zoom.seams)
    assert (region(zoom.mask(), kept) == 0).all()
    assert int((mask == 0).sum()) == kept.width * kept.height


def test_init_image_has_the_picture_in_place_and_its_edges_stretched_outwards() -> None:
    source = noise((64, 48), seed=1)
    plan = pan(pan_canvas(source.size, PanDirection.UP, 8), source.size, PanDirection.UP)
    init = np.asarray(plan.init_image(source))
    assert init.shape == (48 + 24, 64, 3)
    assert np.array_equal(init[24:], np.asarray(source))
    assert (init[:24] == init[24]).all()  # each column's top pixel, stretched up


@pytest.mark.parametrize("direction", list(PanDirection))
def test_pan_keeps_the_original_pixels_exactly_outside_the_seam_band(direction: PanDirection) -> None:
    source = noise((64, 64), seed=2)
    plan = pan(pan_canvas(source.size, direction, 8), source.size, direction)
    painted = noise(plan.canvas, seed=3)  # what an inpainting run might return
    result = plan.keep_source(painted, source)
    placed = plan.placed
    kept = inset(placed, plan.band, plan.seams)
    inner = Box(kept.left - placed.left, kept.top - placed.top, kept.width, kept.height)
    original = region(source, inner)
    assert np.array_equal(region(result, kept), original)
    # Outside the picture the model's paint stays as painted.
    outside = np.asarray(plan.mask()) == 255
    outside[placed.top : placed.bottom, placed.left : placed.right] = False
    assert np.array_equal(np.asarray(result)[outside], np.asarray(painted)[outside])


def test_zoom_keeps_the_shrunk_picture_exactly_inside_and_blends_the_band() -> None:
    source = noise((128, 128), seed=4)
    plan = zoom_out(source.size, 2)
    painted = Image.new("RGB", plan.canvas, (0, 0, 0))
    result = plan.keep_source(painted, source)
    shrunk = np.asarray(plan.placed_source(source)).astype(np.int16)
    kept = inset(plan.placed, plan.band, plan.seams)
    inner = Box(kept.left - plan.placed.left, kept.top - plan.placed.top, kept.width, kept.height)
    assert np.array_equal(region(result, kept), region(Image.fromarray(shrunk.astype(np.uint8)), inner))
    # Across the band the source fades in: the outermost ring is mostly paint (black), never all source.
    ring = np.asarray(result)[plan.placed.top, plan.placed.left : plan.placed.right].astype(np.int16)
    assert (ring <= shrunk[0] // 2 + 1).all()
    # Outside the placed box nothing of the source is drawn.
    assert np.asarray(result)[: plan.placed.top].max() == 0


def test_keep_source_refuses_a_result_of_another_size() -> None:
    plan = pan((96, 64), (64, 64), PanDirection.RIGHT)
    with pytest.raises(ValueError, match="canvas"):
        plan.keep_source(noise((64, 64), seed=5), noise((64, 64), seed=6))
