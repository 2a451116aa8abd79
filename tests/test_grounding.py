"""Answers grounded in the server's solved threads: what the model is sent.

A knowledge base filled with a few solved threads (SQLite, then PostgreSQL, through the
`sessionmaker` fixture), the shipped prompts, and a ModelGateway on the fake OpenAI
server: the assertions are on the request the model received and on the outcome.
"""

from __future__ import annotations

import re

import pytest

from ibot import tokens
from ibot.config import AutoReplySettings, KnowledgeSettings
from ibot.db.engine import create_engine, make_sessionmaker
from ibot.db.threads import ThreadStore
from ibot.domain import CallContext, ChatMessage, Feature
from ibot.i18n import load_prompts
from ibot.services.ask import AskService
from ibot.services.attachments import AttachmentLimits, AttachmentSource
from ibot.services.forum import ForumPost, ForumService
from ibot.services.grounding import Grounding
from ibot.services.knowledge import KnowledgeBase, SolvedThread, thread_url
from ibot.services.outcomes import Answered
from ibot.services.prompts import FeatureConfig, PromptBuilder
from ibot.services.similar import (
    BadQuery,
    KnowledgeOff,
    NothingSimilar,
    SimilarFound,
    SimilarService,
)

GUILD = 111_111_111_111_111_111
OTHER = 222_222_222_222_222_222
FORUM = 333_333_333_333_333_333
PIP = 1_300_000_000_000_000_001
DOCKER = 1_300_000_000_000_000_002
THEIRS = 1_300_000_000_000_000_003  # the same problem, solved on another server

FORUM_SETTINGS = AutoReplySettings()
FORUM_CONFIG = FeatureConfig(
    FORUM_SETTINGS.model, FORUM_SETTINGS.max_output_tokens, FORUM_SETTINGS.max_prompt_tokens
)
ASK_CONFIG = FeatureConfig("gpt-4o-mini", 500, 4000)
MAX_SOURCE_TOKENS = KnowledgeSettings().max_source_tokens


def solved(thread_id: int, guild_id: int, title: str, question: str, answer: str) -> SolvedThread:
    return SolvedThread(
        guild_id=guild_id,
        forum_id=FORUM,
        thread_id=thread_id,
        title=title,
        question=question,
        answer=answer,
        answer_kind="moderator",
    )


THREADS = [
    solved(
        PIP,
        GUILD,
        "ModuleNotFoundError: No module named requests",
        "Mon script plante avec ModuleNotFoundError: No module named 'requests'.",
        "Le paquet n'est pas installé dans ton venv : lance pip install requests.",
    ),
    solved(
        DOCKER,
        GUILD,
        "Docker compose ne démarre pas le conteneur postgres",
        "docker compose up échoue : port 5432 déjà utilisé.",
        "Un postgres local tourne déjà : arrête-le ou change le port exposé.",
    ),
    solved(
        THEIRS,
        OTHER,
        "No module named requests après pip install",
        "ModuleNotFoundError: No module named 'requests' alors que pip install a marché.",
        "Tu avais deux Python : utilise python -m pip install requests.",
    ),
]


@pytest.fixture
async def knowledge(sessionmaker) -> KnowledgeBase:
    kb = KnowledgeBase(sessionmaker)
    await kb.upsert(THREADS)
    return kb


def prompts(lang: str) -> PromptBuilder:
    return PromptBuilder(load_prompts(lang), extra={"bot_name": "iBot"})


def forum(gateway, sessionmaker, grounding: Grounding | None) -> ForumService:
    store = ThreadStore(sessionmaker, owner="test")
    return ForumService(gateway, prompts("en"), FORUM_CONFIG, store, grounding=grounding)


def ask(gateway, grounding: Grounding | None, config: FeatureConfig = ASK_CONFIG) -> AskService:
    return AskService(gateway, prompts("fr"), config, grounding=grounding)


def text_file(name: str, text: str) -> AttachmentSource:
    data = text.encode()

    async def read() -> bytes:
        return data

    return AttachmentSource(name, size=len(data), content_type="text/plain", read=read)


def post(title: str, content: str, *, guild_id: int = GUILD, files=()) -> ForumPost:
    return ForumPost(
        thread_id=10,
        guild_id=guild_id,
        forum_id=FORUM,
        title=title,
        content=content,
        author_id=7,
        author_name="alice",
        attachments=tuple(files),
    )


