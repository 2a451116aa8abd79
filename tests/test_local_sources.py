"""The local model gets the quoted solved threads when its small window allows.

A tiny GPT-2 built on disk (`ibot.testing.tiny_model`) loaded by the real LocalBackend;
for the end-to-end cases, /ask-gpt's service with the knowledge base on SQLite, the real
OpenAI client on the fake server failing with 503s, and the real gateway falling back to
the local model. What is checked is the prompt the local model was fed: the sources in
front of the question when they fit beside it and the answer's room, left out (the
question whole) when they do not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from ibot.config import LocalModelSettings
from ibot.db.engine import create_engine, make_sessionmaker
from ibot.db.ledger import Ledger
from ibot.db.migrate import upgrade
from ibot.domain import Backend, CallContext, ChatMessage, Feature, LLMRequest
from ibot.i18n import load_prompts
from ibot.llm.gateway import ModelGateway
from ibot.llm.grounded import GroundedMessage
from ibot.llm.local import LocalBackend
from ibot.llm.local_prompt import MIN_NOTE_TOKENS
from ibot.llm.openai_backend import OpenAIBackend
from ibot.pricing import default_price_table
from ibot.services.ask import AskService
from ibot.services.grounding import Grounding
from ibot.services.knowledge import KnowledgeBase, SolvedThread, thread_url
from ibot.services.outcomes import Answered
from ibot.services.prompts import FeatureConfig, PromptBuilder
from ibot.testing.fake_openai import FakeOpenAI
from ibot.testing.tiny_model import EOS, build_tiny_model

pytestmark = pytest.mark.slow

POSITIONS = 512
ANSWER_ROOM = 64
WINDOW = POSITIONS - ANSWER_ROOM  # what the prompt may take
GUILD = 111_111_111_111_111_111
PIP = 1_300_000_000_000_000_001
TITLE = "No module named requests"
ANSWER = "Installe le paquet dans ton venv : pip install requests."


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny", n_positions=POSITIONS)


@pytest.fixture
async def local(model_dir: Path):
    backend = LocalBackend(
        LocalModelSettings(
            path=model_dir, device="cpu", max_new_tokens=ANSWER_ROOM, do_sample=False
        )
    )
    await backend.start()
    yield backend
    await backend.aclose()


def count(local: LocalBackend, text: str) -> int:
    return len(local.tokenizer(text, add_special_tokens=False)["input_ids"])


def grounded(question: str, *notes: str, heading: str = "Solved threads:") -> GroundedMessage:
    content = question + "\n\n<sources>\n" + "\n\n".join(notes) + "\n</sources>"
    return GroundedMessage("user", content, bare=question, notes=notes, heading=heading)


def words(local: LocalBackend, tokens: int) -> str:
    """A text of about `tokens` tokens that ends the same whatever is cut from it."""
    text = ""
    i = 0
    while count(local, text) < tokens:
        text += f" mot{i}"
        i += 1
    return text.strip()


# ---- the prompt ----------------------------------------------------------------------------


async def test_the_source_goes_before_the_question_when_it_fits(local):
    note = f"[1] {TITLE} — {thread_url(GUILD, PIP)}\n{ANSWER}"
    persona = ChatMessage("system", "Tu es iBot.")

    prompt = local.build_prompt([persona, grounded("Pourquoi ça plante ?", note)])

    text = local.tokenizer.decode(prompt)
    assert text == f"Solved threads:\n\n{note}\n\nPourquoi ça plante ?{EOS}"
    assert len(prompt) <= WINDOW


async def test_no_source_when_the_question_leaves_no_room_and_the_question_is_whole(local):
    question = words(local, WINDOW - MIN_NOTE_TOKENS)  # fits alone, not with a note
    assert count(local, question) + 1 <= WINDOW

    prompt = local.build_prompt([grounded(question, f"[1] {TITLE}\n{ANSWER}")])

    assert local.tokenizer.decode(prompt) == question + EOS


async def test_a_long_answer_is_cut_to_fit_and_the_question_never_is(local):
    question = words(local, WINDOW // 2)
    note = f"[1] {TITLE} — {thread_url(GUILD, PIP)}\n" + words(local, WINDOW)

    prompt = local.build_prompt([grounded(question, note)])

    text = local.tokenizer.decode(prompt)
    assert text.startswith(f"Solved threads:\n\n[1] {TITLE}")  # the title and link first
    assert text.endswith(f"\n\n{question}{EOS}")
    assert len(prompt) == WINDOW  # the room is used, not exceeded


async def test_the_weakest_source_goes_first_when_both_do_not_fit(local):
    question = words(local, WINDOW - 1 - MIN_NOTE_TOKENS * 3 // 2)  # room for one note
    first, second = (f"[{n}] {TITLE} {n}\n{words(local, 60)}" for n in (1, 2))

    prompt = local.build_prompt([grounded(question, first, second, heading="")])

    text = local.tokenizer.decode(prompt)
    assert text.startswith(f"[1] {TITLE} 1") and f"[2] {TITLE} 2" not in text
    assert text.endswith(question + EOS)


async def test_a_chat_template_model_gets_the_source_in_the_user_message(tmp_path):
    from transformers import AutoTokenizer

    chat_dir = build_tiny_model(tmp_path / "chat", n_positions=POSITIONS)
    tokenizer = AutoTokenizer.from_pretrained(chat_dir, local_files_only=True)
    tokenizer.chat_template = (
        "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}"
        "{% if add_generation_prompt %}[assistant] {% endif %}"
    )
    tokenizer.save_pretrained(chat_dir)
    settings = LocalModelSettings(path=chat_dir, device="cpu", max_new_tokens=ANSWER_ROOM)
    note = f"[1] {TITLE}\n{ANSWER}"
    messages = [ChatMessage("system", "Tu es iBot."), grounded("Ça plante ?", note)]
    async with LocalBackend(settings) as backend:
        with_room = tokenizer.decode(backend.build_prompt(messages))
        crowded = [messages[0], grounded(words(backend, WINDOW - 20), note)]
        without_room = tokenizer.decode(backend.build_prompt(crowded))

    assert with_room == (
        f"[system] Tu es iBot.\n[user] Solved threads:\n\n{note}\n\nÇa plante ?\n[assistant] "
    )
    assert TITLE not in without_room and "[user] mot0" in without_room


# ---- through /ask-gpt, OpenAI down ---------------------------------------------------------


class Recording:
    """The local backend, remembering the requests the gateway sent it."""

    def __init__(self, backend: LocalBackend) -> None:
        self.backend = backend
        self.name = Backend.LOCAL
        self.model_name = backend.model_name
        self.requests: list[LLMRequest] = []

    async def complete(self, request: LLMRequest, **kwargs: Any) -> Any:
        self.requests.append(request)
        return await self.backend.complete(request, **kwargs)


@pytest.fixture
async def sessionmaker(tmp_path: Path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'kb.db'}"
    await upgrade(url)
    engine = create_engine(url)
    yield make_sessionmaker(engine)
    await engine.dispose()


async def ask_with_openai_down(sessionmaker, local: LocalBackend, question: str):
    kb = KnowledgeBase(sessionmaker)
    await kb.upsert(
        [
            SolvedThread(
                guild_id=GUILD,
                forum_id=None,
                thread_id=PIP,
                title=TITLE,
                question="ModuleNotFoundError: No module named 'requests'",
                answer=ANSWER,
                answer_kind="moderator",
            )
        ]
    )
    recording = Recording(local)
    async with FakeOpenAI() as fake:
        fake.fail_with_status(503, times=10)
        openai = OpenAIBackend(api_key="sk-x", base_url=fake.base_url, max_retries=0)
        gateway = ModelGateway(
            ledger=Ledger(sessionmaker),
            prices=default_price_table(),
            openai=openai,
            local=recording,
        )
        service = AskService(
            gateway,
            PromptBuilder(load_prompts("fr"), extra={"bot_name": "iBot"}),
            FeatureConfig("gpt-4o", max_output_tokens=500, max_prompt_tokens=8000),
            grounding=Grounding(kb),
        )
        context = CallContext(feature=Feature.ASK, guild_id=GUILD, user_id=7)
        try:
            outcome = await service.ask(question, author="bob", context=context)
        finally:
            await openai.aclose()
    [request] = recording.requests
    prompt = local.build_prompt(request.messages)
    assert isinstance(outcome, Answered) and outcome.backend is Backend.LOCAL
    assert outcome.usage.prompt_tokens == len(prompt)  # what the model was really fed
    return outcome, local.tokenizer.decode(prompt)


async def test_the_local_fallback_gets_the_source_beside_a_short_question(sessionmaker, local):
    question = "No module named requests, pourquoi ?"

    outcome, fed = await ask_with_openai_down(sessionmaker, local, question)

    assert f"[1] {TITLE} — {thread_url(GUILD, PIP)}\n{ANSWER}" in fed
    assert fed.index(ANSWER) < fed.index(question)  # the question comes last, whole
    assert "<sources>" not in fed  # not OpenAI's sources block and its instructions
    assert fed.startswith("Discussions déjà résolues sur ce serveur qui peuvent aider :")
    assert [hit.thread_id for hit in outcome.sources] == [PIP]


async def test_the_local_fallback_leaves_the_source_out_for_a_long_question(sessionmaker, local):
    question = "No module named requests, pourquoi ? " + words(local, WINDOW - 140)

    _, fed = await ask_with_openai_down(sessionmaker, local, question)

    assert ANSWER not in fed and thread_url(GUILD, PIP) not in fed
    assert question in fed and fed.endswith(EOS)
