"""Upstream behaviour the real API has and the fake now reproduces on demand, end to end:
the real AsyncOpenAI client, OpenAIBackend (its own retries), the gateway and the ledger.

- 429s without Retry-After / retry-after-ms (`fake.send_retry_after = False`);
- a usage object without `prompt_tokens_details.image_tokens`
  (`fake.report_image_tokens = False`);
- a stream that ends in an `{"error": …}` event after some chunks (`fake.stream_error`).

No test sleeps: the backend's waits go to a recorder, which moves a virtual clock that
the fake's rate-limit buckets read, so a back-off "lasts" exactly as long as it says.
"""

from __future__ import annotations

import asyncio
import io
import itertools
from collections.abc import Callable
from pathlib import Path

import httpx2
import openai
import pytest
from PIL import Image

from cogs._render import failure_text
from ibot.db.engine import create_engine, make_sessionmaker
from ibot.db.ledger import Ledger
from ibot.db.migrate import upgrade
from ibot.domain import (
    Backend,
    BackendResponse,
    CallContext,
    CallStatus,
    ChatMessage,
    ErrorKind,
    Feature,
    ImageInput,
    LLMCallError,
    LLMRequest,
    RateLimitInfo,
    Usage,
    UsageSource,
)
from ibot.i18n import t
from ibot.llm.gateway import IMAGE_TOKENS_ESTIMATED_NOTE, ModelGateway
from ibot.llm.openai_backend import OpenAIBackend, classify
from ibot.pricing import default_price_table
from ibot.services.outcomes import Answered, Failed, call_for_outcome
from ibot.testing.fake_openai import FakeOpenAI, tokenizer
from ibot.testing.fake_openai.response_building import split_for_stream

API_KEY = "sk-test-0123456789abcdefghijklmnop"
CTX = CallContext(feature=Feature.ASK, guild_id=1, channel_id=2, user_id=3)
SNAPSHOT = "gpt-4o-2024-08-06"  # what the fake answers gpt-4o with
BACKOFF_BASE_S = 0.5  # OpenAIBackend's first back-off, then doubled, each up to 25 % shorter


