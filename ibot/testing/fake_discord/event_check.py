"""Checks each gateway dispatch's `d` against the docs' field tables (event_fields.py).

Called by the gateway for every dispatch it creates, while the test suite has the spec
checks on (`spec_violations.enabled()`); each departure is recorded as a Violation and
fails the test that caused it. What is checked, recursively through nested objects,
arrays and maps: required fields that are missing, values of the wrong type, null where
the docs' type is not nullable. Fields the tables do not list are allowed (Discord adds
fields before documenting them), except one that looks like a misspelling of a
documented field the object lacks (`gulid_id` for `guild_id`): that is the fake's typo.

`problems()` only returns the departures, for tests of the checker itself.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from ibot.testing import spec_violations
from ibot.testing.fake_discord.event_fields import EVENTS, TABLES, UNIONS, Field, Table
from ibot.testing.spec_violations import Violation

_INDEX = re.compile(r"\[\d+\]")
_SCALARS = frozenset(
    {"snowflake", "string", "integer", "number", "boolean", "timestamp", "null", "any", "object"}
)


def check(event: str, data: Any) -> None:
    """Record every departure of this dispatch from the docs (when the checks are on)."""
    if not spec_violations.enabled():
        return
    for violation in problems(event, data):
        spec_violations.record(violation)


def problems(event: str, data: Any) -> list[Violation]:
    """The departures of `data`, the `d` of a dispatch named `event`, from the docs'
    tables; none for an event the tables do not describe."""
    spec = EVENTS.get(event)
    if spec is None:
        return []
    checker = _Checker(f"GATEWAY {event}")
    checker.value(data, spec.body, "", None, spec.spec)
    return checker.found


class _Checker:
    def __init__(self, where: str) -> None:
        self.where = where
        self.found: list[Violation] = []
        self._seen: set[tuple[str, str]] = set()

    def report(self, path: str, problem: str, spec: str) -> None:
        """Record one departure; the same one in other items of an array is not repeated."""
        field = path or "(root)"
        key = (_INDEX.sub("[*]", field), problem)
        if key not in self._seen:
            self._seen.add(key)
            self.found.append(Violation(self.where, field, problem, spec))

    def value(self, value: Any, kind: str, path: str, parent: Any, spec: str) -> None:
        """Check a non-null `value` against the type `kind`."""
        if kind.startswith("array<"):
            inner = kind[len("array<") : -1]
            if not isinstance(value, list):
                self.report(path, f"expected an array of {inner}, got {_describe(value)}", spec)
                return
            for index, item in enumerate(value):
                self.element(item, inner, f"{path}[{index}]", value, spec)
        elif kind.startswith("map<"):
            inner = kind[len("map<") : -1]
            if not isinstance(value, dict):
                self.report(path, f"expected a map of {inner}, got {_describe(value)}", spec)
                return
            for key, item in value.items():
                self.element(item, inner, f'{path}["{key}"]', value, spec)
        elif kind.startswith("partial "):
            self.table(value, TABLES[kind[len("partial ") :]], path, partial=True)
        elif kind in UNIONS:
            union = UNIONS[kind]
            holder = parent if union.on_parent else value
            key = holder.get(union.key) if isinstance(holder, dict) else None
            chosen = union.cases.get(key, union.default) if _hashable(key) else union.default
            if chosen != "any":
                self.value(value, chosen, path, parent, union.spec)
        elif kind in TABLES:
            self.table(value, TABLES[kind], path, partial=False)
        else:
            alternatives = kind.split("|")
            unknown = [a for a in alternatives if a not in _SCALARS]
            if unknown:
                raise KeyError(f"event_fields: unknown type {kind!r} (at {self.where} {path})")
            if not any(_is(value, a) for a in alternatives):
                self.report(path, f"expected {_expected(kind)}, got {_describe(value)}", spec)

    def element(self, item: Any, kind: str, path: str, parent: Any, spec: str) -> None:
        """An array item or map value: never null in the docs' arrays of X."""
        if item is None:
            self.report(path, f"is null, but the docs' type is {kind}, not nullable", spec)
        else:
            self.value(item, kind, path, parent, spec)

    def table(self, value: Any, table: Table, path: str, *, partial: bool) -> None:
        if not isinstance(value, dict):
            what = f"partial {table.name}" if partial else table.name
            self.report(path, f"expected a {what} object, got {_describe(value)}", table.spec)
            return
        prefix = f"{path}." if path else ""
        for name, field in table.fields.items():
            where = prefix + name
            if name not in value:
                if field.required and not partial:
                    self.report(where, f"missing (required, {_kind(field)})", field.spec)
                continue
            item = value[name]
            if item is None:
                if not field.nullable:
                    problem = f"is null, but the docs' type {field.type} is not nullable"
                    self.report(where, problem, field.spec)
                continue
            self.value(item, field.type, where, value, field.spec)
        for name in value:
            if name in table.fields:
                continue
            meant = _misspelling_of(name, [n for n in table.fields if n not in value])
            if meant is not None:
                self.report(
                    prefix + name,
                    f"not a documented field: a misspelling of {meant!r}?",
                    table.fields[meant].spec,
                )


def _kind(field: Field) -> str:
    return f"?{field.type}" if field.nullable and field.type != "null" else field.type


def _is(value: Any, kind: str) -> bool:
    match kind:
        case "any":
            return True
        case "null":
            return value is None
        case "object":
            return isinstance(value, dict)
        case "boolean":
            return isinstance(value, bool)
        case "integer":
            return isinstance(value, int) and not isinstance(value, bool)
        case "number":
            return isinstance(value, int | float) and not isinstance(value, bool)
        case "string":
            return isinstance(value, str)
        case "snowflake":  # "Discord utilizes Twitter's snowflake format… as strings"
            return isinstance(value, str) and value.isascii() and value.isdigit()
        case "timestamp":
            if not isinstance(value, str):
                return False
            try:
                datetime.fromisoformat(value)
            except ValueError:
                return False
            return True
    return False


def _expected(kind: str) -> str:
    names = {
        "snowflake": "a snowflake (a string of digits)",
        "timestamp": "an ISO8601 timestamp (a string)",
        "object": "an object",
    }
    return " or ".join(names.get(k, k) for k in kind.split("|"))


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(value).__name__} {text}"


def _hashable(value: Any) -> bool:
    return isinstance(value, str | int | bool) or value is None


def _misspelling_of(name: str, candidates: list[str]) -> str | None:
    """The documented field `name` is one edit away from (a letter wrong, missing, extra
    or two swapped), for names long enough that one edit is a typo, not another word."""
    if len(name) < 5:
        return None
    for candidate in candidates:
        if _one_edit_apart(name, candidate):
            return candidate
    return None


def _one_edit_apart(a: str, b: str) -> bool:
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        if len(diff) == 1:
            return True
        i, j = diff[0], diff[-1]
        return len(diff) == 2 and j == i + 1 and a[i] == b[j] and a[j] == b[i]
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return any(long_[:i] + long_[i + 1 :] == short for i in range(len(long_)))
