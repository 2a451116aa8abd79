"""What an answer to a forum thread with one screenshot costs: ours vs the original bot's.

Ours: one call, the screenshot in it, checked and shrunk by the attachment pipeline to
the feature's tile budget (`features.auto_reply.max_image_tiles`, 6) at its detail
("high"): the real `ForumService.answer`. The original bot's method: a separate
"describe this image" call per image with `max_tokens` 500 (the image sent as it is;
its "auto" detail is billed as "high"), then the answer call with the description in
place of the image. Both run through the project's gateway and ledger against the same
fake OpenAI server (its usage follows the vision guide's tile method and counts tokens
with tiktoken), on the same threads, with the same persona and post template and the
same scripted answer; costs are the ledger rows' micro-dollars at the prices of
config/prices.toml. The screenshots are PNGs drawn with Pillow in common sizes (a small
dialog, laptop, full HD, 1440p, 4K, a phone).

The fake model writes what it is scripted to: the description is `--description-tokens`
long (default 350: what "describe this screenshot in detail" gets from GPT-4o, text on
screen included, below the 500 cap); the run also prices the original method with
descriptions that fill the 500-token cap (`ratio_at_max_description`).

    python benchmarks/image_cost.py            # six threads
    python benchmarks/image_cost.py --quick    # two threads, for a smoke run

Prints one line per thread, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ibot import tokens  # noqa: E402
from ibot.config import AutoReplySettings  # noqa: E402
from ibot.db.engine import create_engine, make_sessionmaker  # noqa: E402
from ibot.db.ledger import Ledger  # noqa: E402
from ibot.db.migrate import upgrade  # noqa: E402
from ibot.db.threads import ThreadStore  # noqa: E402
from ibot.domain import (  # noqa: E402
    CallContext,
    ChatMessage,
    Feature,
    ImageInput,
    LLMRequest,
)
from ibot.i18n import load_prompts  # noqa: E402
from ibot.llm.gateway import ModelGateway  # noqa: E402
from ibot.llm.openai_backend import OpenAIBackend  # noqa: E402
from ibot.pricing import PriceTable  # noqa: E402
from ibot.services.attachments import AttachmentLimits, AttachmentSource  # noqa: E402
from ibot.services.forum import ForumPost, ForumService  # noqa: E402
from ibot.services.prompts import FeatureConfig, PromptBuilder  # noqa: E402
from ibot.testing.fake_openai import FakeOpenAI  # noqa: E402

ORIGINAL_DESCRIBE_MAX_TOKENS = 500
DESCRIBE_PROMPT = (
    "Décris précisément cette capture d'écran : le texte visible, les messages "
    "d'erreur, les fenêtres et le contexte."
)
GUILD, FORUM, AUTHOR = 1, 2, 3


@dataclass(frozen=True)
class Thread:
    title: str
    content: str
    size: tuple[int, int]  # the screenshot's width x height


THREADS = (
    Thread(
        "Python ne trouve pas mon module",
        "Quand je lance mon script j'ai l'erreur de la capture, pourtant j'ai fait pip install.",
        (1920, 1080),
    ),
    Thread(
        "Mon bot Discord ne répond plus",
        "Depuis ce matin il reste hors ligne, voilà ce que m'affiche le terminal.",
        (1366, 768),
    ),
    Thread(
        "Écran de crash au lancement du jeu",
        "Le jeu plante direct avec cette fenêtre, j'ai mis à jour les pilotes.",
        (2560, 1440),
    ),
    Thread(
        "Erreur dans l'appli sur mon téléphone",
        "L'appli Android affiche ça quand je me connecte, capture jointe.",
        (1080, 2400),
    ),
    Thread(
        "Boîte de dialogue d'erreur à l'installation",
        "L'installateur s'arrête avec ce message, je suis sous Windows 11.",
        (640, 360),
    ),
    Thread(
        "Docker compose échoue sur mon écran 4K",
        "Voilà la sortie complète de docker compose up, je ne comprends pas.",
        (3840, 2160),
    ),
)

ANSWER = (
    "D'après ta capture, **le module n'est pas installé dans l'environnement qui lance ton "
    "script**. Vérifie avec `python -m pip --version` quel Python est utilisé, puis installe "
    "le paquet avec **`python -m pip install requests`** dans ce même environnement. Si tu "
    "utilises un venv, active-le d'abord (`source .venv/bin/activate` ou "
    "`.venv\\Scripts\\activate` sous Windows). Relance ensuite ton script : l'erreur doit "
    "disparaître. Si elle reste, copie ici le message complet et la sortie de `pip list`."
)
DESCRIPTION_LINE = (
    "La capture montre une fenêtre de terminal sombre. En haut, la commande lancée par "
    "l'utilisateur, puis une trace d'erreur Python sur plusieurs lignes : Traceback (most "
    "recent call last), le fichier main.py ligne 3, l'instruction import requests, et en "
    "bas ModuleNotFoundError: No module named 'requests'. À droite, la barre des tâches "
    "et l'heure ; aucun autre message n'est visible. "
)


def quiet() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    logging.disable(logging.WARNING)


def screenshot(width: int, height: int) -> bytes:
    """A PNG that looks like a terminal with an error: dark, lines of text."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), (30, 30, 36))
    draw = ImageDraw.Draw(image)
    lines = [
        "$ python main.py",
        "Traceback (most recent call last):",
        '  File "main.py", line 3, in <module>',
        "    import requests",
        "ModuleNotFoundError: No module named 'requests'",
    ]
    step = max(14, height // 40)
    for row in range(0, height - step, step):
        text = lines[(row // step) % len(lines)]
        draw.text((10, row + 2), text, fill=(200, 200, 200))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def description(length: int) -> str:
    """A screenshot's description, `length` tokens long (as gpt-4o counts)."""
    text = DESCRIPTION_LINE * (length // 40 + 2)
    return tokens.truncate_text(text, length, "gpt-4o")


class Run:
    """One method's calls: their own ledger, on the shared fake server and prices."""

    def __init__(self, name: str, fake: FakeOpenAI, prices: PriceTable, workdir: Path) -> None:
        self.name = name
        self.fake = fake
        self.prices = prices
        self.url = f"sqlite+aiosqlite:///{workdir / f'{name}.db'}"

    async def __aenter__(self) -> Run:
        await upgrade(self.url)
        self.engine = create_engine(self.url)
        self.sessionmaker = make_sessionmaker(self.engine)
        self.ledger = Ledger(self.sessionmaker)
        self.openai = OpenAIBackend(api_key="sk-bench", base_url=self.fake.base_url, max_retries=0)
        self.gateway = ModelGateway(ledger=self.ledger, prices=self.prices, openai=self.openai)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.openai.aclose()
        await self.engine.dispose()

    async def totals(self) -> dict[str, int]:
        rows = await self.ledger.rows()
        assert all(row.status == "ok" and row.cost_micros is not None for row in rows), rows
        return {
            "calls": len(rows),
            "cost_micros": sum(int(row.cost_micros or 0) for row in rows),
            "prompt_tokens": sum(row.prompt_tokens for row in rows),
            "image_tokens": sum(row.image_tokens for row in rows),
            "completion_tokens": sum(row.completion_tokens for row in rows),
        }


def settings_config() -> tuple[AutoReplySettings, FeatureConfig, AttachmentLimits]:
    """The auto-reply feature as shipped (config defaults)."""
    feature = AutoReplySettings()
    config = FeatureConfig(
        feature.model, feature.max_output_tokens, feature.max_prompt_tokens, feature.temperature
    )
    limits = AttachmentLimits(
        max_images=feature.max_images,
        max_tiles=feature.max_image_tiles,
        detail=feature.image_detail,
    )
    return feature, config, limits


def post(index: int, thread: Thread, png: bytes) -> ForumPost:
    async def read() -> bytes:
        return png

    return ForumPost(
        thread_id=100 + index,
        guild_id=GUILD,
        forum_id=FORUM,
        title=thread.title,
        content=thread.content,
        author_id=AUTHOR,
        author_name="alice",
        attachments=(AttachmentSource("capture.png", len(png), "image/png", read),),
    )


async def ours(run: Run, prompts: PromptBuilder, threads: Sequence[Thread]) -> None:
    _, config, limits = settings_config()
    service = ForumService(
        run.gateway,
        prompts,
        config,
        ThreadStore(run.sessionmaker, owner="bench"),
        attachment_limits=limits,
    )
    for index, thread in enumerate(threads):
        run.fake.script(ANSWER)
        outcome = await service.answer(post(index, thread, screenshot(*thread.size)))
        assert getattr(outcome, "text", None) == ANSWER, outcome


async def original(
    run: Run, prompts: PromptBuilder, threads: Sequence[Thread], description_tokens: int
) -> None:
    """A describe call per image (max_tokens 500, the image as it is), then the answer
    call with the description instead of the image, as the original bot did."""
    _, config, _ = settings_config()
    for index, thread in enumerate(threads):
        png = screenshot(*thread.size)
        context = CallContext(
            feature=Feature.AUTO_REPLY,
            guild_id=GUILD,
            channel_id=FORUM,
            thread_id=200 + index,
            user_id=AUTHOR,
        )
        width, height = thread.size
        image = ImageInput(png, "image/png", width, height, detail="high", name="capture.png")
        run.fake.script(description(description_tokens))
        described = await run.gateway.complete(
            LLMRequest(
                messages=(ChatMessage("user", DESCRIBE_PROMPT, images=(image,)),),
                model=config.model,
                max_output_tokens=ORIGINAL_DESCRIBE_MAX_TOKENS,
                context=context,
            )
        )
        text = prompts.render(
            "auto_reply",
            author="alice",
            title=thread.title,
            tags="-",
            content=f"{thread.content}\n\nDescription de l'image jointe : {described.text}",
        )
        run.fake.script(ANSWER)
        answered = await run.gateway.complete(
            LLMRequest(
                messages=(ChatMessage("system", prompts.persona), ChatMessage("user", text)),
                model=config.model,
                max_output_tokens=config.max_output_tokens,
                context=context,
                temperature=config.temperature,
            )
        )
        assert answered.text == ANSWER


def per_answer(totals: dict[str, int], answers: int) -> dict[str, Any]:
    return {
        "calls_per_answer": totals["calls"] / answers,
        "cost_micros_per_answer": round(totals["cost_micros"] / answers),
        "usd_per_answer": round(totals["cost_micros"] / answers / 1_000_000, 6),
        "prompt_tokens_per_answer": round(totals["prompt_tokens"] / answers, 1),
        "image_tokens_per_answer": round(totals["image_tokens"] / answers, 1),
        "completion_tokens_per_answer": round(totals["completion_tokens"] / answers, 1),
    }


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    threads = THREADS[:2] if args.quick else THREADS
    prices = PriceTable.load(REPO / "config" / "prices.toml")
    prompts = PromptBuilder(load_prompts("fr"), extra={"bot_name": "iBot"})
    results: dict[str, dict[str, int]] = {}
    per_thread: list[dict[str, Any]] = []
    async with FakeOpenAI() as fake:
        # The original method a second time with descriptions longer than its cap: the
        # fake cuts them at max_tokens 500, as the API would.
        methods: dict[str, Callable[[Run], Awaitable[None]]] = {
            "ours": lambda r: ours(r, prompts, threads),
            "original": lambda r: original(r, prompts, threads, args.description_tokens),
            "original_max": lambda r: original(
                r, prompts, threads, ORIGINAL_DESCRIBE_MAX_TOKENS + 100
            ),
        }
        for name, method in methods.items():
            async with Run(name, fake, prices, workdir) as one:
                await method(one)
                results[name] = await one.totals()
                if name != "original_max":
                    rows = await one.ledger.rows()
                    for row in rows:
                        per_thread.append(
                            {
                                "method": name,
                                "thread": row.thread_id,
                                "prompt_tokens": row.prompt_tokens,
                                "image_tokens": row.image_tokens,
                                "completion_tokens": row.completion_tokens,
                                "cost_micros": row.cost_micros,
                            }
                        )
    answers = len(threads)
    ours_cost = results["ours"]["cost_micros"]
    for index, thread in enumerate(threads):
        mine = [r for r in per_thread if r["method"] == "ours" and r["thread"] == 100 + index]
        theirs = [r for r in per_thread if r["method"] == "original" and r["thread"] == 200 + index]
        width, height = thread.size
        print(
            f"{width}x{height}: ours {sum(r['cost_micros'] for r in mine)} µ$ "
            f"({sum(r['image_tokens'] for r in mine)} image tokens, 1 call) | original "
            f"{sum(r['cost_micros'] for r in theirs)} µ$ "
            f"({sum(r['image_tokens'] for r in theirs)} image tokens, {len(theirs)} calls)"
        )
    ratio = results["original"]["cost_micros"] / ours_cost
    ratio_max = results["original_max"]["cost_micros"] / ours_cost
    print(
        f"per answer: ours {per_answer(results['ours'], answers)['usd_per_answer']} USD, "
        f"original {per_answer(results['original'], answers)['usd_per_answer']} USD: "
        f"the original costs {ratio:.2f}x ours ({ratio_max:.2f}x with 500-token descriptions)"
    )
    return {
        "benchmark": "image_cost",
        "quick": args.quick,
        "threads": answers,
        "sizes": [f"{t.size[0]}x{t.size[1]}" for t in threads],
        "model": settings_config()[1].model,
        "prices_read_on": prices.read_on.isoformat(),
        "description_tokens": args.description_tokens,
        "ours": per_answer(results["ours"], answers),
        "original": per_answer(results["original"], answers),
        "original_max_description": per_answer(results["original_max"], answers),
        "ratio_original_over_ours": round(ratio, 3),
        "ratio_at_max_description": round(ratio_max, 3),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="two threads, for a smoke run")
    parser.add_argument(
        "--description-tokens",
        type=int,
        default=350,
        help="length of the original method's image descriptions (cut at 500 as its calls)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    quiet()
    with tempfile.TemporaryDirectory(prefix="ibot-image-cost-") as tmp:
        result = asyncio.run(run(args, Path(tmp)))
    print(json.dumps(result, ensure_ascii=False))
    return result


if __name__ == "__main__":
    main()
