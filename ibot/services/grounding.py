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

A near duplicate (the best hit scoring `duplicate_threshold` or more) is answered
differently: only that thread is quoted, in the `duplicate` template, which asks for a
short answer (its solution summarised, its link), with `duplicate_model` (the feature's
cheaper model) and `duplicate_max_output_tokens` (see `ibot.services.duplicates`).

The local model's window is small: the user message also carries the quoted threads as
short notes (title, link, answer: `local_notes`, in a `GroundedMessage`), which the local
prompt keeps only when they fit beside the question.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from ibot import tokens
from ibot.domain import ImageInput
from ibot.llm.grounded import GroundedMessage
from ibot.services.knowledge import Hit, Source
from ibot.services.prompts import PromptBuilder
from ibot.services.retriever import Retriever

log = structlog.get_logger("ibot.grounding")

DEFAULT_MAX_SOURCE_TOKENS = 1500
# Below this many tokens of excerpt per source, fewer sources are quoted instead.
MIN_EXCERPT_TOKENS = 40
DEFAULT_DUPLICATE_MODEL = "gpt-4o-mini"
# A short answer: a few lines and a link. About 150 words of French.
DEFAULT_DUPLICATE_MAX_OUTPUT_TOKENS = 300


@dataclass(frozen=True, slots=True)
class Grounding:
    """The knowledge base a feature cites, how many threads, and how many tokens at most;
    from what score a post is a near duplicate (None: never), and how it is answered."""

    knowledge: Retriever  # lexical, or hybrid when embeddings are on (retriever.py)
    k: int = 3
    max_source_tokens: int = DEFAULT_MAX_SOURCE_TOKENS
    duplicate_threshold: float | None = None
    duplicate_model: str = DEFAULT_DUPLICATE_MODEL
    duplicate_max_output_tokens: int = DEFAULT_DUPLICATE_MAX_OUTPUT_TOKENS

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

    def duplicate_of(self, found: Sequence[Source]) -> Source | None:
        """The solved thread `found` is a near duplicate of: the best one, when its score
        reaches `duplicate_threshold`; None otherwise (or when duplicates are off).

        Only the score decides, whatever engine found the hits: `find` searches one
        guild, so a thread of another server is never the duplicate."""
        if self.duplicate_threshold is None or not found:
            return None
        best = max(found, key=lambda source: source.hit.score)
        return best if best.hit.score >= self.duplicate_threshold else None


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
    prompts: PromptBuilder,
    sources: Sequence[Source],
    budget: int,
    model: str,
    *,
    template: str = "sources",
) -> tuple[str, tuple[Hit, ...]]:
    """The sources as text to append to the user message (starting with a blank line),
    at most `budget` tokens, and the hits it quotes; ("", ()) when none fits.

    `template`: "sources" (the similar threads), or "duplicate" (the one thread a near
    duplicate is answered from, with the short-answer instructions)."""
    for count in range(len(sources), 0, -1):
        chosen = sources[:count]

        def render(room: int, chosen: Sequence[Source] = chosen) -> str:
            entries = [_entry(n, s, room, model) for n, s in enumerate(chosen, start=1)]
            return "\n\n" + prompts.render(template, sources="\n\n".join(entries))

        room = (budget - tokens.count_text(render(0), model)) // count
        while room >= MIN_EXCERPT_TOKENS:
            block = render(room)
            over = tokens.count_text(block, model) - budget
            if over <= 0:
                return block, tuple(s.hit for s in chosen)
            room -= max(1, -(-over // count))  # joined pieces can count a token more
    return "", ()


def local_notes(sources: Sequence[Source], hits: Sequence[Hit]) -> tuple[str, ...]:
    """The quoted threads (`hits`, numbered as in the prompt) as notes for the local
    model: title, link and the whole answer, which its prompt cuts to fit."""
    by_id = {source.hit.thread_id: source for source in sources}
    notes = []
    for number, hit in enumerate(hits, start=1):
        source = by_id.get(hit.thread_id)
        if source is not None:
            head = f"[{number}] {_one_line(hit.title)} — {hit.url}"
            notes.append(f"{head}\n{source.answer.strip()}".strip())
    return tuple(notes)


def grounded_user_message(
    prompts: PromptBuilder,
    *,
    text: str,
    sources_text: str,
    files: str,
    images: tuple[ImageInput, ...],
    sources: Sequence[Source],
    hits: Sequence[Hit],
) -> GroundedMessage:
    """The user message `text + sources_text + files`, which also says what it is
    without the sources and what they are (for the local model's small window)."""
    return GroundedMessage(
        "user",
        text + sources_text + files,
        images=images,
        bare=text + files,
        notes=local_notes(sources, hits) if sources_text else (),
        heading=prompts.render("local_sources") if sources_text else "",
    )
