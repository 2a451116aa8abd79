"""The command line as a new user meets it: `ibot ask` shows the answer, its cost and
the warnings, and the log's info lines only when asked for (`-v`, IBOT_LOG_LEVEL,
IBOT_LOGGING__LEVEL); help texts keep their [bracketed] words; a wrong `--group-by`
lists the right ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli import KEY, run_cli
from typer.testing import CliRunner

from ibot.cli import app
from ibot.testing.fake_openai import FakeOpenAI


@pytest.fixture
async def fake():
    async with FakeOpenAI(api_key=KEY) as server:
        server.set_default_answer("Installe le paquet avec pip.")
        yield server


@pytest.fixture
def env(fake: FakeOpenAI, tmp_path: Path) -> dict[str, str]:
    return {
        "OPENAI_API_KEY": KEY,
        "OPENAI_BASE_URL": fake.base_url,
        "IBOT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
        "IBOT_LOGGING__FORMAT": "json",
    }


def log_lines(stderr: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


async def test_ask_shows_the_answer_and_its_cost_and_no_info_log(env):
    code, out, err = await run_cli("ask", "Pourquoi ModuleNotFoundError ?", env=env)

    assert code == 0, err
    assert "Installe le paquet avec pip." in out and "Coût :" in out
    assert err == ""


async def test_ask_still_shows_warnings(env):
    env["IBOT_FEATURES__ASK__MODEL"] = "my-own-model"  # no price: a warning says so

    code, out, err = await run_cli("ask", "Bonjour ?", env=env)

    assert code == 0, err
    assert "Coût : ? USD" in out
    assert [line["event"] for line in log_lines(err)] == ["price_unknown"]


@pytest.mark.parametrize(
    ("args", "extra_env"),
    [
        (["-v", "ask"], {}),
        (["--verbose", "ask"], {}),
        (["ask"], {"IBOT_LOGGING__LEVEL": "INFO"}),
        (["ask"], {"IBOT_LOG_LEVEL": "info"}),
    ],
    ids=["-v", "--verbose", "IBOT_LOGGING__LEVEL", "IBOT_LOG_LEVEL"],
)
async def test_the_info_log_is_there_when_asked_for(env, args, extra_env):
    code, out, err = await run_cli(*args, "Bonjour ?", env={**env, **extra_env})

    assert code == 0, err
    assert "Installe le paquet avec pip." in out
    lines = log_lines(err)
    events = [str(line["event"]) for line in lines]
    assert "model_call" in events
    assert any(event.startswith("Running upgrade") for event in events)
    # Alembic's boilerplate is left out even then.
    assert not [e for e in events if e.startswith(("setup plugin", "Context impl", "Will assume"))]


def help_of(*command: str) -> str:
    result = CliRunner().invoke(app, [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


@pytest.mark.parametrize(
    ("command", "bracketed"),
    [
        (("serve-local",), "TOML settings whose [local_model] gives the generation settings."),
        (("finetune", "prepare"), 'Each sample is {"context": [previous turns], "response"'),
    ],
)
def test_help_keeps_bracketed_words(command, bracketed):
    assert bracketed in help_of(*command)


def test_help_lists_the_verbose_option():
    assert "-v, --verbose" in help_of()


def test_a_wrong_group_by_is_refused_with_the_valid_values():
    result = CliRunner().invoke(app, ["costs", "report", "--group-by", "guild"])

    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "'guild' is not one of feature, user, model, channel, day, backend, status." in text
    assert "Traceback" not in result.output


async def test_a_wrong_log_level_in_the_environment_is_one_line(env):
    code, out, err = await run_cli("ask", "Bonjour ?", env={**env, "IBOT_LOG_LEVEL": "LOUD"})

    assert code == 2
    assert out == ""
    assert err.strip().splitlines() == [
        "error: IBOT_LOG_LEVEL=LOUD is not one of CRITICAL, ERROR, WARNING, INFO, DEBUG"
    ]
