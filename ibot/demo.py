"""The offline demo: iBot's real pipeline against the fake OpenAI server, no credentials.

It starts the OpenAI-compatible fake on 127.0.0.1, points the real `AsyncOpenAI` client
at it, asks questions through the same services the Discord commands use (one with a
screenshot and a log file attached), and prints what a user would see, then the cost
report computed from the ledger. Everything runs in a temporary directory, so a demo
never mixes with a real ledger.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw
from pydantic import SecretStr

from ibot.config import Settings
from ibot.services.attachments import AttachmentSource

DEMO_QUESTION = (
    "Pourquoi mon script Python plante avec « ModuleNotFoundError: No module named 'requests' » ?"
)
DEMO_LOG = (
    "Traceback (most recent call last):\n"
    '  File "bot.py", line 1, in <module>\n'
    "    import requests\n"
    "ModuleNotFoundError: No module named 'requests'\n"
)


def demo_screenshot() -> bytes:
    """A small synthetic 'terminal screenshot' (no binary assets in the repo)."""
    img = Image.new("RGB", (1280, 720), (30, 30, 30))
    draw = ImageDraw.Draw(img)
    for row, line in enumerate(DEMO_LOG.splitlines()):
        draw.text((20, 20 + row * 18), line, fill=(220, 220, 220))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def _source(name: str, data: bytes, content_type: str) -> AttachmentSource:
    async def read() -> bytes:
        return data

    return AttachmentSource(filename=name, size=len(data), content_type=content_type, read=read)


async def run_demo(settings: Settings, echo: Callable[[str], None] = print) -> int:
    """Play the scene and print it; returns the process exit code."""
    from ibot.app import build_services
    from ibot.i18n import t
    from ibot.pricing import format_usd
    from ibot.services import reports
    from ibot.services.ask import Answered
    from ibot.testing.fake_openai import FakeOpenAI

    lang = settings.prompts.language
    with tempfile.TemporaryDirectory(prefix="ibot-demo-") as tmp:
        async with FakeOpenAI() as fake:
            demo_settings = settings.model_copy(
                update={
                    "openai_api_key": SecretStr("sk-demo-not-a-real-key"),
                    "openai_base_url": fake.base_url,
                    "database_url": f"sqlite+aiosqlite:///{Path(tmp) / 'demo.db'}",
                }
            )
            services = await build_services(demo_settings)
            try:
                echo(f"== iBot demo (offline: fake OpenAI at {fake.base_url}) ==\n")
                scenes = [
                    (
                        "alice",
                        DEMO_QUESTION,
                        [
                            _source("erreur.png", demo_screenshot(), "image/png"),
                            _source("bot.log", DEMO_LOG.encode(), "text/plain"),
                        ],
                    ),
                    ("bob", "Comment je crée un environnement virtuel avec Python 3.12 ?", []),
                ]
                for author, question, attachments in scenes:
                    echo(f"[{author}] /ask-gpt {question}")
                    for attachment in attachments:
                        echo(f"    (pièce jointe : {attachment.filename})")
                    outcome = await services.ask_service().ask(
                        question, author=author, attachments=attachments
                    )
                    if not isinstance(outcome, Answered):
                        echo(f"  !! {outcome}")
                        return 1
                    echo(f"[iBot] {outcome.text}")
                    echo(
                        "       "
                        + t(
                            "cost_footer",
                            lang,
                            tokens=outcome.usage.total_tokens,
                            cost=format_usd(outcome.cost_micros),
                        )
                    )
                    echo("")
                report = await reports.cost_report(
                    services.sessionmaker, reports.parse_period("today"), reports.GroupBy.model
                )
                echo("== ibot costs report --period today --group-by model ==")
                echo(reports.render_table(report))
            finally:
                await services.aclose()
    return 0
