"""Authenticated encryption of small secrets at rest, with the standard library only.

Why it exists: an interaction token kept in the database for a restart (see
ibot/db/pending_interactions.py) lets whoever reads it post as the bot in that
conversation for 15 minutes, so it must not sit there in clear. `cryptography` is not
among iBot's dependencies, and one token a command does not justify a compiled one: the
construction below uses only HMAC-SHA256, which `hmac`/`hashlib` provide.

Construction (encrypt-then-MAC, keys derived once from one secret):

- `enc_key = HMAC(master, "ibot/seal/v1/enc")`, `mac_key = HMAC(master, "ibot/seal/v1/mac")`,
  with `master = HMAC("ibot/seal/v1", secret)` (HKDF's extract and expand steps);
- a fresh random 16-byte nonce per seal; keystream block i = `HMAC(enc_key, nonce || i)`
  (HMAC as a PRF in counter mode), XORed with the plaintext;
- tag = `HMAC(mac_key, version || nonce || ciphertext || len(ad) || ad)`, checked in
  constant time before anything is decrypted. The associated data `ad` binds a sealed
  value to its row (the interaction id): a ciphertext copied to another row fails.

The sealed text is `base64url(version || nonce || ciphertext || tag)`. A wrong key, a
changed byte or another row's value raises `SealError`; nothing is ever half-opened.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

VERSION = b"\x01"
NONCE_BYTES = 16
TAG_BYTES = 32
_BLOCK = hashlib.sha256().digest_size


class SealError(ValueError):
    """The sealed value is not authentic for this key and associated data."""


class Sealer:
    """Seal and open short strings with keys derived from `secret` (a bot token, say)."""

    def __init__(self, secret: str | bytes) -> None:
        raw = secret.encode() if isinstance(secret, str) else secret
        if not raw:
            raise ValueError("a sealing secret cannot be empty")
        master = hmac.digest(b"ibot/seal/v1", raw, "sha256")
        self._enc_key = hmac.digest(master, b"ibot/seal/v1/enc\x01", "sha256")
        self._mac_key = hmac.digest(master, b"ibot/seal/v1/mac\x01", "sha256")

    def seal(self, plaintext: str, *, associated: bytes = b"") -> str:
        nonce = os.urandom(NONCE_BYTES)
        data = plaintext.encode()
        ciphertext = _xor(data, self._keystream(nonce, len(data)))
        body = VERSION + nonce + ciphertext
        return base64.urlsafe_b64encode(body + self._tag(body, associated)).decode("ascii")

    def open(self, sealed: str, *, associated: bytes = b"") -> str:
        try:
            blob = base64.urlsafe_b64decode(sealed.encode("ascii"))
        except (ValueError, UnicodeEncodeError) as err:
            raise SealError("not a sealed value") from err
        if len(blob) < 1 + NONCE_BYTES + TAG_BYTES or blob[:1] != VERSION:
            raise SealError("not a sealed value")
        body, tag = blob[:-TAG_BYTES], blob[-TAG_BYTES:]
        if not hmac.compare_digest(tag, self._tag(body, associated)):
            raise SealError("the sealed value is not authentic (wrong key or altered)")
        nonce, ciphertext = body[1 : 1 + NONCE_BYTES], body[1 + NONCE_BYTES :]
        return _xor(ciphertext, self._keystream(nonce, len(ciphertext))).decode()

    def _keystream(self, nonce: bytes, length: int) -> bytes:
        blocks = (length + _BLOCK - 1) // _BLOCK
        return b"".join(
            hmac.digest(self._enc_key, nonce + i.to_bytes(8, "big"), "sha256")
            for i in range(blocks)
        )[:length]

    def _tag(self, body: bytes, associated: bytes) -> bytes:
        message = body + len(associated).to_bytes(8, "big") + associated
        return hmac.digest(self._mac_key, message, "sha256")


def _xor(data: bytes, stream: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(data, stream, strict=True))
