"""The batching worker of the local backend: one thread, one queue, one engine.

Why it exists apart from the engine: the concurrency (a worker thread that owns the model,
the queue, batches of waiting requests, cancellation, stopping) is the subtle part of the
local backend, and it does not depend on torch at all. It talks to the engine through
the small `LocalEngine` protocol, so it can be tested with a pure-Python fake engine, and
the torch/transformers engine (`local_engine`) only has to load a model and generate.

- Generation is blocking, seconds-long work. One worker thread owns the engine and serves
  a queue, so the event loop (Discord heartbeats, other answers) is never blocked; each
  request is an asyncio future resolved with `loop.call_soon_threadsafe`.
- Requests that wait together are batched: ONE `generate` per batch. On a GPU (and even
  on a CPU) a batch of 8 costs little more than one request, which is what keeps a small
  server answering when OpenAI is down for all.
- The backend prices itself: the GPU hour price × the batch's generation time ÷ the batch
  size (0 when no price is set).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

import structlog

from ibot.domain import (
    BackendError,
    BackendResponse,
    ChatMessage,
    ErrorKind,
    Usage,
    UsageSource,
)

log = structlog.get_logger("ibot.local")


@dataclass(frozen=True, slots=True)
class GenerationOutput:
    """One request's answer as the engine produced it."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


class LocalEngine(Protocol):
    """What the worker needs from a model; every method is called on the worker thread."""

    def encode_prompt(self, messages: Sequence[ChatMessage]) -> list[int]:
        """The prompt's token ids; a `BackendError` (or any error) fails that request only."""
        ...

    def generate(
        self, prompts: list[list[int]], max_new: list[int], should_stop: Callable[[], bool]
    ) -> Sequence[GenerationOutput]:
        """One batch: an output per prompt, in order, at most `max_new[i]` new tokens each.

        `should_stop()` turns true once nobody waits for the batch any more (every request
        cancelled, or the worker stopping): the engine may then cut the generation short.
        """
        ...

    def close(self) -> None:
        """Free the model; called once, when the worker stops."""
        ...


@dataclass(slots=True)
class LocalStats:
    """What the worker did since start; a snapshot is returned by `BatchWorker.stats`."""

    requests: int = 0  # answered (successfully or not) by a generate call
    generate_calls: int = 0
    generated_tokens: int = 0
    cancelled: int = 0  # removed from the queue, or answered but discarded
    busy_s: float = 0.0  # time spent inside generate
    largest_batch: int = 0


@dataclass(eq=False, slots=True)
class _Job:
    messages: tuple[ChatMessage, ...]
    max_new_tokens: int
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[BackendResponse]
    state: Literal["pending", "running", "cancelled", "done"] = "pending"


