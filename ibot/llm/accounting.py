"""The gateway's books: the one ledger row of every model call, its log line, its metrics.

Apart from the gateway (ibot/llm/gateway.py) so that the call logic there (reserve,
degrade, fall back, pace) reads without the bookkeeping, and so that the rules of the
books stand in one place:

- a call gets its row just before it is sent, as `pending` (estimated tokens, cost 0: the
  budget reservation holds the worst case meanwhile), and its outcome replaces that row
  in place; an outcome with no pending row to complete (a refusal, a pending write that
  failed, a row a newer process already closed) is inserted as a row of its own;
- every outcome is logged as one `model_call` line with the standard fields (see
  ibot.logging) and counted once by the metrics, both from the very entry that is
  stored, so that the ledger, the logs and /metrics never disagree;
- a failed ledger write never fails the call: the row goes to the log instead
  (`ledger_write_failed`), so nothing is lost;
- rows a dead process left pending are closed at their worst-case cost
  (`CallAccountant.close_interrupted`).

The accountant writes through a `CallRecorder`, the four ledger operations it uses, not
through `ibot.db.ledger.Ledger` itself: the gateway then depends on what it does with the
ledger, not on a database, and a test can hand it a stand-in (a ledger that fails, say).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any, Protocol

import structlog

from ibot.domain import (
    NOTE_MAX,
    TOKEN_COLUMNS,
    Backend,
    BackendResponse,
    CallContext,
    CallStatus,
    ErrorKind,
    LedgerEntry,
    LedgerRow,
    LLMRequest,
    Usage,
    UsageSource,
    column_values,
)
from ibot.metrics import Metrics
from ibot.pricing import PriceTable

log = structlog.get_logger("ibot.gateway")  # the gateway's lines, whoever writes them

INTERRUPTED_NOTE = "the bot stopped during this call; worst-case usage counted"

# Columns the standard `model_call` line leaves out: the line's own timestamp stands for
# created_at, `model` falls back to the requested model already, and the note is added
# only to the lines of calls that did not simply succeed.
_NOT_LOGGED = frozenset({"created_at", "model_requested", "usage_source", "note"})


class CallRecorder(Protocol):
    """The ledger as the gateway uses it; `ibot.db.ledger.Ledger` is one."""

    async def record(self, entry: LedgerEntry) -> int:
        """Insert a row; its id."""
        ...

    async def complete(self, row_id: int, entry: LedgerEntry) -> bool:
        """Replace the pending row `row_id` by `entry`; False when it is no longer pending."""
        ...

    async def pending(self) -> Sequence[LedgerRow]:
        """The rows still pending."""
        ...

    async def close_interrupted(self, row_id: int, *, cost_micros: int | None, note: str) -> bool:
        """Close a pending row as an interrupted call; False when it is no longer pending."""
        ...


def log_fields(entry: LedgerEntry) -> dict[str, Any]:
    """The standard fields of a model-call log line, derived from the row it reports."""
    logged = {
        name: value for name, value in column_values(entry).items() if name not in _NOT_LOGGED
    }
    logged["model"] = entry.model_label
    if entry.error_kind is None:
        del logged["error_kind"]
    return logged


def _context_columns(context: CallContext) -> dict[str, Any]:
    """Who and where, as ledger columns: every field of CallContext is one."""
    return {f.name: getattr(context, f.name) for f in fields(context)}


def _token_columns(counts: Usage | LedgerEntry) -> dict[str, Any]:
    """The token counts of a usage or a row, by column name (Usage names its fields as
    the ledger names its columns)."""
    return {name: getattr(counts, name) for name in TOKEN_COLUMNS}


def _call_columns(
    request: LLMRequest, backend: Backend, usage: Usage, latency_s: float
) -> dict[str, Any]:
    """The columns every row of a call fills the same way, whatever its outcome: who and
    where, the backend and model asked for, the tokens and the latency."""
    return {
        **_context_columns(request.context),
        **_token_columns(usage),
        "backend": backend,
        "model_requested": request.model,
        "latency_ms": round(latency_s * 1000),
        # No tokens at all (a refusal, an early failure): nothing was estimated.
        "usage_source": usage.source if usage.total_tokens else UsageSource.MEASURED,
    }


class CallAccountant:
    """Writes, logs and counts the ledger row of each gateway call (see the module)."""

    def __init__(
        self,
        recorder: CallRecorder,
        prices: PriceTable,
        *,
        clock: Callable[[], float],
        metrics: Metrics | None = None,
    ) -> None:
        """`clock` measures the latency of the calls that fail (the gateway's clock)."""
        self.recorder = recorder
        self.prices = prices
        self.metrics = metrics
        self._clock = clock

    async def open(
        self, request: LLMRequest, backend: Backend, sent: LLMRequest, worst: Usage
    ) -> int | None:
        """Write the pending row of `sent`, about to go out, at its worst-case usage; its
        id, or None if the database failed (the outcome is then a row of its own)."""
        entry = LedgerEntry(
            **_call_columns(request, backend, worst, 0.0),
            status=CallStatus.PENDING,
            cost_micros=0,  # the budget reservation holds the worst case meanwhile
            model=sent.model,
            call_id=sent.call_id,
        )
        try:
            return await asyncio.shield(self.recorder.record(entry))
        except Exception:
            log.exception("ledger_pending_write_failed", call_id=sent.call_id)
            return None

    async def answered(
        self,
        request: LLMRequest,
        backend: Backend,
        response: BackendResponse,
        *,
        status: CallStatus,
        latency_s: float,
        cost: int | None,
        note: str | None,
        call_id: str | None,
        pending: int | None,
    ) -> int | None:
        """Record a call that got its answer; the row's id, None if it could not be written."""
        entry = LedgerEntry(
            **_call_columns(request, backend, response.usage, latency_s),
            status=status,
            cost_micros=cost,
            model=response.model,
            request_id=response.request_id,
            attempts=response.attempts,
            note=note,
            call_id=call_id,
        )
        return await self._write(entry, pending=pending)

    async def failed(
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
        call_id: str | None = None,
        pending: int | None = None,
    ) -> int | None:
        """Record a call that got no answer: failed, cancelled, or (`status` REFUSED) never
        sent, because no backend could take it or a budget said no. `started` is the
        gateway clock's reading when the call began."""
        latency_s = self._clock() - started
        entry = LedgerEntry(
            **_call_columns(request, backend or Backend.OPENAI, usage or Usage(), latency_s),
            status=status,
            cost_micros=cost,
            model=model,
            request_id=request_id,
            attempts=attempts,
            error_kind=kind,
            note=message[:NOTE_MAX],
            call_id=call_id,
        )
        return await self._write(entry, pending=pending)

    async def close_interrupted(self) -> int:
        """Close the calls a dead process left pending; how many there were.

        Call it at start-up, before serving: in one bot process no call is in flight
        then, so every pending row belongs to a process that died mid-call. Whether the
        provider billed such a call is unknown, so it is counted at its worst case (the
        estimated prompt plus the most output it could have had, which is what its
        pending row holds), which keeps budgets on the safe side; the row says the usage
        is an estimate.
        """
        rows = await self.recorder.pending()
        for row in rows:
            cost = self._worst_case_cost(row)
            await self.recorder.close_interrupted(row.id, cost_micros=cost, note=INTERRUPTED_NOTE)
            log.warning(
                "model_call_interrupted",
                ledger_id=row.id,
                call_id=row.call_id,
                feature=row.feature,
                model=row.model_label,
                cost_micros=cost,
            )
        return len(rows)

    def _worst_case_cost(self, row: LedgerRow) -> int | None:
        """What a pending row's call may have cost: its estimated usage at its model's
        price; the local model bills nobody."""
        if row.backend == Backend.LOCAL:
            return 0
        usage = Usage(**_token_columns(row), source=UsageSource.ESTIMATED)
        return self.prices.cost_micros(usage, row.model_label)

    async def _write(self, entry: LedgerEntry, *, pending: int | None) -> int | None:
        """Complete the call's pending row (or insert the row when there is none), count
        it and log it; the row's id, None if the ledger failed."""
        logged = log_fields(entry)
        if self.metrics is not None:
            self.metrics.observe_call(entry)
        try:
            ledger_id = await asyncio.shield(self._store(entry, pending))
        except Exception:
            # The answer still goes out; the full row is in the log so nothing is lost.
            log.exception("ledger_write_failed", **logged, note=entry.note)
            return None
        if entry.status is CallStatus.OK:
            log.info("model_call", ledger_id=ledger_id, **logged)
        else:
            log.warning("model_call", ledger_id=ledger_id, **logged, note=entry.note)
        return ledger_id

    async def _store(self, entry: LedgerEntry, pending: int | None) -> int:
        if pending is not None and await self.recorder.complete(pending, entry):
            return pending
        return await self.recorder.record(entry)
