"""Ground an answer in the server's solved threads: find them, quote them as sources.

Discord-free. When the knowledge base is on, /ask-gpt and the forum auto-reply search
the guild's solved threads with the question (`Grounding.find`, always one guild: a
thread of another server is never quoted) and put the best `k` into the prompt as
numbered sources, within a token budget (`sources_block`):

    [1] <title> — <url>
    <question excerpt>
    <answer excerpt>

wrapped in the `sources` template of the prompts file, which tells the model to use
them when they answer the question, to cite them as [n] and never to invent a link.
Each source gets an equal share of the budget, a third of it for the question, the rest
for the answer; when even `MIN_EXCERPT_TOKENS` per source does not fit, the weakest
sources are left out. A knowledge base that fails is logged and quotes nothing. The
hits actually quoted go back with the answer (`Answered.sources`) so that the message
lists them as links.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from ibot import tokens
from ibot.services.knowledge import Hit, KnowledgeBase, Source
from ibot.services.prompts import PromptBuilder

log = structlog.get_logger("ibot.grounding")

DEFAULT_MAX_SOURCE_TOKENS = 1500
# Below this many tokens of excerpt per source, fewer sources are quoted instead.
MIN_EXCERPT_TOKENS = 40


@dataclass(frozen=True, slots=True)
class Grounding:
    """The knowledge base a feature cites, how many threads, and how many tokens at most."""

    knowledge: KnowledgeBase
    k: int = 3
    max_source_tokens: int = DEFAULT_MAX_SOURCE_TOKENS

    async def find(self, query: str, *, guild_id: int | None) -> list[Source]:
        """The guild's solved threads similar to `query`, best first; [] outside a guild.

        A failing knowledge base (its database down) is logged and quotes nothing: the
        member still gets an answer, only without sources."""
        if guild_id is None or not query.strip():
            return []
        try:
            return await self.knowledge.sources(query, guild_id=guild_id, k=self.k)
        except Exception:
            log.exception("knowledge_search_failed", guild_id=guild_id)
            return []


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _entry(number: int, source: Source, room: int, model: str) -> str:
    question = tokens.truncate_text(source.question.strip(), room // 3, model)
    answer_room = max(0, room - tokens.count_text(question, model))
    answer = tokens.truncate_text(source.answer.strip(), answer_room, model)
    lines = [f"[{number}] {_one_line(source.hit.title)} — {source.hit.url}"]
    lines += [part for part in (question, answer) if part]
    return "\n".join(lines)


def sources_block(
    prompts: PromptBuilder, sources: Sequence[Source], budget: int, model: str
) -> tuple[str, tuple[Hit, ...]]:
    """The sources as text to append to the user message (starting with a blank line),
    at most `budget` tokens, and the hits it quotes; ("", ()) when none fits."""
    for count in range(len(sources), 0, -1):
        chosen = sources[:count]

        def render(room: int, chosen: Sequence[Source] = chosen) -> str:
            entries = [_entry(n, s, room, model) for n, s in enumerate(chosen, start=1)]
            return "\n\n" + prompts.render("sources", sources="\n\n".join(entries))

        room = (budget - tokens.count_text(render(0), model)) // count
        while room >= MIN_EXCERPT_TOKENS:
            block = render(room)
            over = tokens.count_text(block, model) - budget
            if over <= 0:
                return block, tuple(s.hit for s in chosen)
            room -= max(1, -(-over // count))  # joined pieces can count a token more
    return "", ()
