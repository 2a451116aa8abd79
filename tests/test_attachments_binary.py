"""A binary file named like text (`.log`, `.txt`) is named as not read, and none of its
bytes reach the model: before, a gzip or a PNG renamed `.log` was sent as garbled text
and billed as thousands of tokens. Real text in UTF-8, UTF-16 or Latin-1 is still read."""

from __future__ import annotations

import gzip
import io
import json
import random

import pytest
from PIL import Image

from ibot.i18n import t
from ibot.services.attachments import (
    AttachmentKind,
    AttachmentLimits,
    AttachmentSource,
    process_attachments,
)
from ibot.testing.harness import Harness

# A string that a garbled decoding of the file would carry into the prompt.
MARKER = b"Traceback MARKER-7f3a"


def random_bytes(size: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


BINARIES = {
    "dump.log": random_bytes(4000)[:2000] + MARKER + random_bytes(2000, seed=8),
    "no-nul.log": bytes(b or 1 for b in random_bytes(300)) + MARKER,  # short, no NUL at all
    "archive.log": gzip.compress(MARKER * 200),
    "capture.log": png() + MARKER,  # a screenshot renamed .log
    "tool.txt": b"\x7fELF\x02\x01\x01" + MARKER + b"\x00" * 64,
}

TEXTS = {
    "utf16.log": ("ERREUR : échec à 12:03 ✓\r\n".encode("utf-16"), "ERREUR : échec à 12:03 ✓\n"),
    "latin1.log": ("Démarrage… raté, déjà vu\n".encode("cp1252"), "Démarrage… raté, déjà vu\n"),
    "utf8.log": ("\x1b[31mKeyError\x1b[0m: 'clé'\n".encode(), "\x1b[31mKeyError\x1b[0m: 'clé'\n"),
}


def source(name: str, data: bytes) -> AttachmentSource:
    async def read() -> bytes:
        return data

    return AttachmentSource(filename=name, size=len(data), content_type="text/plain", read=read)


@pytest.mark.parametrize("name", BINARIES)
async def test_binary_content_is_not_read_and_says_so(name: str) -> None:
    [result] = await process_attachments([source(name, BINARIES[name])], AttachmentLimits())

    assert result.kind is AttachmentKind.SKIPPED and not result.used
    assert result.text is None
    assert result.problem == "attachment.binary"


@pytest.mark.parametrize("name", TEXTS)
async def test_text_in_any_common_encoding_is_still_read(name: str) -> None:
    data, text = TEXTS[name]
    [result] = await process_attachments([source(name, data)], AttachmentLimits())

    assert result.kind is AttachmentKind.TEXT and result.problem is None
    assert result.text == text


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_the_note_names_the_file(lang: str) -> None:
    note = t("attachment.binary", lang, name="dump.log")
    assert "dump.log" in note
    assert note != t("attachment.not_read", lang, name="dump.log")  # it says why


@pytest.mark.slow
async def test_a_binary_log_in_a_forum_post_never_reaches_the_model(tmp_path) -> None:
    async with Harness(tmp_path) as harness:
        world, discord, openai = harness.world, harness.discord, harness.openai
        openai.script("Voici ce que je lis dans ton journal.")
        binary = discord.add_attachment("dump.log", BINARIES["dump.log"], "text/plain")
        log = discord.add_attachment("bot.log", b"KeyError: 'token'\n", "text/plain")
        thread = await discord.create_forum_thread(
            world.forum,
            author=world.member,
            title="Crash",
            content="Mon bot plante",
            attachments=[binary, log],
        )
        [answer] = await discord.wait_for(lambda: discord.messages_in(thread) or None, timeout=10)

        sent = json.dumps(openai.requests[-1].body, ensure_ascii=False)
        assert "KeyError: 'token'" in sent  # the real log is read
        assert "MARKER-7f3a" not in sent and "\ufffd" not in sent
        assert t("attachment.binary", "fr", name="dump.log") in answer.embeds[0]["description"]


@pytest.mark.slow
async def test_a_binary_file_given_to_ask_gpt_is_named_and_the_question_answered(
    tmp_path,
) -> None:
    async with Harness(tmp_path) as harness:
        world, discord, openai = harness.world, harness.discord, harness.openai
        openai.script("Réponse sans le fichier.")
        binary = discord.add_attachment("capture.log", BINARIES["capture.log"], "text/plain")
        handle = await discord.invoke_slash(
            world.guild,
            world.member,
            world.text,
            "ask-gpt",
            {"question": "Pourquoi ça plante ?", "image": binary},
        )
        answer = await handle.wait_answer(timeout=10)

        sent = json.dumps(openai.requests[-1].body, ensure_ascii=False)
        assert "Pourquoi ça plante ?" in sent
        assert "MARKER-7f3a" not in sent and "IHDR" not in sent
        assert "capture.log" in json.dumps(answer.embeds, ensure_ascii=False)
