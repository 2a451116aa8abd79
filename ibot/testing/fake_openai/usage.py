"""Usage numbers as OpenAI bills them: the one place the fake decides what a call cost.

iBot's ledger is reconciled against these numbers, so they follow the API's billing
rules: chat token counting (tiktoken, the cookbook's per-message overhead), the image
tile formula from the price table, completions cut at the token cap, and cached tokens
when a prompt prefix of 1024+ tokens repeats (in 128-token steps). For now the text is
counted with `ibot.tokens`, the bot's own counter; this module is the only part of the
fake that does so, so that it can be given a counter of its own without touching the
server, the request parsing or the responses.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ibot import tokens
from ibot.pricing import PriceTable
from ibot.testing.fake_openai.request_parsing import image_size

CACHE_MIN_TOKENS = 1024
CACHE_STEP_TOKENS = 128

# The price row used for image tokens when the answering model has none.
FALLBACK_IMAGE_MODEL = "gpt-4o"


@dataclass(frozen=True)
class CallUsage:
    """The usage of one answered call, as the response's `usage` object reports it."""

    prompt_tokens: int  # text + images, cached tokens included
    cached_tokens: int
    image_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Completion:
    """The answer's text as generated: cut to the token cap, with its token count."""

    text: str
    tokens: int
    finish_reason: str  # "stop", or "length" when the cap cut it


class UsageMeter:
    """Counts prompts and completions, and remembers prompt prefixes for caching.

    `answering_model` maps the model asked for to the snapshot that answers, whose price
    row gives the image token parameters.
    """

    def __init__(self, prices: PriceTable, answering_model: Callable[[str], str]) -> None:
        self.prices = prices
        self._answering_model = answering_model
        self._cache: set[bytes] = set()

    def count_prompt(
        self, messages: list[dict[str, Any]], model: str
    ) -> tuple[int, int, list[int]]:
        """(prompt tokens incl. images, image tokens, the prompt's text token ids)."""
        text_tokens = tokens.count_messages(messages, model)
        image_tokens = 0
        for message in messages:
            content = message.get("content")
            if not isinstance(content, list):
                continue
            for part in content:
                if part.get("type") == "image_url":
                    image_tokens += self.image_part_tokens(model, part.get("image_url", {}))
        ids = prompt_token_ids(messages, model)
        return text_tokens + image_tokens, image_tokens, ids

    def image_part_tokens(self, model: str, image_url: dict[str, Any]) -> int:
        """Prompt tokens of one `image_url` part ("auto" detail is billed as "high")."""
        detail = image_url.get("detail", "auto")
        if detail == "auto":
            detail = "high"
        width, height = image_size(image_url)
        try:
            return self.prices.image_tokens(self._answering_model(model), width, height, detail)
        except ValueError:
            return self.prices.image_tokens(FALLBACK_IMAGE_MODEL, width, height, detail)

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
        encoding = tokens.encoding_for_model(model)
        ids = encoding.encode(text)
        if len(ids) > max_tokens:
            ids = ids[:max_tokens]
            return Completion(encoding.decode(ids), len(ids), "length")
        return Completion(text, len(ids), "stop")


def prompt_token_ids(messages: list[dict[str, Any]], model: str) -> list[int]:
    """The prompt as one token sequence, for prefix caching (roles and text in order)."""
    encoding = tokens.encoding_for_model(model)
    ids: list[int] = []
    for message in messages:
        ids.extend(encoding.encode(str(message.get("role", "")), disallowed_special=()))
        content = message.get("content")
        if isinstance(content, list):
            for part in content:
                if part.get("type") == "text":
                    ids.extend(encoding.encode(part.get("text", ""), disallowed_special=()))
                else:  # an image breaks text continuity: hash its bytes in as one marker
                    url = part.get("image_url", {}).get("url", "")
                    ids.append(-int.from_bytes(hashlib.sha1(url.encode()).digest()[:4], "big"))
        elif isinstance(content, str):
            ids.extend(encoding.encode(content, disallowed_special=()))
    return ids
