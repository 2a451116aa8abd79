"""Summarise a channel or thread for moderators, within the prompt token budget.

When the history fits, one call summarises it. When it does not, the transcript is cut
into chunks that each fit, the chunks are summarised concurrently, and the partial
summaries are combined — again in several rounds if even they do not fit together, each
round at most halving their number, so that a summary always ends after a bounded number
of calls (see `SummaryService._combine`). One semaphore bounds the calls in flight across
all rounds, and the first failed call (a budget refusal, a backend error) cancels the
others of its round, queued or in flight, so that nothing more is spent on a summary that
will not be shown. No request ever exceeds `max_prompt_tokens`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from ibot import tokens
from ibot.domain import (
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
from ibot.llm.gateway import ModelGateway
from ibot.services.prompts import FeatureConfig, PromptBuilder

# Tokens kept free in every request for the template's own words and message overhead.
_TEMPLATE_MARGIN = 200
# Between two partial summaries in a combine request.
_COMBINE_SEPARATOR = "\n\n---\n\n"


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


@dataclass(slots=True)
class _Run:
    """One summary in progress: where it is for, its calls' bound, what they returned."""

    channel: str
    context: CallContext
    semaphore: asyncio.Semaphore
    results: list[LLMResult] = field(default_factory=list)
    failed: bool = False  # a call failed: the summary is over, start no other call


class SummaryService:
    def __init__(
        self,
        gateway: ModelGateway,
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
        run = _Run(
            channel=channel,
            context=context or CallContext(feature=Feature.SUMMARY),
            semaphore=asyncio.Semaphore(self.concurrency),
        )
        try:
            text = await self._summarize_lines(lines, run)
        except LLMCallError as err:
            return SummaryFailed(err.kind, budget=err.budget, resets_at=err.resets_at)
        results = run.results
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

    async def _summarize_lines(self, lines: list[str], run: _Run) -> str:
        transcript = "\n".join(lines)
        if tokens.count_text(transcript, self.config.model) <= self._budget("summary", run.channel):
            [text] = await self._round("summary", [transcript], run)
            return text
        chunks = self._chunks(lines, self._budget("summary_chunk", run.channel))
        partials = await self._round("summary_chunk", chunks, run)
        return await self._combine(partials, run)

    async def _combine(self, partials: list[str], run: _Run) -> str:
        """Combine the partial summaries, in rounds, into one.

        Termination, and a bound on the calls: let N >= 1 be the number of chunks (at
        most the number of messages, since a chunk holds at least one). A round with p
        partials makes g calls, whose answers are the next round's partials, where g = 1
        when p = 1 or when all p fit in one request (the last round), and otherwise
        g <= ceil(p / 2): `_groups` keeps the budget's own grouping only when it halves
        the count, else it packs the partials two by two, shortening them to fit. So
        after round r at most ceil(N / 2^r) partials are left (ceil(ceil(x) / 2) =
        ceil(x / 2)), and one is left, which ends the loop, after at most
        R = ceil(log2 N) rounds (one round when N = 1). The combine rounds make at most
        sum_{r=1..R} ceil(N / 2^r) < N + R calls, so a summary makes at most
        N + (N + R - 1) <= 2N + ceil(log2 N) calls in all (2 when N = 1), whatever
        the length of the answers and the budget.
        """
        budget = self._budget("summary_combine", run.channel)
        while True:
            merged = await self._round("summary_combine", self._groups(partials, budget), run)
            if len(merged) == 1:
                return merged[0]
            assert len(merged) <= (len(partials) + 1) // 2  # the shrink the proof rests on
            partials = merged

    def _groups(self, partials: list[str], budget: int) -> list[str]:
        """The request bodies of one combine round: one body when everything fits (or
        there is one partial), else at most ceil(len(partials) / 2) of them."""
        joined = _COMBINE_SEPARATOR.join(partials)
        if len(partials) == 1 or tokens.count_text(joined, self.config.model) <= budget:
            return [tokens.truncate_text(joined, budget, self.config.model)]
        groups = self._chunks(partials, budget, separator=_COMBINE_SEPARATOR)
        if len(groups) <= (len(partials) + 1) // 2:
            return groups
        # Partials so long that few fit together (each nearly fills the budget): grouping
        # them would not shrink their number, and the next round would pay for as many
        # calls again. Pack them two by two instead, shortening what does not fit.
        return [self._pair(partials[i : i + 2], budget) for i in range(0, len(partials), 2)]

    def _pair(self, pair: list[str], budget: int) -> str:
        """One or two partials joined into at most `budget` tokens; when two do not fit,
        the longer one is cut first, and each keeps at least half of the room."""
        model = self.config.model
        if len(pair) == 1:
            return tokens.truncate_text(pair[0], budget, model)
        first, second = pair
        room = budget - tokens.count_text(_COMBINE_SEPARATOR, model)
        size_first, size_second = tokens.count_text(first, model), tokens.count_text(second, model)
        if size_first + size_second > room:
            half = room // 2
            if size_first <= half:
                second = tokens.truncate_text(second, room - size_first, model)
            elif size_second <= half:
                first = tokens.truncate_text(first, room - size_second, model)
            else:
                first = tokens.truncate_text(first, half, model)
                second = tokens.truncate_text(second, room - half, model)
        return _COMBINE_SEPARATOR.join((first, second))

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

    async def _round(self, template_key: str, bodies: list[str], run: _Run) -> list[str]:
        """One call per body, in order; at most `concurrency` in flight, all rounds of the
        summary sharing one semaphore. The first failure cancels the other calls, queued
        or in flight (the gateway writes a cancelled call's ledger row and frees its
        reservation), and is raised itself once they are all stopped."""

        async def one(body: str) -> str:
            async with run.semaphore:
                if run.failed:
                    # A sibling failed and freed this slot on its way out; the group is
                    # about to cancel this call: do not start it in the meantime.
                    raise asyncio.CancelledError
                try:
                    return await self._call(template_key, body, run)
                except Exception:
                    run.failed = True  # before the slot is freed for a queued call
                    raise

        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(one(body)) for body in bodies]
        except BaseExceptionGroup as failed:
            first = failed.exceptions[0]  # in the order the calls failed
            if isinstance(first, LLMCallError):
                raise first from None
            raise
        return [task.result() for task in tasks]

    async def _call(self, template_key: str, body: str, run: _Run) -> str:
        request = LLMRequest(
            messages=self._messages(template_key, run.channel, body),
            model=self.config.model,
            max_output_tokens=self.config.max_output_tokens,
            context=run.context,
            temperature=self.config.temperature,
        )
        result = await self.gateway.complete(request)
        run.results.append(result)
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
