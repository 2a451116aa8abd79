"""The offline demo: the real bot on a Discord and an OpenAI of our own, no credentials.

It starts the Discord-compatible fake and the OpenAI-compatible fake on 127.0.0.1, runs
the actual bot (real nextcord client, real `AsyncOpenAI` client, gateway, ledger) and
plays a scene: a forum thread with a screenshot and a log file, an /ask-gpt, a /summary
by a moderator, a /summary refused to a member, and two messages in the chat channel.
It prints what the users would see, in `prompts.language`, then the cost report computed
from the ledger, then what to do next to run the bot for real. Everything lives in a
temporary directory, so a demo never touches a real ledger.
"""

from __future__ import annotations

import asyncio
import io
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageDraw

from ibot.config import Settings

if TYPE_CHECKING:
    from ibot.testing.fake_discord.model import StoredMessage

DEMO_LOG = (
    "Traceback (most recent call last):\n"
    '  File "bot.py", line 1, in <module>\n'
    "    import requests\n"
    "ModuleNotFoundError: No module named 'requests'\n"
)


@dataclass(frozen=True)
class Scene:
    """What the demo's members say and what the scripted model answers, in one language.

    The fake OpenAI server answers whatever it is scripted with, so the scene carries its
    own answers: with `prompts.language = "en"` the bot's messages are English and the
    model's answers must be too, or the demo would mix two languages.
    """

    title: str
    content: str
    tags: tuple[str, ...]  # tags of the demo forum (ibot/testing/harness.py build_world)
    screenshot_name: str
    attachments_note: str
    thanks: str
    bob_tip: str
    question: str
    chat: tuple[tuple[str, str], ...]  # (alice's message, key of the answer)
    answers: dict[str, str]


SCENES: dict[str, Scene] = {
    "fr": Scene(
        title="Mon bot ne démarre pas",
        content="Salut ! Mon bot plante au démarrage, voici la capture et le log.",
        tags=("python", "débutant"),
        screenshot_name="erreur.png",
        attachments_note="(pièces jointes : erreur.png, bot.log)",
        thanks="Merci ! C'était bien ça.",
        bob_tip="Pense aussi à un requirements.txt.",
        question="Comment je crée un venv avec Python 3.12 ?",
        chat=(("Salut le bot !", "chat1"), ("C'est quoi une coroutine ?", "chat2")),
        answers={
            "thread": (
                "Salut Alice ! L'erreur vient de là : **le paquet `requests` n'est pas "
                "installé** dans l'environnement qui lance ton bot.\n\n"
                "1. Active ton environnement virtuel : `source .venv/bin/activate`\n"
                "2. Installe le paquet : **`pip install requests`**\n"
                "3. Relance : `python bot.py`\n\n"
                "Sur ta capture, on voit que tu lances `python3` du système : vérifie avec "
                "`which python` que c'est bien celui du venv."
            ),
            "ask": (
                "Pour créer un environnement virtuel avec Python 3.12 :\n"
                "```sh\npython3.12 -m venv .venv\nsource .venv/bin/activate\n```\n"
                "Ensuite **chaque `pip install` reste dans ce dossier**, sans toucher au "
                "système."
            ),
            "summary": (
                "**Sujet** : un bot qui ne démarre pas (`ModuleNotFoundError: requests`).\n"
                "**Points clés** : il manquait `requests` dans le venv ; Bob conseille "
                "`pip install -r requirements.txt`.\n"
                "**Questions ouvertes** : faut-il épingler les versions ?\n"
                "**Qui a demandé quoi** : Alice — l'erreur au démarrage ; Bob — la version "
                "de Python."
            ),
            "chat1": (
                "Bonjour Alice ! Je suis là pour t'aider. **Pose ta question** quand tu veux."
            ),
            "chat2": (
                "Une **coroutine** est une fonction déclarée avec `async def` : l'appeler ne "
                "l'exécute pas, il faut l'**attendre** avec `await` (ou la planifier avec "
                "`asyncio.create_task`)."
            ),
        },
    ),
    "en": Scene(
        title="My bot won't start",
        content="Hi! My bot crashes at startup, here are the screenshot and the log.",
        tags=("python",),
        screenshot_name="error.png",
        attachments_note="(attachments: error.png, bot.log)",
        thanks="Thanks! That was it.",
        bob_tip="Think of a requirements.txt too.",
        question="How do I create a venv with Python 3.12?",
        chat=(("Hi bot!", "chat1"), ("What is a coroutine?", "chat2")),
        answers={
            "thread": (
                "Hi Alice! The error comes from here: **the `requests` package is not "
                "installed** in the environment that runs your bot.\n\n"
                "1. Activate your virtual environment: `source .venv/bin/activate`\n"
                "2. Install the package: **`pip install requests`**\n"
                "3. Start again: `python bot.py`\n\n"
                "Your screenshot shows the system's `python3`: check with `which python` "
                "that it is the venv's."
            ),
            "ask": (
                "To create a virtual environment with Python 3.12:\n"
                "```sh\npython3.12 -m venv .venv\nsource .venv/bin/activate\n```\n"
                "Then **every `pip install` stays in that folder**, the system is untouched."
            ),
            "summary": (
                "**Topic**: a bot that won't start (`ModuleNotFoundError: requests`).\n"
                "**Key points**: `requests` was missing from the venv; Bob suggests "
                "`pip install -r requirements.txt`.\n"
                "**Open questions**: should the versions be pinned?\n"
                "**Who asked what**: Alice — the startup error; Bob — the Python version."
            ),
            "chat1": "Hello Alice! I'm here to help. **Ask your question** whenever you like.",
            "chat2": (
                "A **coroutine** is a function defined with `async def`: calling it does not "
                "run it, you have to **await** it (or schedule it with "
                "`asyncio.create_task`)."
            ),
        },
    ),
}


