"""The local model answers when OpenAI cannot, and the ledger says so.

Real pieces throughout: the tiny GPT-2 built on disk and loaded by LocalBackend, the
real OpenAI client against the fake server, the real gateway and ledger.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cogs._render import cost_footer
from ibot.config import LocalModelSettings
from ibot.db.engine import create_engine, make_sessionmaker
from ibot.db.ledger import Ledger
from ibot.db.migrate import upgrade
from ibot.domain import (
    Backend,
    CallContext,
    CallStatus,
    ChatMessage,
    ErrorKind,
    Feature,
    LLMCallError,
    LLMRequest,
)
from ibot.llm.gateway import ModelGateway
from ibot.llm.local import LocalBackend
from ibot.llm.openai_backend import OpenAIBackend
from ibot.pricing import default_price_table
from ibot.testing.fake_openai import FakeOpenAI
from ibot.testing.tiny_model import build_tiny_model

pytestmark = pytest.mark.slow


class NoWait:
    async def __call__(self, seconds: float) -> None:
        return None


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-gpt2")


@pytest.fixture
async def local(model_dir):
    backend = LocalBackend(
        LocalModelSettings(path=model_dir, device="cpu", max_new_tokens=8, do_sample=False)
    )
    await backend.start()
    yield backend
    await backend.aclose()


@pytest.fixture
async def ledger(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'l.db'}"
    await upgrade(url)
    engine = create_engine(url)
    yield Ledger(make_sessionmaker(engine))
    await engine.dispose()


@pytest.fixture
async def fake():
    async with FakeOpenAI() as server:
        yield server


def request() -> LLMRequest:
    return LLMRequest(
        messages=(ChatMessage("user", "Bonjour, comment vas-tu ?"),),
        model="gpt-4o",
        max_output_tokens=50,
        context=CallContext(feature=Feature.CHAT, guild_id=1, user_id=2),
    )


def gateway(fake, ledger, local, **backend_kw) -> ModelGateway:
    backend = OpenAIBackend(
        api_key="sk-x",
        base_url=fake.base_url,
        sleep=NoWait(),
        **{"max_retries": 1, "timeout_s": 5, **backend_kw},
    )
    return ModelGateway(ledger=ledger, prices=default_price_table(), openai=backend, local=local)


def break_openai(fake: FakeOpenAI, condition: str) -> None:
    if condition == "server_error":
        fake.fail_with_status(503, times=10)
    elif condition == "timeout":
        fake.hang(times=10)
    elif condition == "connection":
        fake.drop_connection(times=10)
    elif condition == "rate_limit":
        fake.rate_limit(times=10, retry_after_s=0.01)
    elif condition == "insufficient_quota":
        fake.insufficient_quota(times=10)


@pytest.mark.parametrize(
    "condition", ["server_error", "timeout", "connection", "rate_limit", "insufficient_quota"]
)
async def test_openai_failure_makes_the_local_model_answer(fake, ledger, local, condition):
    break_openai(fake, condition)
    gw = gateway(fake, ledger, local, timeout_s=0.3 if condition == "timeout" else 5)

    result = await gw.complete(request())

    assert result.backend is Backend.LOCAL and result.text
    assert result.status is CallStatus.FALLBACK
    failed, answered = await ledger.rows()
    assert (failed.backend, failed.status, failed.error_kind) == ("openai", "error", condition)
    assert (answered.backend, answered.status) == ("local", "fallback")
    assert f"openai {condition}" in answered.note
    assert answered.completion_tokens > 0 and answered.cost_micros == 0
    assert "local" in cost_footer(result.usage, result.cost_micros, result.backend, "en").lower()


async def test_no_api_key_means_the_local_model_answers(ledger, local):
    gw = ModelGateway(ledger=ledger, prices=default_price_table(), openai=None, local=local)

    result = await gw.complete(request())

    assert result.backend is Backend.LOCAL and result.text
    [row] = await ledger.rows()
    assert (row.backend, row.status) == ("local", "fallback")
    assert "no OpenAI key" in row.note


async def test_a_bad_request_is_not_sent_to_the_local_model(fake, ledger, local):
    fake.fail_with_status(400)
    gw = gateway(fake, ledger, local)

    with pytest.raises(LLMCallError) as caught:
        await gw.complete(request())

    assert caught.value.kind is ErrorKind.BAD_REQUEST
    assert [r.backend for r in await ledger.rows()] == ["openai"]


async def test_when_the_local_model_fails_too_the_user_gets_one_clear_error(
    fake, ledger, model_dir
):
    stopped = LocalBackend(LocalModelSettings(path=model_dir, device="cpu", max_new_tokens=4))
    await stopped.start()
    await stopped.aclose()  # it now refuses every request
    fake.insufficient_quota(times=5)
    gw = gateway(fake, ledger, stopped)

    with pytest.raises(LLMCallError) as caught:
        await gw.complete(request())

    assert caught.value.kind is ErrorKind.QUOTA  # the first problem is what the user hears
    rows = await ledger.rows()
    assert [(r.backend, r.status) for r in rows] == [("openai", "error"), ("local", "error")]
