"""Members' own pictures: every accepted format upright and fitted, every bad file refused with its reason."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from sdbot.errors import UploadRejected
from sdbot.services.uploads import MAX_UPLOAD_PIXELS, check_declared_size, prepare_upload

MB = 1024 * 1024
RED, BLUE = (220, 20, 20), (20, 20, 220)


def prepare(data: bytes, *, max_pixels: int = 768 * 768, multiple: int = 8, max_bytes: int = 10 * MB):
    return prepare_upload(data, max_bytes=max_bytes, max_pixels=max_pixels, multiple=multiple)


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def halves(size: tuple[int, int]) -> Image.Image:
    """Left half red, right half blue."""
    image = Image.new("RGB", size, BLUE)
    image.paste(RED, (0, 0, size[0] // 2, size[1]))
    return image


def decoded(png: bytes) -> Image.Image:
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG"
        return image.convert("RGB")


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_declaring(width: int, height: int) -> bytes:
    """A PNG of a few hundred bytes whose header declares ``width`` x ``height`` RGB pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\0" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", rows) + png_chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("fmt", "options"), [("PNG", {}), ("JPEG", {"quality": 95}), ("WEBP", {"quality": 95})]
)
def test_each_format_is_turned_upright_by_its_exif_orientation(fmt: str, options: dict[str, object]) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: shown turned 90 degrees clockwise
    data = encode(halves((96, 64)), fmt, exif=exif, **options)
    upload = prepare(data)
    assert upload.size == upload.original_size == (64, 96)
    picture = np.asarray(decoded(upload.png), dtype=np.int16)
    assert np.abs(picture[10, 32] - RED).max() < 30  # the left half is now on top
    assert np.abs(picture[85, 32] - BLUE).max() < 30


def test_a_large_picture_is_shrunk_to_the_servers_budget_in_whole_multiples() -> None:
    upload = prepare(encode(halves((1024, 768)), "PNG"), max_pixels=512 * 512, multiple=16)
    assert upload.original_size == (1024, 768) and upload.resized
    width, height = upload.size
    assert (width, height) == (576, 432)  # 591x443 at 512x512's pixel count, down to multiples of 16
    assert decoded(upload.png).size == upload.size


def test_a_large_jpeg_decodes_at_a_reduced_scale_to_the_same_size() -> None:
    upload = prepare(encode(halves((2400, 1800)), "JPEG", quality=90), max_pixels=512 * 512)
    assert upload.size == (584, 440)
    picture = np.asarray(decoded(upload.png), dtype=np.int16)
    assert np.abs(picture[220, 100] - RED).max() < 30 and np.abs(picture[220, 480] - BLUE).max() < 30


def test_a_phone_photo_with_extra_mpo_frames_is_a_still_picture() -> None:
    data = encode(halves((64, 64)), "MPO", save_all=True, append_images=[Image.new("RGB", (64, 64))])
    picture = np.asarray(decoded(prepare(data).png), dtype=np.int16)
    assert np.abs(picture[32, 10] - RED).max() < 30  # the first frame, not the depth map


def test_a_small_picture_is_never_enlarged_only_cropped_to_the_multiple() -> None:
    rng = np.random.default_rng(0)
    source = Image.fromarray(rng.integers(0, 256, (70, 100, 3), dtype=np.uint8))
    upload = prepare(encode(source, "PNG"))
    assert upload.size == (96, 64)
    assert np.array_equal(np.asarray(decoded(upload.png)), np.asarray(source)[3:67, 2:98])


def test_transparency_goes_over_white_and_16_bit_grey_keeps_its_tones() -> None:
    clear = prepare(encode(Image.new("RGBA", (64, 64), (255, 0, 0, 0)), "PNG"))
    assert decoded(clear.png).getpixel((5, 5)) == (255, 255, 255)
    grey = Image.fromarray(np.full((64, 64), 40000, dtype=np.uint16))
    assert decoded(prepare(encode(grey, "PNG")).png).getpixel((5, 5)) == (156, 156, 156)  # 40000 >> 8


def test_a_file_over_the_size_limit_is_refused_before_and_after_download() -> None:
    with pytest.raises(UploadRejected, match=r"12\.0 MB; this bot takes images of at most 10 MB"):
        check_declared_size(12 * MB, 10 * MB)
    data = encode(halves((64, 64)), "PNG")
    with pytest.raises(UploadRejected, match="at most"):
        prepare(data, max_bytes=len(data) - 1)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"name,prompt\nalice,a cat\n", "not a PNG, JPEG or WebP"),
        (encode(halves((64, 64)), "GIF"), "not a PNG, JPEG or WebP"),
        (encode(halves((64, 64)), "BMP"), "not a PNG, JPEG or WebP"),
        (
            encode(halves((64, 64)), "PNG", save_all=True, append_images=[halves((64, 64)).rotate(90)]),
            "Animated",
        ),
        (
            encode(halves((64, 64)), "WEBP", save_all=True, append_images=[halves((64, 64)).rotate(90)]),
            "Animated",
        ),
        (encode(halves((64, 64)), "PNG")[:-40], "damaged or incomplete"),
        (encode(halves((256, 256)), "JPEG")[:300], "damaged or incomplete"),
        (encode(Image.new("RGB", (16, 200)), "PNG"), "at least 64 pixels on each side"),
        (encode(Image.new("RGB", (64, 2600)), "PNG"), "too narrow"),
    ],
    ids=["text", "gif", "bmp", "apng", "animated-webp", "truncated-png", "truncated-jpeg", "tiny", "narrow"],
)
def test_bad_files_are_refused_with_their_reason(data: bytes, reason: str) -> None:
    with pytest.raises(UploadRejected, match=reason):
        prepare(data)


def test_a_png_with_a_bad_checksum_is_refused_as_damaged() -> None:
    data = bytearray(encode(halves((64, 64)), "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 10] ^= 0xFF  # a byte of the compressed pixels: the chunk's CRC no longer matches
    with pytest.raises(UploadRejected, match="damaged"):
        prepare(bytes(data))


@pytest.mark.parametrize(("width", "height"), [(20000, 20000), (9000, 9000)])
def test_a_decompression_bomb_is_refused_from_its_header_without_decoding(
    width: int, height: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert width * height > MAX_UPLOAD_PIXELS
    data = png_declaring(width, height)
    assert len(data) < 200

    def no_decoding(self: ImageFile.ImageFile) -> None:
        raise AssertionError("the bomb was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(UploadRejected, match="megapixels"):
        prepare(data)
