"""Which of a schema's fields a payload fills: its key sets compared, recursively, with
the OpenAPI schema (openapi_check.py's specs) or the docs' field tables (event_fields.py).

A walk follows the payload, not the schema: an object is matched to its schema (a
`$ref` followed, `allOf` merged, the `oneOf`/`anyOf` branch chosen that the value
validates against, as openapi_check chooses one to report), its keys recorded as
filled, and each non-null value the schema describes walked in turn; arrays are walked
item by item, under `path[]`. So a nested object is only counted where the fake sends
one, and a field the fake leaves out is counted once, at the object that lacks it.
Each object seen is kept as a `Fill`, keyed by (path, schema name): the root's path is
"", an item of a root array is "[]".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ibot.testing.fake_discord.event_fields import TABLES, UNIONS, Table
from ibot.testing.openapi_check import OpenApiSpec

Json = Any
_SCHEMAS = "#/components/schemas/"


@dataclass
class Fill:
    """One kind of object at one place of a payload, over every instance seen there."""

    name: str  # the schema's or table's name: "MessageResponse", "partial GuildMember"
    required: frozenset[str]
    optional: frozenset[str]
    filled: set[str] = field(default_factory=set)  # keys present in at least one instance
    always: set[str] | None = None  # keys present in every instance
    instances: int = 0
    extra: set[str] = field(default_factory=set)  # keys neither lists

    def add(self, keys: set[str]) -> None:
        self.instances += 1
        self.filled |= keys
        self.always = set(keys) if self.always is None else self.always & keys
        self.extra |= keys - self.required - self.optional

    @property
    def required_filled(self) -> set[str]:
        return set(self.required) & (self.always or set())

    @property
    def optional_left_out(self) -> list[str]:
        return sorted(self.optional - self.filled)


Fills = dict[tuple[str, str], Fill]


def _record(fills: Fills, path: str, name: str, required: set[str], optional: set[str]) -> Fill:
    fill = fills.get((path, name))
    if fill is None:
        fill = fills[(path, name)] = Fill(name, frozenset(required), frozenset(optional))
    return fill


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# -- OpenAPI schemas ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Shape:
    """An object schema as it applies to one value: its fields, those required, and
    where each field's own schema is."""

    name: str
    required: frozenset[str]
    properties: Mapping[str, str]  # field → pointer of its schema


def schema_name(pointer: str) -> str:
    """ "#/components/schemas/MessageResponse" → "MessageResponse"; a schema written
    inline is named by the component (or the operation) that holds it."""
    if pointer.startswith(_SCHEMAS):
        head, _, rest = pointer.removeprefix(_SCHEMAS).partition("/")
        return f"{head} (inline)" if rest else head
    return "(inline)"


_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array"}


def _json_type(value: Json) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "object"
    return _TYPES.get(type(value), "object")


def _accepts(node: Json, value: Json) -> bool:
    """Whether the schema's own `type` (if any) lets `value`'s type through."""
    if not isinstance(node, dict) or "type" not in node:
        return True
    allowed = node["type"] if isinstance(node["type"], list) else [node["type"]]
    kind = _json_type(value)
    return kind in allowed or (kind == "integer" and "number" in allowed)


def _branch(spec: OpenApiSpec, pointer: str, key: str, value: Json) -> str | None:
    """The pointer of the `oneOf`/`anyOf` branch at `pointer` that `value` is: the only
    one its type fits, else the first it validates against, else the nearest."""
    branches = spec.resolve(pointer)[key]
    fitting = []
    for index, branch in enumerate(branches):
        node, _ = spec.deref(branch, f"{pointer}/{key}/{index}")
        if _accepts(node, value):
            fitting.append(f"{pointer}/{key}/{index}")
    if len(fitting) <= 1:
        return fitting[0] if fitting else None
    errors = {candidate: len(spec.validate(candidate, value)) for candidate in fitting}
    return min(fitting, key=lambda candidate: errors[candidate])


