"""The local backend: a causal LM (GPT-2, DialoGPT, a fine-tuned one…) served in-process.

Why it exists: it is the `ModelBackend` the gateway calls when the local model answers
(the fallback when OpenAI is down, or `serve-local`). It checks the configuration, builds
the pieces and wires them together, and holds no logic of their own:

- `ibot.llm.local_prompt`: how a conversation becomes the model's prompt (DialoGPT turns
  or the tokenizer's chat template, cut from the OLDEST turn to fit the window; the
  solved threads a `GroundedMessage` quotes go in front of the question only when they
  fit beside it);
- `ibot.llm.local_engine`: torch/transformers loading and batched generation, the only
  module that imports them, and only when the backend starts, so `ibot --help` and a bot
  without a local model never load them;
- `ibot.llm.local_worker`: the worker thread that owns the engine, batches the requests
  waiting together, handles cancellation and stopping, and prices each answer (the GPU
  hour price × the batch's generation time ÷ the batch size).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import structlog

from ibot.config import LocalModelSettings
from ibot.domain import (
    Backend,
    BackendError,
    BackendResponse,
    ChatMessage,
    ErrorKind,
    LLMRequest,
)
from ibot.llm.local_engine import TransformersEngine
from ibot.llm.local_prompt import PromptFormat
from ibot.llm.local_worker import BatchWorker, LocalStats

OnDelta = Callable[[str], Awaitable[None] | None]

log = structlog.get_logger("ibot.local")


class LocalBackend:
    """A `ModelBackend` answering with a local causal LM, batched on one worker thread.

    Example::

        backend = LocalBackend(settings.local_model)
        await backend.start()          # loads and warms the model (seconds)
        response = await backend.complete(request)
        await backend.aclose()
    """

    name = Backend.LOCAL

    def __init__(
        self,
        settings: LocalModelSettings,
        *,
        model_name: str | None = None,
        batch_window_s: float = 0.002,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        """Check the configuration; nothing heavy happens before `start()`.

        `batch_window_s`: how long the worker waits for more requests once one arrives,
        so that requests sent together share a batch instead of the first going alone.
        """
        if settings.path is None:
            raise BackendError(
                ErrorKind.NOT_CONFIGURED, "no local model is configured (local_model.path)"
            )
        path = Path(settings.path).expanduser()
        if not path.is_dir():
            raise BackendError(ErrorKind.NOT_CONFIGURED, f"local model directory not found: {path}")
        self.settings = settings
        self.path = path
        self.model_name = model_name or path.resolve().name
        self._worker: BatchWorker[TransformersEngine] = BatchWorker(
            self._load,
            max_batch_size=settings.max_batch_size,
            model_name=self.model_name,
            gpu_hour_micros=settings.gpu_hour_micros,
            batch_window_s=batch_window_s,
            clock=clock,
        )

    # -- lifecycle

    async def start(self) -> None:
        """Load and warm up the model on the worker thread; idempotent, safe to await twice."""
        await self._worker.start()

    async def aclose(self) -> None:
        """Stop the worker: queued requests fail, a running batch is cut short and fails."""
        await self._worker.aclose()

    async def __aenter__(self) -> LocalBackend:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _load(self) -> TransformersEngine:
        """Build and warm up the engine; runs on the worker thread."""
        started = time.perf_counter()
        try:
            engine = TransformersEngine(self.settings, self.path)
            loaded = time.perf_counter()
            engine.warm_up()
        except BackendError:
            raise
        except Exception as err:  # a broken install, out of memory…: one clear line
            message = f"cannot start the local model in {self.path}: {type(err).__name__}: {err}"
            raise BackendError(ErrorKind.OTHER, message) from None
        log.info(
            "local model ready",
            path=str(self.path),
            device=str(engine.device),
            dtype=str(engine.dtype).removeprefix("torch."),
            positions=engine.positions,
            max_new_tokens=engine.answer_room,
            prompt_format=engine.prompt_format,
            load_s=round(loaded - started, 3),
            warm_up_s=round(time.perf_counter() - loaded, 3),
        )
        return engine

    # -- what tests, the server and the benchmark look at

    @property
    def stats(self) -> LocalStats:
        return self._worker.stats

    @property
    def queued(self) -> int:
        """Requests waiting for the worker (not counting the batch being generated)."""
        return self._worker.queued

    @property
    def engine(self) -> TransformersEngine:
        return self._worker.engine

    @property
    def model(self) -> Any:
        """The torch model (after `start()`)."""
        return self.engine.model

    @property
    def tokenizer(self) -> Any:
        return self.engine.tokenizer

    @property
    def max_positions(self) -> int:
        return self.engine.positions

    @property
    def max_new_tokens(self) -> int:
        """The answer length cap actually used (config, bounded by half the positions)."""
        return self.engine.answer_room

    @property
    def prompt_format(self) -> PromptFormat:
        return self.engine.prompt_format

    @property
    def device(self) -> str:
        return str(self.engine.device)

    def build_prompt(self, messages: Sequence[ChatMessage]) -> list[int]:
        """The token ids `complete` would feed the model for these messages."""
        return self.engine.encode_prompt(messages)

    # -- the ModelBackend protocol

    async def complete(
        self,
        request: LLMRequest,
        *,
        prompt_estimate: int = 0,
        on_delta: OnDelta | None = None,
        estimate_completion: Callable[[str], int] | None = None,
    ) -> BackendResponse:
        """Queue the request for the worker and wait for its answer.

        Sampling follows `local_model` settings, not `request.temperature` (tuned for the
        primary model). The answer is never streamed token by token: a streaming caller
        gets it as one delta. Cancelling the awaiting task withdraws a queued request; a
        request already in a batch runs on, and its answer is dropped.
        """
        engine = await self._worker.start()
        max_new_tokens = max(1, min(request.max_output_tokens, engine.answer_room))
        response = await self._worker.submit(request.messages, max_new_tokens)
        if on_delta is not None and response.text:
            result = on_delta(response.text)
            if asyncio.iscoroutine(result):
                await result
        return response


def local_backend_from_settings(
    settings: LocalModelSettings, *, model_name: str | None = None
) -> LocalBackend | None:
    """The configured local backend, or None when `local_model.path` is not set."""
    if settings.path is None:
        return None
    return LocalBackend(settings, model_name=model_name)
