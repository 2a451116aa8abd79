"""Summaries that stop spending on the first failure, stay under the concurrency bound in
every round, and always finish: a real ModelGateway and Ledger, a recording backend.
"""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta

import pytest

from ibot import tokens
from ibot.config import ConfigError, load_settings
from ibot.domain import (
    Backend,
    BackendError,
    BackendResponse,
    CallContext,
    ErrorKind,
    LLMRequest,
    Usage,
)
from ibot.llm.budget import BudgetExceeded, Reservation
from ibot.llm.gateway import ModelGateway
from ibot.pricing import default_price_table
from ibot.services.prompts import FeatureConfig, PromptBuilder
from ibot.services.summary import (
    HistoryMessage,
    NothingToSummarize,
    Summarized,
    SummaryFailed,
    SummaryService,
)

TEMPLATES = {
    "persona": "Tu es un assistant.",
    "summary": "Résume #{channel} :\n{transcript}",
    "summary_chunk": "Résume ce morceau de #{channel} :\n{transcript}",
    "summary_combine": "Combine ces résumés de #{channel} :\n{transcript}",
}
MODEL = "gpt-4o-mini"
RESETS = datetime(2026, 11, 2, tzinfo=UTC)
# Far more calls than any of these summaries needs: a runaway loop fails the test quickly.
RUNAWAY = 200


def history(count: int) -> list[HistoryMessage]:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    return [
        HistoryMessage(
            f"user{i % 7}",
            f"Message {i} : une question sur asyncio et Discord.",
            start + timedelta(minutes=i),
        )
        for i in range(count)
    ]


def words(count: int) -> str:
    """A text of exactly `count` tokens."""
    text = tokens.truncate_text(" mot" * (count + 10), count, MODEL)
    assert tokens.count_text(text, MODEL) == count
    return text


def template_of(request: LLMRequest) -> str:
    body = request.messages[-1].content
    if body.startswith("Résume ce morceau"):
        return "summary_chunk"
    if body.startswith("Combine"):
        return "summary_combine"
    return "summary"


class Hook:
    """A budget hook: records reservations, refuses the `refuse_at`-th one (1-based)."""

    def __init__(self, refuse_at: int | None = None) -> None:
        self.refuse_at = refuse_at
        self.refuse_when: asyncio.Event | None = None  # refuse only once this is set
        self.reserved = 0
        self.open = 0  # reservations not settled yet: calls inside the gateway
        self.events: list[str] = []
        self.on_change = lambda: None

    async def reserve(self, context: CallContext, model: str, worst: int | None) -> Reservation:
        self.reserved += 1
        if self.reserved == self.refuse_at:
            if self.refuse_when is not None:
                await self.refuse_when.wait()
            self.events.append("refused")
            raise BudgetExceeded("guild_daily", resets_at=RESETS)
        self.events.append("reserved")
        self.open += 1
        return Reservation(context=context, model=model, micros=worst or 0)

    async def settle(self, reservation: Reservation, actual: int | None) -> None:
        self.open -= 1
        self.on_change()


class RecordingBackend:
    """Answers with `answer(request)`; records what it was sent and when.

    With `hold`, a call stays at the backend until the event is set. With `overlap`, a
    call stays until every call the gateway has admitted (reserved, not settled) has
    reached the backend too: calls that may overlap do overlap, without any sleep.
    """

    name = Backend.OPENAI

    def __init__(self, hook: Hook, answer, *, hold: asyncio.Event | None = None) -> None:
        self.hook = hook
        self.answer = answer
        self.hold = hold
        self.overlap = False
        self.sent: list[LLMRequest] = []
        self.prompt_tokens: list[int] = []
        self.completed = 0
        self.cancelled = 0
        self.active = 0
        self.peak = 0
        self.reached = {n: asyncio.Event() for n in range(1, 5)}  # n calls at once here
        self._waiting: list[asyncio.Future[None]] = []
        hook.on_change = self._release_when_all_arrived

    def _release_when_all_arrived(self) -> None:
        if self._waiting and len(self._waiting) == self.hook.open:
            for waiter in self._waiting:
                if not waiter.done():
                    waiter.set_result(None)
            self._waiting.clear()

    async def complete(
        self, request: LLMRequest, *, prompt_estimate: int = 0, **_
    ) -> BackendResponse:
        self.hook.events.append("sent")
        self.sent.append(request)
        self.prompt_tokens.append(prompt_estimate)
        if len(self.sent) > RUNAWAY:
            raise BackendError(ErrorKind.SERVER, "runaway summary: too many calls")
        self.active += 1
        self.peak = max(self.peak, self.active)
        if self.active in self.reached:
            self.reached[self.active].set()
        try:
            if self.overlap:
                waiter = asyncio.get_running_loop().create_future()
                self._waiting.append(waiter)
                self._release_when_all_arrived()
                await waiter
            if self.hold is not None:
                await self.hold.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.active -= 1
        text = self.answer(request)
        self.completed += 1
        self.hook.events.append("answered")
        return BackendResponse(
            text=text,
            usage=Usage(
                prompt_tokens=prompt_estimate, completion_tokens=tokens.count_text(text, MODEL)
            ),
            model=MODEL,
        )


