"""The knowledge base of the server's solved threads, and its lexical retrieval.

Discord-free: threads come in as `SolvedThread` (from `ibot kb import`, later from the
bot), searches return `Hit`s. Storage and the engines' full-text indexes (SQLite FTS5,
PostgreSQL tsvector + GIN) are in `ibot.db.knowledge`; the text normalisation shared by
indexing and querying (accents, French and English stems, stop words, code tokens) is
`ibot.services.lexical`.

**A search**, always within one guild (`guild_id` in the SQL; `None`, all guilds, is for
the CLI only):

1. the query becomes its distinct term groups (a word: its stems; a code token: itself,
   then its parts), at most `MAX_QUERY_GROUPS`; no group (empty, spaces, emoji, only
   stop words) → no result, no SQL;
2. the engine finds the threads holding *any* of the terms (OR: a paraphrase shares only
   some words) and orders them by its own rank, bm25 on SQLite, ts_rank on
   PostgreSQL (title, then question, weigh more than the answer); the first
   `candidate_pool(k)` are kept. Two shortcuts keep this fast on a large index, both
   exact for what is shown: words too common to lift a thread to `min_score` on their
   own are not sent to the engine (`needed_groups`), and the engine is asked first for
   the threads holding the query's rarest words (`FIRST_PASS_POSTINGS`), then for the
   commoner ones only if a thread holding none of the rare ones could still score above
   the k-th best found; document frequencies come from stored counts (ibot.db.knowledge);
3. each candidate is **scored the same way on both engines**, from its stored terms:

       score = Σ idf(g) · w(g, thread) / Σ idf(g)      over the query's groups g

   where w is 1.0 when a term of g is in the title, 0.8 in the question (or the tags),
   0.5 only in the answer, 0 when absent, and idf(g) = ln(1 + (N − n + 0.5)/(n + 0.5))
   (BM25's idf, always > 0) with N the threads in scope and n those holding a term of
   g. So the score is the share of the query matched, rare words counting more, in
   (0, 1] for any thread the engine matched: 1.0 when every word of the query is in the
   title. A word of the query found nowhere still counts in the denominator, which is
   what keeps "a pie recipe in python" from matching every thread that says "python".
   Candidates are sorted by score, the engine's rank breaking ties; those below
   `min_score` are not shown.

The score depends on nothing engine-specific, so the same threshold means the same on
SQLite and PostgreSQL (tests/test_knowledge.py checks the two give the same scores).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ibot.db.knowledge import Candidate, KnowledgeDocument, KnowledgeStore
from ibot.services.lexical import NORMALISER_VERSION, index_terms, query_terms

# The default of settings knowledge.min_score. On the labelled set of benchmarks/data
# (`benchmarks/retrieval.py --quick`, SQLite, normaliser 2 with the French-English
# lexicon), recall@3 / false-match rate were 0.899 / 0.164 at 0.30, 0.886 / 0.110 at 0.33
# and 0.880 / 0.082 at 0.35: 0.35 halves the wrong suggestions for 1.9 points of recall.
DEFAULT_MIN_SCORE = 0.35
TITLE_WEIGHT = 1.0
QUESTION_WEIGHT = 0.8
ANSWER_WEIGHT = 0.5
MAX_K = 500  # a top k beyond this is refused (ValueError)
# A search asks the engine first for the threads holding its rarest words, up to this
# many index entries in all (the engine's rank costs per matching thread: ~3 µs each on
# SQLite, so ~15 ms), and for the commoner ones only when needed (KnowledgeBase.search).
FIRST_PASS_POSTINGS = 5_000


def thread_url(guild_id: int, thread_id: int) -> str:
    return f"https://discord.com/channels/{guild_id}/{thread_id}"


@dataclass(frozen=True, slots=True)
class SolvedThread:
    """A solved forum thread: its question and the answer that solved it."""

    guild_id: int
    forum_id: int | None
    thread_id: int
    title: str
    question: str
    answer: str
    answer_kind: str  # "bot" | "moderator" | "member" | "accepted" … (as export-threads says)
    tags: tuple[str, ...] = ()
    created_at: datetime | None = None
    solved_at: datetime | None = None

    @property
    def url(self) -> str:
        return thread_url(self.guild_id, self.thread_id)

    def content_hash(self) -> str:
        """Changes with anything stored or indexed, and with the normaliser's version."""
        content = [
            NORMALISER_VERSION,
            self.guild_id,
            self.forum_id,
            self.title,
            self.question,
            self.answer,
            self.answer_kind,
            list(self.tags),
            self.created_at.isoformat() if self.created_at else None,
            self.solved_at.isoformat() if self.solved_at else None,
        ]
        encoded = json.dumps(content, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Hit:
    """A solved thread found for a query; `score` in (0, 1], higher is better."""

    thread_id: int
    title: str
    url: str
    score: float


@dataclass(frozen=True, slots=True)
class Source:
    """A hit with the text a prompt quotes from it: the thread's question and answer."""

    hit: Hit
    question: str
    answer: str


@dataclass(frozen=True, slots=True)
class KnowledgeStats:
    threads: int
    per_guild: Mapping[int, int] = field(default_factory=dict)  # guild id → threads
    per_answer_kind: Mapping[str, int] = field(default_factory=dict)  # most frequent first
    newest_solved_at: datetime | None = None


def candidate_pool(k: int) -> int:
    """How many of the engine's best matches are scored for a top `k`."""
    return max(50, min(10 * k, 500), k)


def idf(total: int, holding: int) -> float:
    """BM25's idf: always > 0, largest for a term no thread holds."""
    return math.log(1.0 + (total - holding + 0.5) / (holding + 0.5))


def needed_groups(
    weights: Sequence[float], min_score: float, *, total: float | None = None
) -> list[int]:
    """The groups a thread must match one of to reach `min_score`, by index.

    The commonest groups (lowest idf) are left out of the engine's query as long as
    their weights together stay below `min_score` of the total: a thread holding only
    those scores below the threshold even with all of them in its title, so it would
    never be shown. Exact, and what keeps a search fast on a large index: the words
    every other thread has ("python", "erreur") no longer make the engine rank half the
    threads (MaxScore pruning, as search engines do it). `total`: the weight of the
    whole query, when `weights` are only some of its groups.
    """
    if total is None:
        total = sum(weights)
    order = sorted(range(len(weights)), key=lambda i: (weights[i], i))
    below = 0.0
    skipped: set[int] = set()
    for i in order:
        if below + weights[i] >= min_score * total * (1 - 1e-9):
            break
        below += weights[i]
        skipped.add(i)
    return [i for i in range(len(weights)) if i not in skipped]


def score(groups: Sequence[Sequence[str]], weights: Sequence[float], candidate: Candidate) -> float:
    """The idf-weighted share of the query's groups found in the thread (module doc)."""
    found = 0.0
    for group, weight in zip(groups, weights, strict=True):
        if any(term in candidate.title_terms for term in group):
            found += weight * TITLE_WEIGHT
        elif any(term in candidate.question_terms for term in group):
            found += weight * QUESTION_WEIGHT
        elif any(term in candidate.answer_terms for term in group):
            found += weight * ANSWER_WEIGHT
    total = sum(weights)
    return min(1.0, found / total) if total > 0 else 0.0


def document(thread: SolvedThread) -> KnowledgeDocument:
    """The stored form of a thread: its content and its terms per field."""
    question = "\n".join([thread.question, *thread.tags]) if thread.tags else thread.question
    return KnowledgeDocument(
        thread_id=thread.thread_id,
        guild_id=thread.guild_id,
        forum_id=thread.forum_id,
        title=thread.title,
        question=thread.question,
        answer=thread.answer,
        answer_kind=thread.answer_kind,
        tags=tuple(thread.tags),
        created_at=thread.created_at,
        solved_at=thread.solved_at,
        content_hash=thread.content_hash(),
        title_terms=tuple(index_terms(thread.title)),
        question_terms=tuple(index_terms(question)),
        answer_terms=tuple(index_terms(thread.answer)),
    )


class KnowledgeBase:
    """Solved threads per guild, searched lexically (see the module docstring)."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        min_score: float = DEFAULT_MIN_SCORE,
    ) -> None:
        if not 0.0 <= min_score <= 1.0:
            raise ValueError(f"min_score must be between 0 and 1, got {min_score}")
        self.min_score = min_score
        self._store = KnowledgeStore(sessionmaker)

    async def upsert(self, threads: Iterable[SolvedThread]) -> int:
        """Store these threads; the number of rows added or changed. A thread already
        stored with the same content is left alone (0); the same thread id twice in
        `threads`: the last one counts."""
        latest = {thread.thread_id: thread for thread in threads}
        if not latest:
            return 0
        stored = await self._store.content_hashes(latest)
        changed = [
            thread
            for thread in latest.values()
            if stored.get(thread.thread_id) != thread.content_hash()
        ]
        await self._store.write([document(thread) for thread in changed])
        return len(changed)

    async def reindex(self, *, batch: int = 500) -> int:
        """Index again the threads stored under older normalisation rules (their hash,
        which includes `NORMALISER_VERSION`, no longer matches); how many. Nothing else
        changes: a second call finds none."""
        changed = 0
        after: int | None = None
        while page := await self._store.stored_page(after=after, limit=batch):
            stale = [
                thread
                for content, digest in page
                if (thread := SolvedThread(**dataclasses.asdict(content))).content_hash() != digest
            ]
            await self._store.write([document(thread) for thread in stale])
            changed += len(stale)
            after = page[-1][0].thread_id
        return changed

    async def contains(self, thread_id: int) -> bool:
        """Whether this thread is stored."""
        return thread_id in await self._store.content_hashes([thread_id])

    async def remove(self, thread_id: int) -> bool:
        """Forget a thread (and its index entry); False when it was not stored."""
        return await self._store.delete(thread_id)

    async def search(self, query: str, *, guild_id: int | None, k: int = 3) -> list[Hit]:
        """The `k` best solved threads for `query`, best first; [] when none reaches
        `min_score` or the query has no searchable word. `guild_id` None: all guilds."""
        if not 1 <= k <= MAX_K:
            raise ValueError(f"k must be between 1 and {MAX_K}, got {k}")
        terms = query_terms(query)
        if not terms:
            return []
        total, holding = await self._store.document_frequencies(terms.groups, guild_id=guild_id)
        if total == 0:
            return []
        weights = [idf(total, n) for n in holding]
        groups = terms.groups
        needed = needed_groups(weights, self.min_score)
        # First the rarest needed groups (few postings: a cheap engine query), then the
        # others only if a thread holding none of the first could still make the top k.
        needed.sort(key=lambda i: (holding[i], i))
        first = needed[:1]
        for i in needed[1:]:
            if sum(holding[j] for j in first) + holding[i] > FIRST_PASS_POSTINGS:
                break
            first.append(i)
        pool = candidate_pool(k)
        found = {c.thread_id: c for c in await self._candidates(groups, first, guild_id, pool)}
        scored = self._scored(groups, weights, found.values())
        if len(first) < len(needed):
            bar = max(self.min_score, scored[k - 1][0] if len(scored) >= k else 0.0)
            rest = [i for i in range(len(groups)) if i not in first]
            later = needed_groups([weights[i] for i in rest], bar, total=sum(weights))
            if later:
                more = await self._candidates(groups, [rest[i] for i in later], guild_id, pool)
                found.update((c.thread_id, c) for c in more if c.thread_id not in found)
                scored = self._scored(groups, weights, found.values())
        return [
            Hit(c.thread_id, c.title, thread_url(c.guild_id, c.thread_id), s)
            for s, c in scored
            if s >= self.min_score and s > 0
        ][:k]

    async def _candidates(
        self,
        groups: Sequence[Sequence[str]],
        chosen: Sequence[int],
        guild_id: int | None,
        limit: int,
    ) -> list[Candidate]:
        """The engine's best `limit` threads holding a term of the `chosen` groups."""
        terms = list(dict.fromkeys(t for i in chosen for t in groups[i]))
        return await self._store.candidates(terms, guild_id=guild_id, limit=limit)

    @staticmethod
    def _scored(
        groups: Sequence[Sequence[str]], weights: Sequence[float], candidates: Iterable[Candidate]
    ) -> list[tuple[float, Candidate]]:
        """Candidates with their scores, best first (the engine's rank breaks ties)."""
        scored = [(score(groups, weights, c), c) for c in candidates]
        scored.sort(key=lambda sc: (-sc[0], -sc[1].engine_rank, sc[1].thread_id))
        return scored

    async def sources(self, query: str, *, guild_id: int, k: int = 3) -> list[Source]:
        """`search` within one guild, each hit with its stored question and answer."""
        hits = await self.search(query, guild_id=guild_id, k=k)
        contents = await self._store.contents([h.thread_id for h in hits], guild_id=guild_id)
        return [Source(hit, *contents[hit.thread_id]) for hit in hits if hit.thread_id in contents]

    async def stats(self, guild_id: int | None = None) -> KnowledgeStats:
        """Threads per guild and per answer kind, and the newest solved_at."""
        found = await self._store.stats(guild_id)
        return KnowledgeStats(
            threads=found.threads,
            per_guild=found.per_guild,
            per_answer_kind=found.per_answer_kind,
            newest_solved_at=found.newest_solved_at,
        )
