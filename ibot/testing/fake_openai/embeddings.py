"""`POST /v1/embeddings`: what the fake accepts, what it bills, and the vectors it returns.

The request is the spec's `CreateEmbeddingRequest` (shared/specs/openai-openapi): `input`
is a string, an array of strings, an array of token ids or an array of token arrays;
`model`; `dimensions`; `encoding_format` "float" (default) or "base64"; `user`. The
limits are those its descriptions state, refused with the fake's usual 400 body:

- an input may not be an empty string, nor exceed the model's input limit ("8192 tokens
  for all embedding models");
- an array has 1 to 2048 items ("any array must be 2048 dimensions or less");
- all the inputs of one request add up to at most 300 000 tokens;
- `dimensions` is "only supported in text-embedding-3 and later models", at least 1,
  and at most the model's own size. Those sizes (1536 for text-embedding-3-small and
  ada-002, 3072 for text-embedding-3-large) are not in the file: they are the
  embedding guide's, which the file links to for "the length of vector".

An unknown model gets the API's 404 `model_not_found`.

**Usage** is billed as OpenAI bills embeddings: prompt_tokens = total_tokens = the
tokens of every input, counted with the fake's own tokenizer (tokenizer.py: cl100k_base,
the vocabulary of the embedding models); a token array counts its length.

**Vectors** are deterministic, unit-length, and carry some meaning, so that hybrid
retrieval can be tested against them: the text is folded (case, accents), cut into
words, and each word contributes its stem (its first `STEM_CHARS` letters), its
character trigrams and, for a few dozen French/English words of tech help, a shared
"concept" feature (install/installer/installation, crash/plante, dossier/folder…), each
hashed to a signed position (feature hashing). A handful of very common words count for
nothing. The features are hashed into every block of the native vector (64, 128, 256 …
dimensions), so that, as with text-embedding-3's shortened embeddings, the first N
dimensions of the full vector, normalised again, are the vector asked for with
`dimensions = N`. Two texts sharing words or spellings are close; unrelated texts have
a cosine near 0. This is a toy, not a language model: it knows no paraphrase beyond
its concept table.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import struct
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ibot.testing.fake_openai import tokenizer
from ibot.testing.fake_openai.request_parsing import BadRequest

MAX_INPUT_TOKENS = 8192  # per input, "for all embedding models"
MAX_INPUTS = 2048  # items of an input array
MAX_REQUEST_TOKENS = 300_000  # summed over the inputs of one request
STEM_CHARS = 6
TRIGRAM_WEIGHT = 0.35
CONCEPT_WEIGHT = 1.5
# Boundaries of the blocks every feature is hashed into (see the module docstring).
_BLOCKS = (64, 128, 256, 512, 1024, 1536, 2048, 3072)


@dataclass(frozen=True, slots=True)
class EmbeddingModel:
    name: str
    size: int  # the vector's length without `dimensions`
    shortens: bool  # accepts `dimensions` (text-embedding-3 and later)


MODELS = {
    m.name: m
    for m in (
        EmbeddingModel("text-embedding-3-small", 1536, True),
        EmbeddingModel("text-embedding-3-large", 3072, True),
        EmbeddingModel("text-embedding-ada-002", 1536, False),
    )
}


class UnknownModel(Exception):
    """The model asked for is not an embedding model the fake knows (404)."""

    def __init__(self, model: str) -> None:
        super().__init__(model)
        self.model = model


@dataclass(frozen=True, slots=True)
class EmbeddingCall:
    """An accepted /v1/embeddings request: each input as text and as its token count."""

    model: EmbeddingModel
    texts: tuple[str, ...]
    tokens: tuple[int, ...]
    dimensions: int
    encoding_format: str  # "float" | "base64"

    @property
    def prompt_tokens(self) -> int:
        return sum(self.tokens)


def parse_embedding_request(body: Any) -> EmbeddingCall:
    """`body` as an accepted request, or BadRequest / UnknownModel (module docstring)."""
    if not isinstance(body, dict) or "input" not in body or not body.get("model"):
        raise BadRequest("'model' and 'input' are required", "missing_required")
    name = body["model"]
    if not isinstance(name, str):
        raise BadRequest("'model' must be a string", "invalid_type")
    model = MODELS.get(name)
    if model is None:
        raise UnknownModel(name)
    encoding_format = body.get("encoding_format", "float")
    if encoding_format not in ("float", "base64"):
        raise BadRequest(
            f"{encoding_format!r} is not one of ['float', 'base64'] - 'encoding_format'",
            "invalid_value",
        )
    dimensions = _dimensions(body.get("dimensions"), model)
    texts, counts = _inputs(body["input"], name)
    total = sum(counts)
    if total > MAX_REQUEST_TOKENS:
        raise BadRequest(
            f"Requested {total} tokens, max {MAX_REQUEST_TOKENS} tokens per request",
            "max_tokens_per_request",
        )
    return EmbeddingCall(model, texts, counts, dimensions, encoding_format)


def _dimensions(value: Any, model: EmbeddingModel) -> int:
    if value is None:
        return model.size
    if not model.shortens:
        raise BadRequest(
            "This model does not support specifying dimensions.", "unsupported_parameter"
        )
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadRequest(f"Invalid 'dimensions': {value!r}, expected at least 1", "invalid_value")
    if value > model.size:
        raise BadRequest(
            f"This model's maximum dimensions is {model.size}, "
            f"but you requested {value} dimensions.",
            "invalid_value",
        )
    return value


def _inputs(value: Any, model: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """(text, token count) of each input; BadRequest for an empty or oversized one."""
    if isinstance(value, str):
        items: list[Any] = [value]
    elif isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        items = [value]  # one input given as its token ids
    elif isinstance(value, list):
        items = value
    else:
        raise BadRequest("'input' must be a string or an array", "invalid_type")
    if not items:
        raise BadRequest("'input' must not be empty", "invalid_value")
    if len(items) > MAX_INPUTS:
        raise BadRequest(
            f"'input' has {len(items)} items; at most {MAX_INPUTS} are allowed", "invalid_value"
        )
    texts, counts = [], []
    for index, item in enumerate(items):
        text, count = _one_input(item, model, index)
        if count > MAX_INPUT_TOKENS:
            raise BadRequest(
                f"This model's maximum context length is {MAX_INPUT_TOKENS} tokens, however "
                f"you requested {count} tokens in input {index}. Please reduce your input.",
                "context_length_exceeded",
            )
        texts.append(text)
        counts.append(count)
    return tuple(texts), tuple(counts)


def _one_input(item: Any, model: str, index: int) -> tuple[str, int]:
    if isinstance(item, str):
        if item == "":
            raise BadRequest(f"input {index} is an empty string", "invalid_value")
        return item, tokenizer.count_text(item, model)
    if isinstance(item, list) and item and all(isinstance(t, int) for t in item):
        try:
            text = tokenizer.encoding(model).decode(item)
        except (KeyError, ValueError, OverflowError):
            raise BadRequest(f"input {index} holds an unknown token id", "invalid_value") from None
        return text, len(item)
    raise BadRequest(
        f"input {index} must be a non-empty string or a non-empty array of token ids",
        "invalid_value",
    )


# ----- vectors -----------------------------------------------------------------------------

# Very common French and English words: they would make every two texts look alike.
_STOP_WORDS = """a an and are as at be but by de des du en est et for from how i il in is it j
je l la le les ma me mes mon my n ne of on or ou pas pour que qui sur t the this to tu un
une with y you"""
_STOP = frozenset(_STOP_WORDS.split())
# Words of tech help that mean the same, across the two languages: (concept, words).
_CONCEPTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("install", ("install", "installer", "installe", "installation", "instale", "setup")),
    ("error", ("error", "erreur", "errors", "erreurs", "exception", "fails", "failed")),
    ("crash", ("crash", "crashes", "plante", "planter", "freeze", "freezes", "bloque")),
    ("find", ("found", "find", "trouve", "trouver", "introuvable", "missing", "manque")),
    ("work", ("work", "works", "working", "marche", "fonctionne", "fonctionner")),
    ("folder", ("folder", "directory", "dossier", "repertoire", "dir")),
    ("file", ("file", "files", "fichier", "fichiers")),
    ("slow", ("slow", "lent", "lente", "lag", "rame")),
    ("start", ("start", "starts", "launch", "demarre", "demarrer", "lance", "lancer")),
    ("permission", ("permission", "denied", "refuse", "refusee", "droits", "access", "acces")),
    ("message", ("message", "messages", "msg")),
    ("update", ("update", "upgrade", "mise", "jour", "maj", "updated")),
    ("connect", ("connect", "connection", "connexion", "connecter", "connected")),
    ("delete", ("delete", "remove", "supprimer", "effacer", "deleted", "supprime")),
    ("screen", ("screen", "ecran", "display", "affichage", "black", "noir")),
    ("version", ("version", "versions", "release")),
    ("password", ("password", "mot", "passe", "mdp")),
    ("network", ("network", "reseau", "internet", "wifi")),
    ("disk", ("disk", "disque", "drive", "ssd", "hdd")),
    ("sound", ("sound", "son", "audio", "micro", "microphone")),
)
_CONCEPT_OF = {word: concept for concept, words in _CONCEPTS for word in words}
_WORD = re.compile(r"[a-z0-9]+")


def fold(text: str) -> str:
    """Lowercase, without accents."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def features(text: str) -> dict[str, float]:
    """The weighted features of `text` (module docstring)."""
    found: dict[str, float] = {}
    for word in _WORD.findall(fold(text)):
        if word in _STOP:
            continue
        _add(found, "w:" + word[:STEM_CHARS], 1.0)
        concept = _CONCEPT_OF.get(word)
        if concept is not None:
            _add(found, "c:" + concept, CONCEPT_WEIGHT)
        padded = f" {word} "
        for i in range(len(padded) - 2):
            _add(found, "t:" + padded[i : i + 3], TRIGRAM_WEIGHT)
    if not found:  # only punctuation or stop words: still one vector per text
        _add(found, "raw:" + text, 1.0)
    return found