def sent_user(gateway) -> str:
    content = gateway.fake.requests[-1].body["messages"][-1]["content"]
    assert isinstance(content, str)
    return content


def sent_messages(gateway) -> list[ChatMessage]:
    body = gateway.fake.requests[-1].body
    return [ChatMessage(m["role"], m["content"]) for m in body["messages"]]


def sources_of(user: str) -> str:
    match = re.search(r"<sources>\n(.*)\n</sources>", user, re.DOTALL)
    assert match, "no sources in the request"
    return match.group(1)


async def test_forum_prompt_cites_the_guilds_similar_thread_as_a_numbered_source(
    gateway, sessionmaker, knowledge
):
    service = forum(gateway, sessionmaker, Grounding(knowledge))
    outcome = await service.answer(
        post("No module named requests", "ModuleNotFoundError: No module named 'requests'")
    )

    assert isinstance(outcome, Answered)
    user = sent_user(gateway)
    sources = sources_of(user)
    assert sources.startswith(
        f"[1] ModuleNotFoundError: No module named requests — {thread_url(GUILD, PIP)}\n"
    )
    assert "pip install requests" in sources  # the answer's excerpt
    assert "[n]" not in user and "for example [1]" in user and "Never invent a link" in user
    assert [hit.thread_id for hit in outcome.sources] == [PIP]
    assert outcome.sources[0].url == thread_url(GUILD, PIP)


async def test_a_thread_of_another_guild_never_appears(gateway, sessionmaker, knowledge):
    service = forum(gateway, sessionmaker, Grounding(knowledge))
    # The other server's thread matches this post better than ours does.
    outcome = await service.answer(
        post(
            "No module named requests après pip install",
            "ModuleNotFoundError alors que pip install a marché, deux Python ?",
        )
    )

    assert isinstance(outcome, Answered)
    user = sent_user(gateway)
    assert str(THEIRS) not in user and "deux Python : utilise" not in user
    assert thread_url(GUILD, PIP) in sources_of(user)
    assert THEIRS not in {hit.thread_id for hit in outcome.sources}


async def test_ask_sends_the_similar_thread_as_a_source_with_the_instruction(gateway, knowledge):
    service = ask(gateway, Grounding(knowledge))
    context = CallContext(feature=Feature.ASK, guild_id=GUILD)
    outcome = await service.ask(
        "docker compose postgres ne démarre pas, port 5432", author="alice", context=context
    )

    assert isinstance(outcome, Answered)
    user = sent_user(gateway)
    assert sources_of(user).startswith(
        f"[1] Docker compose ne démarre pas le conteneur postgres — {thread_url(GUILD, DOCKER)}"
    )
    assert "par exemple [1]" in user and "N'invente jamais de lien" in user
    assert [hit.thread_id for hit in outcome.sources] == [DOCKER]


async def test_ask_of_another_guild_gets_only_its_own_threads(gateway, knowledge):
    service = ask(gateway, Grounding(knowledge))
    context = CallContext(feature=Feature.ASK, guild_id=OTHER)
    outcome = await service.ask("No module named requests", author="bob", context=context)

    assert isinstance(outcome, Answered)
    sources = sources_of(sent_user(gateway))
    assert thread_url(OTHER, THEIRS) in sources
    assert str(PIP) not in sources and str(DOCKER) not in sources
    assert [hit.thread_id for hit in outcome.sources] == [THEIRS]


async def test_knowledge_off_or_no_similar_thread_means_no_sources(
    gateway, sessionmaker, knowledge
):
    off = forum(gateway, sessionmaker, None)
    outcome = await off.answer(post("No module named requests", "ModuleNotFoundError requests"))
    assert isinstance(outcome, Answered) and outcome.sources == ()
    assert "<sources>" not in sent_user(gateway) and "solved" not in sent_user(gateway)

    on = ask(gateway, Grounding(knowledge))
    context = CallContext(feature=Feature.ASK, guild_id=GUILD)
    outcome = await on.ask("Une recette de tarte aux pommes ?", author="alice", context=context)
    assert isinstance(outcome, Answered) and outcome.sources == ()
    assert "<sources>" not in sent_user(gateway)

    outside = await on.ask("No module named requests", author="alice")  # no guild
    assert isinstance(outside, Answered) and outside.sources == ()
    assert "<sources>" not in sent_user(gateway)