def demo_screenshot() -> bytes:
    """A synthetic 'terminal screenshot' (no binary assets in the repository)."""
    img = Image.new("RGB", (1280, 720), (30, 30, 30))
    draw = ImageDraw.Draw(img)
    for row, line in enumerate(DEMO_LOG.splitlines()):
        draw.text((20, 20 + row * 18), line, fill=(220, 220, 220))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def _embeds_text(message: Any) -> list[str]:
    lines: list[str] = []
    for embed in message.embeds:
        if embed.get("title"):
            lines.append(f"**{embed['title']}**")
        lines.extend(embed.get("description", "").splitlines())
        if embed.get("footer"):
            lines.append(f"— {embed['footer']['text']}")
    if message.content:
        lines.extend(message.content.splitlines())
    return lines


def configure_demo_logging(settings: Settings) -> None:
    """Log only warnings and errors while the demo plays (a stricter level is kept).

    The transcript is the point: at INFO, Alembic's migrations, nextcord's connection
    lines (and its "Websocket closed with 1000" when the demo's bot closes normally) and
    the gateway's model-call lines would be mixed into it. Warnings and errors still show.
    """
    from ibot.logging import configure_logging, quiet_level

    configure_logging(
        settings.logging.format,
        quiet_level(settings.logging.level),
        secrets=settings.secret_values(),
    )


def play_demo(settings: Settings, echo: Callable[[str], None] = print) -> int:
    """`ibot demo`, and `ibot run` without a token: quiet logging, then the scene."""
    configure_demo_logging(settings)
    return asyncio.run(run_demo(settings, echo))


