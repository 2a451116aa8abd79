"""`ibot kb import | embed | search` with knowledge.embeddings on, as a real process
talking to the fake OpenAI (SQLite; the PostgreSQL side of the same code is in
tests/test_semantic.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from test_kb_cli import GUILD, THREADS, export_file, run_kb

from ibot.testing.fake_openai import FakeOpenAI


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


def environment(tmp_path: Path, fake: FakeOpenAI, *, embeddings: bool = True) -> dict[str, str]:
    env = {"IBOT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'kb.db'}"}
    if embeddings:
        env |= {
            "OPENAI_API_KEY": "sk-test",
            "OPENAI_BASE_URL": fake.base_url,
            "IBOT_KNOWLEDGE__EMBEDDINGS__ENABLED": "true",
        }
    return env


def embedding_calls(fake: FakeOpenAI) -> list:
    return [r for r in fake.requests if r.endpoint == "embeddings"]


async def test_import_embeds_once_and_says_what_it_cost(tmp_path, fake):
    env = environment(tmp_path, fake)
    export = export_file(tmp_path / "threads.json")

    code, out, err = await run_kb("import", str(export), env=env)

    assert code == 0, err
    calls = embedding_calls(fake)
    assert [len(c.body["input"]) for c in calls] == [3, 1]  # a call per guild
    tokens = sum(c.prompt_tokens for c in calls)
    assert f"embeddings: 4 threads embedded in 2 calls, {tokens} tokens, " in out
    assert "0 already up to date" in out

    code, out, err = await run_kb("import", str(export), env=env)
    assert code == 0, err
    assert "embeddings: 0 threads embedded in 0 calls, 0 tokens" in out
    assert "4 already up to date" in out and len(embedding_calls(fake)) == 2

    code, out, err = await run_kb(
        "search", "comment installer python sur windows", "--guild", str(GUILD), env=env
    )
    assert code == 0, err
    assert "Installer Python sous Windows 11" in out
    [query] = embedding_calls(fake)[2:]
    assert query.body["input"] == ["comment installer python sur windows"]


async def test_embed_backfills_a_knowledge_base_imported_without_embeddings(tmp_path, fake):
    export = export_file(tmp_path / "threads.json", THREADS)
    code, out, err = await run_kb(
        "import", str(export), env=environment(tmp_path, fake, embeddings=False)
    )
    assert code == 0, err
    assert "embeddings" not in out and embedding_calls(fake) == []

    code, out, err = await run_kb("embed", "--guild", str(GUILD), env=environment(tmp_path, fake))
    assert code == 0, err
    assert out.startswith("3 threads embedded in 1 call,")
    code, out, err = await run_kb("embed", env=environment(tmp_path, fake))
    assert code == 0, err
    assert out.startswith("1 threads embedded in 1 call,") and "3 already up to date" in out


async def test_embed_with_embeddings_off_is_one_clear_error(tmp_path, fake):
    code, out, err = await run_kb("embed", env=environment(tmp_path, fake, embeddings=False))
    assert code == 2 and out == ""
    assert err.strip() == (
        "error: embeddings are off: set knowledge.embeddings.enabled = true and OPENAI_API_KEY"
    )
