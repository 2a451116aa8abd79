"""Semantic and hybrid retrieval for the knowledge base: embeddings, then the fusion of
the lexical and the vector lists.

Discord-free. `HybridKnowledgeBase` is a `Retriever` (ibot/services/retriever.py) that
wraps the lexical `KnowledgeBase` and adds:

**Embeddings.** Each stored thread's text (title, question, tags, answer; its first
`MAX_EMBED_TOKENS` tokens) is embedded with knowledge.embeddings.model at `dimensions`,
through the gateway (`ModelGateway.embed`): every call is a ledger row of feature
`kb_embed`, its input tokens and exact cost, held against the guild's budgets first.
The vectors go to `ibot.db.knowledge_vectors` (a portable table and the engine's vector
index, sqlite-vec or pgvector), with the sha256 of the embedded text: a thread whose
text, model and size are unchanged is never embedded again. Threads are embedded in
batches of at most `batch_size` inputs and `batch_tokens` tokens, per guild (each call's
row and budget are that guild's). `upsert` (the one entry point for threads that
changed: solved, synced, imported) stores them lexically at once and embeds them in the
background, so that a button click is answered within Discord's three seconds;
`index` does both and waits (the CLI, a sync); `backfill` embeds every stored thread
that lacks an up-to-date vector (`ibot kb embed`, after turning embeddings on).

**Cost of queries vs indexing.** A search makes one embedding call of one input; the
ledger note of its row says `kb_embed query: 1 input`, a batch's `kb_embed backfill: N
inputs`. Both are feature `kb_embed`, with the guild; so a report by feature gives the
embeddings' total, and the rows (`ibot costs report --rows`, the CSV) tell the two apart
by their note (and a query's row has one input, a batch's usually more).

**Hybrid search.** For a query, concurrently: its embedding, and the lexical search
with no threshold (every candidate the engine matched, scored as usual). Then the
nearest vectors of the guild, and the two lists, both best first, are fused by
reciprocal rank fusion (Cormack et al. 2009), `Σ 1 / (RRF_K + rank)` with RRF_K = 60:
a thread high in both lists comes first, and neither score scale has to be comparable
with the other. A fused hit is **shown** when its lexical score reaches `min_score` (as
without embeddings) or its cosine similarity reaches `min_similarity`; the others are
not shown, however well they rank. A hit's `score` (what /similar and `ibot kb search`
print, and what the near-duplicate check compares) is the better of its two, its
lexical score and its cosine similarity, both in (0, 1] there.

**Falling back.** No embedding can be had (OpenAI down after its retries, a budget
spent, a bad key: the gateway writes the failed or refused row), or the engine has no
vector index (one log line at the first use, `semantic_search_off`), or a vector query
fails: the lexical results, exactly as `KnowledgeBase.search` gives them. A query with
no searchable word (empty, emoji, only stop words) gets nothing, without any call, as
lexically.

**min_similarity's default**, 0.5: measured with `benchmarks/semantic.py` on the
labelled set of benchmarks/data (329 threads, 483 paraphrase queries, 73 without a
match), with the *fake* OpenAI's vectors (feature hashing, see
ibot/testing/fake_openai/embeddings.py), the same on SQLite and PostgreSQL: lexical alone
recall@3 0.880 / false matches 0.082; hybrid at 0.5, 0.878 / 0.082; at 0.45, 0.880 /
0.096; at 0.4, 0.882 / 0.123. 0.5 is the lowest threshold that adds no false match on
those vectors. They are not OpenAI's: with text-embedding-3-small the similarities of
related texts are commonly lower, so 0.5 is a cautious start (few hits shown on meaning
alone) and the value is to be measured again on real embeddings (the same script with
`--base-url`) before it is lowered.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ibot.config import EmbeddingsSettings
from ibot.db.knowledge import KnowledgeStore
from ibot.db.knowledge_vectors import EmbeddedThread, Neighbour, StoredThread, VectorStore
from ibot.domain import CallContext, Feature, LLMCallError
from ibot.llm.embeddings import (
    EmbeddingPurpose,
    EmbeddingRequest,
    count_tokens,
    truncate,
)
from ibot.llm.gateway import ModelGateway
from ibot.services.knowledge import (
    MAX_K,
    Hit,
    KnowledgeBase,
    KnowledgeStats,
    SolvedThread,
    Source,
    thread_url,
)
from ibot.services.lexical import query_terms
from ibot.services.retriever import Retriever

log = structlog.get_logger("ibot.semantic")

RRF_K = 60  # reciprocal rank fusion's constant (Cormack, Clarke & Büttcher, 2009)
DEFAULT_MIN_SIMILARITY = 0.5  # module docstring: measured on the fake's vectors only
# What is embedded of a thread, and of a query: its first tokens. A solved thread's
# title and question say what it is about; a long answer or pasted log would only dilute
# the vector and cost more (the API's own limit is 8192 per input).
MAX_EMBED_TOKENS = 1024
DEFAULT_BATCH_SIZE = 100
DEFAULT_BATCH_TOKENS = 8000
_BACKFILL_PAGE = 500


@dataclass(frozen=True, slots=True)
class EmbeddingConfig:
    """knowledge.embeddings, as the service needs it."""

    model: str = "text-embedding-3-small"
    dimensions: int = 256
    batch_size: int = DEFAULT_BATCH_SIZE
    batch_tokens: int = DEFAULT_BATCH_TOKENS
    min_similarity: float = DEFAULT_MIN_SIMILARITY

    def __post_init__(self) -> None:
        if not 0.0 < self.min_similarity <= 1.0:
            raise ValueError(f"min_similarity must be in (0, 1], got {self.min_similarity}")
        if self.batch_size < 1 or self.batch_tokens < 1 or self.dimensions < 1:
            raise ValueError("batch_size, batch_tokens and dimensions must be at least 1")


@dataclass
class EmbeddingReport:
    """What one (back)fill did: threads looked at, embedded, calls, tokens, cost."""

    threads: int = 0  # threads whose embedding was checked
    embedded: int = 0  # threads given a new vector
    calls: int = 0
    tokens: int = 0
    cost_micros: int | None = 0  # None once a call had no known price
    failed: int = 0  # threads left without an up-to-date vector (a call failed)
    problems: list[str] = field(default_factory=list)

    @property
    def up_to_date(self) -> int:
        return self.threads - self.embedded - self.failed

    def add_cost(self, cost: int | None) -> None:
        self.cost_micros = (
            None if cost is None or self.cost_micros is None else (self.cost_micros + cost)
        )


@dataclass(frozen=True, slots=True)
class IndexReport:
    changed: int  # rows added or changed in the lexical store
    embedding: EmbeddingReport


@dataclass(frozen=True, slots=True)
class _Pending:
    """A thread to embed: its id, guild, text and the text's hash and tokens."""

    thread_id: int
    guild_id: int
    text: str
    digest: str
    tokens: int