def log(tag: str, chars: int = AttachmentLimits().max_text_chars + 500) -> str:
    lines, size, i = [], 0, 0
    while size < chars:
        line = f"2026-11-01 12:00:{i % 60:02d} ERROR {tag}[{i}] ModuleNotFoundError requests\n"
        lines.append(line)
        size += len(line)
        i += 1
    return "".join(lines)


async def test_forum_request_fits_with_sources_and_two_big_logs(gateway, sessionmaker):
    kb = KnowledgeBase(sessionmaker)
    long_answer = "Installe le paquet dans le bon environnement virtuel. " * 400
    await kb.upsert(
        solved(
            PIP + n,
            GUILD,
            f"No module named requests ({n})",
            "ModuleNotFoundError: No module named requests, logs attached. " * 40,
            long_answer,
        )
        for n in range(3)
    )
    service = forum(gateway, sessionmaker, Grounding(kb))
    question = "ModuleNotFoundError: No module named requests, logs attached."
    files = [text_file("worker.log", log("worker")), text_file("db.log", log("db"))]

    outcome = await service.answer(post("No module named requests", question, files=files))

    assert isinstance(outcome, Answered) and len(outcome.sources) == 3
    messages = sent_messages(gateway)
    assert tokens.count_messages(messages, FORUM_CONFIG.model) <= FORUM_CONFIG.max_prompt_tokens
    assert gateway.fake.requests[-1].prompt_tokens <= FORUM_CONFIG.max_prompt_tokens
    user = messages[-1].content
    assert isinstance(user, str)
    sources = sources_of(user)
    assert tokens.count_text(sources, FORUM_CONFIG.model) <= MAX_SOURCE_TOKENS
    assert all(f"[{n}] No module named requests" in sources for n in (1, 2, 3))
    assert question in user  # the member's question is whole
    assert "--- worker.log ---" in user and "--- db.log ---" in user
    assert "worker[0]" in user and "db[0]" in user  # each log keeps a part


async def test_ask_near_its_limit_quotes_less_and_still_fits(gateway, knowledge):
    context = CallContext(feature=Feature.ASK, guild_id=GUILD)
    question = "No module named requests. " + "Détails du contexte. " * 60
    await ask(gateway, None).ask(question, author="alice", context=context)
    bare = tokens.count_messages(sent_messages(gateway), ASK_CONFIG.model)
    config = FeatureConfig("gpt-4o-mini", 500, bare + 250)  # room for a short source only
    service = ask(gateway, Grounding(knowledge), config)

    outcome = await service.ask(question, author="alice", context=context)

    assert isinstance(outcome, Answered) and [h.thread_id for h in outcome.sources] == [PIP]
    user = sent_user(gateway)
    assert thread_url(GUILD, PIP) in sources_of(user) and question in user
    assert tokens.count_messages(sent_messages(gateway), config.model) <= config.max_prompt_tokens
    assert gateway.fake.requests[-1].prompt_tokens <= config.max_prompt_tokens


async def test_a_failing_knowledge_base_still_lets_the_answer_through(
    gateway, sessionmaker, tmp_path
):
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'never-migrated.db'}")
    try:
        broken = KnowledgeBase(make_sessionmaker(engine))  # no knowledge table there
        service = forum(gateway, sessionmaker, Grounding(broken))
        outcome = await service.answer(post("No module named requests", "ModuleNotFoundError"))
    finally:
        await engine.dispose()

    assert isinstance(outcome, Answered) and outcome.sources == ()
    assert "<sources>" not in sent_user(gateway)


async def test_similar_lists_the_guilds_threads_without_any_model_call(gateway, knowledge):
    service = SimilarService(knowledge, k=3)

    found = await service.similar("No module named requests", guild_id=GUILD)

    assert isinstance(found, SimilarFound)
    assert [hit.thread_id for hit in found.hits] == [PIP]
    assert found.hits[0].url == thread_url(GUILD, PIP) and 0 < found.hits[0].score <= 1
    assert await service.similar("tarte aux pommes", guild_id=GUILD) == NothingSimilar()
    assert await service.similar("", guild_id=GUILD) == BadQuery()
    assert await service.similar("🙂 🎉 ", guild_id=GUILD) == BadQuery()
    assert await SimilarService(None).similar("requests", guild_id=GUILD) == KnowledgeOff()
    assert gateway.fake.requests == []
