"""How much does hybrid retrieval add to the lexical one, and where should min_similarity be?

    python benchmarks/semantic.py                    # SQLite, the fake OpenAI's vectors
    python benchmarks/semantic.py --db postgres      # a throwaway PostgreSQL with pgvector
    python benchmarks/semantic.py --latency-threads 20000
    OPENAI_API_KEY=sk-… python benchmarks/semantic.py --base-url https://api.openai.com/v1

The labelled set of benchmarks/data (its README: 329 solved threads, 483 paraphrase
queries, 73 queries without a true match) is indexed through `HybridKnowledgeBase.index`
(embedding calls through the gateway, ledger rows and all), then every query is searched
in its guild. For each query the two lists the fusion reads are fetched once (the
lexical candidates with no threshold, the guild's nearest vectors), and the fusion is
replayed for each `min_similarity` of the sweep: recall@1 / recall@3 (the labelled
thread is the first hit / among the 3 shown) and the false-match rate (a no-match query
that shows any hit), beside the lexical search alone at the same `min_score`.

Without `--base-url` the embeddings are the fake OpenAI's (ibot/testing/fake_openai/
embeddings.py: feature hashing of words, trigrams and a small concept table), which are
not a language model's: the figures measure the pipeline and that toy, and say where a
threshold on *those* vectors sits. With `--base-url` (and OPENAI_API_KEY) the real
embeddings are used and the ledger costs are real (a few cents for the whole set).

`--latency-threads N` adds filler threads (lexical, and a random unit vector each,
written straight to the index) until the database holds N, then times the vector query
alone (`VectorStore.nearest`, exact within the guild) for every query of the set.

Measured on this project's machine (2 cores, shared), fake vectors at 256 dimensions,
min_score 0.35; SQLite and PostgreSQL 16 + pgvector 0.6 gave the very same figures:

    lexical alone       recall@1 0.861  recall@3 0.880  false matches 0.082
    min_similarity 0.3  recall@1 0.839  recall@3 0.888  false matches 0.260
    min_similarity 0.4  recall@1 0.845  recall@3 0.882  false matches 0.123
    min_similarity 0.45 recall@1 0.847  recall@3 0.880  false matches 0.096
    min_similarity 0.5  recall@1 0.845  recall@3 0.878  false matches 0.082
    min_similarity 0.6+ recall@1 0.845  recall@3 0.876  false matches 0.082

The toy vectors add almost nothing to a lexical search that already finds 88 % (they
know no paraphrase beyond their small concept table), and below 0.5 their unrelated
texts start to pass: 0.5 is the lowest threshold that adds no false match, hence the
default. Whether real embeddings do better is to be measured with `--base-url`; this
machine cannot reach OpenAI. Indexing the set: 7 calls (per guild, 8 000 tokens at
most each), 47 936 input tokens, 959 micro-dollars at text-embedding-3-small's price.
The vector query alone at 20 000 threads (16 009 in the biggest guild), 556 queries:
SQLite (sqlite-vec) p50 15.5 ms, p99 52 ms; PostgreSQL (pgvector, exact) p50 10.3 ms,
p99 23 ms (309 ms before the query's vector was parsed once rather than per row).

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import structlog

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "benchmarks", REPO / "tests"):
    if str(path) not in sys.path:  # run as a script from a checkout
        sys.path.insert(0, str(path))

from retrieval import Filler, LabelledSet, Query, load_set, quality  # noqa: E402

from ibot.db.engine import create_engine, make_sessionmaker  # noqa: E402
from ibot.db.knowledge_vectors import EmbeddedThread, Neighbour, VectorStore  # noqa: E402
from ibot.db.ledger import Ledger  # noqa: E402
from ibot.db.migrate import upgrade  # noqa: E402
from ibot.domain import CallContext, Feature  # noqa: E402
from ibot.llm.embeddings import EmbeddingPurpose, EmbeddingRequest  # noqa: E402
from ibot.llm.gateway import ModelGateway  # noqa: E402
from ibot.llm.openai_backend import OpenAIBackend  # noqa: E402
from ibot.pricing import default_price_table  # noqa: E402
from ibot.services.knowledge import Hit, KnowledgeBase  # noqa: E402
from ibot.services.semantic import (  # noqa: E402
    MAX_EMBED_TOKENS,
    EmbeddingConfig,
    HybridKnowledgeBase,
    fuse,
)
from ibot.testing.fake_openai import FakeOpenAI  # noqa: E402

K = 3
POOL = 20  # what HybridKnowledgeBase.search reads of each list for k = 3
SWEEP = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.8)


@asynccontextmanager
async def database(kind: str, workdir: Path) -> AsyncIterator[str]:
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{workdir / 'semantic.db'}"
        return
    import throwaway_pg

    server = await asyncio.to_thread(throwaway_pg.shared_server)
    if server is None:
        raise SystemExit(f"no PostgreSQL: {throwaway_pg._failure}")
    name = await server.create_database()
    try:
        yield server.url(name)
    finally:
        await server.drop_database(name)


@asynccontextmanager
async def openai_endpoint(args: argparse.Namespace) -> AsyncIterator[tuple[str, str]]:
    if args.base_url:
        key = os.environ.get("OPENAI_API_KEY")
        if not key:
            raise SystemExit("--base-url needs OPENAI_API_KEY")
        yield args.base_url, key
        return
    async with FakeOpenAI() as fake:
        yield fake.base_url, "sk-benchmark"


def top_ids(hits: Sequence[Hit]) -> list[int]:
    return [hit.thread_id for hit in hits]


async def lists(
    hybrid: HybridKnowledgeBase, every_match: KnowledgeBase, query: Query
) -> tuple[list[Hit], list[Neighbour]]:
    """The two lists the fusion of `query` reads (one embedding call)."""
    lexical = await every_match.search(query.text, guild_id=query.guild_id, k=POOL)
    result = await hybrid.gateway.embed(
        EmbeddingRequest(
            texts=(query.text,),
            model=hybrid.config.model,
            context=CallContext(feature=Feature.KB_EMBED, guild_id=query.guild_id),
            dimensions=hybrid.config.dimensions,
            purpose=EmbeddingPurpose.QUERY,
        )
    )
    near = await hybrid.vectors.nearest(result.vectors[0], guild_id=query.guild_id, limit=POOL)
    return lexical, near


def figures(labelled: LabelledSet, found: dict[str, list[int]]) -> dict[str, Any]:
    result = quality(labelled.paraphrases, labelled.no_match, found)
    return {key: result[key] for key in ("recall_at_1", "recall_at_3", "false_match_rate")}


async def latency(
    sessionmaker: Any, vectors: VectorStore, labelled: LabelledSet, args: argparse.Namespace
) -> dict[str, Any]:
    """Filler threads with random vectors, then the vector query timed alone."""
    kb = KnowledgeBase(sessionmaker)
    filler = Filler(labelled, args.seed)
    rng = random.Random(args.seed)
    remaining = args.latency_threads - len(labelled.threads)
    done = 0
    while done < remaining:
        batch = list(filler.threads(min(2000, remaining - done), first_index=done))
        await kb.upsert(batch)
        rows = []
        for thread in batch:
            raw = [rng.gauss(0, 1) for _ in range(vectors.dimensions)]
            norm = math.sqrt(sum(v * v for v in raw))
            rows.append(
                EmbeddedThread(thread.thread_id, thread.guild_id, "", tuple(v / norm for v in raw))
            )
        await vectors.write(rows)
        done += len(batch)
    probe = tuple([1.0 / math.sqrt(vectors.dimensions)] * vectors.dimensions)
    for query in labelled.queries[:30]:
        await vectors.nearest(probe, guild_id=query.guild_id, limit=POOL)
    times = []
    for query in labelled.queries:
        began = time.perf_counter()
        await vectors.nearest(probe, guild_id=query.guild_id, limit=POOL)
        times.append((time.perf_counter() - began) * 1000)
    times.sort()
    stats = await kb.stats()
    return {
        "threads": stats.threads,
        "biggest_guild": max(stats.per_guild.values()),
        "searches": len(times),
        "p50_ms": round(statistics.median(times), 2),
        "p99_ms": round(times[min(len(times) - 1, int(0.99 * len(times)))], 2),
    }


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    labelled = load_set()
    async with AsyncExitStack() as stack:
        url = await stack.enter_async_context(database(args.db, workdir))
        base_url, key = await stack.enter_async_context(openai_endpoint(args))
        await upgrade(url)
        engine = create_engine(url)
        stack.push_async_callback(engine.dispose)
        sessionmaker = make_sessionmaker(engine)
        backend = OpenAIBackend(api_key=key, base_url=base_url, max_retries=2)
        stack.push_async_callback(backend.aclose)
        ledger = Ledger(sessionmaker)
        gateway = ModelGateway(ledger=ledger, prices=default_price_table(), openai=backend)
        config = EmbeddingConfig(model=args.model, dimensions=args.dimensions)
        vectors = VectorStore(sessionmaker, model=args.model, dimensions=args.dimensions)
        kb = KnowledgeBase(sessionmaker, min_score=args.min_score)
        hybrid = HybridKnowledgeBase(kb, vectors, gateway, sessionmaker, config)
        if not await vectors.available():
            raise SystemExit(f"no vector index: {vectors.problem}")

        began = time.perf_counter()
        indexed = await hybrid.index(labelled.threads)
        index_s = time.perf_counter() - began
        report = indexed.embedding
        print(
            f"indexed {indexed.changed} threads in {index_s:.1f} s: {report.calls} calls, "
            f"{report.tokens} tokens, {report.cost_micros} micro-USD"
        )

        every_match = KnowledgeBase(sessionmaker, min_score=0.0)
        fetched = {q.query_id: await lists(hybrid, every_match, q) for q in labelled.queries}
        lexical_only = {
            qid: [h.thread_id for h in lex if h.score >= args.min_score][:K]
            for qid, (lex, _near) in fetched.items()
        }
        guild_of = {q.query_id: q.guild_id for q in labelled.queries}
        rows = [{"min_similarity": None, **figures(labelled, lexical_only)}]
        for threshold in SWEEP:
            found = {
                qid: top_ids(
                    fuse(
                        lex,
                        near,
                        k=K,
                        min_score=args.min_score,
                        min_similarity=threshold,
                        guild_id=guild_of[qid],
                    )
                )
                for qid, (lex, near) in fetched.items()
            }
            rows.append({"min_similarity": threshold, **figures(labelled, found)})
        print("min_similarity  recall@1  recall@3  false matches")
        for row in rows:
            label = "lexical alone" if row["min_similarity"] is None else row["min_similarity"]
            print(
                f"  {label!s:<14} {row['recall_at_1']:.3f}     {row['recall_at_3']:.3f}"
                f"     {row['false_match_rate']:.3f}"
            )
        totals = await ledger.totals()
        result: dict[str, Any] = {
            "benchmark": "semantic",
            "database": args.db,
            "vectors": "openai" if args.base_url else "fake",
            "model": args.model,
            "dimensions": args.dimensions,
            "min_score": args.min_score,
            "max_embed_tokens": MAX_EMBED_TOKENS,
            "index": {
                "threads": indexed.changed,
                "calls": report.calls,
                "tokens": report.tokens,
                "cost_micros": report.cost_micros,
                "seconds": round(index_s, 1),
            },
            "ledger_cost_micros": getattr(totals, "cost_micros", None),
            "sweep": rows,
        }
        if args.latency_threads:
            result["latency"] = await latency(sessionmaker, vectors, labelled, args)
            print(f"vector query latency: {result['latency']}")
        return result


def main(argv: list[str] | None = None) -> int:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--base-url", default=None, help="a real OpenAI-compatible API")
    parser.add_argument("--model", default="text-embedding-3-small")
    parser.add_argument("--dimensions", type=int, default=256)
    parser.add_argument("--min-score", type=float, default=0.35)
    parser.add_argument("--latency-threads", type=int, default=0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as workdir:
        result = asyncio.run(run(args, Path(workdir)))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
