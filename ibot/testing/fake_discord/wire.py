"""How a REST request comes in and how its answer goes out, spelled once.

Every route reads its request as a `RecordedRequest` whose body was parsed here (the
JSON body, or `payload_json` and the `files[n]` parts of a multipart body), and every
answer, the routes' and the faults' alike, is built here: `json_response`,
`no_content`, or Discord's JSON error body (`error_response`, which an `ApiError`
raised by a route becomes). With `RestApi.handle` (rest.py) the one function that
takes a request in and hands its answer back, the shape of what goes over the wire
has a single place to be read, recorded or checked.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import BodyPartReader, web


@dataclass(eq=False)
class Upload:
    """One file part of a multipart request (`files[n]`)."""

    field: str
    filename: str
    data: bytes

    @property
    def index(self) -> int | None:
        match = re.fullmatch(r"files\[(\d+)\]", self.field)
        return int(match.group(1)) if match else None


@dataclass(eq=False)
class RecordedRequest:
    """A REST request as the fake received it, and what it answered.

    `json` is the JSON body, or `payload_json` of a multipart body; `fault` names the
    injected fault that answered it, if any.
    """

    method: str
    path: str  # after /api/v10, without the query string
    query: dict[str, str]
    json: Any
    files: list[Upload] = field(default_factory=list)
    status: int | None = None
    fault: str | None = None
    at: float = field(default_factory=time.monotonic)

    def __repr__(self) -> str:
        fault = f" {self.fault}" if self.fault else ""
        return f"<{self.method} {self.path} → {self.status}{fault}>"


class ApiError(Exception):
    """Raised by route handlers; rendered as Discord's JSON error body."""

    def __init__(self, status: int, code: int, message: str, errors: object = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.errors = status, code, message, errors


# -- reading a request -------------------------------------------------------------


async def read_body(request: web.Request) -> tuple[Any, list[Upload]]:
    """The JSON body (or `payload_json`) and the uploaded files; text if not JSON."""
    if request.content_type.startswith("multipart/"):
        payload: Any = None
        uploads: list[Upload] = []
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue  # a nested multipart: Discord's clients never send one
            if part.name == "payload_json":
                payload = json.loads(await part.text())
            elif part.filename:
                uploads.append(Upload(part.name or "", part.filename, bytes(await part.read())))
        return payload, uploads
    raw = await request.read()
    if not raw:
        return None, []
    try:
        return json.loads(raw), []
    except ValueError:
        return raw.decode(errors="replace"), []


def bot_token(request: web.Request) -> str | None:
    """The token of an `Authorization: Bot …` header, else None."""
    header = request.headers.get("Authorization", "")
    return header.removeprefix("Bot ") if header.startswith("Bot ") else None


# -- building an answer ----------------------------------------------------------------


def json_response(
    data: object, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON answer whose Content-Type is exactly `application/json`.

    nextcord compares the header to that string; `web.json_response` adds a charset and
    would make every body read as text.
    """
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def no_content() -> web.Response:
    """204, Discord's answer to a delete, a reaction, typing, an unawaited follow-up."""
    return web.Response(status=204)


def error_response(status: int, code: int, message: str, errors: object = None) -> web.Response:
    """Discord's JSON error body: {message, code} and, for form errors, `errors`."""
    body: dict[str, object] = {"message": message, "code": code}
    if errors is not None:
        body["errors"] = errors
    return json_response(body, status)
