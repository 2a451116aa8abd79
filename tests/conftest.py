"""Fixtures shared by the whole suite.

Every test runs offline: the host's real credentials and config are kept out, so a
developer's own OPENAI_API_KEY or BOT_TOKEN can neither leak into nor change a test.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from throwaway_pg import DB_KINDS, database_url

from ibot.db.engine import create_engine, make_sessionmaker
from ibot.db.ledger import Ledger
from ibot.db.migrate import upgrade
from ibot.llm.gateway import ModelGateway
from ibot.llm.openai_backend import OpenAIBackend
from ibot.pricing import default_price_table
from ibot.testing import spec_violations
from ibot.testing.fake_openai import FakeOpenAI

_HOST_VARIABLES = (
    "BOT_TOKEN",
    "DISCORD_TOKEN",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "FORUM_CHANNEL_IDS",
    "GPT_CHANNEL_ID",
    "IBOT_CONFIG",
    "IBOT_DATABASE_URL",
)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _HOST_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name in list(os.environ):
        if name.startswith("IBOT_"):
            monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def _fakes_follow_the_specs():
    """Every test runs with the fakes' spec checks on; a test whose traffic departs from
    Discord's or OpenAI's published specification fails, naming each departure."""
    spec_violations.enable()
    spec_violations.drain()
    yield
    found = spec_violations.drain()
    if found:
        pytest.fail(
            "the fake servers saw traffic that departs from the published API specs:\n"
            + "\n".join(f"- {v}" for v in found),
            pytrace=False,
        )


@pytest.fixture(params=DB_KINDS)
async def db_url(request: pytest.FixtureRequest, tmp_path: Path):
    """A fresh, empty database URL: SQLite, then PostgreSQL (skipped without a server)."""
    async with database_url(request.param, tmp_path) as url:
        yield url


@pytest.fixture
async def sessionmaker(db_url: str):
    """Sessions on `db_url`, upgraded to the current schema."""
    await upgrade(db_url)
    engine = create_engine(db_url)
    yield make_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
def ledger(sessionmaker) -> Ledger:
    """The ledger on `sessionmaker` (SQLite, then PostgreSQL)."""
    return Ledger(sessionmaker)


@pytest.fixture
async def gateway(sessionmaker):
    """A ModelGateway with the real OpenAI client on a fake OpenAI server (`gw.fake`),
    its ledger on `sessionmaker`; no retries."""
    async with FakeOpenAI() as fake:
        backend = OpenAIBackend(api_key="sk-test", base_url=fake.base_url, max_retries=0)
        gw = ModelGateway(ledger=Ledger(sessionmaker), prices=default_price_table(), openai=backend)
        gw.fake = fake  # type: ignore[attr-defined]
        yield gw
        await backend.aclose()
