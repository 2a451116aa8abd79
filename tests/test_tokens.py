"""Token counting offline: an empty tiktoken cache and no network must still count right."""

from __future__ import annotations

import gzip
import hashlib
import socket
import threading
from pathlib import Path

import pytest

from ibot import tokens
from ibot.domain import ChatMessage

O200K_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"

# The example conversation of OpenAI's cookbook "How to count tokens with tiktoken".
COOKBOOK = [
    ChatMessage(
        "system",
        "You are a helpful, pattern-following assistant that translates corporate jargon "
        "into plain English.",
    ),
    ChatMessage("system", "New synergies will help drive top-line growth.", name="example_user"),
    ChatMessage(
        "system",
        "Things working well together will increase revenue.",
        name="example_assistant",
    ),
    ChatMessage(
        "system",
        "Let's circle back when we have more bandwidth to touch base on opportunities for "
        "increased leverage.",
        name="example_user",
    ),
    ChatMessage(
        "system",
        "Let's talk later when we're less busy about how to do better.",
        name="example_assistant",
    ),
    ChatMessage(
        "user",
        "This late pivot means we don't have time to boil the ocean for the client deliverable.",
    ),
]


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty tiktoken cache, no network, and no encoding loaded yet."""
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))

    def no_network(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket.socket, "connect_ex", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    tokens.clear_encoding_cache()
    yield cache
    tokens.clear_encoding_cache()


def test_vocabularies_load_offline_with_an_empty_cache(offline: Path) -> None:
    o200k = tokens.get_encoding("o200k_base")
    cl100k = tokens.get_encoding("cl100k_base")
    assert len(o200k.encode("hello world")) == 2
    assert cl100k.encode("hello world") == [15339, 1917]
    # The cookbook's own example for cl100k_base.
    assert cl100k.encode("tiktoken is great!") == [83, 1609, 5963, 374, 2294, 0]
    assert o200k.n_vocab == 200_019
    assert list(offline.iterdir()) == []  # nothing written into the user's cache


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
def test_round_trip_french_accents_and_emoji(offline: Path, name: str) -> None:
    text = "Ça marche très bien, merci ! Où est l’élève ? 🎉👩‍💻 « déjà vu » — fin."
    encoding = tokens.get_encoding(name)
    assert encoding.decode(encoding.encode(text)) == text


def test_encoding_is_loaded_once_across_threads(offline: Path) -> None:
    barrier = threading.Barrier(8)
    seen: list[object] = []

    def load() -> None:
        barrier.wait()
        seen.append(tokens.get_encoding("o200k_base"))

    threads = [threading.Thread(target=load) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 8
    assert all(encoding is seen[0] for encoding in seen)


def _vocabulary_bytes(name: str) -> bytes:
    assert tokens.BUNDLED_DATA_DIR is not None
    with gzip.open(tokens.BUNDLED_DATA_DIR / f"{name}.tiktoken.gz", "rb") as fh:
        return fh.read()


def test_tampered_bundled_vocabulary_is_refused(
    offline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _vocabulary_bytes("o200k_base")
    # Swap the ranks of two tokens: still a well-formed file, but a different tokenizer.
    lines = data.splitlines()
    first, second = lines[1000].split(), lines[1001].split()
    lines[1000] = first[0] + b" " + second[1]
    lines[1001] = second[0] + b" " + first[1]
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    (tampered / "o200k_base.tiktoken.gz").write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    monkeypatch.setattr(tokens, "BUNDLED_DATA_DIR", tampered)

    with pytest.raises(tokens.VocabularyError, match="sha256"):
        tokens.get_encoding("o200k_base")


def test_missing_vocabulary_is_a_clear_error(
    offline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tokens, "BUNDLED_DATA_DIR", tmp_path / "nowhere")
    with pytest.raises(tokens.VocabularyError, match="o200k_base"):
        tokens.get_encoding("o200k_base")


def test_valid_tiktoken_cache_file_is_used(
    offline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache_file = offline / hashlib.sha1(O200K_URL.encode()).hexdigest()
    cache_file.write_bytes(_vocabulary_bytes("o200k_base"))
    # With no bundled copy to fall back on, only the cache file can have served it.
    monkeypatch.setattr(tokens, "BUNDLED_DATA_DIR", tmp_path / "nowhere")
    assert len(tokens.get_encoding("o200k_base").encode("hello world")) == 2


def test_corrupt_tiktoken_cache_file_falls_back_to_bundled(offline: Path) -> None:
    cache_file = offline / hashlib.sha1(O200K_URL.encode()).hexdigest()
    cache_file.write_bytes(b"not a vocabulary\n")
    assert hashlib.sha256(cache_file.read_bytes()).hexdigest() != O200K_SHA256
    assert len(tokens.get_encoding("o200k_base").encode("hello world")) == 2


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini-2024-07-18", "o200k_base"),
        ("gpt-4.1-nano", "o200k_base"),
        ("o1-mini", "o200k_base"),
        ("o3", "o200k_base"),
        ("o4-mini", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("ft:gpt-4o-mini-2024-07-18:acme::abc", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-0613", "cl100k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("llama-3.1-8b-instruct", "o200k_base"),
    ],
)
def test_encoding_for_model(model: str, encoding: str) -> None:
    assert tokens.encoding_for_model(model).name == encoding


# --- counting ------------------------------------------------------------------------------


def test_cookbook_conversation_counts_as_the_api_did(offline: Path) -> None:
    assert tokens.count_messages(COOKBOOK, "gpt-4o") == 124
    assert tokens.count_messages(COOKBOOK, "gpt-4o-mini") == 124
    assert tokens.count_messages(COOKBOOK, "gpt-4-0613") == 129


def test_raw_request_dicts_count_like_messages() -> None:
    raw = [
        {"role": m.role, "content": m.content, **({"name": m.name} if m.name else {})}
        for m in COOKBOOK
    ]
    assert tokens.count_messages(raw, "gpt-4o") == 124


def test_only_text_parts_of_vision_content_count() -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    with_image = [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, image]}]
    plain = [{"role": "user", "content": "What is this?"}]
    assert tokens.count_messages(with_image) == tokens.count_messages(plain)


def test_images_on_chat_messages_are_not_counted_here() -> None:
    from ibot.domain import ImageInput

    picture = ImageInput(data=b"x", mime="image/png", width=1024, height=1024)
    with_image = [ChatMessage("user", "What is this?", images=(picture,))]
    assert tokens.count_messages(with_image) == tokens.count_messages(
        [ChatMessage("user", "What is this?")]
    )


def test_special_token_text_is_counted_as_plain_text() -> None:
    assert tokens.count_text("<|endoftext|>") > 1


# --- fitting a conversation into a budget -----------------------------------------------------


def _conversation() -> list[ChatMessage]:
    messages = [ChatMessage("system", "You are iBot, a helpful forum assistant.")]
    for i in range(12):
        role = "user" if i % 2 == 0 else "assistant"
        messages.append(ChatMessage(role, f"Message number {i}: " + "blah " * (i + 3)))
    return messages


def test_fit_messages_keeps_system_prompt_and_newest() -> None:
    messages = _conversation()
    full = tokens.count_messages(messages)
    assert tokens.fit_messages(messages, full) == messages

    fitted = tokens.fit_messages(messages, full - 1)
    assert fitted[0] == messages[0]
    assert fitted[1:] == messages[-(len(fitted) - 1) :]  # a suffix: oldest dropped first
    assert len(fitted) < len(messages)


def test_fit_messages_never_exceeds_the_budget() -> None:
    messages = _conversation()
    floor = tokens.count_messages([messages[0], ChatMessage("user", "")]) + 1
    for budget in range(floor, tokens.count_messages(messages) + 5, 7):
        fitted = tokens.fit_messages(messages, budget)
        assert tokens.count_messages(fitted) <= budget
        assert fitted[0] == messages[0]
        assert fitted[-1].content and messages[-1].content.endswith(fitted[-1].content)


def test_fit_messages_truncates_a_huge_message_keeping_its_end() -> None:
    system = ChatMessage("system", "Be brief.")
    question = "Why does my build fail?"
    huge = ChatMessage("user", "log line\n" * 5000 + question, name="alice")
    fitted = tokens.fit_messages([system, huge], 200)
    assert tokens.count_messages(fitted) <= 200
    assert tokens.count_messages(fitted) >= 190  # the room is used, not wasted
    assert fitted[0] == system
    assert fitted[1].content.endswith(question)
    assert fitted[1].name == "alice"
    assert len(fitted[1].content) < len(huge.content)


def test_fit_messages_refuses_a_budget_below_the_system_prompt() -> None:
    messages = _conversation()
    with pytest.raises(ValueError, match="system prompt"):
        tokens.fit_messages(messages, 5)


@pytest.mark.parametrize("keep", ["head", "tail"])
def test_truncate_text(keep: str) -> None:
    text = "Bonjour à tous 🎉 ! " * 200
    cut = tokens.truncate_text(text, 50, keep=keep)
    assert tokens.count_text(cut) <= 50
    assert tokens.count_text(cut) >= 45
    assert text.startswith(cut) if keep == "head" else text.endswith(cut)
    assert tokens.truncate_text("short", 50, keep=keep) == "short"
    assert tokens.truncate_text(text, 0, keep=keep) == ""
