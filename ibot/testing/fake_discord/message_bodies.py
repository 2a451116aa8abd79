"""A message body the bot sends, taken in the same way by every route that writes one.

On Discord, a channel message (rest.py), an interaction response, a webhook follow-up
and an edit of either (interaction_routes.py) carry files and obey limits alike, so the
steps live here once: the uploaded `files[n]` parts become attachments the fake serves,
named and described by `attachments[n]` of the JSON body; the body is then checked
against Discord's limits (validation.py); an edit is applied to the stored message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ibot.testing.fake_discord.model import Json, StoredAttachment, StoredMessage
from ibot.testing.fake_discord.validation import check_uploads, validate_message
from ibot.testing.fake_discord.wire import RecordedRequest

if TYPE_CHECKING:
    from ibot.testing.fake_discord.server import FakeDiscord


def store_uploads(fake: FakeDiscord, call: RecordedRequest, body: Json) -> list[StoredAttachment]:
    """Turn `files[n]` parts into served attachments, named per body.attachments[n]."""
    described = {
        int(a["id"]): a
        for a in body.get("attachments") or []
        if isinstance(a, dict) and str(a.get("id", "")).isdigit() and int(a["id"]) < 100
    }
    check_uploads(call.files)
    stored = []
    for upload in call.files:
        meta = described.get(upload.index if upload.index is not None else -1, {})
        filename = meta.get("filename") or upload.filename
        att = fake.add_attachment(filename, upload.data)
        att.description = meta.get("description")
        stored.append(att)
    return stored


def new_message_files(
    fake: FakeDiscord, call: RecordedRequest, body: Json
) -> list[StoredAttachment]:
    """The files of a message about to be created, once its body passed the limits."""
    files = store_uploads(fake, call, body)
    validate_message(body, files, creating=True)
    return files


def apply_edit(fake: FakeDiscord, stored: StoredMessage, call: RecordedRequest) -> None:
    """A PATCH of a message (channel or webhook): files, limits, then the edit itself."""
    body = dict(call.json or {})
    files = store_uploads(fake, call, body)
    validate_message(body, files, creating=False)
    fake.message_store.edit(stored, body, files)