def service(gateway: ModelGateway, max_output: int, max_prompt: int, concurrency: int):
    config = FeatureConfig(MODEL, max_output, max_prompt)
    return SummaryService(gateway, PromptBuilder(TEMPLATES), config, concurrency=concurrency)


async def settle_background() -> None:
    """Let whatever the summary left running finish, so that its calls can be counted."""
    others = asyncio.all_tasks() - {asyncio.current_task()}
    if others:
        await asyncio.wait(others, timeout=30)


async def test_budget_refusal_stops_the_summary_at_once(ledger):
    hook = Hook(refuse_at=2)
    backend = RecordingBackend(hook, lambda r: "Résumé partiel.")
    gateway = ModelGateway(ledger=ledger, prices=default_price_table(), openai=backend, budget=hook)

    outcome = await service(gateway, 300, 3000, concurrency=1).summarize(
        history(1000), channel="aide"
    )
    await settle_background()

    assert outcome == SummaryFailed(ErrorKind.BUDGET, budget="guild_daily", resets_at=RESETS)
    # One chunk answered, the second refused, and nothing was sent after the refusal.
    assert hook.events == ["reserved", "sent", "answered", "refused"]
    assert len(backend.sent) == 1
    rows = await ledger.rows()
    assert [(r.status, r.error_kind) for r in rows] == [("ok", None), ("refused", "budget")]


async def test_budget_refusal_cancels_the_calls_in_flight(ledger):
    release = asyncio.Event()
    hook = Hook(refuse_at=3)
    backend = RecordingBackend(hook, lambda r: "Résumé partiel.", hold=release)
    hook.refuse_when = backend.reached[2]  # the two first chunks are at the backend
    gateway = ModelGateway(ledger=ledger, prices=default_price_table(), openai=backend, budget=hook)

    outcome = await service(gateway, 300, 3000, concurrency=3).summarize(
        history(1000), channel="aide"
    )
    release.set()  # whatever is still at the backend now would be answered and billed
    await settle_background()

    assert outcome == SummaryFailed(ErrorKind.BUDGET, budget="guild_daily", resets_at=RESETS)
    # The two calls in flight with the refused one were cancelled, not answered, and no
    # other chunk was sent.
    assert hook.events == ["reserved", "reserved", "sent", "sent", "refused"]
    assert (len(backend.sent), backend.cancelled, backend.completed) == (2, 2, 0)
    rows = await ledger.rows()
    assert sorted((r.status, r.error_kind or "") for r in rows) == [
        ("error", "cancelled"),
        ("error", "cancelled"),
        ("refused", "budget"),
    ]
    assert hook.open == 0  # both reservations were released


async def test_every_round_respects_the_concurrency_bound(ledger):
    hook = Hook()
    # Partials of 1000 tokens: two fit in one combine request (about 2770 tokens), three
    # do not, so the first combine round has several groups to run concurrently.
    backend = RecordingBackend(hook, lambda r: words(1000))
    backend.overlap = True
    gateway = ModelGateway(ledger=ledger, prices=default_price_table(), openai=backend, budget=hook)

    outcome = await service(gateway, 1200, 3000, concurrency=2).summarize(
        history(1000), channel="aide"
    )

    assert isinstance(outcome, Summarized)
    kinds = [template_of(r) for r in backend.sent]
    chunks = kinds.count("summary_chunk")
    assert chunks >= 6 and kinds.count("summary_combine") >= 4  # a real combine round
    assert backend.peak == 2  # calls did overlap, and never more than two at once
    assert all(t <= 3000 for t in backend.prompt_tokens)


