"""What a feature's prompt is built from: its knobs (model, token limits, temperature),
the configured templates, and the attached text files inlined after the question.

Shared by every feature that calls the model (ask, forum, chat, summary).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ibot.services.attachments import AttachmentKind, AttachmentResult


@dataclass(frozen=True, slots=True)
class FeatureConfig:
    """The per-feature knobs a service needs (built from settings by the caller)."""

    model: str
    max_output_tokens: int
    max_prompt_tokens: int
    temperature: float | None = None


@dataclass
class PromptBuilder:
    """Fills the configured templates; `today` is injectable for reproducible tests."""

    templates: Mapping[str, str]
    today: datetime | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def render(self, key: str, **values: str) -> str:
        date = (self.today or datetime.now(UTC)).strftime("%Y-%m-%d")
        return self.templates[key].format(date=date, **self.extra, **values)

    @property
    def persona(self) -> str:
        return self.render("persona")


def attachments_block(results: Sequence[AttachmentResult]) -> str:
    """The text files, inlined after the question, each fenced with its name."""
    blocks = []
    for result in results:
        if result.kind is AttachmentKind.TEXT and result.text is not None:
            blocks.append(f"\n\n--- {result.name} ---\n```\n{result.text}\n```")
    return "".join(blocks)
