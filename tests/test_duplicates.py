"""Near duplicates of a solved thread: a short answer, from the cheaper model, that
points to it.

The knowledge base holds a few solved threads (SQLite, then PostgreSQL); the shipped
prompts; a ModelGateway on the fake OpenAI server. Assertions are on what the model was
sent (model, token cap, prompt), the ledger row, and the message a member would see.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from cogs._render import answered_embeds
from ibot.db.ledger import Ledger
from ibot.db.threads import ThreadStore
from ibot.domain import CallContext, ErrorKind, Feature
from ibot.i18n import load_prompts, t
from ibot.llm.budget import BudgetExceeded, Reservation
from ibot.llm.gateway import ModelGateway
from ibot.money import format_usd
from ibot.pricing import default_price_table
from ibot.services.ask import AskService
from ibot.services.duplicates import AlreadySolved
from ibot.services.forum import ForumPost, ForumService
from ibot.services.grounding import Grounding
from ibot.services.knowledge import KnowledgeBase, SolvedThread, thread_url
from ibot.services.outcomes import Answered, Failed
from ibot.services.prompts import FeatureConfig, PromptBuilder

GUILD = 111_111_111_111_111_111
OTHER = 222_222_222_222_222_222
FORUM = 333_333_333_333_333_333
PIP = 1_300_000_000_000_000_001
DOCKER = 1_300_000_000_000_000_002
THEIRS = 1_300_000_000_000_000_003  # solved on another server

PIP_TITLE = "ModuleNotFoundError: No module named requests"
PIP_QUESTION = "Mon script plante avec ModuleNotFoundError: No module named 'requests'."
PIP_ANSWER = "Le paquet n'est pas installé dans ton venv : lance pip install requests."
DOCKER_TITLE = "Docker compose ne démarre pas le conteneur postgres"
DOCKER_QUESTION = "docker compose up échoue : port 5432 déjà utilisé."
THEIRS_TITLE = "No module named requests après pip install"
THEIRS_QUESTION = "ModuleNotFoundError: No module named 'requests' alors que pip install a marché."

CONFIG = FeatureConfig("gpt-4o", max_output_tokens=1200, max_prompt_tokens=8000)
CHEAPER = "gpt-4o-mini"
SHORT = 300


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


@pytest.fixture
async def grounding(sessionmaker) -> Grounding:
    kb = KnowledgeBase(sessionmaker)
    await kb.upsert(
        [
            solved(PIP, GUILD, PIP_TITLE, PIP_QUESTION, PIP_ANSWER),
            solved(
                DOCKER,
                GUILD,
                DOCKER_TITLE,
                DOCKER_QUESTION,
                "Un postgres local tourne déjà : arrête-le ou change le port exposé.",
            ),
            solved(
                THEIRS,
                OTHER,
                THEIRS_TITLE,
                THEIRS_QUESTION,
                "Tu avais deux Python : utilise python -m pip install requests.",
            ),
        ]
    )
    return Grounding(
        kb,
        duplicate_threshold=0.8,
        duplicate_model=CHEAPER,
        duplicate_max_output_tokens=SHORT,
    )


def prompts(lang: str) -> PromptBuilder:
    return PromptBuilder(load_prompts(lang), extra={"bot_name": "iBot"})


def forum(gateway: ModelGateway, sessionmaker, grounding: Grounding) -> ForumService:
    store = ThreadStore(sessionmaker, owner="test")
    return ForumService(gateway, prompts("en"), CONFIG, store, grounding=grounding)


def ask(gateway: ModelGateway, grounding: Grounding) -> AskService:
    return AskService(gateway, prompts("fr"), CONFIG, grounding=grounding)


def post(title: str, content: str, *, guild_id: int = GUILD) -> ForumPost:
    return ForumPost(
        thread_id=10,
        guild_id=guild_id,
        forum_id=FORUM,
        title=title,
        content=content,
        author_id=7,
        author_name="alice",
    )


def sent(gateway) -> dict:
    return gateway.fake.requests[-1].body


def user_text(body: dict) -> str:
    content = body["messages"][-1]["content"]
    assert isinstance(content, str)
    return content


def quoted(user: str) -> str:
    match = re.search(r"<sources>\n(.*)\n</sources>", user, re.DOTALL)
    assert match, "no sources in the request"
    return match.group(1)


def description(outcome: Answered, lang: str) -> tuple[str, str]:
    [[embed]] = answered_embeds(outcome, title="iBot", lang=lang, limit_bytes=8 << 20)
    assert embed.description is not None and embed.footer.text is not None
    return embed.description, embed.footer.text


async def test_forum_near_duplicate_gets_a_short_answer_from_the_cheaper_model(
    gateway, sessionmaker, grounding
):
    gateway.fake.script("Same fix as that thread: run **pip install requests** in your venv.")
    service = forum(gateway, sessionmaker, grounding)

    outcome = await service.answer(post(PIP_TITLE, PIP_QUESTION))

    body = sent(gateway)
    assert body["model"] == CHEAPER and body["max_completion_tokens"] == SHORT
    user = user_text(body)
    assert "almost identical to a thread already solved" in user
    assert "copied exactly from the [1] line" in user
    assert quoted(user).startswith(f"[1] {PIP_TITLE} — {thread_url(GUILD, PIP)}\n")
    assert "pip install requests" in quoted(user)  # the solved thread's answer
    assert "look like this request" not in user  # not the usual sources instructions
    assert isinstance(outcome, AlreadySolved) and outcome.solved.thread_id == PIP
    [row] = await Ledger(sessionmaker).rows()
    assert (row.model_requested, row.status) == (CHEAPER, "ok")
    assert row.model.startswith(CHEAPER) and row.completion_tokens <= SHORT

    text, footer = description(outcome, "en")
    assert text.startswith(
        f"✅ **Already solved here:** [{PIP_TITLE}]({thread_url(GUILD, PIP)})\n\n"
        "Same fix as that thread"
    )
    assert t("knowledge.sources_heading", "en") not in text  # its one link is on top
    assert format_usd(row.cost_micros) in footer


async def test_ask_near_duplicate_is_short_with_the_link_in_french(gateway, grounding):
    gateway.fake.script("Comme dans [1] : lance **pip install requests**.")
    context = CallContext(feature=Feature.ASK, guild_id=GUILD, user_id=7)

    outcome = await ask(gateway, grounding).ask(
        f"{PIP_TITLE} : {PIP_QUESTION}", author="bob", context=context
    )

    body = sent(gateway)
    assert body["model"] == CHEAPER and body["max_completion_tokens"] == SHORT
    user = user_text(body)
    assert "presque identique à une discussion déjà résolue" in user
    assert quoted(user).startswith(f"[1] {PIP_TITLE} — {thread_url(GUILD, PIP)}")
    assert isinstance(outcome, AlreadySolved) and outcome.solved.thread_id == PIP
    text, footer = description(outcome, "fr")
    assert text.startswith(
        f"✅ **Déjà résolu ici :** [{PIP_TITLE}]({thread_url(GUILD, PIP)})\n\nComme dans [1]"
    )
    assert "Total tokens" in footer


async def test_below_the_threshold_the_answer_is_the_normal_one_with_sources(
    gateway, sessionmaker, grounding
):
    question = (
        "Mon script Python affiche ModuleNotFoundError au lancement, le module requests manque ?"
    )
    [hit] = await grounding.knowledge.search(f"Erreur\n{question}", guild_id=GUILD)
    assert hit.thread_id == PIP and 0.3 <= hit.score < 0.8  # similar, not the same

    outcome = await forum(gateway, sessionmaker, grounding).answer(post("Erreur", question))

    body = sent(gateway)
    assert body["model"] == CONFIG.model
    assert body["max_completion_tokens"] == CONFIG.max_output_tokens
    user = user_text(body)
    assert "look like this request" in user and "almost identical" not in user
    assert f"[1] {hit.title} — {hit.url}" in quoted(user)
    assert isinstance(outcome, Answered) and not isinstance(outcome, AlreadySolved)
    text, _ = description(outcome, "en")
    assert "Already solved" not in text
    assert f"**{t('knowledge.sources_heading', 'en')}**\n[1] [{hit.title}]({hit.url})" in text


async def test_a_thread_of_another_guild_is_never_the_duplicate(gateway, sessionmaker, grounding):
    service = forum(gateway, sessionmaker, grounding)

    # Word for word another server's solved thread: here it matches only our own thread.
    mine = await service.answer(post(THEIRS_TITLE, THEIRS_QUESTION))
    assert str(THEIRS) not in user_text(sent(gateway))
    assert not isinstance(mine, AlreadySolved) or mine.solved.thread_id == PIP

    # Word for word our Docker thread, posted on the other server: no duplicate there.
    theirs = await service.answer(post(DOCKER_TITLE, DOCKER_QUESTION, guild_id=OTHER))
    body = sent(gateway)
    assert body["model"] == CONFIG.model and str(DOCKER) not in user_text(body)
    assert isinstance(theirs, Answered) and not isinstance(theirs, AlreadySolved)


async def test_when_the_cheaper_model_fails_the_normal_answer_is_given(
    gateway, sessionmaker, grounding
):
    gateway.fake.fail_with_status(404)  # e.g. a server that does not serve the cheaper model
    gateway.fake.script("Installe le paquet : **pip install requests** [1].")

    outcome = await forum(gateway, sessionmaker, grounding).answer(post(PIP_TITLE, PIP_QUESTION))

    first, second = gateway.fake.requests
    assert first.body["model"] == CHEAPER and first.status == 404
    assert second.body["model"] == CONFIG.model
    assert "look like this request" in user_text(second.body)
    assert isinstance(outcome, Answered) and not isinstance(outcome, AlreadySolved)
    assert [hit.thread_id for hit in outcome.sources][:1] == [PIP]
    failed, answered = await Ledger(sessionmaker).rows()
    assert (failed.model_requested, failed.status, failed.error_kind) == (
        CHEAPER,
        "error",
        "bad_request",
    )
    assert (answered.model_requested, answered.status) == (CONFIG.model, "ok")


class RefuseEverything:
    """A budget that is spent: every call is refused."""

    async def reserve(self, context, model, worst_case_micros) -> Reservation:
        raise BudgetExceeded("guild_daily", datetime(2030, 1, 2, tzinfo=UTC))

    async def settle(self, reservation, actual_micros) -> None:
        raise AssertionError("nothing was reserved")


async def test_a_spent_budget_gives_the_clear_refusal_once(gateway, sessionmaker, grounding):
    spent = ModelGateway(
        ledger=Ledger(sessionmaker),
        prices=default_price_table(),
        openai=gateway.openai,
        budget=RefuseEverything(),
    )

    outcome = await forum(spent, sessionmaker, grounding).answer(post(PIP_TITLE, PIP_QUESTION))

    assert isinstance(outcome, Failed) and outcome.kind is ErrorKind.BUDGET
    assert outcome.budget == "guild_daily" and outcome.resets_at is not None
    assert gateway.fake.requests == []
    [row] = await Ledger(sessionmaker).rows()  # one refusal, not one per attempt
    assert (row.status, row.error_kind, row.model_requested) == ("refused", "budget", CHEAPER)
