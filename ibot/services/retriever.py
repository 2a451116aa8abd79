"""What the features need of the knowledge base, whichever retrieval answers.

`Retriever` is the one interface of the solved threads' knowledge base: grounding
(/ask-gpt and forum answers), /similar, the solved flow and `ibot kb` all use it, and
`ibot.app` builds the one instance of the process. Two classes are one:

- `ibot.services.knowledge.KnowledgeBase`: lexical search (FTS5 / tsvector), the only
  retrieval without an OpenAI key, or with embeddings off;
- `ibot.services.semantic.HybridKnowledgeBase`: the same, plus embeddings and the
  reciprocal rank fusion of both lists, when knowledge.embeddings.enabled and OpenAI is
  configured. It falls back to the lexical results by itself whenever the embeddings
  cannot be had (OpenAI down, a budget spent, no vector index).

A feature cannot tell which one it has, except by the quality of the hits.

**Threads that changed** (solved, edited, synced from Discord, imported) go in through
`upsert`, the one entry point: it stores them for the lexical search and, with the
hybrid, (re)embeds those whose text changed, in the background.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from ibot.services.knowledge import Hit, KnowledgeStats, SolvedThread, Source


class Retriever(Protocol):
    """The knowledge base as the features use it (module docstring)."""

    @property
    def min_score(self) -> float:
        """The lexical score below which a hit is not shown."""
        ...

    async def search(self, query: str, *, guild_id: int | None, k: int = 3) -> list[Hit]:
        """The `k` best solved threads of `guild_id` for `query` (None: every guild, for
        the CLI only), best first; [] when none is good enough."""
        ...

    async def sources(self, query: str, *, guild_id: int, k: int = 3) -> list[Source]:
        """`search` within one guild, each hit with its stored question and answer."""
        ...

    async def upsert(self, threads: Iterable[SolvedThread]) -> int:
        """Store these threads (added or changed); how many rows changed."""
        ...

    async def contains(self, thread_id: int) -> bool: ...

    async def remove(self, thread_id: int) -> bool:
        """Forget a thread; False when it was not stored."""
        ...

    async def stats(self, guild_id: int | None = None) -> KnowledgeStats: ...