class BatchWorker[E: LocalEngine]:
    """Serves requests with an engine loaded and owned by one worker thread, in batches.

    Example::

        worker = BatchWorker(load_engine, max_batch_size=8, model_name="tiny")
        engine = await worker.start()   # runs `load_engine()` on the worker thread
        response = await worker.submit(messages, max_new_tokens=64)
        await worker.aclose()
    """

    def __init__(
        self,
        load: Callable[[], E],
        *,
        max_batch_size: int,
        model_name: str,
        gpu_hour_micros: int = 0,
        batch_window_s: float = 0.002,
        clock: Callable[[], float] = time.perf_counter,
        thread_name: str = "ibot-local-model",
    ) -> None:
        """Nothing runs before `start()`.

        `load`: builds (and warms up) the engine; called once, on the worker thread. A
        `BackendError` it raises is what `start()` raises.
        `batch_window_s`: how long the worker waits for more requests once one arrives,
        so that requests sent together share a batch instead of the first going alone.
        `clock`: times each generate call, for the price and `stats.busy_s`.
        """
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be positive")
        self._load = load
        self._max_batch_size = max_batch_size
        self._model_name = model_name
        self._gpu_hour_micros = gpu_hour_micros
        self._batch_window_s = batch_window_s
        self._clock = clock
        self._thread_name = thread_name
        self._cond = threading.Condition()
        self._queue: deque[_Job] = deque()
        self._stats = LocalStats()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._ready: asyncio.Future[None] | None = None
        self._engine: E | None = None

    # -- lifecycle

    async def start(self) -> E:
        """Load the engine on the worker thread; idempotent, safe to await twice."""
        if self._ready is None:
            if self._stopping:
                raise BackendError(ErrorKind.OTHER, "the local model has been stopped")
            loop = asyncio.get_running_loop()
            self._ready = loop.create_future()
            self._thread = threading.Thread(
                target=self._run, args=(loop, self._ready), name=self._thread_name, daemon=True
            )
            self._thread.start()
        await asyncio.shield(self._ready)
        return self.engine

    async def aclose(self) -> None:
        """Stop the worker: queued requests fail, a running batch is cut short and fails."""
        with self._cond:
            self._stopping = True
            pending = list(self._queue)
            self._queue.clear()
            for job in pending:
                job.state = "cancelled"
            self._cond.notify_all()
        for job in pending:
            _resolve(job, error=BackendError(ErrorKind.OTHER, "the local model was stopped"))
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        if self._ready is not None and self._ready.done() and not self._ready.cancelled():
            self._ready.exception()  # retrieved: no "never retrieved" warning at exit

    # -- state

    @property
    def engine(self) -> E:
        """The loaded engine (after `start()`; still there after `aclose()`)."""
        if self._engine is None:
            raise RuntimeError("the local backend is not started")
        return self._engine

    @property
    def stats(self) -> LocalStats:
        with self._cond:
            return replace(self._stats)

    @property
    def queued(self) -> int:
        """Requests waiting for the worker (not counting the batch being generated)."""
        with self._cond:
            return len(self._queue)

    # -- requests

    async def submit(
        self, messages: tuple[ChatMessage, ...], max_new_tokens: int
    ) -> BackendResponse:
        """Queue a request and wait for its answer.

        Cancelling the awaiting task withdraws a queued request; a request already in a
        batch runs on, and its answer is dropped.
        """
        await self.start()
        loop = asyncio.get_running_loop()
        job = _Job(
            messages=messages,
            max_new_tokens=max_new_tokens,
            loop=loop,
            future=loop.create_future(),
        )
        with self._cond:
            if self._stopping:
                raise BackendError(ErrorKind.OTHER, "the local model was stopped")
            self._queue.append(job)
            self._cond.notify_all()
        try:
            return await job.future
        except asyncio.CancelledError:
            self._withdraw(job)
            raise

    def _withdraw(self, job: _Job) -> None:
        with self._cond:
            if job.state == "pending":
                with contextlib.suppress(ValueError):
                    self._queue.remove(job)
            if job.state in ("pending", "running"):
                job.state = "cancelled"
                self._stats.cancelled += 1

    # -- the worker thread

    def _run(self, loop: asyncio.AbstractEventLoop, ready: asyncio.Future[None]) -> None:
        try:
            engine = self._load()
        except BackendError as err:
            _settle(loop, ready, error=err)
            return
        except Exception as err:  # a broken install, out of memory…: one clear line
            message = f"cannot start the local model: {type(err).__name__}: {err}"
            _settle(loop, ready, error=BackendError(ErrorKind.OTHER, message))
            return
        self._engine = engine
        _settle(loop, ready)
        try:
            while (batch := self._next_batch()) is not None:
                if batch:
                    self._serve(engine, batch)
        finally:
            engine.close()

    def _next_batch(self) -> list[_Job] | None:
        """Wait for work; None when stopping. Waits `batch_window_s` for companions."""
        limit = self._max_batch_size
        with self._cond:
            while not self._queue and not self._stopping:
                self._cond.wait()
            deadline = time.monotonic() + self._batch_window_s
            while 0 < len(self._queue) < limit and not self._stopping:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            if self._stopping:
                return None
            batch = [self._queue.popleft() for _ in range(min(limit, len(self._queue)))]
            for job in batch:
                job.state = "running"
            return batch

    def _serve(self, engine: E, batch: list[_Job]) -> None:
        prompts: list[list[int]] = []
        accepted: list[_Job] = []
        for job in batch:
            try:
                prompts.append(engine.encode_prompt(job.messages))
                accepted.append(job)
            except BackendError as err:
                self._finish(job, error=err)
            except Exception as err:
                self._finish(job, error=BackendError(ErrorKind.OTHER, f"bad prompt: {err}"))
        if not accepted:
            return

        def abandoned() -> bool:
            return self._stopping or all(job.state == "cancelled" for job in accepted)

        started = self._clock()
        try:
            outputs = engine.generate(prompts, [job.max_new_tokens for job in accepted], abandoned)
        except Exception as err:
            log.exception("local generation failed", batch=len(accepted))
            error = BackendError(
                ErrorKind.OTHER, f"local generation failed: {type(err).__name__}: {err}"
            )
            for job in accepted:
                self._finish(job, error=error)
            return
        elapsed = self._clock() - started
        with self._cond:
            self._stats.generate_calls += 1
            self._stats.requests += len(accepted)
            self._stats.busy_s += elapsed
            self._stats.generated_tokens += sum(out.completion_tokens for out in outputs)
            self._stats.largest_batch = max(self._stats.largest_batch, len(accepted))
        if self._stopping:
            stopped = BackendError(ErrorKind.OTHER, "the local model was stopped")
            for job in accepted:
                self._finish(job, error=stopped)
            return
        # Everyone in the batch waited the same time on the same GPU: equal shares.
        share_s = elapsed / len(accepted)
        cost = round(self._gpu_hour_micros * share_s / 3600)
        log.debug("local batch", size=len(accepted), seconds=round(elapsed, 3))
        for job, out in zip(accepted, outputs, strict=True):
            response = BackendResponse(
                text=out.text,
                usage=Usage(
                    prompt_tokens=out.prompt_tokens,
                    completion_tokens=out.completion_tokens,
                    source=UsageSource.MEASURED,
                ),
                model=self._model_name,
                finish_reason=out.finish_reason,
                cost_micros=cost,
            )
            self._finish(job, response=response)

    def _finish(
        self,
        job: _Job,
        *,
        response: BackendResponse | None = None,
        error: BackendError | None = None,
    ) -> None:
        with self._cond:
            if job.state == "cancelled":
                return  # its caller is gone: the answer is dropped
            job.state = "done"
        _resolve(job, response=response, error=error)


def _settle(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    *,
    result: Any = None,
    error: BaseException | None = None,
) -> None:
    """Resolve `future` from another thread, unless it is done or its loop is gone."""

    def apply() -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
        loop.call_soon_threadsafe(apply)


def _resolve(
    job: _Job, *, response: BackendResponse | None = None, error: BaseException | None = None
) -> None:
    _settle(job.loop, job.future, result=response, error=error)
