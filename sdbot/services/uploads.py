"""Members' own pictures: checked, turned upright and fitted before anything is queued or charged.

``prepare_upload`` takes the bytes a member attached and returns the picture a job starts from, or raises
``UploadRejected`` with the reason a member can act on. In order, cheapest first:

1. the file's size (``SDBOT_MAX_UPLOAD_MB``; the cog also checks the size Discord declares before it
   downloads anything, with ``check_declared_size``);
2. the format, from the header only: PNG, JPEG or WebP;
3. the pixel count, from the header only, against a decompression-bomb limit (``MAX_UPLOAD_PIXELS``): a
   tiny file can declare 20000x20000 pixels, and decoding it would take 1.2 GB. Nothing is decoded before
   this check;
4. animation (an animated PNG or WebP has no single picture to start from; a JPEG's extra MPO frames, such
   as a phone's depth map, are ignored);
5. decoding (a damaged or truncated file is refused, never half-read). JPEGs decode at a reduced scale when
   the picture will be shrunk anyway (``Image.draft``), so a 48-megapixel photo costs a fraction of its size;
6. the EXIF orientation, applied, and RGB (transparency over white, 16-bit grey scaled to 8 bits);
7. the size: the largest size with the picture's aspect within the server's pixel budget and the engine's
   longest side, in whole multiples of the model's size multiple. A picture is shrunk, never enlarged; the
   few pixels that the multiple cuts off come from the edges, evenly.

The result is a PNG kept with the job, so a restart or a long queue never needs Discord's CDN again. Pure
CPU work, no Discord: the service runs it in a thread.
"""

from __future__ import annotations

import io
import math
import struct
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from sdbot.errors import UploadRejected
from sdbot.params import MAX_SIDE, MIN_SIDE

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP")
# The most pixels a file may declare before it is decoded: 8192x8192, above any phone camera's 50 MP.
MAX_UPLOAD_PIXELS = 8192 * 8192
MEBIBYTE = 1024 * 1024
EXIF_ORIENTATION = 0x0112
# What a broken file makes Pillow raise while decoding (a bad PNG chunk CRC is a SyntaxError).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError)


@dataclass(frozen=True)
class PreparedUpload:
    """A member's picture as a job starts from it: ``png`` (RGB, upright) at ``size``; ``original_size``
    is the picture's size as the member sees it (upright)."""

    png: bytes
    size: tuple[int, int]
    original_size: tuple[int, int]

    @property
    def resized(self) -> bool:
        return self.size != self.original_size


def check_declared_size(size: int, max_bytes: int) -> None:
    """Refuse a file by the size Discord declares for it, before downloading it."""
    if size > max_bytes:
        raise UploadRejected(
            f"Your image is {size / MEBIBYTE:.1f} MB; this bot takes images of at most "
            f"{max_bytes / MEBIBYTE:g} MB."
        )


def prepare_upload(data: bytes, *, max_bytes: int, max_pixels: int, multiple: int) -> PreparedUpload:
    """The picture in ``data`` fitted within ``max_pixels`` (the server's budget) in whole multiples of
    ``multiple`` (the model's), or ``UploadRejected`` saying why not."""
    check_declared_size(len(data), max_bytes)
    try:
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except UnidentifiedImageError:
        raise UploadRejected("That file is not a PNG, JPEG or WebP image.") from None
    except Image.DecompressionBombError:  # Pillow's own limit, checked on the header as it opens
        raise _too_many_pixels(None) from None
    except _DECODE_ERRORS:
        raise _damaged() from None
    with image:
        width, height = image.size  # from the header: nothing is decoded yet
        if width * height > MAX_UPLOAD_PIXELS:
            raise _too_many_pixels((width, height))
        photo = image.format in ("JPEG", "MPO")  # MPO: a JPEG with extra frames (a phone's depth map)
        if not photo and getattr(image, "is_animated", False):
            raise UploadRejected("Animated images can't be used: upload a still PNG, JPEG or WebP.")
        scale = _scale(width, height, max_pixels)
        target = _target_size((width, height), scale, multiple)  # the same refusals either way up
        if photo:  # decode at 1/2, 1/4 or 1/8 scale when that still covers the target
            image.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
        try:
            image.load()
            turned = image.getexif().get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8)  # a quarter turn
            upright = _rgb(ImageOps.exif_transpose(image))
        except _DECODE_ERRORS:
            raise _damaged() from None
    original = (height, width) if turned else (width, height)
    target = (target[1], target[0]) if turned else target
    fitted = _fit(upright, target, shrink=scale < 1)
    buffer = io.BytesIO()
    fitted.save(buffer, format="PNG", compress_level=1)  # kept only until the job ends: favour speed
    return PreparedUpload(buffer.getvalue(), target, original)


def _rgb(image: Image.Image) -> Image.Image:
    """``image`` in RGB: transparent parts over white, 16-bit grey scaled down to 8 bits."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L"):
        grey = np.asarray(image, dtype=np.uint32) >> 8
        return Image.fromarray(grey.astype(np.uint8), mode="L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _scale(width: int, height: int, max_pixels: int) -> float:
    """How much the picture shrinks: to fit ``max_pixels`` and the engine's longest side; never up."""
    return min(1.0, math.sqrt(max_pixels / (width * height)), MAX_SIDE / max(width, height))


def _target_size(original: tuple[int, int], scale: float, multiple: int) -> tuple[int, int]:
    width, height = original
    target = (int(width * scale) // multiple * multiple, int(height * scale) // multiple * multiple)
    if min(target) < MIN_SIDE:
        if min(original) < MIN_SIDE:
            raise UploadRejected(
                f"Your image is {width}x{height}; it needs at least {MIN_SIDE} pixels on each side."
            )
        raise UploadRejected(
            f"Your image is {width}x{height}: too narrow to keep {MIN_SIDE} pixels on each side "
            "within this server's size limit. Crop it closer to a square."
        )
    return target


def _fit(image: Image.Image, target: tuple[int, int], *, shrink: bool) -> Image.Image:
    """``image`` (perhaps decoded at a reduced scale) at ``target``: the centre of the picture with the
    target's aspect, shrunk with Lanczos; or, when it needs no shrinking, only the few pixels past the
    size multiple cropped off, so that its pixels stay as they were."""
    width, height = image.size
    if not shrink:
        left, top = (width - target[0]) // 2, (height - target[1]) // 2
        return image.crop((left, top, left + target[0], top + target[1]))
    aspect = target[0] / target[1]
    crop_width, crop_height = min(width, height * aspect), min(height, width / aspect)
    left, top = (width - crop_width) / 2, (height - crop_height) / 2
    box = (left, top, left + crop_width, top + crop_height)
    return image.resize(target, Image.Resampling.LANCZOS, box=box, reducing_gap=3.0)


def _too_many_pixels(size: tuple[int, int] | None) -> UploadRejected:
    limit = f"{MAX_UPLOAD_PIXELS / 1e6:.0f} megapixels"
    if size is None:
        return UploadRejected(f"Your image has too many pixels; this bot opens images of at most {limit}.")
    width, height = size
    return UploadRejected(
        f"Your image is {width}x{height} ({width * height / 1e6:.0f} megapixels); "
        f"this bot opens images of at most {limit}."
    )


def _damaged() -> UploadRejected:
    return UploadRejected("Your image could not be read: the file is damaged or incomplete.")
