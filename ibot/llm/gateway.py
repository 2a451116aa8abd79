"""The one door to a model.

Every model call in iBot goes through `Gateway.complete`, which:
1. estimates the prompt tokens (tiktoken + the image formula) and the worst-case cost;
2. asks the budget hook to reserve that cost (or refuses the call);
3. calls the backend (which retries transient failures itself);
4. prices the usage the backend measured, by the model that answered;
5. settles the reservation and writes exactly one ledger row, whatever the outcome;
6. logs one line with feature, ids, model, tokens, cost, latency and request id.

No other code talks to OpenAI or to the local model, so the ledger is complete by
construction. A failed ledger write never fails the user's answer: the row is logged
in full instead, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import structlog

from ibot import tokens
from ibot.db.ledger import Ledger, LedgerEntry
from ibot.llm.budget import AllowAll, BudgetExceeded, BudgetHook, Reservation
from ibot.llm.types import (
    Backend,
    BackendError,
    BackendResponse,
    CallStatus,
    ErrorKind,
    LLMCallError,
    LLMRequest,
    LLMResult,
    Usage,
    UsageSource,
)
from ibot.pricing import PriceTable

OnDelta = Callable[[str], Awaitable[None] | None]

log = structlog.get_logger("ibot.gateway")


class ModelBackend(Protocol):
    name: Backend

    async def complete(
        self,
        request: LLMRequest,
        *,
        prompt_estimate: int = 0,
        on_delta: OnDelta | None = None,
        estimate_completion: Callable[[str], int] | None = None,
    ) -> BackendResponse: ...


@dataclass(frozen=True, slots=True)
class Estimate:
    """What a request will cost at most, before it is sent."""

    prompt_tokens: int
    image_tokens: int
    worst_case_micros: int | None  # None: the requested model has no price


class Gateway:
    def __init__(
        self,
        *,
        ledger: Ledger,
        prices: PriceTable,
        openai: ModelBackend | None,
        budget: BudgetHook | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.ledger = ledger
        self.prices = prices
        self.openai = openai
        self.budget: BudgetHook = budget or AllowAll()
        self._clock = clock

    def estimate(self, request: LLMRequest) -> Estimate:
        """Prompt tokens as the API will count them, and the worst-case cost of the call."""
        text_tokens = tokens.count_messages(request.messages, request.model)
        image_tokens = 0
        for message in request.messages:
            for image in message.images:
                image_tokens += self._image_tokens(
                    request.model, image.width, image.height, image.detail
                )
        prompt = text_tokens + image_tokens
        worst = self.prices.cost_micros(
            Usage(prompt_tokens=prompt, completion_tokens=request.max_output_tokens),
            request.model,
        )
        return Estimate(prompt_tokens=prompt, image_tokens=image_tokens, worst_case_micros=worst)

    def _image_tokens(self, model: str, width: int, height: int, detail: str) -> int:
        try:
            return self.prices.image_tokens(model, width, height, detail)
        except ValueError:
            # No image parameters for this model: count it as gpt-4o would rather than
            # as free, so that the budget still holds something for it.
            return self.prices.image_tokens("gpt-4o", width, height, detail)

    async def complete(self, request: LLMRequest, *, on_delta: OnDelta | None = None) -> LLMResult:
        """Answer `request`, or raise LLMCallError; either way one ledger row is written."""
        started = self._clock()
        estimate = self.estimate(request)
        backend = self.openai
        if backend is None:
            await self._record_failure(
                request,
                None,
                ErrorKind.NOT_CONFIGURED,
                "no backend configured",
                started,
                status=CallStatus.REFUSED,
            )
            raise LLMCallError(ErrorKind.NOT_CONFIGURED, "no model backend is configured")

        try:
            reservation = await self.budget.reserve(
                request.context, request.model, estimate.worst_case_micros
            )
        except BudgetExceeded as exc:
            ledger_id = await self._record_failure(
                request,
                backend.name,
                ErrorKind.BUDGET,
                str(exc),
                started,
                status=CallStatus.REFUSED,
            )
            raise LLMCallError(ErrorKind.BUDGET, str(exc), ledger_id=ledger_id) from exc

        try:
            response = await backend.complete(
                request,
                prompt_estimate=estimate.prompt_tokens,
                on_delta=on_delta,
                estimate_completion=lambda text: tokens.count_text(text, request.model),
            )
        except BackendError as err:
            cost = (
                self.prices.cost_micros(err.usage, err.model or request.model) if err.usage else 0
            )
            await asyncio.shield(self.budget.settle(reservation, cost))
            ledger_id = await self._record_failure(
                request,
                backend.name,
                err.kind,
                err.message,
                started,
                usage=err.usage,
                cost=cost,
                request_id=err.request_id,
                attempts=err.attempts,
                model=err.model if err.usage else None,
            )
            raise LLMCallError(err.kind, err.message, ledger_id=ledger_id) from None
        except asyncio.CancelledError:
            await asyncio.shield(self._cancelled(request, backend.name, reservation, started))
            raise

        cost = self.prices.cost_micros(response.usage, response.model)
        await asyncio.shield(self.budget.settle(reservation, cost))
        latency = self._clock() - started
        entry = self._entry(
            request,
            backend.name,
            CallStatus.OK,
            latency,
            usage=response.usage,
            cost=cost,
            model=response.model,
            request_id=response.request_id,
            attempts=response.attempts,
        )
        ledger_id = await self._write(entry)
        return LLMResult(
            text=response.text,
            usage=response.usage,
            cost_micros=cost,
            latency_s=latency,
            backend=backend.name,
            model_requested=request.model,
            model=response.model,
            status=CallStatus.OK,
            request_id=response.request_id,
            ledger_id=ledger_id,
            finish_reason=response.finish_reason,
        )

    async def _cancelled(
        self, request: LLMRequest, backend: Backend, reservation: Reservation, started: float
    ) -> None:
        await self.budget.settle(reservation, 0)
        await self._record_failure(
            request,
            backend,
            ErrorKind.CANCELLED,
            "cancelled while waiting for the model",
            started,
        )

    async def _record_failure(
        self,
        request: LLMRequest,
        backend: Backend | None,
        kind: ErrorKind,
        message: str,
        started: float,
        *,
        status: CallStatus = CallStatus.ERROR,
        usage: Usage | None = None,
        cost: int | None = 0,
        request_id: str | None = None,
        attempts: int = 1,
        model: str | None = None,
    ) -> int | None:
        entry = self._entry(
            request,
            backend or Backend.OPENAI,
            status,
            self._clock() - started,
            usage=usage or Usage(),
            cost=cost,
            model=model,
            request_id=request_id,
            attempts=attempts,
            error_kind=kind,
            note=message[:255],
        )
        return await self._write(entry)

    def _entry(
        self,
        request: LLMRequest,
        backend: Backend,
        status: CallStatus,
        latency_s: float,
        *,
        usage: Usage,
        cost: int | None,
        model: str | None,
        request_id: str | None,
        attempts: int,
        error_kind: ErrorKind | None = None,
        note: str | None = None,
    ) -> LedgerEntry:
        ctx = request.context
        return LedgerEntry(
            guild_id=ctx.guild_id,
            channel_id=ctx.channel_id,
            thread_id=ctx.thread_id,
            user_id=ctx.user_id,
            feature=ctx.feature,
            backend=backend,
            model_requested=request.model,
            model=model,
            request_id=request_id,
            prompt_tokens=usage.prompt_tokens,
            cached_tokens=usage.cached_tokens,
            image_tokens=usage.image_tokens,
            completion_tokens=usage.completion_tokens,
            cost_micros=cost,
            latency_ms=round(latency_s * 1000),
            status=status,
            error_kind=error_kind,
            usage_source=usage.source if usage.total_tokens else UsageSource.MEASURED,
            attempts=attempts,
            note=note,
        )

    async def _write(self, entry: LedgerEntry) -> int | None:
        fields = {
            "feature": str(entry.feature),
            "guild_id": entry.guild_id,
            "channel_id": entry.channel_id,
            "thread_id": entry.thread_id,
            "user_id": entry.user_id,
            "backend": str(entry.backend),
            "model": entry.model or entry.model_requested,
            "prompt_tokens": entry.prompt_tokens,
            "cached_tokens": entry.cached_tokens,
            "image_tokens": entry.image_tokens,
            "completion_tokens": entry.completion_tokens,
            "cost_micros": entry.cost_micros,
            "latency_ms": entry.latency_ms,
            "request_id": entry.request_id,
            "status": str(entry.status),
            "attempts": entry.attempts,
        }
        if entry.error_kind is not None:
            fields["error_kind"] = str(entry.error_kind)
        try:
            ledger_id = await asyncio.shield(self.ledger.record(entry))
        except Exception:
            # The answer still goes out; the full row is in the log so nothing is lost.
            log.exception("ledger_write_failed", **fields, note=entry.note)
            return None
        if entry.status is CallStatus.OK:
            log.info("model_call", ledger_id=ledger_id, **fields)
        else:
            log.warning("model_call", ledger_id=ledger_id, **fields, note=entry.note)
        return ledger_id
