"""The DialoGPT turn format, shared by training, the terminal chat and the benchmark.

A conversation is its turns, each followed by the end-of-text token:
``turn₁ <eos> turn₂ <eos> … response <eos>``. That is how DialoGPT was pre-trained and
how the tutorials fine-tuned it, and how the local backend prompts the model, so a model
trained here answers there in the same format.

Sequences longer than the model's positions lose their *oldest* context turns first
(the newest turns matter most to the answer). When not even the newest context turn
fits, its end is kept, as the local backend does when it builds a prompt (the model
learns on what it will be shown). An over-long response is cut at the end, still
followed by end-of-text.

Only the tokenizer is used here (no torch), so the encoding is cheap to test.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

IGNORE_INDEX = -100  # label value the loss ignores (PyTorch's cross-entropy default)

LossOn = Literal["response", "all"]

_TOKENIZE_CHUNK = 1024


@dataclass(frozen=True, slots=True)
class Encoded:
    """One training sequence: token ids, labels (IGNORE_INDEX where no loss) and whether
    anything was cut to fit."""

    input_ids: list[int]
    labels: list[int]
    truncated: bool

    @property
    def supervised_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


def eos_id(tokenizer: Any) -> int:
    token_id = tokenizer.eos_token_id
    if token_id is None:
        raise ValueError("the tokenizer has no end-of-text (eos) token")
    return int(token_id)


def tokenize_texts(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text, without special tokens, tokenized in batches (fast)."""
    ids: list[list[int]] = []
    for start in range(0, len(texts), _TOKENIZE_CHUNK):
        chunk = list(texts[start : start + _TOKENIZE_CHUNK])
        ids.extend(tokenizer(chunk, add_special_tokens=False)["input_ids"])
    return ids


def fit_context(turns: Sequence[list[int]], budget: int) -> tuple[list[int], bool]:
    """The newest whole turns that fit in `budget` tokens, oldest first, flattened.

    Each turn already ends with eos. Returns (ids, truncated). When no whole turn fits,
    the end of the newest one is kept.
    """
    kept: list[list[int]] = []
    used = 0
    for turn in reversed(turns):
        if used + len(turn) > budget:
            break
        kept.append(turn)
        used += len(turn)
    truncated = len(kept) < len(turns)
    if not kept and turns and budget >= 1:
        kept.append(turns[-1][-budget:])
    return [token for turn in reversed(kept) for token in turn], truncated


def build_example(
    context_ids: Sequence[list[int]],
    response_ids: list[int],
    eos: int,
    *,
    max_length: int,
    loss_on: LossOn = "response",
) -> Encoded:
    """Assemble one sequence from already tokenized turns (without their eos)."""
    if max_length < 2:
        raise ValueError("max_length must be at least 2")
    response = [*response_ids, eos]
    truncated = False
    if len(response) > max_length:
        response = [*response_ids[: max_length - 1], eos]
        truncated = True
    context, cut = fit_context([[*turn, eos] for turn in context_ids], max_length - len(response))
    truncated = truncated or cut
    input_ids = context + response
    # Loss on the response only: the context's labels are ignored.
    labels = list(input_ids) if loss_on == "all" else [IGNORE_INDEX] * len(context) + response
    return Encoded(input_ids, labels, truncated)


def encode_samples(
    tokenizer: Any,
    samples: Sequence[tuple[Sequence[str], str]],
    *,
    max_length: int,
    loss_on: LossOn = "response",
) -> list[Encoded]:
    """Encode (context turns, response) pairs, tokenizing every text in a few batches."""
    eos = eos_id(tokenizer)
    texts: list[str] = []
    for context, response in samples:
        texts.extend(context)
        texts.append(response)
    ids = iter(tokenize_texts(tokenizer, texts))
    encoded = []
    for context, _response in samples:
        context_ids = [next(ids) for _ in context]
        encoded.append(
            build_example(context_ids, next(ids), eos, max_length=max_length, loss_on=loss_on)
        )
    return encoded


def encode_prompt(tokenizer: Any, history: Sequence[str], *, max_length: int) -> list[int]:
    """The prompt for the next answer: the history's turns, each followed by eos, cut
    from the oldest turn so that it fits in `max_length` tokens."""
    eos = eos_id(tokenizer)
    turns = [[*ids, eos] for ids in tokenize_texts(tokenizer, history)] if history else []
    ids, _ = fit_context(turns, max_length)
    return ids


def model_max_length(model_config: Any, tokenizer: Any | None = None) -> int:
    """The positions the model can attend to (GPT-2: n_positions)."""
    for name in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(model_config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < 1_000_000:
        return limit
    return 1024
