"""Bytes a user calls text, decoded whatever their encoding, or refused as binary.

Shared by the attachments (a `.log` on Discord) and `ibot finetune prepare` (a CSV or a
transcript): both get files from people whose editors save UTF-8, UTF-16 (Windows'
"Unicode") or Latin-1/cp1252, and sometimes a file that is not text at all (a gzip, a
PNG renamed `.log`). Sending that to a model bills thousands of tokens of garbage, and
training on it teaches garbage, so it is named as binary instead of decoded.

The order: byte-order marks, known magic numbers, UTF-16 without a BOM (one byte in two
is NUL, always on the same side), NUL bytes anywhere else (git's own binary test), strict
UTF-8, then cp1252 (a superset of Latin-1's printable characters). Whatever was decoded
is refused when too many of its first characters are control characters or
replacement characters: undecodable bytes that no encoding explained.
"""

from __future__ import annotations

import codecs
import re

# How much of a file the heuristics look at: enough to be sure, cheap on a 10 MB log.
SAMPLE_BYTES = 8192
SAMPLE_CHARS = 8192
# Share of control/replacement characters above which decoded "text" is garbage. Real
# text has almost none (tabs, newlines and ANSI colour escapes don't count); random
# bytes read as cp1252 have about 12 %.
MAX_GARBAGE_SHARE = 0.05

# File signatures that never start a text file (the ones users attach by mistake).
MAGIC_NUMBERS: dict[bytes, str] = {
    b"\x1f\x8b": "gzip",
    b"PK\x03\x04": "zip",
    b"PK\x05\x06": "zip",
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"%PDF-": "PDF",
    b"\x7fELF": "ELF executable",
    b"7z\xbc\xaf\x27\x1c": "7-Zip",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"Rar!\x1a\x07": "RAR",
    b"SQLite format 3\x00": "SQLite",
    b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1": "Office document",
    b"RIFF": "RIFF (WebP, WAV, AVI)",
    b"OggS": "Ogg",
}

_BOMS_UTF16 = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
# Control characters other than tab, newline, vertical tab, form feed, carriage return and
# escape (coloured logs), the replacement character, and the C1 controls.
_GARBAGE = re.compile("[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f-\x9f\ufffd]")


class NotText(ValueError):
    """The bytes are not text in any encoding we read; `reason` says what they look like."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"looks binary ({reason}), not text")
        self.reason = reason


def decode_bytes(data: bytes) -> str:
    """The text in `data`, newlines as ``\\n``; `NotText` when it looks binary."""
    text = _decode(data)
    sample = text[:SAMPLE_CHARS]
    garbage = len(_GARBAGE.findall(sample))
    if sample and garbage / len(sample) > MAX_GARBAGE_SHARE:
        raise NotText("control characters or undecodable bytes")
    return text.replace("\r\n", "\n").replace("\x00", "")


def _decode(data: bytes) -> str:
    if data.startswith(codecs.BOM_UTF8):
        return data[len(codecs.BOM_UTF8) :].decode("utf-8", errors="replace")
    if data.startswith(_BOMS_UTF16):
        return data.decode("utf-16", errors="replace")
    head = data[:SAMPLE_BYTES]
    for magic, kind in MAGIC_NUMBERS.items():
        if head.startswith(magic):
            raise NotText(kind)
    utf16 = _utf16_without_bom(head)
    if utf16 is not None:
        return data.decode(utf16, errors="replace")
    if b"\x00" in head:
        raise NotText("NUL bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def _utf16_without_bom(head: bytes) -> str | None:
    """``utf-16-le``/``-be`` when the NULs sit on one side, as in mostly-ASCII UTF-16.

    Binary data has NULs on both sides; requiring them on one side only keeps an
    executable or a database from being "decoded" into CJK-looking garbage.
    """
    if len(head) < 4:
        return None
    even, odd = head[0::2], head[1::2]
    even_zeros, odd_zeros = even.count(0), odd.count(0)
    if odd_zeros >= len(odd) * 0.3 and even_zeros <= len(even) * 0.02:
        return "utf-16-le"
    if even_zeros >= len(even) * 0.3 and odd_zeros <= len(odd) * 0.02:
        return "utf-16-be"
    return None
