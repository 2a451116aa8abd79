"""Discord's limits on a message body, answered with Discord's 400s.

A bot that ignores them works against a lenient fake and fails in production, so every
route that writes a message (channel messages, interaction responses, webhook
follow-ups and edits) checks its body here, the same way: content length, the embed
limits (per field, 10 embeds, 6000 characters in all), the empty message, and the
number and total size of uploaded files. The error bodies are Discord's: 50035 Invalid
Form Body with per-field `errors`, 50006 for an empty message, 40005 for too many bytes.
These checks only read the body; storing files and messages is the callers' business.
"""

from __future__ import annotations

from ibot.testing.fake_discord.constants import (
    CANNOT_SEND_EMPTY_MESSAGE,
    INVALID_FORM_BODY,
    MAX_AUTHOR_NAME,
    MAX_CONTENT,
    MAX_EMBED_DESCRIPTION,
    MAX_EMBED_FIELDS,
    MAX_EMBED_TITLE,
    MAX_EMBED_TOTAL,
    MAX_EMBEDS,
    MAX_FIELD_NAME,
    MAX_FIELD_VALUE,
    MAX_FILES,
    MAX_FOOTER_TEXT,
    MAX_UPLOAD_BYTES,
    REQUEST_ENTITY_TOO_LARGE,
)
from ibot.testing.fake_discord.model import Json, StoredAttachment
from ibot.testing.fake_discord.wire import ApiError, Upload


def check_uploads(uploads: list[Upload]) -> None:
    """At most 10 files, and at most 10 MiB uploaded in all."""
    if len(uploads) > MAX_FILES:
        raise ApiError(400, INVALID_FORM_BODY, "Invalid Form Body", {"files": "max 10"})
    if sum(len(u.data) for u in uploads) > MAX_UPLOAD_BYTES:
        raise ApiError(413, REQUEST_ENTITY_TOO_LARGE, "Request entity too large")


def validate_message(body: Json, files: list[StoredAttachment], *, creating: bool) -> None:
    """Discord's 400s for message bodies: length limits and empty messages."""
    errors: Json = {}
    content = body.get("content")
    if too_long(content, MAX_CONTENT):
        errors["content"] = _form_error(f"Must be {MAX_CONTENT} or fewer in length.")
    embeds = body.get("embeds") or []
    if len(embeds) > MAX_EMBEDS:
        errors["embeds"] = _form_error(f"Must be {MAX_EMBEDS} or fewer in length.")
    total = 0
    for index, embed in enumerate(embeds):
        problems = _embed_problems(embed)
        total += embed_size(embed)
        if problems:
            errors.setdefault("embeds", {})[str(index)] = problems
    if total > MAX_EMBED_TOTAL:
        errors.setdefault("embeds", {})["_errors"] = [
            {
                "code": "MAX_EMBED_SIZE_EXCEEDED",
                "message": "Embed size exceeds maximum size of 6000",
            }
        ]
    if errors:
        raise ApiError(400, INVALID_FORM_BODY, "Invalid Form Body", errors)
    if creating and not (
        content
        or embeds
        or files
        or body.get("sticker_ids")
        or body.get("components")
        or body.get("poll")
    ):
        raise ApiError(400, CANNOT_SEND_EMPTY_MESSAGE, "Cannot send an empty message")


def too_long(value: object, limit: int) -> bool:
    return isinstance(value, str) and len(value) > limit


def embed_size(embed: Json) -> int:
    """Characters Discord counts toward the 6000 total of a message's embeds."""
    size = len(embed.get("title") or "") + len(embed.get("description") or "")
    size += len((embed.get("footer") or {}).get("text") or "")
    size += len((embed.get("author") or {}).get("name") or "")
    for item in embed.get("fields") or []:
        size += len(item.get("name") or "") + len(item.get("value") or "")
    return size


def _form_error(message: str) -> Json:
    return {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH", "message": message}]}


def _embed_problems(embed: Json) -> Json:
    problems: Json = {}
    limits = {"title": MAX_EMBED_TITLE, "description": MAX_EMBED_DESCRIPTION}
    for key, limit in limits.items():
        if too_long(embed.get(key), limit):
            problems[key] = _form_error(f"Must be {limit} or fewer in length.")
    if too_long((embed.get("footer") or {}).get("text"), MAX_FOOTER_TEXT):
        problems["footer"] = {"text": _form_error(f"Must be {MAX_FOOTER_TEXT} or fewer in length.")}
    if too_long((embed.get("author") or {}).get("name"), MAX_AUTHOR_NAME):
        problems["author"] = {"name": _form_error(f"Must be {MAX_AUTHOR_NAME} or fewer in length.")}
    fields = embed.get("fields") or []
    if len(fields) > MAX_EMBED_FIELDS:
        problems["fields"] = _form_error(f"Must be {MAX_EMBED_FIELDS} or fewer in length.")
    for index, item in enumerate(fields):
        if too_long(item.get("name"), MAX_FIELD_NAME) or too_long(
            item.get("value"), MAX_FIELD_VALUE
        ):
            problems.setdefault("fields", {})[str(index)] = _form_error(
                f"name ≤ {MAX_FIELD_NAME}, value ≤ {MAX_FIELD_VALUE}"
            )
    return problems
