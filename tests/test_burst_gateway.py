"""A burst through the gateway against rate limits: nothing lost, 429s rare when paced.

The fake OpenAI's "minute" is shortened to one second so the burst runs in seconds; the
pacer learns that from the x-ratelimit-reset headers, as it would learn a real minute.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ibot.db.engine import create_engine, make_sessionmaker
from ibot.db.ledger import Ledger
from ibot.db.migrate import upgrade
from ibot.domain import CallContext, ChatMessage, ErrorKind, Feature, LLMCallError, LLMRequest
from ibot.llm.gateway import ModelGateway
from ibot.llm.openai_backend import OpenAIBackend
from ibot.llm.pacing import Pacer
from ibot.pricing import default_price_table
from ibot.testing.fake_openai import FakeOpenAI

pytestmark = pytest.mark.slow

CALLS = 120


async def burst(tmp_path: Path, *, paced: bool) -> tuple[FakeOpenAI, list]:
    url = f"sqlite+aiosqlite:///{tmp_path / ('paced' if paced else 'raw')}.db"
    await upgrade(url)
    engine = create_engine(url)
    async with FakeOpenAI(rpm=600, tpm=4000, window_s=1.0) as fake:
        fake.set_default_answer("Réponse courte.")
        backend = OpenAIBackend(
            api_key="sk-x", base_url=fake.base_url, max_retries=50, retry_max_wait_s=5
        )
        gateway = ModelGateway(
            ledger=Ledger(make_sessionmaker(engine)),
            prices=default_price_table(),
            openai=backend,
            pacer=Pacer(max_concurrency=16) if paced else None,
        )

        async def one(i: int):
            feature = Feature.AUTO_REPLY if i % 4 else Feature.ASK
            request = LLMRequest(
                messages=(ChatMessage("user", f"Question numéro {i} sur Python ?"),),
                model="gpt-4o-mini",
                max_output_tokens=120,
                context=CallContext(feature=feature, thread_id=i),
            )
            return await gateway.complete(request)

        results = await asyncio.gather(*(one(i) for i in range(CALLS)), return_exceptions=True)
        await backend.aclose()
    await engine.dispose()
    return fake, results


async def test_paced_burst_loses_nothing_and_rarely_hits_429(tmp_path):
    fake, results = await burst(tmp_path, paced=True)
    assert [r for r in results if isinstance(r, BaseException)] == []
    assert len(results) == CALLS and all(r.text for r in results)
    answered = {r.request_id for r in results}
    assert len(answered) == CALLS  # one answer each, no duplicate
    rate_limited = sum(1 for r in fake.requests if r.status == 429)
    assert rate_limited <= 0.02 * len(fake.requests), rate_limited


async def test_without_pacing_the_same_burst_is_throttled(tmp_path):
    fake, results = await burst(tmp_path, paced=False)
    # Retries get most calls there, the slow way; the others ran out of them on 429s.
    failed = [r for r in results if isinstance(r, BaseException)]
    assert all(isinstance(r, LLMCallError) and r.kind is ErrorKind.RATE_LIMIT for r in failed)
    assert len(failed) < CALLS / 2
    rate_limited = sum(1 for r in fake.requests if r.status == 429)
    assert rate_limited > 0.2 * CALLS
