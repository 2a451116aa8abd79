"""Discord's limits on a message body, answered with Discord's 400s.

A bot that ignores them works against a lenient fake and fails in production, so every
route that writes a message (channel messages, interaction responses, webhook
follow-ups and edits) checks its body here, the same way: content length, the embed
limits (per field, 10 embeds, 6000 characters in all), the empty message, and the
number and total size of uploaded files. The error bodies are Discord's: 50035 Invalid
Form Body with per-field `errors`, 50006 for an empty message, 40005 for too many bytes.
These checks only read the body; storing files and messages is the callers' business.

The `errors` object is Discord's tree ("Error Messages" in the docs, `ErrorDetails` in
the OpenAPI file): one key per field down the path, list items by their index as a
string, and at the leaf `{"_errors": [{"code": "BASE_TYPE_MAX_LENGTH", "message":
"Must be 4096 or fewer in length."}]}`. A node holds either `_errors` or sub-fields,
never both: a list that is too long is reported as such, not item by item, and the
6000-character total only once every embed is valid on its own. The same shape answers
an autocomplete result of more than 25 choices (`check_choices`) and a command
registered with more than 25 options or choices (`command_errors`).

Message components (`component_errors`), as openapi.json's
ActionRowComponentForMessageRequest and ButtonComponentForMessageRequest bound them: at
most 5 action rows (without the IS_COMPONENTS_V2 flag, message.mdx), each of 1 to 5
components; a button's `custom_id` 1 to 100 characters, required except on link (style
5, which needs a `url`) and premium buttons, unique within the message; its `label` at
most 80. The codes for a missing field and a duplicate custom_id (BASE_TYPE_REQUIRED,
COMPONENT_CUSTOM_ID_DUPLICATED) are Discord's, though the copied pages do not list them.
"""

from __future__ import annotations

from collections.abc import Sequence

from ibot.testing.fake_discord.constants import (
    CANNOT_SEND_EMPTY_MESSAGE,
    INVALID_FORM_BODY,
    MAX_ACTION_ROWS,
    MAX_AUTHOR_NAME,
    MAX_BUTTON_LABEL,
    MAX_CHOICES,
    MAX_COMMAND_OPTIONS,
    MAX_CONTENT,
    MAX_CUSTOM_ID,
    MAX_EMBED_DESCRIPTION,
    MAX_EMBED_FIELDS,
    MAX_EMBED_TITLE,
    MAX_EMBED_TOTAL,
    MAX_EMBEDS,
    MAX_FIELD_NAME,
    MAX_FIELD_VALUE,
    MAX_FILES,
    MAX_FOOTER_TEXT,
    MAX_ROW_COMPONENTS,
    MAX_UPLOAD_BYTES,
    REQUEST_ENTITY_TOO_LARGE,
    ButtonStyle,
    ComponentType,
    MessageFlag,
)
from ibot.testing.fake_discord.model import Json, StoredAttachment
from ibot.testing.fake_discord.wire import ApiError, Upload


def check_uploads(uploads: list[Upload]) -> None:
    """At most 10 files, and at most 10 MiB uploaded in all."""
    if len(uploads) > MAX_FILES:
        raise ApiError(
            400, INVALID_FORM_BODY, "Invalid Form Body", {"files": max_length(MAX_FILES)}
        )
    if sum(len(u.data) for u in uploads) > MAX_UPLOAD_BYTES:
        raise ApiError(413, REQUEST_ENTITY_TOO_LARGE, "Request entity too large")


def validate_message(body: Json, files: list[StoredAttachment], *, creating: bool) -> None:
    """Discord's 400s for message bodies: length limits and empty messages."""
    errors: Json = {}
    content = body.get("content")
    if too_long(content, MAX_CONTENT):
        errors["content"] = max_length(MAX_CONTENT)
    embeds = body.get("embeds") or []
    if len(embeds) > MAX_EMBEDS:
        errors["embeds"] = max_length(MAX_EMBEDS)
    else:
        per_embed = {str(i): p for i, embed in enumerate(embeds) if (p := _embed_problems(embed))}
        if per_embed:
            errors["embeds"] = per_embed
        elif sum(embed_size(e) for e in embeds) > MAX_EMBED_TOTAL:
            errors["embeds"] = leaf_error(
                "MAX_EMBED_SIZE_EXCEEDED", f"Embed size exceeds maximum size of {MAX_EMBED_TOTAL}"
            )
    components = component_errors(body.get("components"), int(body.get("flags") or 0))
    if components:
        errors["components"] = components
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


def component_errors(components: object, flags: int = 0) -> Json:
    """The `errors` node of a message's `components` (empty when Discord takes them):
    action rows and the buttons in them; other component types are not checked."""
    if not isinstance(components, list):
        return {}
    if not flags & MessageFlag.IS_COMPONENTS_V2 and len(components) > MAX_ACTION_ROWS:
        return max_length(MAX_ACTION_ROWS)
    problems: Json = {}
    seen: set[str] = set()
    for index, row in enumerate(components):
        if not isinstance(row, dict) or row.get("type") != ComponentType.ACTION_ROW:
            continue
        children = row.get("components")
        if not isinstance(children, list) or not 1 <= len(children) <= MAX_ROW_COMPONENTS:
            problems[str(index)] = {"components": bad_length(1, MAX_ROW_COMPONENTS)}
            continue
        per_child: Json = {}
        for position, child in enumerate(children):
            is_button = isinstance(child, dict) and child.get("type") == ComponentType.BUTTON
            if is_button and (found := _button_problems(child, seen)):
                per_child[str(position)] = found
        if per_child:
            problems[str(index)] = {"components": per_child}
    return problems


