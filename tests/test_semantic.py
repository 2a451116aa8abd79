"""Semantic and hybrid retrieval (ibot/services/semantic.py), on SQLite and PostgreSQL.

The real openai client talks to the fake OpenAI (its `/v1/embeddings`, deterministic
vectors that carry some meaning), through the real gateway and ledger; the vectors go
to the real sqlite-vec and pgvector indexes. What a member would notice: a paraphrase
that shares no word with a solved thread finds it; a thread of another guild never
shows; without a key, or with OpenAI down or a budget spent, the answers are the
lexical ones, and every embedding call is a ledger row with its exact cost.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
from sqlalchemy import text
from structlog.testing import capture_logs
from throwaway_pg import find_bindirs, has_pgvector, start_server

from ibot.db.engine import create_engine, make_sessionmaker
from ibot.db.knowledge_vectors import VectorStore, index_name
from ibot.db.ledger import Ledger
from ibot.db.migrate import upgrade
from ibot.domain import CallContext, CallStatus, ErrorKind, Feature
from ibot.llm.budget import BudgetExceeded, Reservation
from ibot.llm.embeddings import EmbeddingPurpose, EmbeddingRequest, count_inputs
from ibot.llm.gateway import ModelGateway
from ibot.llm.openai_backend import OpenAIBackend
from ibot.pricing import default_price_table
from ibot.services.knowledge import KnowledgeBase, SolvedThread, thread_url
from ibot.services.semantic import (
    EmbeddingConfig,
    HybridKnowledgeBase,
    batches,
    build_retriever,
    thread_text,
)
from ibot.testing.fake_openai import FakeOpenAI

MODEL = "text-embedding-3-small"
GUILD = 900_000_000_000_000_001
OTHER_GUILD = 900_000_000_000_000_002
PIP, SCREEN, BOT, ELSEWHERE = (1_400_000_000_000_000_000 + n for n in range(1, 5))
# Shares no word with the pip thread (so the lexical search misses it), but its
# meaning: "install", "denied", "access" (the fake's vectors know those concepts).
PARAPHRASE = "instale refusé accès"
# The fake's vectors of the paraphrase and the pip thread are 0.40 apart; 0.35 shows it.
CONFIG = EmbeddingConfig(model=MODEL, dimensions=256, min_similarity=0.35)


def thread(thread_id: int, title: str, question: str, answer: str, *, guild=GUILD, tags=()):
    return SolvedThread(
        guild_id=guild,
        forum_id=None,
        thread_id=thread_id,
        title=title,
        question=question,
        answer=answer,
        answer_kind="member",
        tags=tuple(tags),
    )


PIP_THREAD = thread(
    PIP,
    "pip install échoue dans le venv",
    "Quand je lance pip install requests dans mon venv j'ai une erreur de permission.",
    "Active le venv avant : source venv/bin/activate puis python -m pip install requests.",
    tags=("python",),
)
THREADS = [
    PIP_THREAD,
    thread(
        SCREEN,
        "Écran noir après la mise à jour de Windows",
        "Depuis la dernière mise à jour mon PC démarre sur un écran noir avec juste la souris.",
        "Redémarre en mode sans échec et réinstalle le pilote graphique.",
        tags=("windows",),
    ),
    thread(
        BOT,
        "Mon bot Discord ne lit pas le contenu des messages",
        "message.content est toujours vide dans on_message.",
        "Active l'intent message_content dans le portail développeur et dans ton code.",
        tags=("discord",),
    ),
    replace(PIP_THREAD, thread_id=ELSEWHERE, guild_id=OTHER_GUILD),  # the same, elsewhere
]


class SpentBudget:
    """A budget hook whose caps are all spent."""

    async def reserve(self, context, model, worst_case_micros) -> Reservation:
        raise BudgetExceeded("guild_daily")

    async def settle(self, reservation, actual_micros) -> None:
        return None


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


@pytest.fixture
async def backend(fake) -> AsyncIterator[OpenAIBackend]:
    openai = OpenAIBackend(api_key="sk-test", base_url=fake.base_url, max_retries=0)
    yield openai
    await openai.aclose()


@pytest.fixture
def gateway(sessionmaker, backend) -> ModelGateway:
    return ModelGateway(ledger=Ledger(sessionmaker), prices=default_price_table(), openai=backend)


def hybrid_of(sessionmaker, gateway, config: EmbeddingConfig = CONFIG) -> HybridKnowledgeBase:
    retriever = build_retriever(KnowledgeBase(sessionmaker), sessionmaker, gateway, config)
    assert isinstance(retriever, HybridKnowledgeBase)
    return retriever


@pytest.fixture
async def hybrid(sessionmaker, gateway) -> HybridKnowledgeBase:
    kb = hybrid_of(sessionmaker, gateway)
    await kb.index(THREADS)
    return kb


def embedding_calls(fake: FakeOpenAI) -> list:
    return [r for r in fake.requests if r.endpoint == "embeddings"]


async def kb_rows(ledger: Ledger) -> list:
    return [row for row in await ledger.rows() if row.feature == Feature.KB_EMBED]


# ---- what the member sees ---------------------------------------------------------------


async def test_a_paraphrase_the_lexical_search_misses_is_found(sessionmaker, hybrid):
    lexical = KnowledgeBase(sessionmaker)
    assert await lexical.search(PARAPHRASE, guild_id=GUILD) == []

    [hit] = await hybrid.search(PARAPHRASE, guild_id=GUILD)

    assert hit.thread_id == PIP and hit.url == thread_url(GUILD, PIP)
    assert hit.title == "pip install échoue dans le venv"
    assert CONFIG.min_similarity <= hit.score <= 1
    [source] = await hybrid.sources(PARAPHRASE, guild_id=GUILD)
    assert source.hit == hit and "pip install" in source.answer


async def test_below_the_threshold_nothing_is_shown(sessionmaker, hybrid):
    assert await hybrid.search("recette de tarte aux pommes", guild_id=GUILD) == []
    strict = hybrid_of(sessionmaker, hybrid.gateway, replace(CONFIG, min_similarity=0.9))
    assert await strict.search(PARAPHRASE, guild_id=GUILD) == []


async def test_a_thread_of_another_guild_is_never_returned(hybrid):
    # ELSEWHERE is PIP's twin in the other guild: the same vector, never shown here.
    found = await hybrid.search(PARAPHRASE, guild_id=GUILD, k=10)
    assert [h.thread_id for h in found] == [PIP]
    assert [h.thread_id for h in await hybrid.search(PARAPHRASE, guild_id=OTHER_GUILD)] == [
        ELSEWHERE
    ]
    probe = (await hybrid.gateway.embed(query(PIP_THREAD.title, OTHER_GUILD))).vectors[0]
    near = await hybrid.vectors.nearest(probe, guild_id=OTHER_GUILD, limit=10)
    assert {n.thread_id for n in near} == {ELSEWHERE}
    assert {n.guild_id for n in near} == {OTHER_GUILD}


async def test_words_and_meaning_together_rank_first(hybrid):
    hits = await hybrid.search("pip install refusé dans le venv", guild_id=GUILD, k=3)
    assert hits[0].thread_id == PIP
    assert hits[0].score >= CONFIG.min_similarity


async def test_both_engines_give_the_same_hits(hybrid):
    """The SQLite and PostgreSQL runs of this test compare with the same constants."""
    found = await hybrid.search("mon pc reste bloqué sur un affichage noir", guild_id=GUILD)
    assert [h.thread_id for h in found] == [SCREEN]
    assert found[0].score == pytest.approx(0.434, abs=0.002)


async def test_without_a_key_the_search_is_lexical_and_unchanged(sessionmaker):
    no_key = ModelGateway(ledger=Ledger(sessionmaker), prices=default_price_table(), openai=None)
    lexical = KnowledgeBase(sessionmaker)
    retriever = build_retriever(lexical, sessionmaker, no_key, CONFIG)
    assert retriever is lexical
    assert build_retriever(lexical, sessionmaker, None, CONFIG) is lexical
    assert build_retriever(lexical, sessionmaker, no_key, None) is lexical
    await retriever.upsert(THREADS)

    query = "pip install ne marche pas dans le venv"
    assert await retriever.search(query, guild_id=GUILD) == await KnowledgeBase(
        sessionmaker
    ).search(query, guild_id=GUILD)
    assert await Ledger(sessionmaker).rows() == []


# ---- the ledger ---------------------------------------------------------------------------


def query(text: str, guild_id: int = GUILD) -> EmbeddingRequest:
    return EmbeddingRequest(
        texts=(text,),
        model=MODEL,
        context=CallContext(feature=Feature.KB_EMBED, guild_id=guild_id),
        dimensions=256,
    )


async def test_an_embedding_call_is_a_ledger_row_with_its_exact_cost(fake, gateway, ledger):
    texts = tuple(thread_text(t.title, t.question, t.answer, t.tags) for t in THREADS) * 10
    request = replace(query(""), texts=texts, purpose=EmbeddingPurpose.BACKFILL)

    result = await gateway.embed(request)

    [row] = await kb_rows(ledger)
    [call] = embedding_calls(fake)
    tokens = count_inputs(texts)
    assert row.prompt_tokens == call.prompt_tokens == result.usage.prompt_tokens == tokens
    assert row.completion_tokens == 0 and row.status == CallStatus.OK
    price = Decimal("0.02")  # config/prices.toml: USD per 1M input tokens = µUSD per token
    expected = int((tokens * price).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    assert expected > 0 and row.cost_micros == result.cost_micros == expected
    assert row.guild_id == GUILD and row.model == MODEL and row.backend == "openai"
    assert row.note == f"kb_embed backfill: {len(texts)} inputs"
    assert row.request_id == call.request_id and row.call_id == call.client_request_id
    assert len(result.vectors) == len(texts) and len(result.vectors[0]) == 256


async def test_a_search_is_one_call_and_its_row_says_query(fake, hybrid, ledger):
    before = len(embedding_calls(fake))
    await hybrid.search(PARAPHRASE, guild_id=GUILD)

    assert len(embedding_calls(fake)) == before + 1
    row = (await kb_rows(ledger))[-1]
    assert row.note == "kb_embed query: 1 input" and row.guild_id == GUILD
    assert row.prompt_tokens == count_inputs([PARAPHRASE])


async def test_backfill_is_batched_and_unchanged_threads_cost_nothing(
    fake, sessionmaker, gateway, ledger
):
    kb = hybrid_of(sessionmaker, gateway, replace(CONFIG, batch_size=2))

    first = await kb.index(THREADS)

    # 3 threads of one guild in batches of 2, 1 of the other: 3 calls.
    assert [len(c.body["input"]) for c in embedding_calls(fake)] == [2, 1, 1]
    assert (first.embedding.embedded, first.embedding.calls) == (4, 3)
    rows = await kb_rows(ledger)
    assert first.embedding.cost_micros == sum(r.cost_micros for r in rows)
    assert first.embedding.tokens == sum(r.prompt_tokens for r in rows)

    again = await kb.index(THREADS)
    await kb.upsert(THREADS)
    await kb.drain()
    assert again.changed == 0 and again.embedding.embedded == 0
    assert again.embedding.up_to_date == 4
    assert len(embedding_calls(fake)) == 3 and len(await kb_rows(ledger)) == 3

    edited = replace(
        THREADS[1], answer="Mets à jour le pilote graphique depuis le mode sans échec."
    )
    await kb.upsert([edited])
    await kb.drain()
    [last] = embedding_calls(fake)[3:]
    assert last.body["input"] == [
        thread_text(edited.title, edited.question, edited.answer, edited.tags)
    ]


async def test_backfill_embeds_the_threads_stored_before_embeddings_were_on(
    fake, sessionmaker, gateway
):
    await KnowledgeBase(sessionmaker).upsert(THREADS)  # lexical only, as before
    kb = hybrid_of(sessionmaker, gateway)
    assert await kb.search(PARAPHRASE, guild_id=GUILD) == []

    report = await kb.backfill(guild_id=GUILD)

    assert (report.threads, report.embedded, report.calls) == (3, 3, 1)
    assert [h.thread_id for h in await kb.search(PARAPHRASE, guild_id=GUILD)] == [PIP]
    assert (await kb.backfill()).embedded == 1  # the other guild's thread
    assert (await kb.backfill()).embedded == 0


async def test_a_removed_thread_leaves_the_vector_index(hybrid):
    assert await hybrid.remove(PIP)
    assert await hybrid.search(PARAPHRASE, guild_id=GUILD) == []
    assert PIP not in await hybrid.vectors.embedded_hashes([PIP])


async def test_a_new_model_or_size_rebuilds_the_index(sessionmaker, gateway, hybrid):
    old = hybrid.vectors.index
    smaller = hybrid_of(sessionmaker, gateway, replace(CONFIG, dimensions=128))
    assert await smaller.search(PARAPHRASE, guild_id=GUILD) == []  # not embedded yet

    report = await smaller.backfill()

    assert report.embedded == 4
    assert smaller.vectors.index == index_name(MODEL, 128) != old
    assert [h.thread_id for h in await smaller.search(PARAPHRASE, guild_id=GUILD)] == [PIP]
    assert await smaller.vectors.counts() == (4, 4)
    async with sessionmaker() as session:
        dialect = session.get_bind().dialect.name
        listing = (
            "SELECT name FROM sqlite_master WHERE name = :name"
            if dialect == "sqlite"
            else "SELECT table_name FROM information_schema.tables WHERE table_name = :name"
        )
        assert (await session.execute(text(listing), {"name": old})).all() == []


# ---- falling back -----------------------------------------------------------------------


async def test_openai_down_gives_the_lexical_results_and_an_error_row(fake, hybrid, ledger):
    expected = await hybrid.knowledge.search("pip install venv", guild_id=GUILD)
    fake.fail_with_status(503)

    found = await hybrid.search("pip install venv", guild_id=GUILD)

    assert found == expected and found[0].thread_id == PIP
    row = (await kb_rows(ledger))[-1]
    assert row.status == CallStatus.ERROR and row.error_kind == ErrorKind.SERVER
    assert row.note.startswith("kb_embed query: 1 input: HTTP 503")
    assert row.cost_micros == 0


async def test_a_spent_budget_gives_the_lexical_results_and_a_refused_row(
    fake, sessionmaker, backend, ledger
):
    paid = ModelGateway(ledger=ledger, prices=default_price_table(), openai=backend)
    await hybrid_of(sessionmaker, paid).index(THREADS)
    calls = len(embedding_calls(fake))
    broke = ModelGateway(
        ledger=ledger, prices=default_price_table(), openai=backend, budget=SpentBudget()
    )
    kb = hybrid_of(sessionmaker, broke)

    found = await kb.search("pip install venv", guild_id=GUILD)
    report = await kb.index([replace(PIP_THREAD, answer="Utilise python -m pip.")])

    assert found == await kb.knowledge.search("pip install venv", guild_id=GUILD)
    assert len(embedding_calls(fake)) == calls  # nothing sent
    refused = [r for r in await kb_rows(ledger) if r.status == CallStatus.REFUSED]
    assert [r.error_kind for r in refused] == [ErrorKind.BUDGET, ErrorKind.BUDGET]
    assert "budget guild_daily is spent" in refused[0].note
    assert report.embedding.failed == 1 and report.embedding.embedded == 0
    assert report.changed == 1  # the lexical index has the new answer all the same


async def test_a_query_with_nothing_searchable_makes_no_call(fake, hybrid):
    before = len(embedding_calls(fake))
    assert await hybrid.search("🙂🎉 ?", guild_id=GUILD) == []
    assert len(embedding_calls(fake)) == before


def test_batches_respect_inputs_tokens_and_guilds():
    from ibot.services.semantic import _Pending

    items = [_Pending(n, GUILD if n < 5 else OTHER_GUILD, "x", "h", 3000) for n in range(7)]
    sizes = [[i.thread_id for i in b] for b in batches(items, max_inputs=100, max_tokens=8000)]
    assert sizes == [[0, 1], [2, 3], [4], [5, 6]]
    alone = [_Pending(9, GUILD, "x", "h", 9000)]
    assert [len(b) for b in batches(alone, max_inputs=100, max_tokens=8000)] == [1]


# ---- PostgreSQL without pgvector ----------------------------------------------------------


async def test_postgresql_without_pgvector_logs_once_and_searches_lexically(
    tmp_path: Path, fake, backend
):
    plain = [b for b in find_bindirs() if not has_pgvector(b)]
    if not plain:
        pytest.skip("no PostgreSQL binaries without pgvector here")
    server = start_server(plain[0])
    try:
        url = server.url(await server.create_database())
        await upgrade(url)
        engine = create_engine(url)
        try:
            sessionmaker = make_sessionmaker(engine)
            gateway = ModelGateway(
                ledger=Ledger(sessionmaker), prices=default_price_table(), openai=backend
            )
            kb = hybrid_of(sessionmaker, gateway)
            with capture_logs() as logs:
                await kb.index(THREADS)
                found = await kb.search("pip install venv", guild_id=GUILD)
                await kb.search(PARAPHRASE, guild_id=GUILD)
            off = [e for e in logs if e["event"] == "semantic_search_off"]
            assert len(off) == 1 and "pgvector" in off[0]["reason"]
            assert off[0]["log_level"] == logging.getLevelName(logging.WARNING).lower()
            assert found == await kb.knowledge.search("pip install venv", guild_id=GUILD)
            assert embedding_calls(fake) == []  # no index: nothing embedded, nothing paid
        finally:
            await engine.dispose()
    finally:
        server.stop()


async def test_vector_store_refuses_a_vector_of_another_size(sessionmaker):
    store = VectorStore(sessionmaker, model=MODEL, dimensions=8)
    assert await store.available()
    with pytest.raises(ValueError, match="8"):
        await store.nearest([0.1] * 4, guild_id=GUILD, limit=3)


# ---- budgets and reports know the feature ---------------------------------------------------


async def test_guild_budgets_hold_and_count_embeddings_and_reports_list_them(
    fake, sessionmaker, backend, ledger
):
    from ibot.config import BudgetsSettings
    from ibot.db.budgets import BudgetStore
    from ibot.domain import utcnow
    from ibot.periods import parse_period
    from ibot.services.budgets import BudgetManager
    from ibot.services.report_render import render_table
    from ibot.services.reports import cost_report

    # 3 µUSD a day: the first batch (147 tokens, 3 µUSD) fits exactly, the next does not.
    budgets = BudgetManager(
        ledger=ledger,
        store=BudgetStore(sessionmaker),
        settings=BudgetsSettings(guild_daily_usd="0.000003"),
    )
    capped = ModelGateway(
        ledger=ledger, prices=default_price_table(), openai=backend, budget=budgets
    )
    kb = hybrid_of(sessionmaker, capped)
    first = await kb.index(THREADS[:3])
    second = await kb.index([replace(PIP_THREAD, answer="Lance python -m pip install requests.")])
    await budgets.drain(timeout_s=5)

    assert first.embedding.embedded == 3 and first.embedding.cost_micros == 3
    assert second.embedding.failed == 1
    rows = await kb_rows(ledger)
    assert [r.status for r in rows] == [CallStatus.OK, CallStatus.REFUSED]
    report = await cost_report(
        sessionmaker, parse_period("today", now=utcnow()), "feature", guild_id=GUILD
    )
    [line] = report.rows
    assert line.key == Feature.KB_EMBED and line.cost_micros == 3
    assert line.prompt_tokens == rows[0].prompt_tokens
    assert "kb_embed" in render_table(report)
