"""Usage numbers as OpenAI bills them: the one place the fake decides what a call cost.

iBot's ledger is reconciled against these numbers, so they follow the API's billing
rules, written here apart from the bot's own estimates (never `ibot.tokens` nor
`ibot.pricing`: a check of the bot's estimate against what the fake billed must not be
the bot's code compared with itself): chat token counting with tiktoken by the
cookbook's rule (tokenizer.py), the image tile formula of OpenAI's vision guide with its
own per-model constants (below), completions cut at the token cap, and cached tokens
when a prompt prefix of 1024+ tokens repeats (in 128-token steps).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ibot.testing.fake_openai import tokenizer
from ibot.testing.fake_openai.request_parsing import image_size

CACHE_MIN_TOKENS = 1024
CACHE_STEP_TOKENS = 128

# The tile method of OpenAI's vision guide ("Calculating costs"): (base tokens, tokens per
# 512 px tile) by model family, the longest matching prefix of the answering model first.
IMAGE_TILE_TOKENS: dict[str, tuple[int, int]] = {
    "gpt-4o-mini": (2833, 5667),
    "gpt-4o": (85, 170),
    "gpt-4.1": (85, 170),
}
# A model of none of those families is billed as gpt-4o bills its images.
FALLBACK_IMAGE_MODEL = "gpt-4o"
IMAGE_MAX_SIDE = 2048  # "high": first scaled to fit in a 2048 x 2048 square,
IMAGE_SHORT_SIDE = 768  # then so that its shortest side is 768 px (never enlarged),
IMAGE_TILE_PX = 512  # then counted in 512 px tiles


@dataclass(frozen=True)
class CallUsage:
    """The usage of one answered call, as the response's `usage` object reports it."""

    prompt_tokens: int  # text + images, cached tokens included
    cached_tokens: int
    image_tokens: int
    completion_tokens: int
    # Whether prompt_tokens_details carries image_tokens (and text_tokens), which the
    # spec leaves optional and the API's own examples leave out.
    reports_image_tokens: bool = True


@dataclass(frozen=True)
class Completion:
    """The answer's text as generated: cut to the token cap, with its token count."""

    text: str
    tokens: int
    finish_reason: str  # "stop", or "length" when the cap cut it


def tile_parameters(model: str) -> tuple[int, int]:
    """(base, per tile) image tokens of `model` (the fallback family's when unknown)."""
    for family in sorted(IMAGE_TILE_TOKENS, key=len, reverse=True):
        if model.startswith(family):
            return IMAGE_TILE_TOKENS[family]
    return IMAGE_TILE_TOKENS[FALLBACK_IMAGE_MODEL]


def image_tokens(model: str, width: int, height: int, detail: str) -> int:
    """Prompt tokens of one width x height image at `detail` ("low" or "high")."""
    base, per_tile = tile_parameters(model)
    if detail == "low":
        return base
    # Scaled in whole pixels, rounded down, keeping the aspect ratio.
    longest = max(width, height)
    if longest > IMAGE_MAX_SIDE:
        width = max(1, width * IMAGE_MAX_SIDE // longest)
        height = max(1, height * IMAGE_MAX_SIDE // longest)
    shortest = min(width, height)
    if shortest > IMAGE_SHORT_SIDE:
        width = max(1, width * IMAGE_SHORT_SIDE // shortest)
        height = max(1, height * IMAGE_SHORT_SIDE // shortest)
    tiles = math.ceil(width / IMAGE_TILE_PX) * math.ceil(height / IMAGE_TILE_PX)
    return base + per_tile * tiles


class UsageMeter:
    """Counts prompts and completions, and remembers prompt prefixes for caching.

    `answering_model` maps the model asked for to the snapshot that answers, whose
    family gives the image token parameters.
    """

    def __init__(self, answering_model: Callable[[str], str]) -> None:
        self._answering_model = answering_model
        self._cache: set[bytes] = set()

    def count_prompt(
        self, messages: list[dict[str, Any]], model: str
    ) -> tuple[int, int, list[int]]:
        """(prompt tokens incl. images, image tokens, the prompt's text token ids)."""
        text_tokens = tokenizer.count_chat(messages, model)
        images = 0
        for message in messages:
            content = message.get("content")
            if not isinstance(content, list):
                continue
            for part in content:
                if part.get("type") == "image_url":
                    images += self.image_part_tokens(model, part.get("image_url", {}))
        ids = prompt_token_ids(messages, model)
        return text_tokens + images, images, ids

    def image_part_tokens(self, model: str, image_url: dict[str, Any]) -> int:
        """Prompt tokens of one `image_url` part ("auto" detail is billed as "high")."""
        detail = image_url.get("detail", "auto")
        width, height = image_size(image_url)
        return image_tokens(
            self._answering_model(model), width, height, "low" if detail == "low" else "high"
        )

    def cached_tokens(self, ids: list[int], prompt_tokens: int) -> int:
        """Tokens of the longest previously seen prefix, from 1024 in steps of 128.

        The prefixes of `ids` are remembered for the next requests.
        """
        cached = 0
        length = CACHE_MIN_TOKENS
        while length <= len(ids):
            key = hashlib.sha1(repr(ids[:length]).encode()).digest()
            if key not in self._cache:
                break
            cached = length
            length += CACHE_STEP_TOKENS
        length = CACHE_MIN_TOKENS
        while length <= len(ids):
            self._cache.add(hashlib.sha1(repr(ids[:length]).encode()).digest())
            length += CACHE_STEP_TOKENS
        return min(cached, prompt_tokens)

    def complete(self, text: str, model: str, max_tokens: int) -> Completion:
        """The answer `text` as the model would generate it, stopped at `max_tokens`."""
        ids = tokenizer.encode(text, model)
        if len(ids) > max_tokens:
            ids = ids[:max_tokens]
            return Completion(tokenizer.encoding(model).decode(ids), len(ids), "length")
        return Completion(text, len(ids), "stop")


def prompt_token_ids(messages: list[dict[str, Any]], model: str) -> list[int]:
    """The prompt as one token sequence, for prefix caching (roles and text in order)."""
    ids: list[int] = []
    for message in messages:
        ids.extend(tokenizer.encode(str(message.get("role", "")), model))
        content = message.get("content")
        if isinstance(content, list):
            for part in content:
                if part.get("type") == "text":
                    ids.extend(tokenizer.encode(part.get("text", ""), model))
                else:  # an image breaks text continuity: hash its bytes in as one marker
                    url = part.get("image_url", {}).get("url", "")
                    ids.append(-int.from_bytes(hashlib.sha1(url.encode()).digest()[:4], "big"))
        elif isinstance(content, str):
            ids.extend(tokenizer.encode(content, model))
    return ids
