"""Discord's signed attachment URLs (`?ex=…&is=…&hm=…&`), and how the CDN checks them.

Discord serves an attachment only at a signed URL: `ex` (when the URL expires) and `is`
(when it was issued) are Unix times in hexadecimal, `hm` a hexadecimal HMAC of the file's
path and both times, and the query ends with `&`, as in the docs' own example
(reference.mdx: `bug.png?ex=68dc7ce1&is=68db2b61&hm=5954f901…0768&`). A URL past its `ex`,
or whose signature is missing or wrong, answers 404 "This content is no longer
available."; a fresh URL comes with the message, read again.

The fake signs a file's URL once, when the file is added (Discord signs again each time
it serves the message), valid for `URL_TTL_S`. `Cdn.expire_issued()` moves the CDN's
clock past every URL issued so far, as if a day had passed: the files stay, the URLs
already handed out stop working, and files added afterwards get fresh ones.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping

#: How long a signed URL works (Discord's are valid for about a day).
URL_TTL_S = 24 * 3600
EXPIRED_TEXT = "This content is no longer available."


class Cdn:
    """Signs attachment URLs and checks the signature and expiry of a download."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._key = secrets.token_bytes(32)
        self._clock = clock
        self._offset_s = 0.0  # how far the CDN's clock was moved on (expire_issued)

    def now(self) -> float:
        return self._clock() + self._offset_s

    def signed_query(self, attachment_id: int, filename: str) -> str:
        """`ex=…&is=…&hm=…&` for the file's URL, valid for URL_TTL_S from now."""
        issued = int(self.now())
        expires = issued + URL_TTL_S
        mac = self._mac(attachment_id, filename, expires, issued)
        return f"ex={expires:x}&is={issued:x}&hm={mac}&"

    def refusal(self, attachment_id: int, filename: str, query: Mapping[str, str]) -> str | None:
        """Why the CDN refuses this download (a 404), or None when the URL is valid."""
        try:
            expires, issued = int(query["ex"], 16), int(query["is"], 16)
            signature = query["hm"]
        except (KeyError, ValueError):
            return "unsigned"
        expected = self._mac(attachment_id, filename, expires, issued)
        if not hmac.compare_digest(signature, expected):
            return "bad_signature"
        if self.now() >= expires:
            return "expired"
        return None

    def expire_issued(self) -> None:
        """Move the CDN's clock past the expiry of every URL issued so far."""
        self._offset_s += URL_TTL_S + 1

    def _mac(self, attachment_id: int, filename: str, expires: int, issued: int) -> str:
        message = f"{attachment_id}/{filename}|{expires:x}|{issued:x}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()
