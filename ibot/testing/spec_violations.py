"""Where the project's fake servers report a departure from the published API specs.

The fake Discord and the fake OpenAI check what they send and receive against Discord's
and OpenAI's own specifications (../shared/specs/). A check that fails inside a server
cannot raise into the test that caused it (it runs in the server's request handler, or
in the gateway's writer task), so it is recorded here instead, and the suite's autouse
fixture (tests/conftest.py) fails the test that caused it, naming each violation.

Outside the test suite (the demo, `ibot run` against the fakes) nothing reads the
list: the checks only run when a test turns them on.
"""

from __future__ import annotations

from dataclasses import dataclass

_violations: list[Violation] = []
_enabled = False


@dataclass(frozen=True, slots=True)
class Violation:
    """One departure: where (route or event), what (the field's path in the payload and
    what is wrong) and which part of which spec says otherwise."""

    where: str  # "POST /channels/{channel.id}/messages 200 response", "GATEWAY READY"…
    field: str  # a JSON path in the payload: "embeds[0].title", "(root)"
    problem: str
    spec: str  # "discord-api-spec/openapi.json #/components/schemas/MessageResponse"

    def __str__(self) -> str:
        return f"{self.where}: {self.field}: {self.problem} (spec: {self.spec})"


def enable(on: bool = True) -> None:
    """Turn the checks on (the test suite does, for every test)."""
    global _enabled
    _enabled = on


def enabled() -> bool:
    return _enabled


def record(violation: Violation) -> None:
    _violations.append(violation)


def drain() -> list[Violation]:
    """The violations recorded since the last drain, oldest first; the list is emptied."""
    found = list(_violations)
    _violations.clear()
    return found
