"""The gateway's books on their own: one row per call, its log line, its metrics, and a
ledger failure that loses nothing, against an in-memory CallRecorder."""

from __future__ import annotations

from dataclasses import fields, replace

import pytest
from structlog.testing import capture_logs

from ibot.db.ledger import LedgerEntry, LedgerRow
from ibot.domain import (
    Backend,
    BackendResponse,
    CallContext,
    CallStatus,
    ChatMessage,
    ErrorKind,
    Feature,
    LLMRequest,
    Usage,
    UsageSource,
)
from ibot.llm.accounting import INTERRUPTED_NOTE, CallAccountant, log_fields
from ibot.metrics import Metrics
from ibot.pricing import default_price_table

CTX = CallContext(feature=Feature.ASK, guild_id=1, channel_id=2, thread_id=4, user_id=3)
REQUEST = LLMRequest(
    messages=(ChatMessage("user", "Bonjour"),), model="gpt-4o", max_output_tokens=50, context=CTX
)
SENT = replace(REQUEST, call_id="c0ffee")
WORST = Usage(prompt_tokens=12, completion_tokens=50, source=UsageSource.ESTIMATED)
# The fields every model-call line carries (ibot/logging.py), plus the ids and counts.
STANDARD = {
    "feature", "guild_id", "channel_id", "thread_id", "user_id", "backend", "model",
    "prompt_tokens", "cached_tokens", "image_tokens", "completion_tokens", "cost_micros",
    "latency_ms", "request_id", "status", "attempts", "call_id",
}  # fmt: skip


class MemoryLedger:
    """A CallRecorder in a list; `broken` makes every write fail."""

    def __init__(self, *, broken: bool = False) -> None:
        self.rows: list[LedgerRow] = []
        self.broken = broken

    async def record(self, entry: LedgerEntry) -> int:
        if self.broken:
            raise OSError("disk full")
        row_id = len(self.rows) + 1
        self.rows.append(LedgerRow(**_columns(entry), id=row_id))
        return row_id

    async def complete(self, row_id: int, entry: LedgerEntry) -> bool:
        if self.broken:
            raise OSError("disk full")
        old = self.rows[row_id - 1]
        if old.status != CallStatus.PENDING:
            return False
        self.rows[row_id - 1] = LedgerRow(**_columns(entry), id=row_id)
        return True

    async def pending(self) -> list[LedgerRow]:
        return [row for row in self.rows if row.status == CallStatus.PENDING]

    async def close_interrupted(self, row_id: int, *, cost_micros: int | None, note: str) -> bool:
        row = self.rows[row_id - 1]
        if row.status != CallStatus.PENDING:
            return False
        self.rows[row_id - 1] = replace(
            row,
            status=CallStatus.ERROR,
            error_kind=ErrorKind.INTERRUPTED,
            usage_source=UsageSource.ESTIMATED,
            cost_micros=cost_micros,
            note=note,
        )
        return True


def _columns(entry: LedgerEntry) -> dict:
    return {f.name: getattr(entry, f.name) for f in fields(LedgerEntry)}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def accountant(ledger: MemoryLedger, clock: Clock, metrics: Metrics | None = None):
    return CallAccountant(ledger, default_price_table(), clock=clock, metrics=metrics)


def answer(**overrides) -> BackendResponse:
    usage = Usage(prompt_tokens=12, completion_tokens=7, cached_tokens=4)
    fields_ = {"text": "Salut", "usage": usage, "model": "gpt-4o-2024-08-06", "request_id": "r1"}
    return BackendResponse(**{**fields_, **overrides})


async def answered(
    books: CallAccountant,
    *,
    status: CallStatus = CallStatus.OK,
    latency_s: float = 0.5,
    cost: int | None = 0,
    note: str | None = None,
    pending: int | None = None,
) -> int | None:
    """Record `answer()` as the answer to SENT."""
    return await books.answered(
        REQUEST,
        Backend.OPENAI,
        answer(),
        status=status,
        latency_s=latency_s,
        cost=cost,
        note=note,
        call_id=SENT.call_id,
        pending=pending,
    )


async def test_a_call_is_opened_pending_then_completed_in_place(clock):
    ledger = MemoryLedger()
    books = accountant(ledger, clock)

    pending = await books.open(REQUEST, Backend.OPENAI, SENT, WORST)
    [opened] = ledger.rows
    assert (opened.id, opened.status, opened.cost_micros) == (pending, "pending", 0)
    assert (opened.prompt_tokens, opened.completion_tokens) == (12, 50)
    assert opened.usage_source == UsageSource.ESTIMATED and opened.call_id == "c0ffee"
    assert (opened.guild_id, opened.channel_id, opened.thread_id, opened.user_id) == (1, 2, 4, 3)

    with capture_logs() as logs:
        ledger_id = await answered(books, latency_s=0.4567, cost=321, pending=pending)

    [row] = ledger.rows
    assert ledger_id == row.id == pending
    assert (row.status, row.model, row.model_requested) == ("ok", "gpt-4o-2024-08-06", "gpt-4o")
    assert (row.prompt_tokens, row.cached_tokens, row.completion_tokens) == (12, 4, 7)
    assert (row.cost_micros, row.latency_ms, row.request_id) == (321, 457, "r1")
    assert row.usage_source == UsageSource.MEASURED
    [line] = logs
    assert line["event"] == "model_call" and line["log_level"] == "info"
    assert set(line) - {"event", "log_level"} == STANDARD | {"ledger_id"}


