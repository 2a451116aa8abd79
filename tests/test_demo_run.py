"""The offline demo as a new user meets it: `make run` without a token, in either language."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import sys

import pytest

from ibot.config import load_settings
from ibot.demo import configure_demo_logging, run_demo
from ibot.i18n import t

# Words of the French scene and of the bot's French messages.
FRENCH = ("Coût", "Salut", "Bonjour", "Réponse", "pièces jointes", "Seuls", "Résumé", "Merci")


async def test_demo_in_english_is_english_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lines: list[str] = []

    code = await run_demo(load_settings(None, prompts={"language": "en"}), echo=lines.append)

    out = "\n".join(lines)
    assert code == 0
    assert "(attachments: error.png, bot.log)" in out
    assert "Hi Alice! The error comes from here" in out  # the forum answer
    assert "Only moderators and admins can ask for a summary." in out
    assert "What is a coroutine?" in out
    assert out.count("Cost:") == 5  # one footer per answer
    assert [word for word in FRENCH if word in out] == []
    assert lines[-1] == t("demo.next_steps", "en")
    assert "BOT_TOKEN" in lines[-1] and "Deploying for real" in lines[-1]


def test_demo_logging_hides_info_lines_but_not_warnings(monkeypatch):
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    configure_demo_logging(load_settings(None, logging={"format": "json", "level": "INFO"}))

    logging.getLogger("nextcord.gateway").info("Websocket closed with 1000, cannot reconnect.")
    logging.getLogger("alembic.runtime.migration").info("Running upgrade 0001 -> 0002")
    logging.getLogger("ibot.gateway").warning("model price unknown")

    assert stderr.getvalue().count("\n") == 1
    assert "model price unknown" in stderr.getvalue()


@pytest.mark.slow
async def test_run_without_a_token_prints_the_transcript_only_then_the_next_steps(tmp_path):
    # A clean directory: no config/ibot.toml, no .env; no credential in the environment.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("IBOT_", "OPENAI_")) and k not in ("BOT_TOKEN", "DISCORD_TOKEN")
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ibot",
        "run",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out_bytes, err_bytes = await asyncio.wait_for(process.communicate(), 120)
    out, err = out_bytes.decode(), err_bytes.decode()

    assert process.returncode == 0, err
    # Piped, the log is JSON lines on stderr: there is none, and none in the transcript.
    assert err == ""
    assert not [line for line in out.splitlines() if line.startswith("{")]
    assert "Websocket closed" not in out
    lines = out.splitlines()
    assert lines[0].startswith("No Discord token configured")
    assert out.count("Coût :") == 5  # the whole scene was played, in French (the default)
    assert lines[-1] == t("demo.next_steps", "fr")
