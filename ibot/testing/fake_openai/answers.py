"""Scripted answers: what the fake "model" says.

A test queues the text it wants (or a function of the request body) with
`fake.script(...)`; once the queue is empty every request gets the default answer, an
echo of the user's last question, so that tests and the offline demo show what the
model was asked without a real model. Choosing the words is kept apart from counting
them (usage.py) and from wrapping them in a response (response_building.py).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

Answer = str | Callable[[dict[str, Any]], str]


class AnswerScript:
    """The queued answers, then the default one."""

    def __init__(self) -> None:
        self._queue: deque[Answer] = deque()
        self.default: Answer = echo_answer

    def queue(self, *answers: Answer) -> None:
        self._queue.extend(answers)

    def next(self, body: dict[str, Any]) -> str:
        """The text of the next answer to the request `body` (the raw JSON)."""
        answer = self._queue.popleft() if self._queue else self.default
        return answer(body) if callable(answer) else answer


def echo_answer(body: dict[str, Any]) -> str:
    """A deterministic default answer that shows what the model was asked."""
    last = ""
    for message in reversed(body.get("messages", [])):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                content = " ".join(p.get("text", "") for p in content if p.get("type") == "text")
            last = str(content)
            break
    snippet = " ".join(last.split())[:160]
    return f"**Réponse de test** : j'ai bien lu ta question ({snippet})."
