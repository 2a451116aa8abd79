"""The forum answer's prompt budget: the member's question and every file get their share.

Built from real pieces: the shipped English templates, a ModelGateway on the fake OpenAI
server, the SQLite thread store, attachments read by the real attachment pipeline with
the default limits (20 000 characters of text per file) and the default 12 000-token
prompt limit of the forum feature. The assertions are on what the model received.
"""

from __future__ import annotations

import hashlib
import re

import pytest

from ibot import tokens
from ibot.config import AutoReplySettings
from ibot.db.threads import ThreadStore
from ibot.domain import ChatMessage
from ibot.i18n import load_prompts
from ibot.services.attachments import AttachmentLimits, AttachmentSource
from ibot.services.forum import ForumPost, ForumService, share_budget
from ibot.services.outcomes import Answered
from ibot.services.prompts import FeatureConfig, PromptBuilder

SETTINGS = AutoReplySettings()
CONFIG = FeatureConfig(SETTINGS.model, SETTINGS.max_output_tokens, SETTINGS.max_prompt_tokens)
MAX_TEXT_CHARS = AttachmentLimits().max_text_chars
# The documented floor of the post's own text (ibot.services.forum.MIN_CONTENT_TOKENS).
FLOOR = 1000
QUESTION = "My worker cannot reach the database since this morning, the logs are attached. Why?"


@pytest.fixture
def service(gateway, sessionmaker) -> ForumService:
    prompts = PromptBuilder(load_prompts("en"), extra={"bot_name": "iBot"})
    return ForumService(gateway, prompts, CONFIG, ThreadStore(sessionmaker, owner="test"))


def log(tag: str, chars: int = MAX_TEXT_CHARS + 500) -> str:
    """A service log of about `chars` characters whose every line names `tag`."""
    lines: list[str] = []
    size = i = 0
    while size < chars:
        line = (
            f"2026-11-01 12:{i // 60 % 60:02d}:{i % 60:02d} ERROR {tag}[{i}] connection to "
            f"db-{tag}.internal:5432 refused (attempt {i})\n"
        )
        lines.append(line)
        size += len(line)
        i += 1
    return "".join(lines)


def hex_dump(chars: int = MAX_TEXT_CHARS) -> str:
    """Checksums, one a line: text that costs many tokens per character."""
    lines = (hashlib.sha256(str(i).encode()).hexdigest() + "\n" for i in range(chars // 64 + 1))
    return "".join(lines)[:chars]


def source(name: str, text: str) -> AttachmentSource:
    data = text.encode()

    async def read() -> bytes:
        return data

    return AttachmentSource(name, size=len(data), content_type="text/plain", read=read)


def post(content: str, *files: tuple[str, str]) -> ForumPost:
    return ForumPost(
        thread_id=10,
        guild_id=1,
        forum_id=2,
        title="Worker cannot reach the database",
        content=content,
        author_id=7,
        author_name="alice",
        tags=("python", "postgres"),
        attachments=tuple(source(name, text) for name, text in files),
    )


def sent_messages(gateway) -> list[ChatMessage]:
    [served] = gateway.fake.requests
    return [ChatMessage(m["role"], m["content"]) for m in served.body["messages"]]


def sent_text(user: str) -> str:
    match = re.search(r"<message>\n(.*)\n</message>", user, re.DOTALL)
    assert match, "the post's text block is missing from the request"
    return match.group(1)


def sent_file(user: str, name: str) -> str:
    """The body of the file `name` as sent, between its `--- name ---` header and fence."""
    header = f"\n\n--- {name} ---\n```\n"
    assert header in user, f"the header of {name} is missing from the request"
    start = user.index(header) + len(header)
    end = user.find("\n```", start)
    return user[start:] if end < 0 else user[start:end]


def assert_fenced(user: str, name: str, body: str) -> None:
    assert f"--- {name} ---\n```\n{body}\n```" in user, f"{name} is not closed by its fence"


def assert_fits(gateway) -> None:
    messages = sent_messages(gateway)
    assert tokens.count_messages(messages, CONFIG.model) <= CONFIG.max_prompt_tokens
    assert gateway.fake.requests[0].prompt_tokens <= CONFIG.max_prompt_tokens


async def test_two_large_logs_keep_the_question_and_a_part_of_each(service, gateway):
    worker, database = log("worker"), log("postgres")
    outcome = await service.answer(post(QUESTION, ("worker.log", worker), ("db.log", database)))
    assert isinstance(outcome, Answered)

    user = sent_messages(gateway)[-1].content
    assert sent_text(user) == QUESTION
    worker_sent, database_sent = sent_file(user, "worker.log"), sent_file(user, "db.log")
    assert worker_sent and worker.startswith(worker_sent)
    assert database_sent and database.startswith(database_sent)
    assert_fenced(user, "worker.log", worker_sent)
    assert_fenced(user, "db.log", database_sent)
    # Neither file ate the other's share: both got a fair, sizeable part.
    worker_tokens = tokens.count_text(worker_sent, CONFIG.model)
    database_tokens = tokens.count_text(database_sent, CONFIG.model)
    assert min(worker_tokens, database_tokens) > 0.4 * (worker_tokens + database_tokens)
    assert_fits(gateway)


async def test_one_log_that_fits_is_sent_whole_with_the_text(service, gateway):
    worker = log("worker")
    outcome = await service.answer(post(QUESTION, ("worker.log", worker)))
    assert isinstance(outcome, Answered)

    user = sent_messages(gateway)[-1].content
    assert sent_text(user) == QUESTION
    # The attachment pipeline keeps the first 20 000 characters; none of them is dropped.
    body = sent_file(user, "worker.log")
    assert body == worker[:MAX_TEXT_CHARS]
    assert_fenced(user, "worker.log", body)
    assert_fits(gateway)


async def test_a_long_text_beside_a_large_file_keeps_at_least_the_floor(service, gateway):
    paragraph = "I restarted the worker and the database, then checked the firewall rules. "
    content = paragraph * 2000  # about 30 000 tokens: far more than the whole budget
    dump = hex_dump()
    outcome = await service.answer(post(content, ("checksums.txt", dump)))
    assert isinstance(outcome, Answered)

    user = sent_messages(gateway)[-1].content
    text = sent_text(user)
    assert content.startswith(text)
    assert tokens.count_text(text, CONFIG.model) >= FLOOR
    body = sent_file(user, "checksums.txt")
    assert body and dump.startswith(body)
    assert_fenced(user, "checksums.txt", body)
    assert_fits(gateway)


@pytest.mark.parametrize(
    ("sizes", "budget", "shares"),
    [
        ([100, 5000, 8000, 10], 6000, [100, 2945, 2945, 10]),  # small ones keep everything
        ([3000, 4000], 10_000, [3000, 4000]),  # everything fits: nothing is cut
        ([9000, 9000, 9000], 9000, [3000, 3000, 3000]),
        ([5, 5], 0, [0, 0]),
        ([], 100, []),
    ],
)
def test_the_files_budget_is_shared_fairly(sizes, budget, shares):
    assert share_budget(sizes, budget) == shares
