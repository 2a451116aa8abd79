"""The local backend's batching worker, driven by a pure-Python fake engine (no torch).

`tests/test_local_backend.py` runs the whole backend on a tiny real GPT-2; here the
worker's own behaviour (batches, cancellation, engine failures, stopping) is pinned down
without torch or transformers, fast and deterministically: the fake engine records the
batches it is given and can hold one inside `generate` until the test releases it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence

import pytest

from ibot.domain import BackendError, BackendResponse, ChatMessage, ErrorKind, UsageSource
from ibot.llm.local_worker import BatchWorker, GenerationOutput, LocalEngine

WAIT_S = 30  # a bound for thread hand-offs that take microseconds; only hit when broken


class FakeEngine:
    """Answers each prompt with its text upper-cased; one token per character.

    `hold`: the index of a generate call (0: the first) that waits for `release`.
    `fail`: the index of a generate call that raises instead of answering.
    A message saying "bad prompt" makes `encode_prompt` fail for that request.
    """

    def __init__(self, *, hold: int | None = None, fail: int | None = None) -> None:
        self.hold = hold
        self.fail = fail
        self.batches: list[list[str]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.stop_seen: list[bool] = []  # should_stop() after each held call is released
        self.closed = False

    @property
    def batch_sizes(self) -> list[int]:
        return [len(batch) for batch in self.batches]

    def encode_prompt(self, messages: Sequence[ChatMessage]) -> list[int]:
        text = messages[-1].content
        if text == "bad prompt":
            raise ValueError("unknown token")
        return [ord(c) for c in text]

    def generate(
        self, prompts: list[list[int]], max_new: list[int], should_stop: Callable[[], bool]
    ) -> list[GenerationOutput]:
        call = len(self.batches)
        texts = ["".join(map(chr, ids)) for ids in prompts]
        self.batches.append(texts)
        if call == self.hold:
            self.entered.set()
            assert self.release.wait(WAIT_S), "the test never released the held generate"
            self.stop_seen.append(should_stop())
        if call == self.fail:
            raise RuntimeError("CUDA out of memory")
        return [
            GenerationOutput(text.upper()[:limit], len(text), min(len(text), limit), "stop")
            for text, limit in zip(texts, max_new, strict=True)
        ]

    def close(self) -> None:
        self.closed = True


def worker(
    engine: FakeEngine, *, max_batch_size: int = 8, batch_window_s: float = 0.0
) -> BatchWorker[FakeEngine]:
    return BatchWorker(
        lambda: engine,
        max_batch_size=max_batch_size,
        model_name="fake",
        batch_window_s=batch_window_s,
    )


def ask(
    pool: BatchWorker[FakeEngine], text: str, max_new: int = 100
) -> asyncio.Task[BackendResponse]:
    return asyncio.create_task(pool.submit((ChatMessage("user", text),), max_new))


async def until(condition: Callable[[], bool]) -> None:
    """Let the event loop (and the worker thread) run until `condition` holds."""
    for _ in range(WAIT_S * 1000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition never became true")


async def held(pool: BatchWorker[FakeEngine], engine: FakeEngine) -> asyncio.Task[BackendResponse]:
    """A first request, started and held inside `generate`: the worker is busy."""
    first = ask(pool, "first")
    assert await asyncio.to_thread(engine.entered.wait, WAIT_S)
    return first


def test_the_fake_engine_is_a_local_engine() -> None:
    engine: LocalEngine = FakeEngine()  # checked by mypy: the protocol is what is used
    assert engine.encode_prompt([ChatMessage("user", "ab")]) == [97, 98]


# ---- batching ------------------------------------------------------------------------------


async def test_requests_sent_together_share_batches_of_at_most_max_batch_size() -> None:
    engine = FakeEngine()
    # A window far longer than the test: a batch only goes once it is full.
    pool = worker(engine, max_batch_size=4, batch_window_s=WAIT_S)
    await pool.start()
    questions = [f"question {i}" for i in range(8)]

    answers = await asyncio.gather(
        *(pool.submit((ChatMessage("user", q),), 100) for q in questions)
    )
    stats = pool.stats
    await pool.aclose()

    assert engine.batch_sizes == [4, 4]
    assert sorted(text for batch in engine.batches for text in batch) == sorted(questions)
    assert [a.text for a in answers] == [q.upper() for q in questions]
    assert all(a.model == "fake" and a.usage.source == UsageSource.MEASURED for a in answers)
    assert [a.usage.prompt_tokens for a in answers] == [len(q) for q in questions]
    assert stats.generate_calls == 2 and stats.requests == 8 and stats.largest_batch == 4
    assert stats.generated_tokens == sum(map(len, questions))


async def test_requests_waiting_behind_a_batch_go_together_in_the_next() -> None:
    engine = FakeEngine(hold=0)
    pool = worker(engine, max_batch_size=3)
    first = await held(pool, engine)
    waiting = [ask(pool, f"q{i}", max_new=i + 1) for i in range(5)]
    await until(lambda: pool.queued == 5)

    engine.release.set()
    answers = await asyncio.gather(first, *waiting)
    await pool.aclose()

    assert engine.batches == [["first"], ["q0", "q1", "q2"], ["q3", "q4"]]  # queue order
    # Each request keeps its own answer length within the shared batch.
    assert [a.usage.completion_tokens for a in answers[1:]] == [1, 2, 2, 2, 2]
    assert engine.closed


async def test_the_batch_time_is_shared_equally_in_the_price() -> None:
    engine = FakeEngine(hold=0)
    times = iter([10.0, 10.5, 20.0, 20.5])  # each batch takes 0.5 s
    pool: BatchWorker[FakeEngine] = BatchWorker(
        lambda: engine,
        max_batch_size=8,
        model_name="fake",
        gpu_hour_micros=3_600_000,  # 1000 micro-dollars per second
        batch_window_s=0,
        clock=lambda: next(times),
    )
    first = await held(pool, engine)
    pair = [ask(pool, "a"), ask(pool, "b")]
    await until(lambda: pool.queued == 2)
    engine.release.set()
    alone, *shared = await asyncio.gather(first, *pair)
    await pool.aclose()

    assert alone.cost_micros == 500
    assert [r.cost_micros for r in shared] == [250, 250]
    assert pool.stats.busy_s == pytest.approx(1.0)


# ---- cancellation --------------------------------------------------------------------------


async def test_a_cancelled_queued_request_is_withdrawn_and_a_running_one_dropped() -> None:
    engine = FakeEngine(hold=0)
    pool = worker(engine)
    running = await held(pool, engine)
    queued, kept = ask(pool, "second"), ask(pool, "third")
    await until(lambda: pool.queued == 2)

    queued.cancel()  # waiting in the queue: withdrawn, never reaches the engine
    running.cancel()  # inside generate: runs on, its answer is dropped
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert pool.queued == 1
    engine.release.set()
    answer = await kept
    with pytest.raises(asyncio.CancelledError):
        await running
    stats = pool.stats
    await pool.aclose()

    assert answer.text == "THIRD"
    assert engine.batches == [["first"], ["third"]]
    assert engine.stop_seen == [True]  # nobody waited for the held batch any more
    assert stats.cancelled == 2 and stats.requests == 2


async def test_a_batch_keeps_generating_while_one_of_its_requests_still_waits() -> None:
    engine = FakeEngine(hold=0)
    pool = worker(engine, max_batch_size=2, batch_window_s=WAIT_S)  # goes once both wait
    gone, stays = ask(pool, "gone"), ask(pool, "stays")
    assert await asyncio.to_thread(engine.entered.wait, WAIT_S)

    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    engine.release.set()
    answer = await stays
    await pool.aclose()

    assert engine.batches == [["gone", "stays"]]
    assert engine.stop_seen == [False]  # one caller still waits: no early stop
    assert answer.text == "STAYS"


# ---- failures ------------------------------------------------------------------------------


async def test_an_engine_error_fails_only_the_requests_of_its_batch() -> None:
    engine = FakeEngine(hold=0, fail=1)
    pool = worker(engine)
    first = await held(pool, engine)
    doomed = [ask(pool, "a"), ask(pool, "b")]
    await until(lambda: pool.queued == 2)
    engine.release.set()

    assert (await first).text == "FIRST"
    for task in doomed:
        with pytest.raises(BackendError) as caught:
            await task
        assert caught.value.kind == ErrorKind.OTHER
        assert caught.value.message == "local generation failed: RuntimeError: CUDA out of memory"
    after = await pool.submit((ChatMessage("user", "after"),), 100)  # the worker lives on
    await pool.aclose()

    assert after.text == "AFTER"
    assert engine.batch_sizes == [1, 2, 1]


async def test_a_prompt_that_cannot_be_encoded_fails_alone() -> None:
    engine = FakeEngine(hold=0)
    pool = worker(engine)
    first = await held(pool, engine)
    bad, good = ask(pool, "bad prompt"), ask(pool, "good")
    await until(lambda: pool.queued == 2)
    engine.release.set()

    await first
    with pytest.raises(BackendError, match="bad prompt: unknown token"):
        await bad
    assert (await good).text == "GOOD"
    await pool.aclose()
    assert engine.batches == [["first"], ["good"]]


async def test_an_engine_that_cannot_load_fails_start_clearly() -> None:
    refused = BackendError(ErrorKind.NOT_CONFIGURED, "no config.json")

    def not_configured() -> FakeEngine:
        raise refused

    def broken() -> FakeEngine:
        raise ImportError("no module named torch")

    pool = BatchWorker(not_configured, max_batch_size=1, model_name="fake")
    with pytest.raises(BackendError) as caught:
        await pool.submit((ChatMessage("user", "hi"),), 10)
    assert caught.value is refused
    await pool.aclose()

    pool = BatchWorker(broken, max_batch_size=1, model_name="fake")
    with pytest.raises(BackendError, match="ImportError: no module named torch"):
        await pool.start()
    await pool.aclose()


# ---- stopping ------------------------------------------------------------------------------


async def test_stopping_fails_waiting_requests_and_closes_the_engine() -> None:
    engine = FakeEngine(hold=0)
    pool = worker(engine)
    running = await held(pool, engine)
    waiting = ask(pool, "second")
    await until(lambda: pool.queued == 1)

    closing = asyncio.create_task(pool.aclose())
    with pytest.raises(BackendError, match="stopped"):
        await waiting
    engine.release.set()
    await closing
    with pytest.raises(BackendError, match="stopped"):
        await running  # its batch finished after the stop: the answer is not delivered
    with pytest.raises(BackendError, match="stopped"):
        await pool.submit((ChatMessage("user", "too late"),), 10)

    assert engine.closed
    assert engine.stop_seen == [True]
    assert engine.batches == [["first"]]
