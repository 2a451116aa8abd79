"""REST routes of an interaction: the callback, and the webhook its token opens.

`POST /interactions/{id}/{token}/callback` acknowledges a slash command or a button
click (types 6 and 7, for clicks only, update the button's message); then
`/webhooks/{app}/{token}` creates follow-ups and reads, edits and deletes the original
response and the follow-ups. None of them takes the bot token: the interaction's token
authorizes them, and what they may do depends on the interaction's state (acknowledged
in time, only once, deferred or not; interactions.py lists the rules) rather than on
channels, so they are kept apart from the channel and message routes. RestApi
(rest.py) routes to the methods here; the message bodies go through message_bodies.py
like every other message the bot writes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from ibot.testing.fake_discord.constants import (
    INTERACTION_ALREADY_ACKNOWLEDGED,
    INVALID_FORM_BODY,
    INVALID_WEBHOOK_TOKEN,
    UNKNOWN_INTERACTION,
    UNKNOWN_MESSAGE,
    UNKNOWN_WEBHOOK,
    InteractionCallback,
    MessageFlag,
)
from ibot.testing.fake_discord.interactions import InteractionHandle
from ibot.testing.fake_discord.message_bodies import (
    apply_edit,
    new_message_files,
    store_uploads,
)
from ibot.testing.fake_discord.model import Json, StoredMessage
from ibot.testing.fake_discord.validation import check_choices, leaf_error, validate_message
from ibot.testing.fake_discord.wire import ApiError, RecordedRequest, json_response, no_content

if TYPE_CHECKING:
    from ibot.testing.fake_discord.server import FakeDiscord


class InteractionRoutes:
    """Interaction callback and webhook routes of one FakeDiscord."""

    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake

    async def callback(self, call: RecordedRequest, iid: str, token: str) -> web.Response:
        fake = self.fake
        handle = fake._interactions_by_id.get(int(iid))
        if handle is None or handle.token != token:
            raise ApiError(404, UNKNOWN_INTERACTION, "Unknown interaction")
        if fake.clock() - handle.created_at > fake.ack_window_s:
            handle.rejected.append(("callback", UNKNOWN_INTERACTION))
            raise ApiError(404, UNKNOWN_INTERACTION, "Unknown interaction")
        if handle.callbacks:
            handle.rejected.append(("callback", INTERACTION_ALREADY_ACKNOWLEDGED))
            raise ApiError(
                400, INTERACTION_ALREADY_ACKNOWLEDGED, "Interaction has already been acknowledged."
            )
        body = dict(call.json or {})
        data = dict(body.get("data") or {})
        kind = body.get("type")
        if kind == InteractionCallback.AUTOCOMPLETE_RESULT:
            check_choices(data.get("choices"), ("data", "choices"))
        updating = kind in (
            InteractionCallback.DEFERRED_UPDATE_MESSAGE,
            InteractionCallback.UPDATE_MESSAGE,
        )
        if updating and handle.component_message is None:
            # "Only valid for component-based interactions" (Interaction Callback Type).
            handle.rejected.append(("callback", INVALID_FORM_BODY))
            raise ApiError(
                400,
                INVALID_FORM_BODY,
                "Invalid Form Body",
                {
                    "type": leaf_error(
                        "INTERACTION_CALLBACK_TYPE_INVALID",
                        "Only valid for component-based interactions",
                    )
                },
            )
        if kind == InteractionCallback.UPDATE_MESSAGE:
            # "For components, edit the message the component was attached to".
            target = handle.component_message
            assert target is not None
            if target.deleted:
                raise ApiError(404, UNKNOWN_MESSAGE, "Unknown Message")
            files = store_uploads(fake, call, data)
            validate_message(data, files, creating=False)
            fake.message_store.edit(target, data, files)
            handle.updates.append(data)
        elif kind == InteractionCallback.CHANNEL_MESSAGE_WITH_SOURCE:
            files = new_message_files(fake, call, data)
            handle.original = fake.message_store.create_for_interaction(
                handle, data, files, original=True
            )
        elif kind == InteractionCallback.DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE:
            flags = MessageFlag.LOADING | (int(data.get("flags") or 0) & MessageFlag.EPHEMERAL)
            handle.original = fake.message_store.create_for_interaction(
                handle, {"flags": flags}, [], original=True
            )
        handle.callbacks.append(body)
        if call.query.get("with_response") in ("true", "1"):
            interaction = {"id": iid, "type": handle.kind}
            if kind == InteractionCallback.DEFERRED_UPDATE_MESSAGE:
                # No resource: openapi.json's InteractionCallbackResponse has one only for
                # a message created (4) or updated (7), or an activity launched (12).
                return json_response({"interaction": interaction})
            resource: Json = {"type": kind}
            if kind == InteractionCallback.UPDATE_MESSAGE and handle.component_message:
                resource["message"] = handle.component_message.data
            elif handle.original is not None:
                resource["message"] = handle.original.data
            return json_response({"interaction": interaction, "resource": resource})
        return no_content()

    async def followup(self, call: RecordedRequest, app: str, token: str) -> web.Response:
        fake = self.fake
        handle = self._by_token(app, token)
        if not handle.acknowledged:
            handle.rejected.append(("followup", UNKNOWN_WEBHOOK))
            raise ApiError(404, UNKNOWN_WEBHOOK, "Unknown Webhook")
        body = dict(call.json or {})
        files = new_message_files(fake, call, body)
        original = handle.original
        if (
            original is not None
            and original.loading
            and not original.deleted
            and not handle.followups
        ):
            # The first follow-up after a deferral fills the "thinking…" message and
            # keeps its ephemerality (the flags asked for here are ignored): "The
            # ephemeral flag will be ignored, and the value you provided in the initial
            # defer response will be preserved, as an existing message's ephemeral state
            # cannot be changed" (receiving-and-responding.mdx, Create Followup Message).
            # A deleted placeholder no longer exists and cannot be edited: the follow-up
            # is then a new message with the flags it asks for.
            body["flags"] = original.flags & MessageFlag.EPHEMERAL
            fake.message_store.edit(original, body, files, replace_attachments=True)
            stored = original
        else:
            stored = fake.message_store.create_for_interaction(handle, body, files, original=False)
        handle.followups.append(stored)
        if call.query.get("wait") in ("1", "true", "True"):
            return json_response(stored.data)
        return no_content()

    async def get_webhook_message(
        self, call: RecordedRequest, app: str, token: str, mid: str
    ) -> web.Response:
        handle = self._by_token(app, token)
        return json_response(self._webhook_message(handle, mid).data)

    async def edit_webhook_message(
        self, call: RecordedRequest, app: str, token: str, mid: str
    ) -> web.Response:
        handle = self._by_token(app, token)
        stored = self._webhook_message(handle, mid)
        apply_edit(self.fake, stored, call)
        if stored is handle.component_message:
            handle.updates.append(dict(call.json or {}))
        return json_response(stored.data)

    async def delete_webhook_message(
        self, call: RecordedRequest, app: str, token: str, mid: str
    ) -> web.Response:
        handle = self._by_token(app, token)
        self.fake.message_store.delete(self._webhook_message(handle, mid))
        return no_content()

    # -- lookups -------------------------------------------------------------------

    def _by_token(self, app: str, token: str) -> InteractionHandle:
        """The interaction whose token this is, while the token lives: 15 minutes after
        the interaction, Discord answers 401 Invalid Webhook Token (50027)."""
        fake = self.fake
        handle = fake._interactions_by_token.get(token)
        if handle is None or int(app) != fake.application_id:
            raise ApiError(404, UNKNOWN_WEBHOOK, "Unknown Webhook")
        if fake.clock() - handle.created_at > fake.token_lifetime_s:
            handle.rejected.append(("webhook", INVALID_WEBHOOK_TOKEN))
            raise ApiError(401, INVALID_WEBHOOK_TOKEN, "Invalid Webhook Token")
        return handle

    def _webhook_message(self, handle: InteractionHandle, mid: str) -> StoredMessage:
        if mid == "@original" and handle.updates_message:
            # After a type 6 or 7 the original response is the button's message.
            stored = handle.component_message
        elif mid == "@original":
            stored = handle.original
        else:
            stored = next((m for m in handle.messages if m.id == int(mid)), None)
        if stored is None or stored.deleted:
            raise ApiError(404, UNKNOWN_MESSAGE, "Unknown Message")
        return stored
