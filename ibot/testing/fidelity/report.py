"""The report's rows: per spec route (or gateway event) the fakes serve, how many of its
fields their payloads fill; per family the bot uses, the routes and events they leave out.

Routes are matched to the specs' operations with openapi_check's own `operation()`, and
a response body to its schema with its `response_schemas()`, so "covered" means what
the spec checks mean by it. The gateway's events are those of the docs' receive-event
table (gateway-events.mdx), their fields those of event_fields.py.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ibot.testing import openapi_check
from ibot.testing.fake_discord.event_fields import EVENTS, TABLES
from ibot.testing.fidelity.fields import (
    Fills,
    items_pointer,
    root_table_name,
    shape,
    walk_schema,
    walk_table,
)
from ibot.testing.fidelity.tour import Exchange, Tour
from ibot.testing.openapi_check import OpenApiSpec

Json = Any
LEFT_OUT_SHOWN = 5  # optional fields (or routes) named per row; the rest are counted
METHODS = ("get", "post", "put", "patch", "delete")
FAKE_DISCORD = Path(__file__).resolve().parents[1] / "fake_discord"
GATEWAY_EVENTS_DOC = openapi_check.SPECS_DIR / "discord-api-docs" / "gateway-events.mdx"

#: The families of Discord's REST routes the bot uses, by path template (first match).
DISCORD_FAMILIES: tuple[tuple[str, str], ...] = (
    ("gateway", r"^/gateway(/bot)?$"),
    ("users", r"^/users/(@me|\{user_id\})$"),
    ("application", r"^(/oauth2)?/applications/(@me|\{application_id\})$"),
    ("commands", r"^/applications/\{application_id\}/(guilds/\{guild_id\}/)?commands"),
    ("guilds & roles", r"^/guilds/\{guild_id\}(/roles(/.*)?)?$"),
    (
        "channels",
        r"^/channels/\{channel_id\}(/typing|/permissions/[^/]+)?$"
        r"|^/guilds/\{guild_id\}/channels$",
    ),
    ("members", r"^/guilds/\{guild_id\}/members"),
    ("reactions", r"^/channels/\{channel_id\}/messages/\{message_id\}/reactions"),
    (
        "threads",
        r"^/channels/\{channel_id\}/(messages/\{message_id\}/threads|threads|thread-members"
        r"|users/@me/threads)|^/guilds/\{guild_id\}/threads",
    ),
    ("messages", r"^/channels/\{channel_id\}/(messages|pins)"),
    ("interactions", r"^/interactions/"),
    ("webhooks", r"^/webhooks/|^/(channels/\{channel_id\}|guilds/\{guild_id\})/webhooks$"),
)
#: The bot's routes at OpenAI (paths as the spec writes them, without /v1).
OPENAI_FAMILIES: tuple[tuple[str, str], ...] = (
    ("chat completions", r"^/chat/completions"),
    ("embeddings", r"^/embeddings"),
    ("models", r"^/models"),
)
#: The gateway events of the same families, by name (first match).
EVENT_FAMILIES: tuple[tuple[str, str], ...] = (
    ("session", r"^(READY|RESUMED)$"),
    ("guilds", r"^GUILD_(CREATE|UPDATE|DELETE)$"),
    ("roles", r"^GUILD_ROLE_"),
    ("members", r"^GUILD_MEMBER"),
    ("channels", r"^CHANNEL_"),
    ("threads", r"^THREAD_"),
    ("reactions", r"^MESSAGE_REACTION_"),
    ("messages", r"^MESSAGE_"),
    ("interactions", r"^(INTERACTION_CREATE|APPLICATION_COMMAND_PERMISSIONS_UPDATE)$"),
)
#: Receive events of the docs' table that are opcodes, not dispatches.
_NOT_DISPATCHES = frozenset({"HELLO", "RECONNECT", "INVALID_SESSION", "RATE_LIMITED"})
#: Modules of the fake Discord that name events without dispatching them.
_NOT_DISPATCHING = frozenset({"event_fields.py", "event_check.py", "constants.py"})


def family(name: str, families: tuple[tuple[str, str], ...]) -> str | None:
    return next((f for f, pattern in families if re.search(pattern, name)), None)


@dataclass
class Row:
    """One line of a table: a route (or event) and the schema (or table) its payloads
    were; the counts are of top-level fields, the nested ones summed apart."""

    name: str  # "GET /channels/{channel_id}", "MESSAGE_CREATE"
    family: str
    covered: bool
    schema: str | None = None  # "ThreadResponse", "MessageResponse[]", "MessageCreate"
    note: str = ""  # "no body (204)", "not toured", …
    instances: int = 0
    required: int = 0
    required_filled: int = 0
    optional: int = 0
    optional_filled: int = 0
    required_missing: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)  # optional fields never filled
    nested_optional_left_out: int = 0
    nested_required_missing: int = 0
    extra: list[str] = field(default_factory=list)  # filled, but in neither list

    @property
    def has_fields(self) -> bool:
        return self.schema is not None and self.instances > 0


@dataclass
class Side:
    key: str  # "discord_rest" | "discord_gateway" | "openai"
    title: str
    source: str
    rows: list[Row]
    not_served: dict[str, list[str]]  # family → routes or events the fake leaves out
    unmatched: list[str] = field(default_factory=list)  # served, but not in the spec

    def totals(self) -> dict[str, int]:
        rows = [r for r in self.rows if r.covered and r.has_fields]
        names = {r.name for r in self.rows if r.covered}
        return {
            "covered": len(names),
            "toured": len({r.name for r in self.rows if r.covered and r.note != "not toured"}),
            "not_served": sum(len(v) for v in self.not_served.values())
            + len({r.name for r in self.rows if not r.covered}),
            "required": sum(r.required for r in rows),
            "required_filled": sum(r.required_filled for r in rows),
            "optional": sum(r.optional for r in rows),
            "optional_filled": sum(r.optional_filled for r in rows),
            "nested_optional_left_out": sum(r.nested_optional_left_out for r in rows),
            "nested_required_missing": sum(r.nested_required_missing for r in rows),
        }


@dataclass
class Report:
    sides: list[Side]
    violations: list[str]

    def side(self, key: str) -> Side:
        return next(s for s in self.sides if s.key == key)

    def summary(self) -> str:
        parts = []
        for side in self.sides:
            t = side.totals()
            gateway = side.key == "discord_gateway"
            unit, verb = ("events", "dispatched") if gateway else ("routes", "served")
            nested = t["nested_required_missing"]
            parts.append(
                f"{side.title}: {t['covered']} {unit} {verb} ({t['toured']} toured), "
                f"{t['not_served']} more of the same families not {verb}; required fields "
                f"{_share(t['required_filled'], t['required'], nested)}, optional "
                f"{_share(t['optional_filled'], t['optional'])}"
            )
        departures = len(self.violations)
        return "; ".join(parts) + f"; {departures} spec departure(s) during the tour."

    def to_json(self) -> dict[str, Json]:
        return {
            "sides": {
                side.key: {
                    "title": side.title,
                    "source": side.source,
                    "rows": [asdict(row) for row in side.rows],
                    "not_served": side.not_served,
                    "unmatched": side.unmatched,
                    "totals": side.totals(),
                }
                for side in self.sides
            },
            "violations": self.violations,
            "summary": self.summary(),
        }


def _share(part: int, whole: int, nested_missing: int = 0) -> str:
    percent = 100 * part / whole if whole else 100.0
    nested = f"; {nested_missing} nested missing" if nested_missing else ""
    return f"{percent:.0f} % ({part}/{whole}{nested})"


# -- building the rows ------------------------------------------------------------------


def build(tour: Tour) -> Report:
    discord, openai = openapi_check.discord_spec(), openapi_check.openai_spec()
    sides = [
        _rest_side(
            "discord_rest",
            "Discord REST",
            discord,
            tour.discord_routes,
            [e for e in tour.exchanges if e.side == "discord"],
            DISCORD_FAMILIES,
        ),
        _gateway_side(tour),
        _rest_side(
            "openai",
            "OpenAI",
            openai,
            tour.openai_routes,
            [e for e in tour.exchanges if e.side == "openai"],
            OPENAI_FAMILIES,
        ),
    ]
    return Report(sides, [str(v) for v in tour.violations])


def _row(name: str, fam: str, schema: str, root: str, fills: Fills) -> Row:
    top = fills[(root, schema.removesuffix("[]"))]
    nested = [f for (path, _name), f in fills.items() if path != root]
    return Row(
        name,
        fam,
        True,
        schema,
        instances=top.instances,
        required=len(top.required),
        required_filled=len(top.required_filled),
        optional=len(top.optional),
        optional_filled=len(top.optional & top.filled),
        required_missing=sorted(top.required - top.required_filled),
        left_out=top.optional_left_out,
        nested_optional_left_out=sum(len(f.optional_left_out) for f in nested),
        nested_required_missing=sum(len(f.required - f.required_filled) for f in nested),
        extra=sorted(top.extra),
    )


def _sort_key(method_template: tuple[str, str], families: tuple[tuple[str, str], ...]) -> Json:
    method, template = method_template
    names = [f for f, _ in families]
    fam = family(template, families)
    return (names.index(fam) if fam in names else len(names), template, METHODS.index(method))


def _rest_side(
    key: str,
    title: str,
    spec: OpenApiSpec,
    samples: list[tuple[str, str]],
    exchanges: list[Exchange],
    families: tuple[tuple[str, str], ...],
) -> Side:
    served: set[tuple[str, str]] = set()
    unmatched = []
    for method, sample in samples:
        operation = spec.operation(method, sample)
        if operation is None:
            unmatched.append(f"{method} {sample}")
        else:
            served.add((operation.method.lower(), operation.template))

    # the success answers of each operation: (schema pointer, value, root path) per body
    bodies: dict[tuple[str, str], list[tuple[str, Json, str]]] = {}
    empty: dict[tuple[str, str], set[str]] = {}
    for exchange in exchanges:
        operation = spec.operation(exchange.method, exchange.path)
        if operation is None or not 200 <= exchange.status < 300:
            continue
        op = (operation.method.lower(), operation.template)
        where = f"{exchange.method} {operation.template} {exchange.status} response"
        schemas = openapi_check.response_schemas(spec, operation, exchange.status, where=where)
        pointer = (schemas or {}).get(exchange.media_type)
        if pointer is None or not exchange.bodies:
            empty.setdefault(op, set()).add(str(exchange.status))
            continue
        for body in exchange.bodies:
            if isinstance(body, list):
                items = items_pointer(spec, pointer, body)
                if items is not None:
                    bodies.setdefault(op, []).extend((items, item, "[]") for item in body)
            else:
                bodies.setdefault(op, []).append((pointer, body, ""))

    rows = []
    for op in sorted(served, key=lambda o: _sort_key(o, families)):
        name = f"{op[0].upper()} {op[1]}"
        fam = family(op[1], families) or "other"
        grouped: dict[str, Fills] = {}
        roots: dict[str, str] = {}
        for pointer, value, root in bodies.get(op, []):
            found = shape(spec, pointer, value) if isinstance(value, dict) else None
            label = (found.name if found else "(any)") + ("[]" if root else "")
            roots[label] = root
            walk_schema(spec, pointer, value, root, grouped.setdefault(label, {}))
        for label, fills in grouped.items():
            if (roots[label], label.removesuffix("[]")) in fills:
                rows.append(_row(name, fam, label, roots[label], fills))
            else:
                rows.append(Row(name, fam, True, label, note="any body"))
        if op in empty and not grouped:
            note = f"no body ({', '.join(sorted(empty[op]))})"
            rows.append(Row(name, fam, True, note=note))
        if op not in bodies and op not in empty:
            rows.append(Row(name, fam, True, note="not toured"))

    not_served: dict[str, list[tuple[str, str]]] = {}
    for template, item in spec.document.get("paths", {}).items():
        its_family = family(template, families)
        for method in METHODS:
            if its_family is not None and method in item and (method, template) not in served:
                not_served.setdefault(its_family, []).append((method, template))
    order = [f for f, _ in families]
    return Side(
        key,
        title,
        spec.name,
        rows,
        {
            fam: [
                f"{m.upper()} {t}"
                for m, t in sorted(not_served[fam], key=lambda o: _sort_key(o, families))
            ]
            for fam in sorted(not_served, key=order.index)
        },
        unmatched,
    )


def receive_events() -> list[str]:
    """The dispatch events of gateway-events.mdx's "Receive Events" table, in its order."""
    text = GATEWAY_EVENTS_DOC.read_text()
    table = text.split("## Receive Events", 1)[1].split("\n#", 1)[0]
    names = [
        re.sub(r"\W+", "_", title.strip()).upper()
        for title in re.findall(r"^\| \[([^\]]+)\]\(", table, flags=re.M)
    ]
    return [n for n in names if n not in _NOT_DISPATCHES]