def thread_text(title: str, question: str, answer: str, tags: Sequence[str] = ()) -> str:
    """What is embedded of a thread: title, question, tags, answer, at most
    MAX_EMBED_TOKENS tokens (the start kept)."""
    parts = [title.strip(), question.strip()]
    if tags:
        parts.append(", ".join(tags))
    parts.append(answer.strip())
    return truncate("\n".join(p for p in parts if p), MAX_EMBED_TOKENS)


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def batches(items: Sequence[_Pending], *, max_inputs: int, max_tokens: int) -> list[list[_Pending]]:
    """`items` cut into calls of at most `max_inputs` inputs and `max_tokens` tokens (an
    input alone over `max_tokens` is a call of its own), per guild, in order."""
    found: list[list[_Pending]] = []
    by_guild: dict[int, list[_Pending]] = {}
    for item in items:
        by_guild.setdefault(item.guild_id, []).append(item)
    for guild_items in by_guild.values():
        current: list[_Pending] = []
        used = 0
        for item in guild_items:
            if current and (len(current) >= max_inputs or used + item.tokens > max_tokens):
                found.append(current)
                current, used = [], 0
            current.append(item)
            used += item.tokens
        if current:
            found.append(current)
    return found


def fuse(
    lexical: Sequence[Hit],
    semantic: Sequence[Neighbour],
    *,
    k: int,
    min_score: float,
    min_similarity: float,
    guild_id: int | None,
    rrf_k: int = RRF_K,
) -> list[Hit]:
    """The reciprocal rank fusion of the two lists (best first each), only the hits that
    pass a threshold, best first, at most `k` (module docstring)."""
    fused: dict[int, float] = {}
    lexical_of = {hit.thread_id: hit for hit in lexical}
    semantic_of: dict[int, Neighbour] = {}
    for rank, hit in enumerate(lexical, start=1):
        fused[hit.thread_id] = fused.get(hit.thread_id, 0.0) + 1.0 / (rrf_k + rank)
    for rank, neighbour in enumerate(semantic, start=1):
        if guild_id is not None and neighbour.guild_id != guild_id:
            continue  # never another guild's thread (the store filters already)
        semantic_of[neighbour.thread_id] = neighbour
        fused[neighbour.thread_id] = fused.get(neighbour.thread_id, 0.0) + 1.0 / (rrf_k + rank)
    shown: list[tuple[float, float, Hit]] = []
    for thread_id, rrf in fused.items():
        word_hit = lexical_of.get(thread_id)
        near = semantic_of.get(thread_id)
        lexical_score = word_hit.score if word_hit is not None else 0.0
        similarity = near.similarity if near is not None else 0.0
        if not ((lexical_score > 0 and lexical_score >= min_score) or similarity >= min_similarity):
            continue
        best = min(1.0, max(lexical_score, similarity))
        if word_hit is not None:
            hit = Hit(thread_id, word_hit.title, word_hit.url, best)
        else:
            assert near is not None
            hit = Hit(thread_id, near.title, thread_url(near.guild_id, thread_id), best)
        shown.append((rrf, best, hit))
    shown.sort(key=lambda entry: (-entry[0], -entry[1], entry[2].thread_id))
    return [hit for _, _, hit in shown[:k]]


