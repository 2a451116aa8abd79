"""The vocabulary of an embedding call, and how its input tokens are counted beforehand.

An embedding call differs from a chat completion in what the gateway needs to know: its
inputs are plain texts (no messages, no images), it bills input tokens only, and those
are known exactly before the call, so the budget can hold the exact worst case. These
types sit beside `ibot.domain`'s (they use its `CallContext` and `Usage`) and, like
them, import no client library.

The embedding models tokenize with cl100k_base (tiktoken's own model table and the
OpenAI cookbook list text-embedding-3-small/-large and ada-002 under it), not with the
o200k_base of the chat models that `ibot.tokens.encoding_name_for_model` defaults to, so
the count here names the vocabulary itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from ibot import tokens
from ibot.domain import CallContext, Usage

EMBEDDING_ENCODING = "cl100k_base"
# The API's limits ("8192 tokens for all embedding models", 2048 inputs and 300 000
# tokens per request: CreateEmbeddingRequest in OpenAI's OpenAPI file).
MAX_INPUT_TOKENS = 8192
MAX_INPUTS = 2048
MAX_REQUEST_TOKENS = 300_000


class EmbeddingPurpose(StrEnum):
    """Why texts are embedded; written in the ledger row's note, so that a report can tell
    what the searches cost from what indexing the threads cost."""

    QUERY = "query"  # one search: one text, one call
    BACKFILL = "backfill"  # threads (re)indexed: batches


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    texts: tuple[str, ...]
    model: str
    context: CallContext
    dimensions: int | None = None  # None: the model's own size
    purpose: EmbeddingPurpose = EmbeddingPurpose.QUERY
    # Set by the gateway: the ledger row's call id, sent as X-Client-Request-Id.
    call_id: str | None = None

    @property
    def note(self) -> str:
        """The ledger note of the call: what it was for and how many inputs."""
        inputs = len(self.texts)
        return f"kb_embed {self.purpose.value}: {inputs} input{'s' if inputs != 1 else ''}"


@dataclass(frozen=True, slots=True)
class EmbeddingResponse:
    """What a backend returns: one vector per text, in the texts' order."""

    vectors: tuple[tuple[float, ...], ...]
    usage: Usage
    model: str  # the model that answered (response.model), which is what gets priced
    request_id: str | None = None
    attempts: int = 1


@dataclass(frozen=True, slots=True)
class EmbeddingResult:
    """A successful gateway embedding call, as services see it."""

    vectors: tuple[tuple[float, ...], ...]
    usage: Usage
    cost_micros: int | None  # None: the model has no price in the table
    model: str
    latency_s: float
    request_id: str | None = None
    ledger_id: int | None = None


def count_tokens(text: str) -> int:
    """Input tokens of one text, as the embedding models count them."""
    return len(tokens.get_encoding(EMBEDDING_ENCODING).encode(text, disallowed_special=()))


def count_inputs(texts: Iterable[str]) -> int:
    """Input tokens of a request: the sum over its texts (no per-input overhead)."""
    return sum(count_tokens(text) for text in texts)


def truncate(text: str, max_tokens: int) -> str:
    """`text` cut to at most `max_tokens` embedding tokens, its start kept."""
    encoding = tokens.get_encoding(EMBEDDING_ENCODING)
    ids = encoding.encode(text, disallowed_special=())
    if len(ids) <= max_tokens:
        return text
    cut = encoding.decode_bytes(ids[:max_tokens]).decode("utf-8", errors="ignore")
    while count_tokens(cut) > max_tokens:  # re-encoding a cut can take a token more
        cut = cut[:-1]
    return cut
