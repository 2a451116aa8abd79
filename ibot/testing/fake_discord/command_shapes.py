"""Application commands as Discord stores and returns them, not as the bot sent them.

Discord does not echo a registration back: it answers (and lists) the command it made
of it (application-commands.mdx, Application Command Object; the OpenAPI file's
`ApplicationCommandResponse`), and a library that syncs by comparing its local
commands with the fetched ones re-registers on every start when it cannot match them.
So the fake reshapes every registration the same way:

- every field Discord always answers: `id`, `application_id`, `version`, `type`
  (default 1), `name`, `description` ("" for user and message commands),
  `default_member_permissions` (a bit-set string, or null), `nsfw` (default false),
  `integration_types` (default `[0]`, guild install), `contexts` (as given, else null:
  Discord answers null rather than "all contexts"), `dm_permission` for a global
  command (deprecated: from `contexts` when given), `guild_id` for a guild command;
- localizations as given (`name_localizations`, `description_localizations`, and a
  choice's `name_localizations`; null when none), except the values identical to the
  default, which "will be ignored" (Localization);
- options normalised: `required` and `autocomplete` only when true, `channel_types`
  sorted, the localization keys always present, sub-command options likewise;
- `version` changes only when the stored command does ("Autoincrementing version
  identifier updated during substantial record changes").

A list read without `with_localizations=true` has `name_localized` and
`description_localized` (for the requester's locale) instead of the dictionaries
(Retrieving localized commands).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ibot.testing.fake_discord.model import Json

#: The requester's locale when a list is read without `with_localizations`: the fake
#: bot user's settings locale (GET /users/@me answers "fr").
DEFAULT_LOCALE = "fr"

_CONTEXT_BOT_DM = 1
_SAME_WHEN_EQUAL = ("id", "version")


def reshape(
    body: Json,
    *,
    guild_id: int | None,
    application_id: int,
    command_id: int,
    previous: Json | None,
    next_version: Callable[[], int],
) -> Json:
    """The command Discord stores for this registration body (see the module doc)."""
    kind = int(body.get("type") or 1)
    name = str(body.get("name", ""))
    description = str(body.get("description") or "")
    contexts = body.get("contexts")
    command: Json = {
        "id": str(command_id),
        "application_id": str(application_id),
        "version": "",
        "default_member_permissions": _permissions(body.get("default_member_permissions")),
        "type": kind,
        "name": name,
        "name_localizations": _localizations(body.get("name_localizations"), name),
        "description": description,
        "description_localizations": _localizations(
            body.get("description_localizations"), description
        ),
    }
    if guild_id is not None:
        command["guild_id"] = str(guild_id)
    else:
        dm = _CONTEXT_BOT_DM in contexts if contexts is not None else body.get("dm_permission")
        command["dm_permission"] = True if dm is None else bool(dm)
    command["contexts"] = list(contexts) if contexts is not None else None
    command["integration_types"] = list(body.get("integration_types") or [0])
    options = [_option(o) for o in body.get("options") or []]
    if options:
        command["options"] = options
    command["nsfw"] = bool(body.get("nsfw", False))
    if previous is not None and _same(previous, command):
        command["version"] = previous["version"]
    else:
        command["version"] = str(next_version())
    return command


def localized_view(command: Json, locale: str = DEFAULT_LOCALE) -> Json:
    """A listed command without its localization dictionaries: `name_localized` and
    `description_localized` for `locale` where it has one, in options too."""
    return _localized(command, locale)


def _localized(node: Json, locale: str) -> Json:
    out: Json = {}
    for key, value in node.items():
        if key in ("name_localizations", "description_localizations"):
            found = (value or {}).get(locale)
            if found is not None:
                out[key.removesuffix("izations") + "ized"] = found
        elif key in ("options", "choices") and isinstance(value, list):
            out[key] = [_localized(item, locale) for item in value]
        else:
            out[key] = value
    return out


def _same(previous: Json, command: Json) -> bool:
    def strip(c: Json) -> Json:
        return {k: v for k, v in c.items() if k not in _SAME_WHEN_EQUAL}

    return strip(previous) == strip(command)


def _permissions(value: Any) -> str | None:
    return None if value is None else str(int(value))


def _localizations(value: Any, default: str) -> dict[str, str] | None:
    """As given, less the values identical to the default; null when none is left."""
    if not value:
        return None
    kept = {str(locale): str(text) for locale, text in value.items() if text != default}
    return kept or None


def _option(option: Json) -> Json:
    name = str(option.get("name", ""))
    description = str(option.get("description") or "")
    out: Json = {
        "type": int(option["type"]),
        "name": name,
        "name_localizations": _localizations(option.get("name_localizations"), name),
        "description": description,
        "description_localizations": _localizations(
            option.get("description_localizations"), description
        ),
    }
    if option.get("required"):
        out["required"] = True
    if option.get("choices"):
        out["choices"] = [
            {
                "name": str(c["name"]),
                "name_localizations": _localizations(c.get("name_localizations"), str(c["name"])),
                "value": c["value"],
            }
            for c in option["choices"]
        ]
    if option.get("channel_types"):
        out["channel_types"] = sorted(int(t) for t in option["channel_types"])
    for key in ("min_value", "max_value", "min_length", "max_length"):
        if option.get(key) is not None:
            out[key] = option[key]
    if option.get("autocomplete"):
        out["autocomplete"] = True
    if option.get("options"):
        out["options"] = [_option(o) for o in option["options"]]
    return out