class HybridKnowledgeBase:
    """The knowledge base with embeddings and hybrid search (module docstring)."""

    def __init__(
        self,
        knowledge: KnowledgeBase,
        vectors: VectorStore,
        gateway: ModelGateway,
        sessionmaker: async_sessionmaker[AsyncSession],
        config: EmbeddingConfig | None = None,
    ) -> None:
        self.knowledge = knowledge
        self.vectors = vectors
        self.gateway = gateway
        self.config = config or EmbeddingConfig(model=vectors.model, dimensions=vectors.dimensions)
        if (self.config.model, self.config.dimensions) != (vectors.model, vectors.dimensions):
            raise ValueError("the vector store is for another model or size")
        # Every candidate the engine matched, scored, whatever min_score: the lexical
        # list of the fusion.
        self._every_match = KnowledgeBase(sessionmaker, min_score=0.0)
        self._contents = KnowledgeStore(sessionmaker)
        self._background: set[asyncio.Task[EmbeddingReport]] = set()

    @property
    def min_score(self) -> float:
        return self.knowledge.min_score

    @property
    def min_similarity(self) -> float:
        return self.config.min_similarity

    # ---- storing -------------------------------------------------------------------

    async def upsert(self, threads: Iterable[SolvedThread]) -> int:
        """Store these threads for the lexical search now, and (re)embed those whose
        text changed in the background; how many rows changed (`KnowledgeBase.upsert`).
        `drain()` waits for the embeddings."""
        latest = list({thread.thread_id: thread for thread in threads}.values())
        changed = await self.knowledge.upsert(latest)
        if latest:
            task = asyncio.create_task(self.embed_threads(latest))
            self._background.add(task)
            task.add_done_callback(self._finished)
        return changed

    async def index(self, threads: Iterable[SolvedThread]) -> IndexReport:
        """Store these threads and embed those that need it, waiting for both."""
        latest = list({thread.thread_id: thread for thread in threads}.values())
        changed = await self.knowledge.upsert(latest)
        return IndexReport(changed, await self.embed_threads(latest))

    def _finished(self, task: asyncio.Task[EmbeddingReport]) -> None:
        self._background.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.error("kb_embed_failed", error=repr(error))

    async def drain(self, timeout_s: float | None = None) -> None:
        """Wait for the background embeddings (at most `timeout_s`, then cancel them)."""
        if not self._background:
            return
        pending = set(self._background)
        _, late = await asyncio.wait(pending, timeout=timeout_s)
        for task in late:
            task.cancel()
        for task in late:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def embed_threads(self, threads: Sequence[SolvedThread]) -> EmbeddingReport:
        """Embed those of `threads` (already stored) whose text, model or size changed."""
        report = EmbeddingReport(threads=len(threads))
        if not threads or not await self.vectors.available():
            report.threads = 0
            return report
        stored = await self.vectors.embedded_hashes(t.thread_id for t in threads)
        pending = []
        for thread in threads:
            text = thread_text(thread.title, thread.question, thread.answer, thread.tags)
            digest = text_hash(text)
            if stored.get(thread.thread_id) != digest:
                pending.append(
                    _Pending(thread.thread_id, thread.guild_id, text, digest, count_tokens(text))
                )
        await self._embed(pending, report)
        return report

    async def backfill(self, guild_id: int | None = None) -> EmbeddingReport:
        """Embed every stored thread (of `guild_id`, None: all) lacking an up-to-date
        vector, page by page."""
        report = EmbeddingReport()
        if not await self.vectors.available():
            return report
        after: int | None = None
        while True:
            page = await self.vectors.stored_threads(
                after=after, limit=_BACKFILL_PAGE, guild_id=guild_id
            )
            if not page:
                return report
            report.threads += len(page)
            await self._embed(self._stale(page), report)
            after = page[-1].thread_id

    @staticmethod
    def _stale(page: Sequence[StoredThread]) -> list[_Pending]:
        pending = []
        for stored in page:
            text = thread_text(stored.title, stored.question, stored.answer, stored.tags)
            digest = text_hash(text)
            if stored.embedded_hash != digest:
                pending.append(
                    _Pending(stored.thread_id, stored.guild_id, text, digest, count_tokens(text))
                )
        return pending

    async def _embed(self, pending: Sequence[_Pending], report: EmbeddingReport) -> None:
        """Embed `pending` in batches; a guild whose call fails is left for later (its
        next calls would fail or be refused the same way)."""
        given_up: set[int] = set()
        for batch in batches(
            pending, max_inputs=self.config.batch_size, max_tokens=self.config.batch_tokens
        ):
            guild_id = batch[0].guild_id
            if guild_id in given_up:
                report.failed += len(batch)
                continue
            request = EmbeddingRequest(
                texts=tuple(item.text for item in batch),
                model=self.config.model,
                context=CallContext(feature=Feature.KB_EMBED, guild_id=guild_id),
                dimensions=self.config.dimensions,
                purpose=EmbeddingPurpose.BACKFILL,
            )
            try:
                result = await self.gateway.embed(request)
            except LLMCallError as err:
                given_up.add(guild_id)
                report.failed += len(batch)
                report.problems.append(f"guild {guild_id}: {err.kind.value}: {err.message}")
                log.warning(
                    "kb_embed_refused" if err.budget else "kb_embed_error",
                    guild_id=guild_id,
                    threads=len(batch),
                    error_kind=err.kind.value,
                    ledger_id=err.ledger_id,
                )
                continue
            report.calls += 1
            report.tokens += result.usage.prompt_tokens
            report.add_cost(result.cost_micros)
            await self.vectors.write(
                [
                    EmbeddedThread(item.thread_id, item.guild_id, item.digest, vector)
                    for item, vector in zip(batch, result.vectors, strict=True)
                ]
            )
            report.embedded += len(batch)

    async def contains(self, thread_id: int) -> bool:
        return await self.knowledge.contains(thread_id)

    async def remove(self, thread_id: int) -> bool:
        """Forget a thread, its lexical entry and its vector."""
        removed = await self.knowledge.remove(thread_id)
        await self.vectors.delete(thread_id)
        return removed

    async def stats(self, guild_id: int | None = None) -> KnowledgeStats:
        return await self.knowledge.stats(guild_id)

    # ---- searching -----------------------------------------------------------------

    async def search(self, query: str, *, guild_id: int | None, k: int = 3) -> list[Hit]:
        """The hybrid search (module docstring); the lexical one when no embedding of
        the query can be had."""
        if not 1 <= k <= MAX_K:
            raise ValueError(f"k must be between 1 and {MAX_K}, got {k}")
        if not query_terms(query):
            return []
        pool = min(MAX_K, max(20, 3 * k))
        vector, lexical = await asyncio.gather(
            self._query_vector(query, guild_id),
            self._every_match.search(query, guild_id=guild_id, k=pool),
        )
        if vector is None:
            return self._thresholded(lexical, k)
        try:
            semantic = await self.vectors.nearest(vector, guild_id=guild_id, limit=pool)
        except Exception:
            log.exception("semantic_search_failed", guild_id=guild_id)
            return self._thresholded(lexical, k)
        return fuse(
            lexical,
            semantic,
            k=k,
            min_score=self.knowledge.min_score,
            min_similarity=self.config.min_similarity,
            guild_id=guild_id,
        )

    def _thresholded(self, lexical: Sequence[Hit], k: int) -> list[Hit]:
        """The lexical hits as `KnowledgeBase.search` shows them: min_score, top k."""
        return [hit for hit in lexical if hit.score >= self.knowledge.min_score][:k]

    async def _query_vector(self, query: str, guild_id: int | None) -> tuple[float, ...] | None:
        """The query's embedding (one call), or None when it cannot be had."""
        try:
            if not await self.vectors.available():
                return None
            result = await self.gateway.embed(
                EmbeddingRequest(
                    texts=(truncate(query, MAX_EMBED_TOKENS),),
                    model=self.config.model,
                    context=CallContext(feature=Feature.KB_EMBED, guild_id=guild_id),
                    dimensions=self.config.dimensions,
                    purpose=EmbeddingPurpose.QUERY,
                )
            )
        except LLMCallError as err:
            log.warning(
                "semantic_query_unavailable",
                guild_id=guild_id,
                error_kind=err.kind.value,
                ledger_id=err.ledger_id,
                effect="lexical results only",
            )
            return None
        except Exception:
            log.exception("semantic_query_failed", guild_id=guild_id)
            return None
        return result.vectors[0]

    async def sources(self, query: str, *, guild_id: int, k: int = 3) -> list[Source]:
        hits = await self.search(query, guild_id=guild_id, k=k)
        contents = await self._contents.contents([h.thread_id for h in hits], guild_id=guild_id)
        return [Source(hit, *contents[hit.thread_id]) for hit in hits if hit.thread_id in contents]


def embedding_config(settings: EmbeddingsSettings) -> EmbeddingConfig | None:
    """knowledge.embeddings as the service's config; None when embeddings are off."""
    if not settings.enabled:
        return None
    return EmbeddingConfig(
        model=settings.model,
        dimensions=settings.dimensions,
        batch_size=settings.batch_size,
        batch_tokens=settings.batch_tokens,
        min_similarity=settings.min_similarity,
    )


def build_retriever(
    knowledge: KnowledgeBase,
    sessionmaker: async_sessionmaker[AsyncSession],
    gateway: ModelGateway | None,
    config: EmbeddingConfig | None,
) -> Retriever:
    """The hybrid knowledge base when `config` is given (embeddings on) and the gateway
    has OpenAI; else `knowledge` itself, lexical only."""
    if config is None or gateway is None or gateway.openai is None:
        return knowledge
    vectors = VectorStore(sessionmaker, model=config.model, dimensions=config.dimensions)
    return HybridKnowledgeBase(knowledge, vectors, gateway, sessionmaker, config)
