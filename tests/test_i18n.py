"""Messages and prompts: every user-facing text exists in French and English."""

from __future__ import annotations

from pathlib import Path

import pytest

from ibot.domain import ErrorKind
from ibot.i18n import (
    CATALOGUE,
    PROMPT_KEYS,
    PromptsError,
    available_languages,
    load_prompts,
    placeholders,
    t,
)

# Keys the services and cogs pass to t(), with the params they pass.
USED_KEYS = {
    "cost_footer": {"tokens": 1234, "cost": "0.0123"},
    "local_footer": {},
    "answer_title": {"bot_name": "iBot"},
    "error.generic": {},
    "ask.refused_role": {},
    "ask.cooldown": {"seconds": 12},
    "ask.too_long": {"tokens": 9000, "limit": 8000},
    "summary.refused": {},
    "summary.too_few_messages": {},
    "summary.title": {"channel": "aide", "count": 42},
    "cost_report.refused": {},
    "knowledge.sources_heading": {},
    "similar.heading": {"query": "pip install"},
    "similar.line": {
        "number": 1,
        "link": "[pip](https://discord.com/channels/1/2)",
        "score": "0.9",
    },
    "similar.none": {},
    "similar.off": {},
    "similar.bad_query": {},
    "resume.note": {},
    "demo.next_steps": {},
    "budget.alert_member": {"user": 42, "cap": "0.50", "spent": "0.49", "reset": "<t:1:R>"},
    **{
        f"attachment.{name}": {"name": "capture.png", "limit": "10 MB"}
        for name in (
            "not_read",
            "too_big",
            "bad_image",
            "truncated",
            "download_failed",
            "empty",
            "image_too_large",
            "binary",
        )
    },
}


def test_french_is_the_default_and_listed_first():
    assert available_languages()[0] == "fr"
    assert set(available_languages()) == {"fr", "en"}
    assert t("cost_footer", tokens=10, cost="0.0001") == "Total tokens : 10 | Coût : 0.0001 USD"


def test_formatting_params_in_both_languages():
    assert t("cost_footer", "en", tokens=10, cost="0.0001") == "Total tokens: 10 | Cost: 0.0001 USD"
    assert t("answer_title", "fr", bot_name="Robert") == "Réponse de Robert"
    assert t("answer_title", "en", bot_name="Robert") == "Answer from Robert"
    assert "12" in t("ask.cooldown", "fr", seconds=12)
    assert "photo.jpg" in t("attachment.bad_image", "en", name="photo.jpg")


def test_unknown_or_regional_language_falls_back_sensibly():
    assert t("error.generic", "de") == t("error.generic", "fr")
    assert t("error.generic", "en-US") == t("error.generic", "en")


def test_missing_english_message_falls_back_to_french(monkeypatch):
    monkeypatch.setitem(CATALOGUE["fr"], "only.fr", "Seulement en français, {name}")

    assert t("only.fr", "en", name="Alice") == "Seulement en français, Alice"


def test_missing_key_is_an_error_not_a_blank():
    with pytest.raises(KeyError):
        t("no.such.message", "en")


@pytest.mark.parametrize("lang", ["fr", "en"])
@pytest.mark.parametrize("kind", list(ErrorKind))
def test_every_error_kind_has_a_message(kind, lang):
    key = f"error.{kind.value}"
    assert key in CATALOGUE[lang]
    text = t(key, lang, budget="", reset="")  # what callers pass when they know nothing more

    assert text.strip() and "{" not in text and "  " not in text


def test_rate_limit_message_says_to_retry_in_french():
    assert t("error.rate_limit") == "Trop de demandes en ce moment, réessaie dans une minute."


def test_budget_message_uses_what_it_is_given():
    full = t("error.budget", "fr", budget="quotidien du serveur", reset="demain à 00:00 UTC")
    bare = t("error.budget", "fr", budget="", reset="")

    assert "quotidien du serveur" in full and "demain à 00:00 UTC" in full
    assert "budget" in bare.lower() and "  " not in bare


@pytest.mark.parametrize("lang", ["fr", "en"])
@pytest.mark.parametrize("key", sorted(USED_KEYS))
def test_messages_used_by_the_bot_exist_and_fill(key, lang):
    assert key in CATALOGUE[lang]
    text = t(key, lang, **USED_KEYS[key])

    assert text.strip() and "{" not in text


def test_french_messages_use_tutoiement():
    french = " ".join(t(key, "fr", **params) for key, params in USED_KEYS.items())
    french += " ".join(t(f"error.{kind.value}", "fr", budget="", reset="") for kind in ErrorKind)

    for formal in (" vous ", "Vous ", "votre", "Réessayez", "veuillez"):
        assert formal not in french


def test_english_and_french_catalogues_have_the_same_keys():
    assert set(CATALOGUE["fr"]) == set(CATALOGUE["en"])


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_shipped_prompts_load_with_every_template(lang):
    prompts = load_prompts(lang)

    assert set(PROMPT_KEYS) <= set(prompts)
    # The services fill them with these values; none may be left unfilled or unknown.
    values = {
        "date": "2026-01-01",
        "bot_name": "iBot",
        "author": "alice",
        "title": "Mon bot plante",
        "tags": "python",
        "content": "Aide !",
        "question": "Pourquoi ?",
        "channel": "aide",
        "transcript": "[2026-01-01 10:00] alice: bonjour",
        "sources": "[1] pip ne marche pas — https://discord.com/channels/1/2",
    }
    for key in PROMPT_KEYS:
        filled = prompts[key].format(**values)
        assert "{" not in filled.replace("{{", "")
    assert "iBot" in prompts["persona"].format(**values)
    assert "Pourquoi ?" in prompts["ask"].format(**values)


def test_french_persona_asks_for_tutoiement_and_bold():
    persona = load_prompts("fr")["persona"]

    assert "tutoie" in persona and "**gras**" in persona


def test_prompts_file_missing_a_template_is_refused(tmp_path: Path):
    (tmp_path / "fr.toml").write_text('persona = "Tu es {bot_name}."\n', encoding="utf-8")

    with pytest.raises(PromptsError, match="auto_reply"):
        load_prompts("fr", tmp_path)


def test_prompts_template_with_unknown_placeholder_is_refused(tmp_path: Path):
    shipped = (Path(__file__).resolve().parents[1] / "config" / "prompts" / "en.toml").read_text(
        encoding="utf-8"
    )
    broken = shipped.replace("<question>\n{question}", "<question>\n{question} {qestion}", 1)
    assert broken != shipped
    (tmp_path / "en.toml").write_text(broken, encoding="utf-8")

    with pytest.raises(PromptsError, match="qestion"):
        load_prompts("en", tmp_path)


def test_placeholders_lists_format_fields():
    assert placeholders("{a} and {b!r} but not {{c}}") == {"a", "b"}