def dispatched_in_source() -> set[str]:
    """Events the fake Discord's own code dispatches: event names written as string
    literals in its modules (the field tables and the intents' list aside)."""
    known = set(EVENTS) | set(receive_events())
    found: set[str] = set()
    for module in sorted(FAKE_DISCORD.glob("*.py")):
        if module.name not in _NOT_DISPATCHING:
            found |= known & set(re.findall(r"\"([A-Z][A-Z_]+)\"", module.read_text()))
    return found


def _gateway_side(tour: Tour) -> Side:
    documented = receive_events()
    seen: dict[str, list[Json]] = {}
    for event, data in tour.frames:
        seen.setdefault(event, []).append(data)
    in_source = dispatched_in_source()
    names = set(seen) | in_source | set(EVENTS)
    order = [f for f, _ in EVENT_FAMILIES]

    def sort_key(name: str) -> Json:
        fam = family(name, EVENT_FAMILIES)
        rank = documented.index(name) if name in documented else len(documented)
        return (order.index(fam) if fam in order else len(order), rank, name)

    rows = []
    for name in sorted(names, key=sort_key):
        fam = family(name, EVENT_FAMILIES) or "other"
        spec = EVENTS.get(name)
        if name in seen and spec is not None:
            grouped: dict[str, Fills] = {}
            for data in seen[name]:
                label = root_table_name(spec.body, data)
                if label is None:
                    continue
                walk_table(spec.body, data, "", None, grouped.setdefault(label, {}))
            for label, fills in grouped.items():
                rows.append(_row(name, fam, label, "", fills))
            if not grouped:
                rows.append(Row(name, fam, True, note="no fields documented"))
        elif name in seen:
            rows.append(Row(name, fam, True, note="no field table"))
        elif name in in_source:
            rows.append(Row(name, fam, True, note="not toured"))
        elif spec is not None:
            table = TABLES.get(spec.body)
            required = sum(f.required for f in table.fields.values()) if table else 0
            optional = len(table.fields) - required if table else 0
            rows.append(
                Row(
                    name,
                    fam,
                    False,
                    spec.body,
                    note="tables only: FakeDiscord.dispatch sends it, checked",
                    required=required,
                    optional=optional,
                )
            )
    not_served: dict[str, list[str]] = {}
    for name in documented:
        its_family = family(name, EVENT_FAMILIES)
        if its_family is not None and name not in names:
            not_served.setdefault(its_family, []).append(name)
    return Side(
        "discord_gateway",
        "Discord gateway",
        "discord-api-docs/gateway-events.mdx; fields: fake_discord/event_fields.py",
        rows,
        {fam: not_served[fam] for fam in sorted(not_served, key=order.index)},
    )


