"""Attachments: images are checked and shrunk, text files decoded, others named as not read."""

from __future__ import annotations

import io
import math
import zlib

import pytest
from PIL import Image

from ibot.services.attachments import (
    AttachmentKind,
    AttachmentLimits,
    AttachmentSource,
    bounded_size,
    decode_text,
    process_attachments,
)


def source(name: str, data: bytes, content_type: str | None = None) -> AttachmentSource:
    async def read() -> bytes:
        return data

    return AttachmentSource(filename=name, size=len(data), content_type=content_type, read=read)


def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt, **kw)
    return out.getvalue()


def huge_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming a huge size, with a tiny compressed body (a 'bomb')."""
    import struct

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


async def process_single(src: AttachmentSource, **limits):
    [result] = await process_attachments([src], AttachmentLimits(**limits))
    return result


@pytest.mark.parametrize(
    ("size", "max_tiles"), [((4000, 3000), 6), ((1920, 1080), 4), ((800, 6000), 6), ((300, 200), 6)]
)
def test_bounded_size_keeps_tiles_within_the_limit(size, max_tiles):
    width, height = bounded_size(*size, max_tiles)
    assert math.ceil(width / 512) * math.ceil(height / 512) <= max_tiles
    assert abs(width / height - size[0] / size[1]) < 0.02  # aspect ratio kept
    assert width <= size[0] and height <= size[1]  # never enlarged


async def test_screenshot_is_shrunk_to_the_tile_budget():
    result = await process_single(
        source("capture.png", encode(Image.new("RGB", (3840, 2160)))), max_tiles=4
    )
    assert result.kind is AttachmentKind.IMAGE
    image = result.image
    assert math.ceil(image.width / 512) * math.ceil(image.height / 512) <= 4
    assert image.detail == "high"
    with Image.open(io.BytesIO(image.data)) as decoded:
        assert decoded.size == (image.width, image.height)


async def test_exif_orientation_is_applied():
    img = Image.new("RGB", (400, 200))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90° clockwise: the picture is really 200×400
    result = await process_single(source("photo.jpg", encode(img, "JPEG", exif=exif)))
    assert (result.image.width, result.image.height) == (200, 400)


async def test_animated_gif_keeps_its_first_frame():
    frames = [Image.new("RGB", (64, 64), color) for color in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    result = await process_single(source("anim.gif", data))
    with Image.open(io.BytesIO(result.image.data)) as decoded:
        red, _green, blue = decoded.convert("RGB").getpixel((10, 10))
    assert red > 200 and blue < 50


async def test_transparent_png_stays_png():
    result = await process_single(source("logo.png", encode(Image.new("RGBA", (100, 100)))))
    assert result.image.mime == "image/png"


@pytest.mark.parametrize(
    ("name", "data", "problem"),
    [
        ("corrupt.png", b"\x89PNG\r\n\x1a\nnot really a png", "attachment.bad_image"),
        ("empty.png", b"", "attachment.empty"),
        ("bomb.png", huge_png(20_000, 20_000), "attachment.image_too_large"),
        ("archive.zip", b"PK\x03\x04 zip bytes", "attachment.not_read"),
    ],
)
async def test_bad_files_get_a_clear_outcome(name, data, problem):
    result = await process_single(source(name, data))
    assert result.kind is AttachmentKind.SKIPPED
    assert result.problem == problem


async def test_oversized_file_is_not_even_downloaded():
    downloads = []

    async def read() -> bytes:
        downloads.append(1)
        return b"x"

    big = AttachmentSource("dump.log", size=25 * 1024 * 1024, content_type="text/plain", read=read)
    [result] = await process_attachments([big], AttachmentLimits())
    assert result.problem == "attachment.too_big"
    assert downloads == []


async def test_utf16_log_is_read_as_text():
    text = "ERREUR : connexion refusée\nligne 2 ✓\n"
    result = await process_single(source("server.log", text.encode("utf-16")))
    assert result.kind is AttachmentKind.TEXT
    assert result.text == text


def test_utf16_without_bom_and_latin1_are_decoded():
    assert decode_text("café\n".encode("utf-16-le"), 100) == ("café\n", False)
    assert decode_text("déjà vu".encode("cp1252"), 100) == ("déjà vu", False)


async def test_long_text_file_is_truncated_and_says_so():
    result = await process_single(source("big.txt", b"a" * 50_000), max_text_chars=1000)
    assert len(result.text) == 1000
    assert result.problem == "attachment.truncated"


async def test_one_bad_file_does_not_stop_the_others():
    results = await process_attachments(
        [source("corrupt.png", b"garbage"), source("ok.txt", b"hello")], AttachmentLimits()
    )
    assert [r.kind for r in results] == [AttachmentKind.SKIPPED, AttachmentKind.TEXT]


async def test_images_beyond_the_limit_are_not_read():
    img = encode(Image.new("RGB", (10, 10)))
    results = await process_attachments(
        [source(f"{i}.png", img) for i in range(3)], AttachmentLimits(max_images=2)
    )
    assert [r.kind for r in results] == [AttachmentKind.IMAGE] * 2 + [AttachmentKind.SKIPPED]