async def test_an_outcome_whose_pending_row_was_closed_gets_a_row_of_its_own(clock):
    ledger = MemoryLedger()
    books = accountant(ledger, clock)
    pending = await books.open(REQUEST, Backend.OPENAI, SENT, WORST)
    assert await books.close_interrupted() == 1  # a newer process closed it meanwhile

    clock.now += 2.5
    ledger_id = await books.failed(
        REQUEST, Backend.OPENAI, ErrorKind.TIMEOUT, "timed out", 100.0, pending=pending
    )

    closed, failed = ledger.rows
    assert closed.error_kind == ErrorKind.INTERRUPTED and closed.note == INTERRUPTED_NOTE
    assert failed.id == ledger_id != pending
    assert (failed.status, failed.error_kind, failed.latency_ms) == ("error", "timeout", 2500)


async def test_refusals_and_failures_are_rows_with_their_kind_and_note(clock):
    ledger = MemoryLedger()
    books = accountant(ledger, clock)

    with capture_logs() as logs:
        await books.failed(
            REQUEST,
            None,
            ErrorKind.BUDGET,
            "budget guild_daily is spent",
            100.0,
            status=CallStatus.REFUSED,
        )
        await books.failed(REQUEST, Backend.LOCAL, ErrorKind.SERVER, "x" * 400, 100.0)

    refused, failed = ledger.rows
    assert (refused.status, refused.error_kind, refused.backend) == ("refused", "budget", "openai")
    assert refused.model is None and refused.model_label == "gpt-4o"
    assert refused.usage_source == UsageSource.MEASURED and refused.cost_micros == 0
    assert failed.backend == "local" and failed.note == "x" * 255
    assert [line["log_level"] for line in logs] == ["warning", "warning"]
    assert logs[0]["note"] == "budget guild_daily is spent"
    assert logs[0]["error_kind"] == "budget" and logs[0]["model"] == "gpt-4o"


async def test_a_failed_ledger_write_logs_the_row_and_loses_nothing(clock):
    books = accountant(MemoryLedger(broken=True), clock)

    with capture_logs() as logs:
        assert await books.open(REQUEST, Backend.OPENAI, SENT, WORST) is None
        note = "fallback to gpt-4o-mini: budget guild_daily is spent"
        ledger_id = await answered(books, status=CallStatus.FALLBACK, cost=99, note=note)

    assert ledger_id is None
    assert [line["event"] for line in logs] == [
        "ledger_pending_write_failed",
        "ledger_write_failed",
    ]
    failed = logs[1]
    assert set(failed) >= STANDARD | {"note"}
    assert (failed["completion_tokens"], failed["cost_micros"], failed["status"]) == (
        7,
        99,
        "fallback",
    )


async def test_every_outcome_is_counted_once_by_the_metrics(clock):
    metrics = Metrics()
    books = accountant(MemoryLedger(), clock, metrics)

    await answered(books, cost=2_000_000)
    await books.failed(REQUEST, Backend.OPENAI, ErrorKind.QUOTA, "quota", 100.0)

    def value(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    model = "gpt-4o-2024-08-06"
    ok = {"feature": "ask", "model": model, "backend": "openai", "status": "ok"}
    assert value("ibot_model_calls_total", **ok) == 1
    error = {"feature": "ask", "model": "gpt-4o", "backend": "openai", "status": "error"}
    assert value("ibot_model_calls_total", **error) == 1
    for kind, tokens in (("prompt", 12), ("cached", 4), ("completion", 7)):
        assert value("ibot_model_tokens_total", feature="ask", model=model, kind=kind) == tokens
    assert value("ibot_model_tokens_total", feature="ask", model=model, kind="image") is None
    assert value("ibot_cost_usd_total", feature="ask", model=model) == 2.0
    assert value("ibot_model_errors_total", feature="ask", kind="insufficient_quota") == 1


async def test_calls_left_pending_are_closed_at_their_worst_case(clock):
    ledger = MemoryLedger()
    books = accountant(ledger, clock)
    await books.open(REQUEST, Backend.OPENAI, SENT, WORST)
    await books.open(REQUEST, Backend.LOCAL, replace(SENT, call_id="l0ca1"), WORST)

    with capture_logs() as logs:
        assert await books.close_interrupted() == 2
    assert await books.close_interrupted() == 0

    remote, local = ledger.rows
    assert remote.cost_micros == default_price_table().cost_micros(WORST, "gpt-4o") > 0
    assert local.cost_micros == 0  # the local model bills nobody
    assert {row.error_kind for row in ledger.rows} == {ErrorKind.INTERRUPTED}
    assert [line["event"] for line in logs] == ["model_call_interrupted"] * 2
    assert logs[0]["cost_micros"] == remote.cost_micros and logs[0]["model"] == "gpt-4o"


def test_the_log_line_is_derived_from_the_row():
    entry = LedgerEntry(
        feature=Feature.CHAT,
        backend=Backend.OPENAI,
        model_requested="gpt-4o",
        status=CallStatus.ERROR,
        error_kind=ErrorKind.AUTH,
        note="401",
    )

    logged = log_fields(entry)

    assert set(logged) == STANDARD | {"error_kind"}
    assert (logged["feature"], logged["status"], logged["error_kind"]) == ("chat", "error", "auth")
    assert type(logged["feature"]) is str and logged["model"] == "gpt-4o"
    assert "error_kind" not in log_fields(replace(entry, error_kind=None))
