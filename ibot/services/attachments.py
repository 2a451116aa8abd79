"""Turn a message's attachments into model input: images, text files, or a clear "not read".

Discord-free: an attachment is a name, a declared size and type, and a coroutine that
downloads its bytes (nextcord's `Attachment.read`, or a file read by the CLI). Heavy
Pillow work runs in a worker thread so the event loop (and the Discord heartbeat) never
waits on it.

Images are checked and shrunk before they cost anything: a decompression-bomb guard,
the first frame of an animation, EXIF orientation applied, and the size bounded so
that the tile count (and therefore the price) stays within the configured limit. A "text"
file whose bytes are binary (a gzip or a PNG renamed `.log`) is named as not read
rather than decoded into garbage (`ibot.text_decoding`).
"""

from __future__ import annotations

import asyncio
import io
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import PurePath

import structlog
from PIL import Image, ImageOps, UnidentifiedImageError

from ibot.domain import Detail, ImageInput
from ibot.pricing import fit_image
from ibot.text_decoding import NotText, decode_bytes

log = structlog.get_logger("ibot.attachments")

IMAGE_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "gif": "image/gif", "webp": "image/webp"}
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".gif", ".webp"}
# Larger images are refused before decoding: 40 megapixels is far beyond any screenshot and
# about 160 MB of RGBA, which is what a malicious "decompression bomb" PNG aims to exceed.
MAX_IMAGE_PIXELS = 40_000_000
TILE = 512
TEXT_EXTENSIONS = frozenset(
    {".txt", ".log", ".py", ".json", ".yaml", ".yml", ".cfg", ".ini", ".toml", ".md", ".csv"}
    | {".js", ".ts", ".java", ".c", ".cpp", ".h", ".rs", ".go", ".sh", ".xml", ".html", ".css"}
    | {".sql"}
)


class AttachmentKind(StrEnum):
    IMAGE = "image"
    TEXT = "text"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class AttachmentSource:
    filename: str
    size: int
    content_type: str | None
    read: Callable[[], Awaitable[bytes]]


@dataclass(frozen=True, slots=True)
class AttachmentResult:
    """What became of one attachment; `problem` is an i18n key when it was not (fully) read."""

    name: str
    kind: AttachmentKind
    image: ImageInput | None = None
    text: str | None = None
    problem: str | None = None  # attachment.not_read / too_big / bad_image / binary / truncated…

    @property
    def used(self) -> bool:
        return self.kind is not AttachmentKind.SKIPPED


@dataclass(frozen=True, slots=True)
class AttachmentLimits:
    max_download_bytes: int = 10 * 1024 * 1024
    max_text_chars: int = 20_000
    max_images: int = 4
    max_tiles: int = 6
    detail: Detail = "high"
    text_extensions: frozenset[str] = TEXT_EXTENSIONS


class AttachmentError(Exception):
    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


def classify(source: AttachmentSource, limits: AttachmentLimits) -> AttachmentKind:
    suffix = PurePath(source.filename).suffix.lower()
    content_type = (source.content_type or "").split(";")[0].strip().lower()
    if suffix in IMAGE_EXTENSIONS or content_type in IMAGE_TYPES.values():
        return AttachmentKind.IMAGE
    if suffix in limits.text_extensions or content_type.startswith("text/"):
        return AttachmentKind.TEXT
    return AttachmentKind.SKIPPED


async def process_attachments(
    sources: Sequence[AttachmentSource], limits: AttachmentLimits
) -> list[AttachmentResult]:
    """Process every attachment; one bad file never stops the others."""
    results: list[AttachmentResult] = []
    images = 0
    for source in sources:
        kind = classify(source, limits)
        if kind is AttachmentKind.IMAGE and images >= limits.max_images:
            results.append(_skipped(source, "attachment.not_read"))
            continue
        result = await process_one(source, kind, limits)
        images += result.kind is AttachmentKind.IMAGE
        results.append(result)
    return results


