"""The `ibot` command line, run as a real process, against the fake OpenAI server."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import sys
from pathlib import Path

import pytest
from PIL import Image

from ibot.domain import Usage
from ibot.pricing import default_price_table
from ibot.testing.fake_openai import FakeOpenAI

REPO = Path(__file__).resolve().parents[1]
KEY = "sk-cli-test-abcdefghijklmnopqrstuvwx"


async def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run `python -m ibot ARGS` without blocking the loop the fake server runs on."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("IBOT_", "OPENAI_"))}
    full_env.update(env or {})
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ibot",
        *args,
        cwd=REPO,
        env=full_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode, out.decode(), err.decode()


@pytest.fixture
async def fake():
    async with FakeOpenAI(api_key=KEY) as server:
        yield server


@pytest.fixture
def env(fake: FakeOpenAI, tmp_path: Path) -> dict[str, str]:
    return {
        "OPENAI_API_KEY": KEY,
        "OPENAI_BASE_URL": fake.base_url,
        "IBOT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
        "IBOT_LOGGING__FORMAT": "json",
    }


async def test_ask_prints_answer_and_cost_then_report_lists_the_call(fake, env, tmp_path):
    fake.script("Installe le paquet avec **pip install requests**.")
    shot = tmp_path / "capture.png"
    Image.new("RGB", (1024, 768), (0, 0, 0)).save(shot)

    code, out, err = await run_cli(
        "ask", "Pourquoi ModuleNotFoundError ?", "--image", str(shot), env=env
    )

    assert code == 0, err
    assert "Installe le paquet avec **pip install requests**." in out
    served = fake.requests[-1]
    usage = Usage(
        prompt_tokens=served.prompt_tokens,
        completion_tokens=served.completion_tokens,
        cached_tokens=served.cached_tokens,
        image_tokens=served.image_tokens,
    )
    cost = default_price_table().cost_micros(usage, served.model)
    assert served.image_tokens > 0
    assert f"{usage.total_tokens}" in out
    assert KEY not in out + err

    code, out, err = await run_cli(
        "costs", "report", "--period", "today", "--group-by", "model", "--format", "csv", env=env
    )
    assert code == 0, err
    [row] = list(csv.DictReader(io.StringIO(out)))
    assert row["key"] == served.model
    assert int(row["calls"]) == 1
    assert int(row["cost_micros"]) == cost

    code, out, err = await run_cli("costs", "report", "--period", "today", "--rows", env=env)
    assert code == 0, err
    [call] = list(csv.DictReader(io.StringIO(out)))
    assert call["request_id"] == served.request_id
    assert int(call["prompt_tokens"]) == served.prompt_tokens
    assert int(call["cost_micros"]) == cost


async def test_failed_ask_says_why_and_is_still_in_the_ledger(fake, env):
    fake.insufficient_quota(times=3)

    code, out, err = await run_cli("ask", "Bonjour ?", env=env)

    assert code == 1
    assert "Traceback" not in err
    code, out, _ = await run_cli(
        "costs", "report", "--period", "today", "--group-by", "status", "--format", "json", env=env
    )
    report = json.loads(out)
    assert [r["key"] for r in report["rows"]] == ["error"]


async def test_bad_config_is_one_clear_line_and_exit_2(tmp_path):
    code, _out, err = await run_cli(
        "config", "check", env={"IBOT_FEATURES__ASK__MAX_OUTPUT_TOKENS": "-5"}
    )
    assert code == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert "features.ask.max_output_tokens" in lines[0]


async def test_config_check_never_shows_secrets():
    code, out, err = await run_cli(
        "config", "check", env={"OPENAI_API_KEY": KEY, "BOT_TOKEN": "MTIz.secret.token-value"}
    )
    assert code == 0, err
    assert KEY not in out + err and "MTIz.secret.token-value" not in out + err
    assert "openai key: set" in out


async def test_help_does_not_import_torch_or_transformers():
    probe = (
        "import sys, ibot, ibot.cli\n"
        "from typer.testing import CliRunner\n"
        "result = CliRunner().invoke(ibot.cli.app, ['--help'])\n"
        "assert result.exit_code == 0, result.output\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", probe, cwd=REPO, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    assert process.returncode == 0
    assert out.decode().strip() == "[]"


@pytest.mark.slow
async def test_run_without_a_token_says_so_and_plays_the_demo():
    code, out, err = await run_cli("run", env={"IBOT_LOGGING__FORMAT": "json"})
    assert code == 0, err
    assert out.splitlines()[0].startswith("No Discord token configured")
    # The scene: forum answer with its cost, /ask-gpt, /summary, refusal, chat, report.
    assert "(pièces jointes : erreur.png, bot.log)" in out
    assert out.count("Coût :") == 5
    assert "Seuls les modérateurs" in out
    assert "C'est quoi une coroutine ?" in out
    total = [line for line in out.splitlines() if line.startswith("TOTAL")]
    assert total and total[0].split()[1] == "5"
    assert "Traceback" not in err
