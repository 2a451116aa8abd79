"""Long answers are split within Discord's limits, losing nothing, code blocks intact."""

from __future__ import annotations

import pytest

from ibot.services.formatting import (
    EMBED_DESCRIPTION_LIMIT,
    EMBEDS_PER_MESSAGE,
    MESSAGE_EMBEDS_TOTAL_LIMIT,
    embed_messages,
    split_text,
)


def words(n: int) -> str:
    return " ".join(f"mot{i}" for i in range(n))


def test_short_text_is_one_part():
    assert split_text("Bonjour **toi**.", 4096) == ["Bonjour **toi**."]


def test_parts_respect_the_limit_and_lose_no_word():
    text = "\n\n".join(words(300) for _ in range(10))
    parts = split_text(text, 1000)
    assert all(len(p) <= 1000 for p in parts)
    assert " ".join(" ".join(parts).split()) == " ".join(text.split())


def test_code_block_cut_in_two_is_closed_and_reopened():
    code = "\n".join(f"print({i})" for i in range(400))
    text = f"Voici le script :\n```python\n{code}\n```\nVoilà."
    parts = split_text(text, 1000)
    assert len(parts) > 1
    for part in parts:
        assert len(part) <= 1000
        assert part.count("```") % 2 == 0, part[:80]
    assert parts[1].startswith("```python\n")
    assert "".join(parts).count("print(") == 400


def test_unbreakable_text_is_still_split():
    parts = split_text("x" * 10_000, 4096)
    assert "".join(parts) == "x" * 10_000
    assert all(len(p) <= 4096 for p in parts)


@pytest.mark.parametrize("length", [10, 4_000, 10_000, 70_000])
def test_embed_layout_fits_every_discord_limit(length):
    text = words(length // 6)[:length]
    messages = embed_messages(
        text, title="Réponse de iBot", footer="Total tokens: 1 | Cost: 0.1 USD"
    )
    for embeds in messages:
        assert len(embeds) <= EMBEDS_PER_MESSAGE
        assert sum(e.size for e in embeds) <= MESSAGE_EMBEDS_TOTAL_LIMIT
        assert all(len(e.description) <= EMBED_DESCRIPTION_LIMIT for e in embeds)
    flat = [e for embeds in messages for e in embeds]
    assert flat[0].title == "Réponse de iBot" and all(e.title is None for e in flat[1:])
    assert flat[-1].footer and all(e.footer is None for e in flat[:-1])
    assert " ".join(" ".join(e.description for e in flat).split()) == " ".join(text.split())