async def run_demo(settings: Settings, echo: Callable[[str], None] = print) -> int:
    """Play the scene in `prompts.language` and print it; returns the process exit code.

    The demo builds its own settings around the fake servers; of the user's, only the
    `[prompts]` section is kept (language, bot name, persona), so the demo speaks as the
    configured bot would.
    """
    from ibot.db.reports import GroupBy
    from ibot.i18n import t
    from ibot.periods import parse_period
    from ibot.services import report_render, reports
    from ibot.testing.harness import Harness

    lang = settings.prompts.language
    scene = SCENES[lang]
    overrides: dict[str, Any] = {"prompts": settings.prompts.model_dump()}

    def show(who: str, lines: list[str]) -> None:
        echo(f"  [{who}] {lines[0] if lines else ''}")
        for line in lines[1:]:
            echo(f"  {' ' * (len(who) + 2)} {line}")

    with tempfile.TemporaryDirectory(prefix="ibot-demo-") as tmp:
        async with Harness(Path(tmp), settings=overrides) as harness:
            world, discord, openai = harness.world, harness.discord, harness.openai
            assert world is not None and harness.services is not None
            echo("== iBot demo: the real bot against a local Discord and a local OpenAI ==\n")

            echo(f"#{world.forum.name} — alice opens a thread (tags: {', '.join(scene.tags)})")
            openai.script(scene.answers["thread"])
            shot = discord.add_attachment(scene.screenshot_name, demo_screenshot(), "image/png")
            log = discord.add_attachment("bot.log", DEMO_LOG.encode(), "text/plain")
            thread = await discord.create_forum_thread(
                world.forum,
                author=world.member,
                title=scene.title,
                content=scene.content,
                tags=list(scene.tags),
                attachments=[shot, log],
            )
            show("alice", [scene.title, scene.attachments_note])
            [answer] = await discord.wait_for(lambda: discord.messages_in(thread), timeout=30)
            show("iBot", _embeds_text(answer))
            echo("")

            await discord.post_message(thread, world.member, scene.thanks)
            bob = discord.create_member(world.guild, "bob")
            await discord.post_message(thread, bob, scene.bob_tip)

            echo(f"#{world.text.name} — alice: /ask-gpt")
            openai.script(scene.answers["ask"])
            handle = await discord.invoke_slash(
                world.guild, world.member, world.text, "ask-gpt", {"question": scene.question}
            )
            show("alice", [f"/ask-gpt question: {scene.question}"])
            show("iBot", _embeds_text(await handle.wait_answer(timeout=30)))
            echo("")

            echo(f"thread « {thread.name} » — modo: /summary")
            openai.script(scene.answers["summary"])
            handle = await discord.invoke_slash(
                world.guild, world.moderator, thread, "summary", {"messages": 50}
            )
            show("modo", ["/summary messages: 50"])
            show("iBot", _embeds_text(await handle.wait_answer(timeout=30)))
            echo("")

            echo(f"thread « {thread.name} » — alice (member): /summary")
            handle = await discord.invoke_slash(world.guild, world.member, thread, "summary", {})
            show("alice", ["/summary"])
            refusal = await handle.wait_answer(timeout=30)
            show("iBot (only alice sees this)", _embeds_text(refusal))
            echo("")

            echo(f"#{world.chat.name} — chat")
            for text, key in scene.chat:
                openai.script(scene.answers[key])
                before = len(discord.messages_in(world.chat))
                await discord.post_message(world.chat, world.member, text)
                show("alice", [text])

                def new_replies(start: int = before) -> list[StoredMessage]:
                    return discord.messages_in(world.chat)[start:]

                replies = await discord.wait_for(new_replies, timeout=30)
                show("iBot", _embeds_text(replies[0]))
            echo("")

            report = await reports.cost_report(
                harness.services.sessionmaker,
                parse_period("today"),
                GroupBy.feature,
            )
            echo("== ibot costs report --period today --group-by feature ==")
            echo(report_render.render_table(report))
            served = openai.served_usage()
            echo(
                f"(the fake OpenAI server billed {served.requests} requests, "
                f"{served.prompt_tokens} prompt + {served.completion_tokens} completion tokens)"
            )
    echo("")
    echo(t("demo.next_steps", lang))
    return 0
