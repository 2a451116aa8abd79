"""Fit a model answer into Discord's limits without losing a character.

Discord limits (https://discord.com/developers/docs/resources/message#embed-object-embed-limits):
an embed description holds 4096 characters, the title 256, the footer 2048, and all
embeds of one message together 6000 characters, at most 10 embeds per message.

Answers are split at paragraph, then line, then word boundaries, and a code block cut
in two is closed at the end of one part and reopened (same language) at the start of
the next, so every part renders correctly on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

EMBED_DESCRIPTION_LIMIT = 4096
EMBED_TITLE_LIMIT = 256
EMBED_FOOTER_LIMIT = 2048
MESSAGE_EMBEDS_TOTAL_LIMIT = 6000
EMBEDS_PER_MESSAGE = 10
CONTENT_LIMIT = 2000


@dataclass(frozen=True, slots=True)
class EmbedPart:
    description: str
    title: str | None = None
    footer: str | None = None

    @property
    def size(self) -> int:
        return len(self.description) + len(self.title or "") + len(self.footer or "")


def split_text(text: str, limit: int) -> list[str]:
    """Split `text` into parts of at most `limit` characters, code fences balanced."""
    if limit < 64:
        raise ValueError("limit too small to split markdown safely")
    parts: list[str] = []
    remaining = text
    reopen = ""  # the fence line that continues a code block cut in the previous part
    while remaining:
        budget = limit - len(reopen)
        if len(remaining) <= budget:
            parts.append(reopen + remaining)
            break
        cut = _cut_point(remaining, budget - 4)  # room to close a fence: "\n```"
        chunk, remaining = remaining[:cut], remaining[cut:]
        fence = _open_fence(reopen + chunk)
        piece = reopen + chunk
        if fence is not None:
            piece = piece.rstrip("\n") + "\n```"
            reopen = fence + "\n"
        else:
            reopen = ""
        parts.append(piece)
        remaining = remaining.lstrip("\n") if fence is None else remaining
    return [p for p in parts if p.strip()]


def _cut_point(text: str, budget: int) -> int:
    """Where to cut: the last paragraph break, else line break, else space, in the budget."""
    window = text[:budget]
    for separator in ("\n\n", "\n", " "):
        index = window.rfind(separator)
        if index > budget // 3:
            return index + len(separator)
    return budget


def _open_fence(text: str) -> str | None:
    """The opening fence line (e.g. "```python") if `text` ends inside a code block."""
    fence: str | None = None
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped.startswith("```"):
            fence = None if fence is not None else stripped
    return fence


def embed_messages(text: str, *, title: str, footer: str) -> list[list[EmbedPart]]:
    """Lay an answer out as messages of embeds: title on the first, footer on the last."""
    title = title[:EMBED_TITLE_LIMIT]
    footer = footer[:EMBED_FOOTER_LIMIT]
    # Leave room in every part for the title and footer so the totals always fit.
    per_part = min(EMBED_DESCRIPTION_LIMIT, MESSAGE_EMBEDS_TOTAL_LIMIT - len(title) - len(footer))
    pieces = split_text(text, per_part) or [""]
    messages: list[list[EmbedPart]] = []
    current: list[EmbedPart] = []
    current_size = 0
    for index, piece in enumerate(pieces):
        part = EmbedPart(
            description=piece,
            title=title if index == 0 else None,
            footer=footer if index == len(pieces) - 1 else None,
        )
        if current and (
            current_size + part.size > MESSAGE_EMBEDS_TOTAL_LIMIT
            or len(current) == EMBEDS_PER_MESSAGE
        ):
            messages.append(current)
            current, current_size = [], 0
        current.append(part)
        current_size += part.size
    messages.append(current)
    return messages
