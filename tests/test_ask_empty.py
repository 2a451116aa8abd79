"""An empty or blank question is refused in one short line before any model call, by
`ibot ask` and by /ask-gpt alike (AskService refuses it): nothing sent, nothing billed."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_cli import KEY, run_cli

from cogs._render import failure_text
from ibot.domain import ErrorKind, Feature
from ibot.i18n import load_prompts, t
from ibot.services.ask import AskService
from ibot.services.outcomes import Failed
from ibot.services.prompts import FeatureConfig, PromptBuilder
from ibot.testing.fake_openai import FakeOpenAI
from ibot.testing.harness import Harness

BLANKS = ["", "   ", "\n\t \u3000"]


@pytest.mark.parametrize("question", BLANKS)
async def test_the_service_refuses_a_blank_question_without_a_call(gateway, ledger, question):
    prompts = PromptBuilder(load_prompts("fr"), extra={"bot_name": "iBot"})
    service = AskService(gateway, prompts, FeatureConfig("gpt-4o", 200, 8000))

    outcome = await service.ask(question, author="Alice")

    assert outcome == Failed(kind=ErrorKind.EMPTY_QUESTION)
    assert failure_text(outcome, "fr") == "Ta question est vide : écris ce que tu veux demander."
    assert failure_text(outcome, "en") == "Your question is empty: write what you want to ask."
    assert gateway.fake.requests == []
    assert await ledger.rows() == []


@pytest.mark.parametrize("question", ["", "   "])
async def test_ibot_ask_with_a_blank_question_prints_one_line_and_fails(tmp_path, question):
    async with FakeOpenAI(api_key=KEY) as fake:
        env = {
            "OPENAI_API_KEY": KEY,
            "OPENAI_BASE_URL": fake.base_url,
            "IBOT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
        }
        code, out, err = await run_cli("ask", question, env=env)

        assert code == 1
        assert out == ""
        assert err.splitlines() == [t("error.empty_question", "fr")]
        assert fake.requests == []


@pytest.mark.slow
async def test_ask_gpt_with_a_blank_question_tells_only_the_asker_and_keeps_no_cooldown(
    tmp_path: Path,
):
    settings = {"discord": {"ask_cooldown_s": 600}}
    async with Harness(tmp_path, settings=settings) as harness:
        world, discord, openai = harness.world, harness.discord, harness.openai
        openai.script("Bonjour !")

        blank = await discord.invoke_slash(
            world.guild, world.member, world.text, "ask-gpt", {"question": "   "}
        )
        refusal = await blank.wait_answer(timeout=10)
        assert refusal.content == t("error.empty_question", "fr")
        assert refusal.ephemeral and not refusal.embeds
        assert openai.requests == []
        assert await harness.services.ledger.rows() == []

        # The refusal did not start the member's cooldown: a real question is answered.
        real = await discord.invoke_slash(
            world.guild, world.member, world.text, "ask-gpt", {"question": "Bonjour ?"}
        )
        answer = await real.wait_answer(timeout=10)
        assert answer.embeds and "Bonjour !" in answer.embeds[0]["description"]
        [row] = await harness.services.ledger.rows()
        assert row.feature == Feature.ASK
