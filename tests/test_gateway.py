"""The gateway against the fake OpenAI server, with the real AsyncOpenAI client.

Every call, whatever its outcome, must leave exactly one ledger row, and the ledger's
token totals must equal what the server billed.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from PIL import Image
from structlog.testing import capture_logs

from ibot.db.engine import create_engine, make_sessionmaker
from ibot.db.ledger import Ledger
from ibot.db.migrate import upgrade
from ibot.domain import (
    CallContext,
    CallStatus,
    ChatMessage,
    ErrorKind,
    Feature,
    ImageInput,
    LLMCallError,
    LLMRequest,
    UsageSource,
)
from ibot.llm.gateway import ModelGateway
from ibot.llm.openai_backend import OpenAIBackend
from ibot.pricing import default_price_table
from ibot.testing.fake_openai import FakeOpenAI

API_KEY = "sk-test-0123456789abcdefghijklmnop"
CTX = CallContext(feature=Feature.ASK, guild_id=1, channel_id=2, user_id=3)


class SleepRecorder:
    """Stands in for asyncio.sleep in the backend: records waits instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)


@pytest.fixture
async def fake():
    async with FakeOpenAI(api_key=API_KEY) as server:
        yield server


@pytest.fixture
async def ledger(tmp_path: Path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    await upgrade(url)
    engine = create_engine(url)
    yield Ledger(make_sessionmaker(engine))
    await engine.dispose()


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


def make_gateway(
    fake: FakeOpenAI, ledger: Ledger, sleeps: SleepRecorder, **backend_kw
) -> ModelGateway:
    options = {"max_retries": 2, "timeout_s": 5.0, **backend_kw}
    backend = OpenAIBackend(api_key=API_KEY, base_url=fake.base_url, sleep=sleeps, **options)
    return ModelGateway(ledger=ledger, prices=default_price_table(), openai=backend)


def question(text: str = "Comment installer Python ?", **kw) -> LLMRequest:
    messages = (ChatMessage("system", "Tu es un assistant."), ChatMessage("user", text))
    return LLMRequest(messages=messages, model="gpt-4o", max_output_tokens=200, context=CTX, **kw)


async def assert_ledger_matches_server(ledger: Ledger, fake: FakeOpenAI) -> None:
    served = fake.served_usage()
    totals = await ledger.totals()
    assert totals.prompt_tokens == served.prompt_tokens
    assert totals.cached_tokens == served.cached_tokens
    assert totals.completion_tokens == served.completion_tokens
    assert totals.image_tokens == served.image_tokens


async def test_ok_call_is_priced_by_the_answering_model(fake, ledger, sleeps):
    fake.script("Utilise **pyenv** pour installer Python 3.12.")
    gateway = make_gateway(fake, ledger, sleeps)

    result = await gateway.complete(question())

    assert result.text == "Utilise **pyenv** pour installer Python 3.12."
    assert result.model == "gpt-4o-2024-08-06"  # the snapshot, not the alias
    assert result.status is CallStatus.OK
    sent = fake.requests[-1]
    expected = default_price_table().cost_micros(result.usage, "gpt-4o-2024-08-06")
    assert result.cost_micros == expected
    assert result.usage.prompt_tokens == sent.prompt_tokens
    assert result.usage.completion_tokens == sent.completion_tokens
    [row] = await ledger.rows()
    assert row.status == "ok"
    assert row.cost_micros == expected
    assert row.model == "gpt-4o-2024-08-06"
    assert row.model_requested == "gpt-4o"
    assert row.request_id == sent.request_id
    assert (row.guild_id, row.channel_id, row.user_id) == (1, 2, 3)
    assert row.usage_source == "measured"
    await assert_ledger_matches_server(ledger, fake)


async def test_estimate_matches_what_the_server_bills(fake, ledger, sleeps):
    gateway = make_gateway(fake, ledger, sleeps)
    request = question("Explique-moi les décorateurs en Python, avec un exemple 🐍.")

    estimate = gateway.estimate(request)
    result = await gateway.complete(request)

    assert estimate.prompt_tokens == result.usage.prompt_tokens


async def test_rate_limit_then_ok_is_one_row_and_honours_retry_after(fake, ledger, sleeps):
    fake.rate_limit(times=1, retry_after_s=1.5)
    gateway = make_gateway(fake, ledger, sleeps)

    result = await gateway.complete(question())

    assert result.status is CallStatus.OK
    assert len(sleeps.waits) == 1 and 1.5 <= sleeps.waits[0] <= 1.65  # never earlier
    assert len(fake.requests) == 2
    [row] = await ledger.rows()
    assert (row.status, row.attempts) == ("ok", 2)
    await assert_ledger_matches_server(ledger, fake)


async def test_server_errors_until_retries_run_out(fake, ledger, sleeps):
    fake.fail_with_status(503, times=3)
    gateway = make_gateway(fake, ledger, sleeps, max_retries=2)

    with pytest.raises(LLMCallError) as caught:
        await gateway.complete(question())

    assert caught.value.kind is ErrorKind.SERVER
    assert len(fake.requests) == 3  # the first try and two retries
    assert len(sleeps.waits) == 2 and all(w > 0 for w in sleeps.waits)
    [row] = await ledger.rows()
    assert (row.status, row.error_kind, row.attempts) == ("error", "server_error", 3)
    assert row.cost_micros == 0 and row.prompt_tokens == 0
    assert caught.value.ledger_id == row.id


async def test_timeout_is_one_error_row(fake, ledger, sleeps):
    fake.hang(times=2)
    gateway = make_gateway(fake, ledger, sleeps, max_retries=1, timeout_s=0.3)

    with pytest.raises(LLMCallError) as caught:
        await gateway.complete(question())

    assert caught.value.kind is ErrorKind.TIMEOUT
    [row] = await ledger.rows()
    assert (row.status, row.error_kind, row.attempts) == ("error", "timeout", 2)


async def test_insufficient_quota_is_never_retried(fake, ledger, sleeps):
    fake.insufficient_quota(times=5)
    gateway = make_gateway(fake, ledger, sleeps, max_retries=3)

    with pytest.raises(LLMCallError) as caught:
        await gateway.complete(question())

    assert caught.value.kind is ErrorKind.QUOTA
    assert len(fake.requests) == 1
    assert sleeps.waits == []
    [row] = await ledger.rows()
    assert (row.status, row.error_kind) == ("error", "insufficient_quota")


@pytest.mark.parametrize(("status", "kind"), [(400, ErrorKind.BAD_REQUEST), (401, ErrorKind.AUTH)])
async def test_client_errors_are_not_retried(fake, ledger, sleeps, status, kind):
    fake.fail_with_status(status, times=5)
    gateway = make_gateway(fake, ledger, sleeps, max_retries=3)

    with pytest.raises(LLMCallError) as caught:
        await gateway.complete(question())

    assert caught.value.kind is kind
    assert len(fake.requests) == 1
    assert len(await ledger.rows()) == 1


async def test_wrong_key_fails_without_leaking_it(fake, ledger, sleeps):
    wrong = "sk-wrong-key-abcdefghijklmnopqrstuv"
    backend = OpenAIBackend(api_key=wrong, base_url=fake.base_url, sleep=sleeps)
    gateway = ModelGateway(ledger=ledger, prices=default_price_table(), openai=backend)

    with capture_logs() as logs, pytest.raises(LLMCallError) as caught:
        await gateway.complete(question())

    assert caught.value.kind is ErrorKind.AUTH
    assert wrong not in repr(logs) and wrong not in str(caught.value)
    [row] = await ledger.rows()
    assert wrong not in (row.note or "")


async def test_dropped_connection_is_retried(fake, ledger, sleeps):
    fake.drop_connection(times=1)
    gateway = make_gateway(fake, ledger, sleeps)

    result = await gateway.complete(question())

    assert result.status is CallStatus.OK
    [row] = await ledger.rows()
    assert row.attempts == 2


async def test_mixed_outcomes_reconcile_with_the_server(fake, ledger, sleeps):
    gateway = make_gateway(fake, ledger, sleeps, max_retries=1)
    fake.rate_limit(times=1)  # call 1: 429 then ok
    await gateway.complete(question("un"))
    fake.fail_with_status(500, times=2)  # call 2: fails after its retry
    with pytest.raises(LLMCallError):
        await gateway.complete(question("deux"))
    fake.insufficient_quota()  # call 3
    with pytest.raises(LLMCallError):
        await gateway.complete(question("trois"))
    await gateway.complete(question("quatre"))  # call 4: ok

    rows = await ledger.rows()
    assert [r.status for r in rows] == ["ok", "error", "error", "ok"]
    await assert_ledger_matches_server(ledger, fake)
    totals = await ledger.totals()
    prices = default_price_table()
    assert totals.cost_micros == sum(r.cost_micros for r in rows)
    assert totals.cost_micros == sum(
        prices.cost_micros(_usage_of(recorded), recorded.model)
        for recorded in fake.requests
        if recorded.served
    )


def _usage_of(recorded):
    from ibot.domain import Usage

    return Usage(
        prompt_tokens=recorded.prompt_tokens,
        completion_tokens=recorded.completion_tokens,
        cached_tokens=recorded.cached_tokens,
        image_tokens=recorded.image_tokens,
    )


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


async def test_image_goes_inline_with_explicit_detail_and_exact_tokens(fake, ledger, sleeps):
    gateway = make_gateway(fake, ledger, sleeps)
    image = ImageInput(
        data=png(1024, 1024), mime="image/png", width=1024, height=1024, detail="high"
    )
    request = LLMRequest(
        messages=(
            ChatMessage("system", "Tu es un assistant."),
            ChatMessage("user", "Que montre cette capture ?", images=(image,)),
        ),
        model="gpt-4o",
        max_output_tokens=100,
        context=CTX,
    )

    estimate = gateway.estimate(request)
    result = await gateway.complete(request)

    part = fake.requests[-1].body["messages"][1]["content"][1]
    assert part["image_url"]["detail"] == "high"
    assert part["image_url"]["url"].startswith("data:image/png;base64,")
    assert result.usage.image_tokens == 765  # OpenAI's documented 1024×1024 example
    assert estimate.image_tokens == 765
    assert estimate.prompt_tokens == result.usage.prompt_tokens
    await assert_ledger_matches_server(ledger, fake)


async def test_repeated_long_prefix_is_billed_as_cached(fake, ledger, sleeps):
    gateway = make_gateway(fake, ledger, sleeps)
    long_system = "Règle de la communauté : sois précis et bienveillant. " * 150  # > 1024 tokens
    messages = (ChatMessage("system", long_system), ChatMessage("user", "Question A ?"))
    request = LLMRequest(messages=messages, model="gpt-4o", max_output_tokens=50, context=CTX)

    first = await gateway.complete(request)
    second = await gateway.complete(request)

    assert first.usage.cached_tokens == 0
    assert second.usage.cached_tokens >= 1024
    assert second.usage.cached_tokens % 128 == 0
    assert second.cost_micros < first.cost_micros
    await assert_ledger_matches_server(ledger, fake)


async def test_streaming_with_usage_is_measured(fake, ledger, sleeps):
    fake.script("Première partie. Deuxième partie. Troisième partie, et la fin.")
    gateway = make_gateway(fake, ledger, sleeps)
    deltas: list[str] = []

    result = await gateway.complete(question(stream=True), on_delta=deltas.append)

    assert "".join(deltas) == result.text
    assert len(deltas) > 1
    assert fake.requests[-1].body["stream_options"] == {"include_usage": True}
    [row] = await ledger.rows()
    assert row.usage_source == "measured"
    await assert_ledger_matches_server(ledger, fake)


async def test_cut_stream_is_recorded_with_estimated_usage(fake, ledger, sleeps):
    fake.script("Une longue réponse qui sera coupée au milieu par le serveur, hélas.")
    fake.cut_stream(after_chunks=1)
    gateway = make_gateway(fake, ledger, sleeps)

    with pytest.raises(LLMCallError):
        await gateway.complete(question(stream=True))

    [row] = await ledger.rows()
    assert row.status == "error"
    assert row.usage_source == UsageSource.ESTIMATED.value
    assert row.prompt_tokens > 0 and row.completion_tokens > 0
    assert row.cost_micros is not None and row.cost_micros > 0


async def test_cancelled_call_still_leaves_a_row(fake, ledger, sleeps):
    fake.hang(times=1)
    gateway = make_gateway(fake, ledger, sleeps, timeout_s=30)

    task = asyncio.create_task(gateway.complete(question()))
    await fake.wait_for_requests(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    [row] = await ledger.rows()
    assert (row.status, row.error_kind) == ("error", "cancelled")


async def test_no_backend_is_a_refused_row(ledger):
    gateway = ModelGateway(ledger=ledger, prices=default_price_table(), openai=None)

    with pytest.raises(LLMCallError) as caught:
        await gateway.complete(question())

    assert caught.value.kind is ErrorKind.NOT_CONFIGURED
    [row] = await ledger.rows()
    assert (row.status, row.error_kind) == ("refused", "not_configured")


async def test_ledger_failure_does_not_lose_the_answer(fake, sleeps, tmp_path):
    class BrokenLedger:
        async def record(self, entry):
            raise OSError("disk full")

    backend = OpenAIBackend(api_key=API_KEY, base_url=fake.base_url, sleep=sleeps)
    gateway = ModelGateway(ledger=BrokenLedger(), prices=default_price_table(), openai=backend)

    with capture_logs() as logs:
        result = await gateway.complete(question())

    assert result.text
    failed = [entry for entry in logs if entry["event"] == "ledger_write_failed"]
    assert failed and failed[0]["completion_tokens"] == result.usage.completion_tokens


async def test_model_call_log_line_has_the_standard_fields(fake, ledger, sleeps):
    gateway = make_gateway(fake, ledger, sleeps)

    with capture_logs() as logs:
        result = await gateway.complete(question())

    [line] = [entry for entry in logs if entry["event"] == "model_call"]
    assert line["feature"] == "ask"
    assert (line["guild_id"], line["channel_id"], line["user_id"]) == (1, 2, 3)
    assert line["model"] == result.model
    assert line["prompt_tokens"] == result.usage.prompt_tokens
    assert line["completion_tokens"] == result.usage.completion_tokens
    assert line["cost_micros"] == result.cost_micros
    assert line["request_id"] == result.request_id
    assert isinstance(line["latency_ms"], int)


async def test_a_call_in_flight_is_a_pending_row_completed_in_place(fake, ledger, sleeps):
    gateway = make_gateway(fake, ledger, sleeps)
    fake.latency_s = 0.3  # the model is "generating" while we look at the ledger
    request = question()
    estimate = gateway.estimate(request)

    task = asyncio.create_task(gateway.complete(request))
    await fake.wait_for_requests(1)
    [pending] = await ledger.rows()
    assert pending.status == CallStatus.PENDING and pending.cost_micros == 0
    assert (pending.prompt_tokens, pending.completion_tokens) == (estimate.prompt_tokens, 200)
    # OpenAI gets the row's id too, so a call whose answer never came can be found.
    assert fake.requests[0].client_request_id == pending.call_id

    result = await task
    [row] = await ledger.rows()
    assert row.id == pending.id == result.ledger_id and row.call_id == pending.call_id
    assert row.status == CallStatus.OK and row.usage_source == UsageSource.MEASURED
    assert row.completion_tokens == result.usage.completion_tokens
    await assert_ledger_matches_server(ledger, fake)


async def test_calls_left_pending_by_a_dead_process_are_closed_at_their_worst_case(
    fake, ledger, sleeps
):
    # What a process killed mid-call leaves behind: its pending row, nothing else.
    gateway = make_gateway(fake, ledger, sleeps)
    fake.hang()
    request = question()
    task = asyncio.create_task(gateway.complete(request))
    await fake.wait_for_requests(1)
    [left] = await ledger.rows()
    restarted = make_gateway(fake, ledger, sleeps)  # the next process, same database

    assert await restarted.close_interrupted() == 1

    [row] = await ledger.rows()
    assert (row.status, row.error_kind) == ("error", "interrupted")
    assert row.usage_source == UsageSource.ESTIMATED and row.call_id == left.call_id
    worst = gateway.estimate(request).worst_case_micros
    assert worst and row.cost_micros == worst  # a possibly billed call is never free
    assert await restarted.close_interrupted() == 0  # closed once
    # Had the old call ended after all, its outcome would not overwrite the closed row.
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    first, second = await ledger.rows()
    assert first == row and second.error_kind == "cancelled"


async def test_a_call_cancelled_while_its_pending_row_is_written_leaves_one_row(
    fake, ledger, sleeps
):
    # Cancelled (a stop, a summary's sibling failing) just as its pending row is being
    # written: that write completes anyway, and the cancellation must close that very
    # row, not add a second one that the next start would bill again as interrupted.
    gateway = make_gateway(fake, ledger, sleeps)
    entered, release = asyncio.Event(), asyncio.Event()
    record = ledger.record

    async def slow_record(entry):
        entered.set()
        await release.wait()
        return await record(entry)

    ledger.record = slow_record  # type: ignore[method-assign]
    task = asyncio.create_task(gateway.complete(question()))
    await entered.wait()
    task.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task

    [row] = await ledger.rows()
    assert (row.status, row.error_kind, row.cost_micros) == ("error", "cancelled", 0)
    assert fake.requests == []  # never sent: nothing to bill
    assert await gateway.close_interrupted() == 0
