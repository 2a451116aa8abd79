"""The one door to a model.

Every model call in iBot goes through `ModelGateway.complete` (or, for the knowledge
base's embeddings, `ModelGateway.embed`, which keeps the same books), which:
1. estimates the prompt tokens (tiktoken + the image formula) and the worst-case cost;
2. asks the budget hook to reserve that cost; when a cap would be passed, degrades in
   the feature's order: its cheaper model(s), then the local model when there is one,
   then a refusal that names the budget and when it resets;
3. writes the call's ledger row as `pending` (estimated tokens, cost 0: the budget
   holds the worst case meanwhile), then calls the backend (which retries transient
   failures itself), sending the row's call id as X-Client-Request-Id;
4. prices the usage the backend measured, by the model that answered (the image tokens
   the API leaves out of its usage are the gateway's own tile-formula estimate: see
   `_with_image_estimate`);
5. settles the reservation and completes that ledger row with the outcome, whatever it
   is (refusals, which send nothing, get their row directly);
6. logs one line with feature, ids, model, tokens, cost, latency and request id.

No other code talks to OpenAI or to the local model, so the ledger is complete by
construction. A process killed mid-call leaves its rows pending; the next start closes
them (`close_interrupted`) as interrupted calls at their worst-case cost, so a call the
provider may have billed is never missing from the ledger or the budgets. A failed
ledger write never fails the user's answer: the row is logged in full instead.

The books themselves (steps 3, 5 and 6: the rows, the log line, the metrics) are kept by
`ibot.llm.accounting.CallAccountant`; this module decides which call is made and what it
costs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

from ibot import tokens
from ibot.domain import (
    Backend,
    BackendError,
    BackendResponse,
    CallStatus,
    ErrorKind,
    Feature,
    LLMCallError,
    LLMRequest,
    LLMResult,
    RateLimitInfo,
    Usage,
    UsageSource,
)
from ibot.llm.accounting import CallAccountant, CallRecorder
from ibot.llm.budget import AllowAll, BudgetExceeded, BudgetHook, Reservation
from ibot.llm.embeddings import (
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingResult,
    count_inputs,
)
from ibot.llm.pacing import Pacer
from ibot.metrics import Metrics
from ibot.pricing import PriceTable

OnDelta = Callable[[str], Awaitable[None] | None]

# OpenAI failures (after its own retries) that the local model answers instead.
LOCAL_FALLBACK_ERRORS = frozenset(
    {
        ErrorKind.SERVER,
        ErrorKind.TIMEOUT,
        ErrorKind.CONNECTION,
        ErrorKind.RATE_LIMIT,
        ErrorKind.QUOTA,
    }
)


# The note of a row whose image_tokens are our tile-formula estimate, OpenAI's usage having
# none (`ModelGateway._with_image_estimate`).
IMAGE_TOKENS_ESTIMATED_NOTE = (
    "image_tokens estimated by the tile formula: the API's usage did not report them"
)


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


@runtime_checkable
class EmbeddingBackend(Protocol):
    """A backend that embeds texts (the OpenAI backend; the local model does not)."""

    name: Backend

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse: ...


@dataclass(frozen=True, slots=True)
class Estimate:
    """What a request will cost at most, before it is sent."""

    prompt_tokens: int
    image_tokens: int
    worst_case_micros: int | None  # None: the requested model has no price


@dataclass(frozen=True, slots=True)
class _Plan:
    """The call the budget allowed: which backend, which request, what is held."""

    backend: ModelBackend
    request: LLMRequest  # the request as sent (its model may be the cheaper one)
    estimate: Estimate
    reservation: Reservation
    note: str | None = None  # why this is a fallback; None: the call as asked


class ModelGateway:
    def __init__(
        self,
        *,
        ledger: CallRecorder,
        prices: PriceTable,
        openai: ModelBackend | None,
        budget: BudgetHook | None = None,
        clock: Callable[[], float] = time.perf_counter,
        degrade: Mapping[Feature, Sequence[str]] | None = None,
        local: ModelBackend | None = None,
        local_worst_case: Callable[[LLMRequest], int] | None = None,
        pacer: Pacer | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        """`degrade`: per feature, the cheaper models to try, in order, when a budget
        refuses the requested one. `local`: the local model, tried after them; what it
        holds against the budgets is `local_worst_case(request)` (0 when not given).
        `ledger`: where the calls' rows go (an `ibot.db.ledger.Ledger`, or any
        `CallRecorder`)."""
        self.accounts = CallAccountant(ledger, prices, clock=clock, metrics=metrics)
        self.prices = prices
        self.openai = openai
        self.budget: BudgetHook = budget or AllowAll()
        self._clock = clock
        self.degrade: dict[Feature, tuple[str, ...]] = {
            Feature(feature): tuple(models) for feature, models in (degrade or {}).items()
        }
        self.local = local
        self._local_worst_case = local_worst_case
        self.pacer = pacer
        listener_target = openai if pacer is not None else None
        if listener_target is not None and hasattr(listener_target, "rate_limit_listener"):
            listener_target.rate_limit_listener = self._rate_limits_seen

    @property
    def ledger(self) -> CallRecorder:
        return self.accounts.recorder

    @property
    def metrics(self) -> Metrics | None:
        return self.accounts.metrics

    def _rate_limits_seen(self, info: RateLimitInfo | None, retry_after: float | None) -> None:
        if self.pacer is None:  # pacing switched off after construction
            return
        self.pacer.observe(info)
        if retry_after is not None:
            self.pacer.back_off(retry_after)

    def _slot(
        self, backend: ModelBackend, request: LLMRequest, estimate: Estimate
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """A paced slot for calls to OpenAI; the local model has its own queue."""
        if self.pacer is None or backend is not self.openai:
            return contextlib.nullcontext()
        return self.pacer.slot(
            request.context.feature, estimate.prompt_tokens + request.max_output_tokens
        )

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
        if self.openai is None and self.local is None:
            await self.accounts.failed(
                request,
                None,
                ErrorKind.NOT_CONFIGURED,
                "no backend configured",
                started,
                status=CallStatus.REFUSED,
            )
            raise LLMCallError(ErrorKind.NOT_CONFIGURED, "no model backend is configured")

        plan = await self._reserve(request, started)
        try:
            return await self._call(plan, request, started, on_delta)
        except LLMCallError as failure:
            local = self._local_plan_after(plan, failure)
            if local is None:
                raise
            fallback = await local(request)
            if fallback is None:
                raise
            try:
                return await self._call(fallback, request, self._clock(), on_delta)
            except LLMCallError:
                raise failure from None  # the user hears of the first problem

    async def _call(
        self, plan: _Plan, request: LLMRequest, started: float, on_delta: OnDelta | None
    ) -> LLMResult:
        """Send the planned call; write its ledger row; return it or raise LLMCallError."""
        backend, estimate, reservation = plan.backend, plan.estimate, plan.reservation
        sent = replace(plan.request, call_id=uuid.uuid4().hex)
        pending: int | None = None
        went_out = False
        try:
            async with self._slot(backend, sent, estimate):
                # Written once the call has its slot, just before it is sent: a call
                # still queued when the process dies was never sent and costs nothing.
                worst = self._worst_usage(estimate, sent)
                opening = asyncio.ensure_future(
                    self.accounts.open(request, backend.name, sent, worst)
                )
                try:
                    pending = await asyncio.shield(opening)
                except asyncio.CancelledError:
                    # The row is being written and will exist: wait for its id so that
                    # the cancellation closes it rather than adding a second row.
                    pending = await opening
                    raise
                went_out = True
                response = await backend.complete(
                    sent,
                    prompt_estimate=estimate.prompt_tokens,
                    on_delta=on_delta,
                    estimate_completion=lambda text: tokens.count_text(text, sent.model),
                )
        except BackendError as err:
            if err.usage is not None:
                err.usage, _ = self._with_image_estimate(backend, err.usage, estimate)
            cost = self._error_cost(backend, err, sent.model)
            await asyncio.shield(self.budget.settle(reservation, cost))
            model = err.model if err.usage else None
            if plan.note is not None and model is None and sent.model != request.model:
                model = sent.model  # the cheaper model failed, not the one asked for
            ledger_id = await self.accounts.failed(
                request,
                backend.name,
                err.kind,
                f"{plan.note}; {err.message}" if plan.note else err.message,
                started,
                usage=err.usage,
                cost=cost,
                request_id=err.request_id,
                attempts=err.attempts,
                model=model,
                call_id=sent.call_id,
                pending=pending,
            )
            raise LLMCallError(err.kind, err.message, ledger_id=ledger_id) from None
        except asyncio.CancelledError:
            await asyncio.shield(
                self._cancelled(plan, request, started, sent, pending, went_out=went_out)
            )
            raise

        usage, image_note = self._with_image_estimate(backend, response.usage, estimate)
        response = replace(response, usage=usage)
        notes = tuple(note for note in (plan.note, image_note) if note)
        cost = self._cost(backend, response)
        await asyncio.shield(self.budget.settle(reservation, cost))
        latency = self._clock() - started
        status = CallStatus.FALLBACK if plan.note is not None else CallStatus.OK
        ledger_id = await self.accounts.answered(
            request,
            backend.name,
            response,
            status=status,
            latency_s=latency,
            cost=cost,
            note="; ".join(notes) or None,
            call_id=sent.call_id,
            pending=pending,
        )
        return LLMResult(
            text=response.text,
            usage=response.usage,
            cost_micros=cost,
            latency_s=latency,
            backend=backend.name,
            model_requested=request.model,
            model=response.model,
            status=status,
            request_id=response.request_id,
            ledger_id=ledger_id,
            finish_reason=response.finish_reason,
            notes=notes,
        )

    def _local_plan_after(
        self, plan: _Plan, failure: LLMCallError
    ) -> Callable[[LLMRequest], Awaitable[_Plan | None]] | None:
        """When OpenAI failed in a way the local model can cover, how to plan that call."""
        if (
            self.local is None
            or plan.backend is self.local
            or failure.kind not in LOCAL_FALLBACK_ERRORS
        ):
            return None

        async def plan_local(request: LLMRequest) -> _Plan | None:
            worst = self._local_worst_case(request) if self._local_worst_case else 0
            try:
                reservation = await self.budget.reserve(request.context, self._local_label(), worst)
            except BudgetExceeded:
                return None
            note = f"fallback to the local model: openai {failure.kind.value}"
            assert self.local is not None
            return _Plan(self.local, request, self.estimate(request), reservation, note)

        return plan_local

    def _local_label(self) -> str:
        label = getattr(self.local, "model_name", None) or getattr(self.local, "model", None)
        return str(label or Backend.LOCAL)

    def _candidates(self, request: LLMRequest) -> list[tuple[ModelBackend, LLMRequest]]:
        """What may answer, in the degrade order: the request as asked, the feature's
        cheaper models, then the local model."""
        found: list[tuple[ModelBackend, LLMRequest]] = []
        if self.openai is not None:
            found.append((self.openai, request))
            for model in self.degrade.get(request.context.feature, ()):
                if model != request.model and all(r.model != model for _, r in found):
                    found.append((self.openai, replace(request, model=model)))
        if self.local is not None:
            found.append((self.local, request))
        return found

    async def _reserve(self, request: LLMRequest, started: float) -> _Plan:
        """Reserve for the first candidate the budgets allow, or write the refused row and
        raise LLMCallError(BUDGET) naming the cap that blocked the last candidate."""
        blocked: BudgetExceeded | None = None
        for backend, sent in self._candidates(request):
            estimate = self.estimate(sent)
            is_local = backend is self.local and backend is not self.openai
            if is_local:
                worst: int | None = self._local_worst_case(sent) if self._local_worst_case else 0
                model = self._local_label()  # for the budget hook; only a label
            else:
                worst, model = estimate.worst_case_micros, sent.model
            try:
                reservation = await self.budget.reserve(sent.context, model, worst)
            except BudgetExceeded as exc:
                blocked = exc
                continue
            note = None
            if blocked is not None:
                target = "the local model" if is_local else model
                note = f"fallback to {target}: budget {blocked.budget} is spent"
            elif is_local:
                note = "fallback to the local model: no OpenAI key is configured"
            return _Plan(backend, sent, estimate, reservation, note)
        assert blocked is not None
        backend_name = self.openai.name if self.openai is not None else Backend.LOCAL
        raise await self._refused(request, backend_name, blocked, started) from blocked

    async def _refused(
        self,
        books: LLMRequest,
        backend_name: Backend | None,
        blocked: BudgetExceeded,
        started: float,
        note: str | None = None,
    ) -> LLMCallError:
        """Write the refused row of a call a spent budget stopped; the error to raise.
        `note`: what the row's error text starts with (an embedding's purpose)."""
        resets = blocked.resets_at.isoformat() if blocked.resets_at else "unknown"
        message = f"budget {blocked.budget} is spent until {resets}"
        ledger_id = await self.accounts.failed(
            books,
            backend_name,
            ErrorKind.BUDGET,
            f"{note}: {message}" if note else message,
            started,
            status=CallStatus.REFUSED,
        )
        return LLMCallError(
            ErrorKind.BUDGET,
            message,
            ledger_id=ledger_id,
            budget=blocked.budget,
            resets_at=blocked.resets_at,
        )

    def _cost(self, backend: ModelBackend, response: BackendResponse) -> int | None:
        """The backend's own price when it gives one (the local model), else the price
        table's for the model that answered; an unpriced local answer costs 0."""
        if response.cost_micros is not None:
            return response.cost_micros
        if backend.name is Backend.LOCAL:
            return 0
        return self.prices.cost_micros(response.usage, response.model)

    @staticmethod
    def _with_image_estimate(
        backend: ModelBackend, usage: Usage, estimate: Estimate
    ) -> tuple[Usage, str | None]:
        """`usage` with the images' tokens filled in from our estimate where OpenAI's
        usage has none, and the row's note saying so (None: nothing filled in).

        `prompt_tokens_details.image_tokens` is optional in the API's CompletionUsage and
        its own examples, images included, leave it out (the backend reads it as 0); an
        image always costs tokens, so a zero beside images sent means "not reported".
        `prompt_tokens` still counts the images, so the cost (priced from it) stays the
        API's; only the image_tokens column is ours, from the tile formula. The row's
        usage_source stays that of the billed numbers (measured for an API usage object);
        the note says the image count is an estimate. An estimated usage (a stream cut
        before its usage chunk) gets the images too, without a note: all of it is ours.
        """
        if backend.name is Backend.LOCAL or usage.image_tokens or not estimate.image_tokens:
            return usage, None
        filled = replace(usage, image_tokens=estimate.image_tokens)
        if usage.source is UsageSource.ESTIMATED:
            return filled, None
        return filled, IMAGE_TOKENS_ESTIMATED_NOTE

    def _error_cost(self, backend: ModelBackend, err: BackendError, model: str) -> int | None:
        if not err.usage or backend.name is Backend.LOCAL:
            return 0
        return self.prices.cost_micros(err.usage, err.model or model)

    async def _cancelled(
        self,
        plan: _Plan,
        request: LLMRequest,
        started: float,
        sent: LLMRequest,
        pending: int | None,
        *,
        went_out: bool,
    ) -> None:
        """Settle and record a call cancelled by its caller (a stop past its grace, a
        summary whose sibling failed).

        Still queued, nothing was sent: it costs nothing. Once the request has gone out,
        OpenAI may bill it whatever we do, so, like a call cut off by a crash
        (`close_interrupted`), it counts at its worst case, marked as an estimate.
        """
        if went_out and plan.backend.name is not Backend.LOCAL:
            usage = self._worst_usage(plan.estimate, sent)
            cost = plan.estimate.worst_case_micros
            message = "cancelled after the request was sent; worst-case usage counted"
        else:
            usage, cost = Usage(), 0
            message = "cancelled before the request was sent"
        await self.budget.settle(plan.reservation, cost)
        await self.accounts.failed(
            request,
            plan.backend.name,
            ErrorKind.CANCELLED,
            message,
            started,
            usage=usage,
            cost=cost,
            model=sent.model,
            call_id=sent.call_id,
            pending=pending,
        )

    @staticmethod
    def _worst_usage(estimate: Estimate, sent: LLMRequest) -> Usage:
        """The most a sent call can be billed for: its prompt and all the output it may
        have had."""
        return Usage(
            prompt_tokens=estimate.prompt_tokens,
            image_tokens=estimate.image_tokens,
            completion_tokens=sent.max_output_tokens,
            source=UsageSource.ESTIMATED,
        )

    # ---- embeddings ------------------------------------------------------------------

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        """Embed `request.texts` through OpenAI, or raise LLMCallError; either way one
        ledger row is written (feature, guild… from `request.context`; the note says
        whether it was a query or a backfill and how many inputs).

        The same books as `complete`, simpler: the input tokens are counted before the
        call (cl100k_base, `ibot.llm.embeddings`) and the output is nothing, so the
        worst case the budget holds is the call's exact price. A budget that would be
        passed refuses the call (a `refused` row): there is no cheaper model to fall
        back to, and the local model never embeds; no OpenAI backend at all is a
        `refused` row too (NOT_CONFIGURED). The caller then searches lexically. The
        calls are not paced: the pacer learns the chat models' limits, and the
        embedding models have their own.
        """
        started = self._clock()
        books = _books_request(request)
        backend = self.openai if isinstance(self.openai, EmbeddingBackend) else None
        if backend is None:
            await self.accounts.failed(
                books,
                None,
                ErrorKind.NOT_CONFIGURED,
                f"{request.note}: no OpenAI backend configured",
                started,
                status=CallStatus.REFUSED,
            )
            raise LLMCallError(ErrorKind.NOT_CONFIGURED, "no OpenAI backend to embed with")
        worst_usage = Usage(prompt_tokens=count_inputs(request.texts), source=UsageSource.ESTIMATED)
        worst = self.prices.cost_micros(
            replace(worst_usage, source=UsageSource.MEASURED), request.model
        )
        try:
            reservation = await self.budget.reserve(request.context, request.model, worst)
        except BudgetExceeded as blocked:
            raise await self._refused(
                books, backend.name, blocked, started, note=request.note
            ) from blocked
        sent = replace(request, call_id=uuid.uuid4().hex)
        sent_books = replace(books, call_id=sent.call_id)
        pending: int | None = None
        went_out = False
        try:
            opening = asyncio.ensure_future(
                self.accounts.open(books, backend.name, sent_books, worst_usage)
            )
            try:
                pending = await asyncio.shield(opening)
            except asyncio.CancelledError:
                pending = await opening  # closed below rather than left pending
                raise
            went_out = True
            response = await backend.embed(sent)
        except BackendError as err:
            await asyncio.shield(self.budget.settle(reservation, 0))
            ledger_id = await self.accounts.failed(
                books,
                backend.name,
                err.kind,
                f"{request.note}: {err.message}",
                started,
                request_id=err.request_id,
                attempts=err.attempts,
                model=err.model,
                call_id=sent.call_id,
                pending=pending,
            )
            raise LLMCallError(err.kind, err.message, ledger_id=ledger_id) from None
        except asyncio.CancelledError:
            # Sent, it may be billed whatever we do: counted at its (exact) worst case.
            usage, cost = (worst_usage, worst) if went_out else (Usage(), 0)
            await asyncio.shield(self.budget.settle(reservation, cost))
            await asyncio.shield(
                self.accounts.failed(
                    books,
                    backend.name,
                    ErrorKind.CANCELLED,
                    f"{request.note}: cancelled"
                    + (" after the request was sent" if went_out else " before it was sent"),
                    started,
                    usage=usage,
                    cost=cost,
                    model=request.model,
                    call_id=sent.call_id,
                    pending=pending,
                )
            )
            raise
        cost = self.prices.cost_micros(response.usage, response.model)
        await asyncio.shield(self.budget.settle(reservation, cost))
        latency = self._clock() - started
        answered = BackendResponse(
            text="",
            usage=response.usage,
            model=response.model,
            request_id=response.request_id,
            attempts=response.attempts,
        )
        ledger_id = await self.accounts.answered(
            books,
            backend.name,
            answered,
            status=CallStatus.OK,
            latency_s=latency,
            cost=cost,
            note=request.note,
            call_id=sent.call_id,
            pending=pending,
        )
        return EmbeddingResult(
            vectors=response.vectors,
            usage=response.usage,
            cost_micros=cost,
            model=response.model,
            latency_s=latency,
            request_id=response.request_id,
            ledger_id=ledger_id,
        )

    async def close_interrupted(self) -> int:
        """Close the calls a dead process left pending, at their worst-case cost; how
        many there were. Call it at start-up, before serving (see
        `CallAccountant.close_interrupted`)."""
        return await self.accounts.close_interrupted()


def _books_request(request: EmbeddingRequest) -> LLMRequest:
    """An embedding call as the ledger's books describe a call: who and where, the model
    asked for, no messages and no output (`CallAccountant` reads only those)."""
    return LLMRequest(
        messages=(),
        model=request.model,
        max_output_tokens=0,
        context=request.context,
        call_id=request.call_id,
    )