def _add(found: dict[str, float], feature: str, weight: float) -> None:
    found[feature] = found.get(feature, 0.0) + weight


def vector(text: str, size: int, dimensions: int) -> list[float]:
    """The unit vector of `text`: the model's `size`-long vector, cut to `dimensions`
    and normalised again."""
    full = [0.0] * size
    blocks = [b for b in _BLOCKS if b < size] + [size]
    for feature, weight in features(text).items():
        digest = hashlib.blake2b(feature.encode(), digest_size=8 * len(blocks)).digest()
        start = 0
        for n, end in enumerate(blocks):
            value = int.from_bytes(digest[8 * n : 8 * n + 8], "little")
            position = start + (value >> 1) % (end - start)
            full[position] += weight if value & 1 else -weight
            start = end
    return normalised(full[:dimensions])


def normalised(values: Sequence[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in values))
    if norm == 0:
        return [1.0 / math.sqrt(len(values))] * len(values)
    return [v / norm for v in values]


def encoded(values: Iterable[float], encoding_format: str) -> list[float] | str:
    """The vector as the API sends it: floats, or base64 of little-endian float32."""
    floats = [round(v, 8) for v in values]
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(floats)}f", *floats)).decode("ascii")
    return floats


def embeddings(call: EmbeddingCall) -> list[list[float] | str]:
    """Each input's vector, in order, in the requested encoding."""
    return [
        encoded(vector(text, call.model.size, call.dimensions), call.encoding_format)
        for text in call.texts
    ]