class VirtualTime:
    """A clock for the fake's buckets and a stand-in for asyncio.sleep in the backend
    (the SleepRecorder of test_gateway.py): a wait is recorded and moves the clock."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


@pytest.fixture
def time_() -> VirtualTime:
    return VirtualTime()


@pytest.fixture
async def fake(time_: VirtualTime):
    async with FakeOpenAI(api_key=API_KEY, clock=time_.clock) as server:
        yield server


@pytest.fixture
async def ledger(tmp_path: Path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    await upgrade(url)
    engine = create_engine(url)
    yield Ledger(make_sessionmaker(engine))
    await engine.dispose()


def make_backend(fake: FakeOpenAI, time_: VirtualTime, **options: object) -> OpenAIBackend:
    settings: dict = {"max_retries": 3, "timeout_s": 5.0, **options}
    return OpenAIBackend(api_key=API_KEY, base_url=fake.base_url, sleep=time_, **settings)


def make_gateway(
    fake: FakeOpenAI, ledger: Ledger, time_: VirtualTime, *, local=None, **options: object
) -> ModelGateway:
    backend = make_backend(fake, time_, **options)
    return ModelGateway(ledger=ledger, prices=default_price_table(), openai=backend, local=local)


def question(text: str = "Comment installer Python ?", **kw) -> LLMRequest:
    messages = (ChatMessage("system", "Tu es un assistant."), ChatMessage("user", text))
    return LLMRequest(messages=messages, model="gpt-4o", max_output_tokens=200, context=CTX, **kw)


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (20, 120, 200)).save(out, format="PNG")
    return out.getvalue()


def image_question(*images: tuple[int, int, str], stream: bool = False) -> LLMRequest:
    inputs = tuple(
        ImageInput(data=png(w, h), mime="image/png", width=w, height=h, detail=detail)
        for w, h, detail in images
    )
    return LLMRequest(
        messages=(
            ChatMessage("system", "Tu es un assistant."),
            ChatMessage("user", "Que montrent ces captures ?", images=inputs),
        ),
        model="gpt-4o",
        max_output_tokens=100,
        context=CTX,
        stream=stream,
    )


def assert_backoff(waits: list[float], *, cap_s: float = 60.0) -> None:
    """Exponential with jitter: wait n is in [0.75, 1] x 0.5 s x 2^n, capped, each longer."""
    for n, wait in enumerate(waits):
        nominal = min(cap_s, BACKOFF_BASE_S * 2**n)
        assert 0.75 * nominal <= wait <= nominal, (n, wait)
    assert all(later > earlier for earlier, later in itertools.pairwise(waits))


# ----- 429 without Retry-After --------------------------------------------------------


async def test_the_switch_sends_429s_without_retry_after(fake):
    fake.send_retry_after = False
    fake.rate_limit(times=1)
    client = openai.AsyncOpenAI(api_key=API_KEY, base_url=fake.base_url, max_retries=0)

    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hello"}]
        )
    await client.close()

    assert caught.value.code == "rate_limit_exceeded"
    headers = caught.value.response.headers
    assert "retry-after" not in headers and "retry-after-ms" not in headers
    assert headers.get("x-request-id")


async def test_429s_without_retry_after_back_off_exponentially_then_answer(fake, ledger, time_):
    fake.send_retry_after = False
    fake.rate_limit(times=2)
    gateway = make_gateway(fake, ledger, time_, max_retries=3)

    outcome = await call_for_outcome(gateway, question())

    assert isinstance(outcome, Answered) and outcome.text
    assert len(time_.waits) == 2
    assert_backoff(time_.waits)  # 0.375-0.5 s, then 0.75-1 s: never at once
    assert len(fake.requests) == 3
    [row] = await ledger.rows()
    assert (row.status, row.attempts, row.usage_source) == ("ok", 3, "measured")
    served = fake.served_usage()
    assert (row.prompt_tokens, row.completion_tokens) == (
        served.prompt_tokens,
        served.completion_tokens,
    )


async def test_429s_without_retry_after_until_retries_run_out_are_a_clear_failure(
    fake, ledger, time_
):
    fake.send_retry_after = False
    fake.rate_limit(times=10)
    gateway = make_gateway(fake, ledger, time_, max_retries=3)

    outcome = await call_for_outcome(gateway, question())

    assert isinstance(outcome, Failed) and outcome.kind is ErrorKind.RATE_LIMIT
    assert failure_text(outcome, "en") == t("error.rate_limit", "en")
    assert len(fake.requests) == 4  # the first try and three retries, then it stops
    assert len(time_.waits) == 3
    assert_backoff(time_.waits)
    [row] = await ledger.rows()
    assert (row.status, row.error_kind, row.attempts) == ("error", "rate_limit", 4)
    assert row.cost_micros == 0 and row.prompt_tokens == 0  # never served: nothing billed
    assert outcome.ledger_id == row.id


async def test_backoff_without_retry_after_is_bounded(fake, ledger, time_):
    fake.send_retry_after = False
    fake.rate_limit(times=10)
    gateway = make_gateway(fake, ledger, time_, max_retries=5, retry_max_wait_s=1.5)

    with pytest.raises(LLMCallError):
        await gateway.complete(question())

    assert len(time_.waits) == 5
    assert max(time_.waits) <= 1.5
    assert_backoff(time_.waits[:2])  # 0.5 and 1 s as usual, then held at the cap
    assert all(1.5 * 0.75 <= w <= 1.5 for w in time_.waits[2:])


async def test_backoff_outlasts_a_real_bucket_that_gives_no_retry_after(ledger, time_):
    # One request per 2 s, and 429s carrying only the x-ratelimit-* headers: the retries
    # must wait long enough in total for the bucket to refill, and the pacer must hear
    # of each 429 even without a Retry-After to pass on.
    async with FakeOpenAI(api_key=API_KEY, rpm=1, window_s=2.0, clock=time_.clock) as fake:
        fake.send_retry_after = False
        backend = make_backend(fake, time_, max_retries=3)
        heard: list[tuple[RateLimitInfo | None, float | None]] = []
        backend.rate_limit_listener = lambda info, held_for: heard.append((info, held_for))
        gateway = ModelGateway(ledger=ledger, prices=default_price_table(), openai=backend)

        await gateway.complete(question("un"))  # takes the only request of the window
        result = await gateway.complete(question("deux"))

        # 0.375-0.5 + 0.75-1 s is under 2 s, plus 1.5-2 s is over: the 4th try gets in.
        assert result.status is CallStatus.OK
        assert len(time_.waits) == 3 and 1.125 <= sum(time_.waits[:2]) < 2 <= sum(time_.waits)
        assert_backoff(time_.waits)
        assert [r.status for r in fake.requests] == [200, 429, 429, 429, 200]
        first, second = await ledger.rows()
        assert (first.attempts, second.attempts) == (1, 4)
        assert second.status == "ok"
        held = [held_for for info, held_for in heard if held_for is not None]
        assert held == time_.waits  # each back-off passed on, as a Retry-After would be
        assert all(info is not None and info.remaining_requests == 0 for info, h in heard if h)


# ----- usage without prompt_tokens_details.image_tokens -------------------------------


async def test_the_switch_leaves_image_tokens_out_of_the_usage(fake):
    fake.report_image_tokens = False
    client = openai.AsyncOpenAI(api_key=API_KEY, base_url=fake.base_url, max_retries=0)
    image = ImageInput(data=png(64, 64), mime="image/png", width=64, height=64, detail="low")

    completion = await client.chat.completions.create(
        model="gpt-4o",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Quoi ?"},
                    {"type": "image_url", "image_url": {"url": image.data_url(), "detail": "low"}},
                ],
            }
        ],
    )
    await client.close()

    usage = completion.usage
    assert usage is not None and usage.prompt_tokens_details is not None
    # The shape of the spec's own image-input example: no image_tokens, no text_tokens.
    assert usage.prompt_tokens_details.model_dump(exclude_unset=True) == {
        "cached_tokens": 0,
        "audio_tokens": 0,
    }
    assert fake.requests[-1].image_tokens == 85  # billed all the same, in prompt_tokens
    assert usage.prompt_tokens > 85


@pytest.mark.parametrize("stream", [False, True])
async def test_image_tokens_the_api_leaves_out_are_the_tile_formula_estimate(
    fake, ledger, time_, stream
):
    fake.report_image_tokens = False
    gateway = make_gateway(fake, ledger, time_)
    # OpenAI's documented examples: 1024x1024 high is 765 tokens, any image at low 85.
    request = image_question((1024, 1024, "high"), (300, 200, "low"), stream=stream)

    result = await gateway.complete(request)

    served = fake.requests[-1]
    [row] = await ledger.rows()
    assert row.image_tokens == result.usage.image_tokens == 765 + 85
    assert row.image_tokens == served.image_tokens  # what the fake billed, unreported
    # The price comes from the API's prompt_tokens, which already count the images.
    assert row.prompt_tokens == served.prompt_tokens
    billed = Usage(prompt_tokens=served.prompt_tokens, completion_tokens=served.completion_tokens)
    assert row.cost_micros == default_price_table().cost_micros(billed, SNAPSHOT)
    assert row.usage_source == UsageSource.MEASURED  # the billed numbers are the API's
    assert row.note == IMAGE_TOKENS_ESTIMATED_NOTE  # the image count is ours, and says so
    assert row.status == "ok"


async def test_image_tokens_the_api_reports_are_taken_as_they_are(fake, ledger, time_):
    gateway = make_gateway(fake, ledger, time_)

    await gateway.complete(image_question((2048, 4096, "high")))

    [row] = await ledger.rows()
    assert row.image_tokens == 1105  # the vision guide's 2048x4096 example, from the API
    assert row.note is None


async def test_a_cut_stream_with_images_counts_them_in_its_estimate(fake, ledger, time_):
    fake.script("Une réponse assez longue pour être coupée au milieu par le serveur.")
    fake.cut_stream(after_chunks=1)
    gateway = make_gateway(fake, ledger, time_)

    with pytest.raises(LLMCallError):
        await gateway.complete(image_question((1024, 1024, "high"), stream=True))

    [row] = await ledger.rows()
    assert row.usage_source == UsageSource.ESTIMATED
    assert row.image_tokens == 765 and row.prompt_tokens == fake.requests[-1].prompt_tokens


# ----- an error event in the middle of a stream ---------------------------------------

LONG_ANSWER = (
    "Pour installer Python, commence par pyenv ; ensuite crée un environnement virtuel, "
    "puis installe tes dépendances avec pip. Voilà !"
)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        ({"message": "boom", "type": "server_error", "code": None}, ErrorKind.SERVER),
        (
            {"message": "slow down", "type": "tokens", "code": "rate_limit_exceeded"},
            ErrorKind.RATE_LIMIT,
        ),
        (
            {"message": "no credit", "type": "insufficient_quota", "code": "insufficient_quota"},
            ErrorKind.QUOTA,
        ),
        ({"message": "odd", "type": "something_new", "code": None}, ErrorKind.OTHER),
    ],
)
def test_a_stream_error_is_classified_by_its_error_object(error, kind):
    request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
    found, message = classify(openai.APIError(error["message"], request, body=error))
    assert found is kind
    assert message.startswith("stream error (") and error["message"] in message


async def test_the_client_raises_an_api_error_on_a_stream_error_event(fake):
    fake.script(LONG_ANSWER)
    fake.stream_error(after_chunks=2)
    client = openai.AsyncOpenAI(api_key=API_KEY, base_url=fake.base_url, max_retries=0)
    stream = await client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hello"}], stream=True
    )
    pieces: list[str] = []

    with pytest.raises(openai.APIError) as caught:
        async for chunk in stream:
            pieces.extend(c.delta.content or "" for c in chunk.choices)
    await client.close()

    assert not isinstance(caught.value, openai.APIStatusError)  # no status: it came in a 200
    assert caught.value.type == "server_error"
    assert "".join(pieces) == "".join(split_for_stream(LONG_ANSWER)[:2])
    assert fake.requests[-1].fault == "stream_error" and not fake.requests[-1].served


async def test_a_stream_error_event_is_one_error_row_with_what_was_streamed(fake, ledger, time_):
    fake.script(LONG_ANSWER)
    fake.stream_error(after_chunks=2)
    gateway = make_gateway(fake, ledger, time_)
    deltas: list[str] = []

    with pytest.raises(LLMCallError) as caught:
        await gateway.complete(question(stream=True), on_delta=deltas.append)

    assert caught.value.kind is ErrorKind.SERVER  # the event's server_error
    streamed = "".join(deltas)
    assert streamed == "".join(split_for_stream(LONG_ANSWER)[:2])
    assert len(fake.requests) == 1  # output was streamed (and billed): never sent again
    [row] = await ledger.rows()
    assert (row.status, row.error_kind) == ("error", "server_error")
    assert row.id == caught.value.ledger_id
    assert row.usage_source == UsageSource.ESTIMATED
    # The prompt as the server counted it, and the completion as far as it streamed,
    # counted by the fake's own tokenizer (not the bot's).
    assert row.prompt_tokens == fake.requests[0].prompt_tokens
    assert row.completion_tokens == tokenizer.count_text(streamed, "gpt-4o") > 0
    estimated = Usage(prompt_tokens=row.prompt_tokens, completion_tokens=row.completion_tokens)
    assert row.cost_micros == default_price_table().cost_micros(estimated, SNAPSHOT) > 0
    assert row.model == SNAPSHOT
    assert "stream interrupted" in (row.note or "") and "server_error" in (row.note or "")


async def test_a_stream_error_event_is_a_clear_failure_for_the_user(fake, ledger, time_):
    fake.stream_error(after_chunks=1)
    fake.script(LONG_ANSWER)
    gateway = make_gateway(fake, ledger, time_)

    outcome = await call_for_outcome(gateway, question(stream=True))

    assert isinstance(outcome, Failed) and outcome.kind is ErrorKind.SERVER
    assert failure_text(outcome, "fr") == t("error.server_error", "fr")
    assert len(await ledger.rows()) == 1


async def test_a_stream_error_event_before_any_content_is_retried(fake, ledger, time_):
    fake.stream_error(after_chunks=0)
    fake.script("Jamais envoyée.", "Bonjour !")  # the first try errs before any content
    gateway = make_gateway(fake, ledger, time_)

    result = await gateway.complete(question(stream=True))

    assert result.text == "Bonjour !" and result.status is CallStatus.OK
    assert len(time_.waits) == 1 and 0.375 <= time_.waits[0] <= 0.5
    [row] = await ledger.rows()
    assert (row.status, row.attempts, row.usage_source) == ("ok", 2, "measured")


class StubLocal:
    """A local model that always answers (the real one is tested in test_local_fallback)."""

    name = Backend.LOCAL
    model_name = "stub-local"

    def __init__(self) -> None:
        self.calls = 0

    async def complete(
        self,
        request: LLMRequest,
        *,
        prompt_estimate: int = 0,
        on_delta: Callable[[str], object] | None = None,
        estimate_completion: Callable[[str], int] | None = None,
    ) -> BackendResponse:
        self.calls += 1
        return BackendResponse(
            text="Réponse locale.",
            usage=Usage(prompt_tokens=12, completion_tokens=4),
            model="stub-local",
            cost_micros=0,
        )


async def test_a_stream_error_event_falls_back_to_the_local_model(fake, ledger, time_):
    fake.script(LONG_ANSWER)
    fake.stream_error(after_chunks=2)
    local = StubLocal()
    gateway = make_gateway(fake, ledger, time_, local=local)

    result = await gateway.complete(question(stream=True))

    assert result.backend is Backend.LOCAL and result.status is CallStatus.FALLBACK
    assert result.text == "Réponse locale." and local.calls == 1
    failed, answered = await ledger.rows()
    assert (failed.backend, failed.status, failed.error_kind) == ("openai", "error", "server_error")
    assert failed.usage_source == UsageSource.ESTIMATED and failed.completion_tokens > 0
    assert (answered.backend, answered.status) == ("local", "fallback")
    assert "openai server_error" in (answered.note or "")