def shape(spec: OpenApiSpec, pointer: str, value: Json) -> Shape | None:
    """The object schema at `pointer` as it applies to `value` (a dict); None when the
    schema lists no properties (a map, or any object)."""
    node, pointer = spec.deref(spec.resolve(pointer), pointer)
    if not isinstance(node, dict):
        return None
    properties = {
        key: f"{pointer}/properties/{key.replace('~', '~0').replace('/', '~1')}"
        for key in node.get("properties") or {}
    }
    required = set(node.get("required") or [])
    name = schema_name(pointer)
    parts = [f"{pointer}/allOf/{i}" for i in range(len(node.get("allOf") or []))]
    for key in ("oneOf", "anyOf"):
        if key in node:
            chosen = _branch(spec, pointer, key, value)
            if chosen is not None:
                parts.append(chosen)
    for part in parts:
        sub = shape(spec, part, value)
        if sub is None:
            continue
        if not node.get("properties") and len(parts) == 1:
            name = sub.name  # a wrapper ({anyOf: [X, null]}): X's name
        properties = {**sub.properties, **properties}
        required |= sub.required
    if not properties:
        return None
    return Shape(name, frozenset(required), properties)


def items_pointer(spec: OpenApiSpec, pointer: str, value: list[Json]) -> str | None:
    """The pointer of the items' schema of the array schema at `pointer`."""
    node, pointer = spec.deref(spec.resolve(pointer), pointer)
    if not isinstance(node, dict):
        return None
    if "items" in node:
        return f"{pointer}/items"
    for key in ("oneOf", "anyOf", "allOf"):
        for index, branch in enumerate(node.get(key) or []):
            sub, _ = spec.deref(branch, f"{pointer}/{key}/{index}")
            if _accepts(sub, value) and isinstance(sub, dict) and sub.get("type") != "null":
                found = items_pointer(spec, f"{pointer}/{key}/{index}", value)
                if found is not None:
                    return found
    return None


def walk_schema(spec: OpenApiSpec, pointer: str, value: Json, path: str, fills: Fills) -> None:
    """Record the objects of `value` (described by the schema at `pointer`) in `fills`."""
    if isinstance(value, list):
        items = items_pointer(spec, pointer, value)
        if items is not None:
            for item in value:
                walk_schema(spec, items, item, f"{path}[]", fills)
        return
    if not isinstance(value, dict):
        return
    found = shape(spec, pointer, value)
    if found is None:
        return
    fields = set(found.properties) | found.required
    fill = _record(fills, path, found.name, set(found.required), fields - found.required)
    fill.add(set(value))
    for key, item in value.items():
        if key in found.properties and item is not None:
            walk_schema(spec, found.properties[key], item, _join(path, key), fills)


# -- the docs' field tables (gateway events) ---------------------------------------------


def walk_table(kind: str, value: Json, path: str, parent: Json, fills: Fills) -> None:
    """As `walk_schema`, for a value of an event_fields type (a table, `partial X`,
    `array<X>`, `map<X>`, a union or a scalar), unions chosen as event_check does."""
    if value is None:
        return
    if kind.startswith("array<") and isinstance(value, list):
        for item in value:
            walk_table(kind[len("array<") : -1], item, f"{path}[]", value, fills)
    elif kind.startswith("map<") and isinstance(value, dict):
        for item in value.values():
            walk_table(kind[len("map<") : -1], item, f"{path}{{}}", value, fills)
    elif kind.startswith("partial ") and isinstance(value, dict):
        _table(TABLES[kind[len("partial ") :]], value, path, fills, partial=True)
    elif kind in UNIONS:
        chosen = union_case(kind, value, parent)
        if chosen is not None:
            walk_table(chosen, value, path, parent, fills)
    elif kind in TABLES and isinstance(value, dict):
        _table(TABLES[kind], value, path, fills, partial=False)


def union_case(kind: str, value: Json, parent: Json) -> str | None:
    """The type a union stands for here (None: "any", not described)."""
    union = UNIONS[kind]
    holder = parent if union.on_parent else value
    key = holder.get(union.key) if isinstance(holder, dict) else None
    hashable = isinstance(key, str | int | bool) or key is None
    chosen = union.cases.get(key, union.default) if hashable else union.default
    return None if chosen == "any" else chosen


def root_table_name(kind: str, value: Json) -> str | None:
    """The table an event's `d` is (its row in the report); None for "any"."""
    while kind in UNIONS:
        chosen = union_case(kind, value, None)
        if chosen is None:
            return None
        kind = chosen
    if kind.startswith("partial "):
        return kind
    return kind if kind in TABLES else None


def _table(table: Table, value: dict[str, Json], path: str, fills: Fills, *, partial: bool) -> None:
    required = set() if partial else {k for k, f in table.fields.items() if f.required}
    optional = set(table.fields) - required
    name = f"partial {table.name}" if partial else table.name
    _record(fills, path, name, required, optional).add(set(value))
    for key, item in value.items():
        spec_field = table.fields.get(key)
        if spec_field is not None and item is not None:
            walk_table(spec_field.type, item, _join(path, key), value, fills)