def _button_problems(button: Json, seen: set[str]) -> Json:
    """One button's problems; `seen` collects the message's custom_ids so far."""
    found: Json = {}
    style = button.get("style")
    custom_id = button.get("custom_id")
    if style == ButtonStyle.LINK:
        if not button.get("url"):
            found["url"] = leaf_error("BASE_TYPE_REQUIRED", "This field is required")
    elif style != ButtonStyle.PREMIUM:
        if custom_id is None:
            found["custom_id"] = leaf_error("BASE_TYPE_REQUIRED", "This field is required")
        elif not isinstance(custom_id, str) or not 1 <= len(custom_id) <= MAX_CUSTOM_ID:
            found["custom_id"] = bad_length(1, MAX_CUSTOM_ID)
        elif custom_id in seen:
            found["custom_id"] = leaf_error(
                "COMPONENT_CUSTOM_ID_DUPLICATED", "Component custom id cannot be duplicated"
            )
        else:
            seen.add(custom_id)
    if too_long(button.get("label"), MAX_BUTTON_LABEL):
        found["label"] = max_length(MAX_BUTTON_LABEL)
    return found


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


def leaf_error(code: str, message: str) -> Json:
    """A field's node in Discord's `errors` tree."""
    return {"_errors": [{"code": code, "message": message}]}


def max_length(limit: int) -> Json:
    """Discord's error for a string or a list longer than `limit`."""
    return leaf_error("BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")


def bad_length(low: int, high: int) -> Json:
    return leaf_error("BASE_TYPE_BAD_LENGTH", f"Must be between {low} and {high} in length.")


def _length_problem(value: object, low: int, high: int) -> Json | None:
    """A required string field: missing (BASE_TYPE_REQUIRED) or of a bad length."""
    if value is None:
        return leaf_error("BASE_TYPE_REQUIRED", "This field is required")
    if not isinstance(value, str) or not low <= len(value) <= high:
        return bad_length(low, high)
    return None


def nested(path: Sequence[str], node: Json) -> Json:
    """`node` at `path` down the tree: ("data", "choices") → {"data": {"choices": node}}."""
    for key in reversed(path):
        node = {key: node}
    return node


def check_choices(choices: object, path: Sequence[str]) -> None:
    """An autocomplete result: at most 25 choices, each name 1 to 100 characters;
    Discord's 400 50035 with the errors at `path` otherwise."""
    if not isinstance(choices, list):
        return
    problems = _choice_problems(choices)
    if problems:
        raise ApiError(400, INVALID_FORM_BODY, "Invalid Form Body", nested(path, problems))


def command_errors(command: Json) -> Json:
    """The `errors` tree for one command body Discord refuses (empty when it is fine):
    name 1-32 and, for a slash command, description 1-100 characters; at most 25
    options (in a sub-command too) and 25 choices per option."""
    errors: Json = {}
    if (problem := _length_problem(command.get("name"), 1, 32)) is not None:
        errors["name"] = problem
    description = _length_problem(command.get("description"), 1, 100)
    if command.get("type", 1) == 1 and description is not None:
        errors["description"] = description
    options = _options_problems(command.get("options") or [])
    if options:
        errors["options"] = options
    return errors


def _options_problems(options: list[Json]) -> Json:
    if len(options) > MAX_COMMAND_OPTIONS:
        return max_length(MAX_COMMAND_OPTIONS)
    problems: Json = {}
    for index, option in enumerate(options):
        found: Json = {}
        if (problem := _length_problem(option.get("description"), 1, 100)) is not None:
            found["description"] = problem
        choices = _choice_problems(option.get("choices") or [])
        if choices:
            found["choices"] = choices
        children = _options_problems(option.get("options") or [])
        if children:
            found["options"] = children
        if found:
            problems[str(index)] = found
    return problems


def _choice_problems(choices: list[Json]) -> Json:
    if len(choices) > MAX_CHOICES:
        return max_length(MAX_CHOICES)
    return {
        str(i): {"name": bad_length(1, 100)}
        for i, choice in enumerate(choices)
        if not isinstance(choice.get("name"), str) or not 1 <= len(choice["name"]) <= 100
    }


def _embed_problems(embed: Json) -> Json:
    problems: Json = {}
    limits = {"title": MAX_EMBED_TITLE, "description": MAX_EMBED_DESCRIPTION}
    for key, limit in limits.items():
        if too_long(embed.get(key), limit):
            problems[key] = max_length(limit)
    if too_long((embed.get("footer") or {}).get("text"), MAX_FOOTER_TEXT):
        problems["footer"] = {"text": max_length(MAX_FOOTER_TEXT)}
    if too_long((embed.get("author") or {}).get("name"), MAX_AUTHOR_NAME):
        problems["author"] = {"name": max_length(MAX_AUTHOR_NAME)}
    fields = embed.get("fields") or []
    if len(fields) > MAX_EMBED_FIELDS:
        problems["fields"] = max_length(MAX_EMBED_FIELDS)
        return problems
    per_field: Json = {}
    for index, item in enumerate(fields):
        found: Json = {}
        if too_long(item.get("name"), MAX_FIELD_NAME):
            found["name"] = max_length(MAX_FIELD_NAME)
        if too_long(item.get("value"), MAX_FIELD_VALUE):
            found["value"] = max_length(MAX_FIELD_VALUE)
        if found:
            per_field[str(index)] = found
    if per_field:
        problems["fields"] = per_field
    return problems
