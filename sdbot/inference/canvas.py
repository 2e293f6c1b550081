"""Zoom Out and Pan as canvas math: where a picture goes on a larger canvas, and what to paint around it.

An ``Outpaint`` says where a source picture lies on a larger canvas. From it come what an inpainting run needs
and what it gives back: the init image (the picture in place, the new area filled by stretching its edges),
the mask (white: paint, black: keep) and, after the run, the result with the picture's own pixels put back,
since the VAE's round trip changes every pixel a little. Along the seams the mask reaches a narrow band into
the picture, and the put-back fades in across that band, so the new area continues the picture without a
visible edge; everywhere else in the picture the pixels are exactly the source's.

Zoom Out (Midjourney's 2x / 1.5x): the canvas keeps the picture's aspect at the model's native pixel count
(``native_canvas``: a zoom of an upscale comes back at the model's size), and the picture shrinks into its
centre (``zoom_out``). Pan: the canvas grows by half the picture on one side (``pan_canvas``) and the
picture keeps its pixels 1:1 against the other (``pan``). The services choose the canvas (and check it
against the server's budget); the engine places the picture on the canvas the job asks for.

Pure image math on PIL and numpy: the bot's process plans sizes with it without importing torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from sdbot.params import PanDirection


@dataclass(frozen=True)
class Box:
    """A rectangle in pixels: ``left``/``top`` inclusive, ``right``/``bottom`` exclusive."""

    left: int
    top: int
    width: int
    height: int

    @property
    def right(self) -> int:
        return self.left + self.width

    @property
    def bottom(self) -> int:
        return self.top + self.height

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height


# Sides of the placed picture, by the edge they name.
_SIDES = ("left", "top", "right", "bottom")


@dataclass(frozen=True)
class Outpaint:
    """A picture placed on a larger canvas. ``seams``: the picture's sides that border new area; ``band``:
    how far (pixels) the repainting reaches into the picture along each seam. ``label`` says what was done
    (``zoom 2x``, ``pan left``), as PNG parameters and result messages show it."""

    canvas: tuple[int, int]
    placed: Box
    seams: frozenset[str]
    band: int
    label: str

    def placed_source(self, source: Image.Image) -> Image.Image:
        """The source as it lies on the canvas: RGB, at the placed size."""
        source = source.convert("RGB")
        if source.size == self.placed.size:
            return source
        return source.resize(self.placed.size, Image.Resampling.LANCZOS)

    def init_image(self, source: Image.Image) -> Image.Image:
        """The canvas with the picture in place and its edge pixels stretched over the new area."""
        box = self.placed
        width, height = self.canvas
        pixels = np.asarray(self.placed_source(source))
        padding = ((box.top, height - box.bottom), (box.left, width - box.right), (0, 0))
        return Image.fromarray(np.pad(pixels, padding, mode="edge"))

    def mask(self) -> Image.Image:
        """White where the model paints (the new area and the seam band), black where the picture stays."""
        width, height = self.canvas
        keep = self._kept_box()
        mask = np.full((height, width), 255, dtype=np.uint8)
        mask[keep.top : keep.bottom, keep.left : keep.right] = 0
        return Image.fromarray(mask, mode="L")

    def keep_source(self, result: Image.Image, source: Image.Image) -> Image.Image:
        """``result`` (the inpainting run's output, canvas-sized) with the picture's own pixels put back:
        exact inside, faded in across the seam band."""
        if result.size != self.canvas:
            raise ValueError(f"the result is {result.size}, the canvas {self.canvas}")
        box = self.placed
        out = np.asarray(result.convert("RGB"), dtype=np.float32).copy()
        painted = out[box.top : box.bottom, box.left : box.right]
        original = np.asarray(self.placed_source(source), dtype=np.float32)
        weight = self._source_weight()[..., None]
        out[box.top : box.bottom, box.left : box.right] = original * weight + painted * (1 - weight)
        return Image.fromarray(np.rint(out).astype(np.uint8))

    def _kept_box(self) -> Box:
        """The part of the picture the mask keeps: the placed box less the band along each seam."""
        box, band = self.placed, self.band
        left = box.left + (band if "left" in self.seams else 0)
        top = box.top + (band if "top" in self.seams else 0)
        right = box.right - (band if "right" in self.seams else 0)
        bottom = box.bottom - (band if "bottom" in self.seams else 0)
        return Box(left, top, right - left, bottom - top)

    def _source_weight(self) -> np.ndarray:
        """Per pixel of the placed box, how much of the source it shows: 1 beyond the band, rising from
        near 0 at a seam across the band (pixel centres, so the first band pixel is not pure paint)."""
        width, height = self.placed.size
        columns = np.ones(width, dtype=np.float32)
        rows = np.ones(height, dtype=np.float32)
        ramp = lambda n: np.clip((np.arange(n, dtype=np.float32) + 0.5) / self.band, 0, 1)  # noqa: E731
        if "left" in self.seams:
            columns = np.minimum(columns, ramp(width))
        if "right" in self.seams:
            columns = np.minimum(columns, ramp(width)[::-1])
        if "top" in self.seams:
            rows = np.minimum(rows, ramp(height))
        if "bottom" in self.seams:
            rows = np.minimum(rows, ramp(height)[::-1])
        return np.minimum(rows[:, None], columns[None, :])


def seam_band(canvas: tuple[int, int], placed: Box) -> int:
    """How far the repainting reaches into the picture: about 3% of the canvas's shorter side (16 pixels at
    512), at least 8, and at most a quarter of the picture's shorter side."""
    return max(1, min(max(8, min(canvas) // 32), min(placed.size) // 4))


def native_canvas(size: tuple[int, int], native_pixels: int, multiple: int) -> tuple[int, int]:
    """Zoom Out's canvas: ``size``'s aspect at about ``native_pixels`` pixels, in whole multiples of
    ``multiple`` (so a zoom of an upscale comes back at the model's size)."""
    width, height = size
    scaled_width = math.sqrt(native_pixels * width / height)
    scaled_height = native_pixels / scaled_width
    return _down_to(scaled_width, multiple), _down_to(scaled_height, multiple)


def pan_canvas(size: tuple[int, int], direction: PanDirection, multiple: int) -> tuple[int, int]:
    """Pan's canvas: ``size`` grown by half (in whole multiples of ``multiple``) towards ``direction``."""
    width, height = size
    if direction in (PanDirection.LEFT, PanDirection.RIGHT):
        return width + max(multiple, _down_to(width / 2, multiple)), height
    return width, height + max(multiple, _down_to(height / 2, multiple))


def zoom_out(canvas: tuple[int, int], factor: float) -> Outpaint:
    """The picture shrunk by ``factor`` into the centre of ``canvas``."""
    if factor <= 1:
        raise ValueError(f"a zoom out factor must be above 1, not {factor:g}")
    width, height = round(canvas[0] / factor), round(canvas[1] / factor)
    placed = Box((canvas[0] - width) // 2, (canvas[1] - height) // 2, width, height)
    return Outpaint(canvas, placed, frozenset(_SIDES), seam_band(canvas, placed), f"zoom {factor:g}x")


def pan(canvas: tuple[int, int], size: tuple[int, int], direction: PanDirection) -> Outpaint:
    """The picture of ``size``, 1:1, against the side of ``canvas`` opposite ``direction``."""
    width, height = size
    if canvas[0] < width or canvas[1] < height or canvas == size:
        raise ValueError(f"a {canvas[0]}x{canvas[1]} canvas does not extend a {width}x{height} picture")
    left = canvas[0] - width if direction is PanDirection.LEFT else 0
    top = canvas[1] - height if direction is PanDirection.UP else 0
    placed = Box(left, top, width, height)
    seam = {
        PanDirection.LEFT: "left",
        PanDirection.RIGHT: "right",
        PanDirection.UP: "top",
        PanDirection.DOWN: "bottom",
    }[direction]
    return Outpaint(canvas, placed, frozenset({seam}), seam_band(canvas, placed), f"pan {direction}")


def _down_to(value: float, multiple: int) -> int:
    """``value`` rounded down to a whole multiple of ``multiple``, at least one multiple."""
    return max(multiple, int(value) // multiple * multiple)
