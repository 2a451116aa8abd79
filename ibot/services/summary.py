"""Summarise a channel or thread for moderators, within the prompt token budget.

When the history fits, one call summarises it. When it does not, the transcript is cut
into chunks that each fit, the chunks are summarised concurrently (a bounded number at
a time), and the partial summaries are combined — again in several rounds if even they
do not fit together. No request ever exceeds `max_prompt_tokens`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from ibot import tokens
from ibot.llm.gateway import Gateway
from ibot.llm.types import (
    Backend,
    CallContext,
    ChatMessage,
    ErrorKind,
    Feature,
    LLMCallError,
    LLMRequest,
    LLMResult,
    Usage,
)
from ibot.services.ask import FeatureConfig, PromptBuilder

# Tokens kept free in every request for the template's own words and message overhead.
_TEMPLATE_MARGIN = 200


@dataclass(frozen=True, slots=True)
class HistoryMessage:
    author: str
    content: str
    created_at: datetime
    attachments: tuple[str, ...] = ()

    def line(self) -> str:
        extra = f" [pièces jointes : {', '.join(self.attachments)}]" if self.attachments else ""
        return f"[{self.created_at:%Y-%m-%d %H:%M}] {self.author}: {self.content}{extra}"


@dataclass(frozen=True, slots=True)
class Summarized:
    text: str
    usage: Usage
    cost_micros: int | None
    calls: int
    messages: int
    model: str
    backend: Backend


@dataclass(frozen=True, slots=True)
class NothingToSummarize:
    pass


@dataclass(frozen=True, slots=True)
class SummaryFailed:
    kind: ErrorKind
    budget: str | None = None  # for a budget refusal: the spent cap and when it resets
    resets_at: datetime | None = None


SummaryOutcome = Summarized | NothingToSummarize | SummaryFailed


class SummaryService:
    def __init__(
        self,
        gateway: Gateway,
        prompts: PromptBuilder,
        config: FeatureConfig,
        *,
        concurrency: int = 4,
    ) -> None:
        self.gateway = gateway
        self.prompts = prompts
        self.config = config
        self.concurrency = concurrency

    async def summarize(
        self,
        history: Sequence[HistoryMessage],
        *,
        channel: str,
        context: CallContext | None = None,
    ) -> SummaryOutcome:
        lines = [m.line() for m in history if m.content.strip() or m.attachments]
        if not lines:
            return NothingToSummarize()
        context = context or CallContext(feature=Feature.SUMMARY)
        results: list[LLMResult] = []
        try:
            text = await self._summarize_lines(lines, channel, context, results)
        except LLMCallError as err:
            return SummaryFailed(err.kind, budget=err.budget, resets_at=err.resets_at)
        return Summarized(
            text=text,
            usage=_sum_usage(results),
            cost_micros=_sum_costs(results),
            calls=len(results),
            messages=len(lines),
            model=results[-1].model,
            backend=results[-1].backend,
        )

    def _budget(self, template_key: str, channel: str) -> int:
        """Tokens left for the transcript in one request built from `template_key`."""
        empty = self._messages(template_key, channel, "")
        used = tokens.count_messages(empty, self.config.model)
        return self.config.max_prompt_tokens - used - _TEMPLATE_MARGIN

    def _messages(self, template_key: str, channel: str, body: str) -> tuple[ChatMessage, ...]:
        return (
            ChatMessage("system", self.prompts.persona),
            ChatMessage(
                "user", self.prompts.render(template_key, channel=channel, transcript=body)
            ),
        )

    async def _summarize_lines(
        self, lines: list[str], channel: str, context: CallContext, results: list[LLMResult]
    ) -> str:
        transcript = "\n".join(lines)
        if tokens.count_text(transcript, self.config.model) <= self._budget("summary", channel):
            return await self._call("summary", channel, transcript, context, results)
        chunks = self._chunks(lines, self._budget("summary_chunk", channel))
        semaphore = asyncio.Semaphore(self.concurrency)

        async def one(chunk: str) -> str:
            async with semaphore:
                return await self._call("summary_chunk", channel, chunk, context, results)

        partials = await asyncio.gather(*(one(chunk) for chunk in chunks))
        return await self._combine(list(partials), channel, context, results)

    async def _combine(
        self, partials: list[str], channel: str, context: CallContext, results: list[LLMResult]
    ) -> str:
        budget = self._budget("summary_combine", channel)
        joined = "\n\n---\n\n".join(partials)
        if tokens.count_text(joined, self.config.model) <= budget or len(partials) == 1:
            body = tokens.truncate_text(joined, budget, self.config.model)
            return await self._call("summary_combine", channel, body, context, results)
        groups = self._chunks(partials, budget, separator="\n\n---\n\n")
        merged = await asyncio.gather(
            *(self._call("summary_combine", channel, g, context, results) for g in groups)
        )
        return await self._combine(list(merged), channel, context, results)

    def _chunks(self, items: list[str], budget: int, separator: str = "\n") -> list[str]:
        """Group consecutive items into texts of at most `budget` tokens each."""
        chunks: list[str] = []
        current: list[str] = []
        used = 0
        sep_tokens = tokens.count_text(separator, self.config.model)
        for item in items:
            size = tokens.count_text(item, self.config.model)
            if size > budget:  # one enormous message: keep its beginning
                item = tokens.truncate_text(item, budget, self.config.model)
                size = tokens.count_text(item, self.config.model)
            if current and used + sep_tokens + size > budget:
                chunks.append(separator.join(current))
                current, used = [], 0
            used += size + (sep_tokens if current else 0)
            current.append(item)
        if current:
            chunks.append(separator.join(current))
        return chunks

    async def _call(
        self,
        template_key: str,
        channel: str,
        body: str,
        context: CallContext,
        results: list[LLMResult],
    ) -> str:
        request = LLMRequest(
            messages=self._messages(template_key, channel, body),
            model=self.config.model,
            max_output_tokens=self.config.max_output_tokens,
            context=context,
            temperature=self.config.temperature,
        )
        result = await self.gateway.complete(request)
        results.append(result)
        return result.text


def _sum_usage(results: Sequence[LLMResult]) -> Usage:
    return Usage(
        prompt_tokens=sum(r.usage.prompt_tokens for r in results),
        completion_tokens=sum(r.usage.completion_tokens for r in results),
        cached_tokens=sum(r.usage.cached_tokens for r in results),
        image_tokens=sum(r.usage.image_tokens for r in results),
    )


def _sum_costs(results: Sequence[LLMResult]) -> int | None:
    costs = [r.cost_micros for r in results]
    return None if any(c is None for c in costs) else sum(c for c in costs if c is not None)