async def process_one(
    source: AttachmentSource, kind: AttachmentKind, limits: AttachmentLimits
) -> AttachmentResult:
    if kind is AttachmentKind.SKIPPED:
        return _skipped(source, "attachment.not_read")
    if source.size > limits.max_download_bytes:
        return _skipped(source, "attachment.too_big")
    try:
        data = await source.read()
    except Exception as err:  # 403/404 from the CDN, an expired signed URL, a network error
        log.warning("attachment_download_failed", name=source.filename, error=str(err))
        return _skipped(source, "attachment.download_failed")
    if len(data) > limits.max_download_bytes:
        return _skipped(source, "attachment.too_big")
    if not data:
        return _skipped(source, "attachment.empty")
    if kind is AttachmentKind.IMAGE:
        try:
            image = await asyncio.to_thread(
                prepare_image, data, limits.max_tiles, limits.detail, source.filename
            )
        except AttachmentError as err:
            return _skipped(source, err.problem)
        return AttachmentResult(source.filename, AttachmentKind.IMAGE, image=image)
    try:
        # A 10 MB log takes tens of milliseconds to decode: not on the event loop.
        text, truncated = await asyncio.to_thread(decode_text, data, limits.max_text_chars)
    except NotText as err:
        log.info("attachment_binary", name=source.filename, looks_like=err.reason)
        return _skipped(source, "attachment.binary")
    return AttachmentResult(
        source.filename,
        AttachmentKind.TEXT,
        text=text,
        problem="attachment.truncated" if truncated else None,
    )


def _skipped(source: AttachmentSource, problem: str) -> AttachmentResult:
    return AttachmentResult(source.filename, AttachmentKind.SKIPPED, problem=problem)


def bounded_size(width: int, height: int, max_tiles: int) -> tuple[int, int]:
    """The size to send: OpenAI's own high-detail fit, then shrunk until tiles ≤ max_tiles.

    Sending the already-fitted size changes nothing in what the model sees, but it makes
    uploads small and the tile count (and the cost) known before the call.
    """
    w_i, h_i = fit_image(width, height, "high")
    while math.ceil(w_i / TILE) * math.ceil(h_i / TILE) > max_tiles:
        # Shrink the longer side to the next tile boundary below it, keeping the ratio.
        longer = max(w_i, h_i)
        target = (math.ceil(longer / TILE) - 1) * TILE
        scale = target / longer
        w_i, h_i = max(1, math.floor(w_i * scale)), max(1, math.floor(h_i * scale))
    return w_i, h_i


def prepare_image(data: bytes, max_tiles: int, detail: Detail, name: str = "") -> ImageInput:
    """Check, orient, flatten and shrink one image; runs in a worker thread."""
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
            fmt = (probe.format or "").lower()
    except Image.DecompressionBombError:
        raise AttachmentError("attachment.image_too_large") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise AttachmentError("attachment.bad_image") from None
    if width * height > MAX_IMAGE_PIXELS:
        raise AttachmentError("attachment.image_too_large")
    if fmt not in IMAGE_TYPES:
        raise AttachmentError("attachment.bad_image")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.seek(0)  # first frame of an animation
            img.load()
            frame = ImageOps.exif_transpose(img) or img
            has_alpha = frame.mode in ("RGBA", "LA", "PA") or "transparency" in frame.info
            frame = frame.convert("RGBA" if has_alpha else "RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        raise AttachmentError("attachment.bad_image") from None
    if detail == "low":  # the model sees 512×512 at most: sending more is waste
        scale = min(1.0, TILE / max(frame.size))
        target = (max(1, math.floor(frame.width * scale)), max(1, math.floor(frame.height * scale)))
    else:
        target = bounded_size(frame.width, frame.height, max_tiles)
    if target != frame.size:
        frame = frame.resize(target, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    if has_alpha:
        frame.save(out, format="PNG", optimize=True)
        mime = "image/png"
    else:
        # JPEG at high quality: screenshots stay legible and uploads stay small.
        frame.save(out, format="JPEG", quality=90)
        mime = "image/jpeg"
    return ImageInput(
        data=out.getvalue(),
        mime=mime,
        width=frame.width,
        height=frame.height,
        detail=detail,
        name=name,
    )


def decode_text(data: bytes, max_chars: int) -> tuple[str, bool]:
    """Decode a text file whatever its encoding, cut to `max_chars`; (text, truncated).

    Raises `NotText` for binary content, which must not reach the prompt: a gzip or a
    PNG renamed `.log` would otherwise be billed as thousands of tokens of garbage.
    """
    text = decode_bytes(data)
    if len(text) > max_chars:
        return text[:max_chars], True
    return text, False