# -- rendering -------------------------------------------------------------------------


def _short(names: list[str], shown: int = LEFT_OUT_SHOWN) -> str:
    text = ", ".join(names[:shown])
    return text + (f" +{len(names) - shown}" if len(names) > shown else "")


def _cells(row: Row) -> list[str]:
    label = f"`{row.name}`" + (f" → {row.schema}" if row.schema else "")
    covered = "yes" if row.covered else "no"
    if not row.has_fields:
        if row.covered:
            return [label, covered, "—", "—", row.note]
        return [label, covered, f"—/{row.required}", f"—/{row.optional}", row.note]
    parts = [_short(row.left_out)] if row.left_out else []
    if row.nested_optional_left_out:
        parts.append(f"{row.nested_optional_left_out} nested")
    if row.nested_required_missing:
        parts.insert(0, f"**{row.nested_required_missing} nested required missing**")
    if row.required_missing:
        parts.insert(0, f"**required: {_short(row.required_missing)}**")
    left = "; ".join(parts) or "—"
    return [
        label,
        covered,
        f"{row.required_filled}/{row.required}",
        f"{row.optional_filled}/{row.optional}",
        left,
    ]


def markdown(report: Report) -> str:
    lines: list[str] = []
    header = "| route or event | covered | required filled / total | optional filled / total "
    header += "| left out (short) |"
    for side in report.sides:
        if lines:
            lines.append("")
        lines += [f"**{side.title}** ({side.source})", "", header, "|---|---|---|---|---|"]
        for row in side.rows:
            lines.append("| " + " | ".join(_cells(row)) + " |")
        for fam, names in side.not_served.items():
            shown = [f"`{n}`" for n in names]
            lines.append(f"| *{fam}: {len(names)} not served* | no | — | — | {_short(shown, 4)} |")
        for name in side.unmatched:
            lines.append(f"| `{name}` | **not in the spec** | — | — | — |")
    lines += ["", report.summary()]
    return "\n".join(lines)