async def test_partials_as_long_as_the_combine_budget_allows_still_finish(ledger):
    hook = Hook()
    max_output, max_prompt = 300, 600  # the smallest valid prompt: 2 x max_output
    # Every answer is as long as allowed: two never fit in one combine request as they are.
    backend = RecordingBackend(hook, lambda r: words(r.max_output_tokens))
    gateway = ModelGateway(ledger=ledger, prices=default_price_table(), openai=backend, budget=hook)

    outcome = await service(gateway, max_output, max_prompt, concurrency=4).summarize(
        history(120), channel="aide"
    )

    assert isinstance(outcome, Summarized), outcome
    kinds = [template_of(r) for r in backend.sent]
    chunks = kinds.count("summary_chunk")
    assert chunks >= 5
    # Each combine round pairs the partials: ceil(p / 2) calls, until one is left.
    expected, partials = 0, chunks
    while partials > 1:
        partials = math.ceil(partials / 2)
        expected += partials
    assert kinds.count("summary_combine") == expected
    assert outcome.calls == len(backend.sent) == chunks + expected
    assert outcome.calls <= 2 * chunks + math.ceil(math.log2(chunks))  # the documented bound
    assert all(t <= max_prompt for t in backend.prompt_tokens)


def test_summary_prompt_must_hold_two_answers(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no config/ibot.toml
    with pytest.raises(ConfigError) as caught:
        load_settings(features={"summary": {"max_prompt_tokens": 2000, "max_output_tokens": 1500}})
    text = str(caught.value)
    assert "\n" not in text and text.startswith("config error: features.summary")
    assert "max_prompt_tokens" in text and "max_output_tokens" in text
    assert "2000" in text and "1500" in text

    # The boundary is allowed, and the other features keep their own limits.
    settings = load_settings(
        features={
            "summary": {"max_prompt_tokens": 3000, "max_output_tokens": 1500},
            "chat": {"max_prompt_tokens": 1000, "max_output_tokens": 600},
        }
    )
    assert settings.features.summary.max_prompt_tokens == 3000
    assert settings.features.chat.max_prompt_tokens == 1000


# ---- a real gateway on a fake OpenAI server ------------------------------------------


async def test_short_history_is_one_call(gateway):
    service = SummaryService(
        gateway, PromptBuilder(TEMPLATES), FeatureConfig("gpt-4o-mini", 300, 8000)
    )
    outcome = await service.summarize(history(20), channel="aide")
    assert isinstance(outcome, Summarized)
    assert outcome.calls == 1 and outcome.messages == 20


async def test_long_history_is_chunked_and_every_request_fits(gateway):
    budget = 3000
    service = SummaryService(
        gateway, PromptBuilder(TEMPLATES), FeatureConfig("gpt-4o-mini", 300, budget)
    )
    outcome = await service.summarize(history(1000), channel="aide")
    assert isinstance(outcome, Summarized)
    served = gateway.fake.requests
    assert outcome.calls == len(served) > 2
    assert all(r.prompt_tokens <= budget for r in served)
    assert "Combine" in served[-1].body["messages"][-1]["content"]
    assert outcome.cost_micros == sum(r.cost_micros for r in await gateway.ledger.rows())
    # Every message was in some chunk: the first and the last one were both sent.
    sent = " ".join(r.body["messages"][-1]["content"] for r in served)
    assert "Message 0 :" in sent and "Message 999 :" in sent


async def test_empty_history_and_failures(gateway):
    service = SummaryService(
        gateway, PromptBuilder(TEMPLATES), FeatureConfig("gpt-4o-mini", 300, 8000)
    )
    assert isinstance(await service.summarize([], channel="x"), NothingToSummarize)
    gateway.fake.fail_with_status(400)
    outcome = await service.summarize(history(3), channel="x")
    assert isinstance(outcome, SummaryFailed)
