"""Reading what a client sent: the one place that knows the shape of a request body.

A route reads its JSON here and gets back a typed view (`ChatRequest`) or a `BadRequest`,
which the server answers with OpenAI's 400. Checks that a request is well formed belong
here (validating against OpenAI's OpenAPI spec will too), so that the rest of the fake
works on requests already accepted. The raw body is kept as well: it is what the records
show and what a scripted answer function receives.

The view reads each field when it is used, not up front, so a malformed optional field
fails only the step that needs it (a request that does not stream ignores
stream_options).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

DEFAULT_MAX_TOKENS = 4096


class BadRequest(Exception):
    """A request the API refuses with 400 invalid_request_error and this `code`."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


async def read_json_body(request: web.Request) -> Any:
    """The request's JSON, or {} when it is not JSON (then the checks below refuse it)."""
    try:
        return await request.json()
    except json.JSONDecodeError:
        return {}


@dataclass(frozen=True)
class ChatRequest:
    """A /v1/chat/completions body that has 'model' and 'messages'."""

    body: dict[str, Any]

    @property
    def model(self) -> str:
        """The model asked for (an alias such as gpt-4o, or a dated snapshot)."""
        model: str = self.body["model"]
        return model

    @property
    def messages(self) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = self.body["messages"]
        return messages

    @property
    def max_tokens(self) -> int:
        """The completion's cap: max_completion_tokens, else the legacy max_tokens."""
        return int(
            self.body.get("max_completion_tokens")
            or self.body.get("max_tokens")
            or DEFAULT_MAX_TOKENS
        )

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    @property
    def include_usage(self) -> bool:
        """stream_options.include_usage: a last chunk carries the usage."""
        return bool((self.body.get("stream_options") or {}).get("include_usage"))


def parse_chat_request(body: dict[str, Any]) -> ChatRequest:
    """`body` as a chat request, or BadRequest when 'model' or 'messages' is missing."""
    if not isinstance(body.get("messages"), list) or not body.get("model"):
        raise BadRequest("'model' and 'messages' are required", "missing_required")
    return ChatRequest(body)


def image_size(image_url: dict[str, Any]) -> tuple[int, int]:
    """(width, height) of an `image_url` content part's image; BadRequest if unreadable.

    Only base64 data URLs are accepted: the fake fetches nothing from the network.
    """
    from PIL import Image

    url = image_url.get("url", "")
    if not url.startswith("data:"):
        raise BadRequest("image_url must be a base64 data URL in this fake", "invalid_image")
    try:
        data = base64.b64decode(url.split(",", 1)[1], validate=True)
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
    except (binascii.Error, IndexError, OSError) as exc:
        raise BadRequest(f"invalid image data: {exc}", "invalid_image") from None
    return width, height
