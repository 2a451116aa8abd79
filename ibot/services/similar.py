"""`/similar`: the guild's solved threads like a query, found without any chat model.

Discord-free: the cog passes the query and the guild, and renders the typed outcome.
With embeddings on (knowledge.embeddings), the search embeds the query: one small
`kb_embed` call, in the ledger like any other; lexically, no call at all.
"""

from __future__ import annotations

from dataclasses import dataclass

from ibot.services.knowledge import Hit
from ibot.services.lexical import query_terms
from ibot.services.retriever import Retriever


@dataclass(frozen=True, slots=True)
class SimilarFound:
    hits: tuple[Hit, ...]  # best first


@dataclass(frozen=True, slots=True)
class NothingSimilar:
    """No solved thread of this guild reaches the knowledge base's min_score."""


@dataclass(frozen=True, slots=True)
class KnowledgeOff:
    """The knowledge base is not enabled (settings knowledge.enabled), or no guild."""


@dataclass(frozen=True, slots=True)
class BadQuery:
    """Nothing searchable in the query: empty, spaces, emoji or only stop words."""


SimilarOutcome = SimilarFound | NothingSimilar | KnowledgeOff | BadQuery


class SimilarService:
    def __init__(self, knowledge: Retriever | None, *, k: int = 3) -> None:
        self.knowledge = knowledge
        self.k = k

    async def similar(self, query: str, *, guild_id: int | None) -> SimilarOutcome:
        if self.knowledge is None or guild_id is None:
            return KnowledgeOff()
        if not query_terms(query):
            return BadQuery()
        hits = await self.knowledge.search(query, guild_id=guild_id, k=self.k)
        return SimilarFound(tuple(hits)) if hits else NothingSimilar()
