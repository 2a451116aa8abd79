"""The local backend: a causal LM (GPT-2, DialoGPT, a fine-tuned one…) served in-process.

Why it looks like this:

- torch and transformers are heavy and optional (`pip install -e ".[local]"`): they are
  imported by the worker thread when the backend starts, never when this module is
  imported, so `ibot --help` and a bot without a local model never load them.
- Generation is blocking, seconds-long work. One worker thread owns the model and serves a
  queue, so the event loop (Discord heartbeats, other answers) is never blocked; each
  request is an asyncio future resolved with `loop.call_soon_threadsafe`.
- Requests that wait together are batched: left padding plus an attention mask, ONE
  `generate` per batch. On a GPU (and even on a CPU) a batch of 8 costs little more than
  one request, which is what keeps a small server answering when OpenAI is down for all.
- The prompt is built the way the model was trained: DialoGPT turns (each followed by the
  end-of-text token) or the tokenizer's chat template, cut from the OLDEST turn so that the
  prompt plus the answer fit the model's positions (GPT-2: 1024).
- Usage is counted by the model's own tokenizer, and the backend prices itself: the GPU
  hour price × the batch's generation time ÷ the batch size (0 when no price is set).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import structlog

from ibot.config import LocalModelSettings
from ibot.llm.types import (
    Backend,
    BackendError,
    BackendResponse,
    ChatMessage,
    ErrorKind,
    LLMRequest,
    Usage,
    UsageSource,
)

OnDelta = Callable[[str], Awaitable[None] | None]
PromptFormat = Literal["dialogpt", "chat_template"]

log = structlog.get_logger("ibot.local")

# Config attributes that hold a model's context length, by model family.
_POSITION_ATTRIBUTES = (
    "n_positions",
    "max_position_embeddings",
    "n_ctx",
    "max_sequence_length",
    "seq_length",
)
_FALLBACK_POSITIONS = 1024


@dataclass(slots=True)
class LocalStats:
    """What the worker did since start; a snapshot is returned by `LocalBackend.stats`."""

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


@dataclass(frozen=True, slots=True)
class _Output:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


# ---- prompts -------------------------------------------------------------------------------


class PromptBuilder:
    """Token ids of a conversation, in the model's training format, cut to fit.

    DialoGPT format: `turn1<eos>turn2<eos>…turnN<eos>`, the model then writes the answer
    and ends it with <eos>. System messages are left out: DialoGPT-style models never saw
    one in training, and a long persona would only push real turns out of the window.
    Chat-template format: the tokenizer's own template, system message included as long
    as it fits.
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        prompt_format: PromptFormat,
        max_prompt_tokens: int,
        max_turns: int,
        eos_token_id: int,
    ) -> None:
        if max_prompt_tokens < 1:
            raise ValueError("max_prompt_tokens must be positive")
        self.tokenizer = tokenizer
        self.prompt_format = prompt_format
        self.max_prompt_tokens = max_prompt_tokens
        self.max_turns = max_turns
        self.eos_token_id = eos_token_id

    def build(self, messages: Sequence[ChatMessage]) -> list[int]:
        if self.prompt_format == "chat_template":
            return self._chat_template(messages)
        return self._dialogpt(messages)

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _dialogpt(self, messages: Sequence[ChatMessage]) -> list[int]:
        turns = [m.content.strip() for m in messages if m.role != "system" and m.content.strip()]
        encoded = [[*self._encode(text), self.eos_token_id] for text in turns[-self.max_turns :]]
        total = sum(len(turn) for turn in encoded)
        while len(encoded) > 1 and total > self.max_prompt_tokens:
            total -= len(encoded.pop(0))  # the oldest turn goes first
        ids = [token for turn in encoded for token in turn]
        if not ids:
            return [self.eos_token_id]  # nothing said yet: the model opens the conversation
        # The last turn alone is too long: keep its end, which is what gets answered.
        return ids[-self.max_prompt_tokens :]

    def _chat_template(self, messages: Sequence[ChatMessage]) -> list[int]:
        system = [m for m in messages if m.role == "system" and m.content.strip()]
        turns = [m for m in messages if m.role != "system" and m.content.strip()]
        turns = turns[-self.max_turns :]
        while True:
            # Templates that insist on user/assistant alternation must start with a user.
            while len(turns) > 1 and turns[0].role == "assistant":
                turns.pop(0)
            ids = self._render([*system, *turns])
            if len(ids) <= self.max_prompt_tokens:
                return ids
            if len(turns) > 1:
                turns.pop(0)
            elif system:
                system = []  # the question matters more than the persona
            else:
                return ids[-self.max_prompt_tokens :]

    def _render(self, messages: Sequence[ChatMessage]) -> list[int]:
        conversation = [{"role": m.role, "content": m.content.strip()} for m in messages]
        try:
            text = self.tokenizer.apply_chat_template(
                conversation, tokenize=False, add_generation_prompt=True
            )
        except Exception as err:
            raise BackendError(
                ErrorKind.BAD_REQUEST, f"the model's chat template failed: {err}"
            ) from None
        return self._encode(text)


# ---- the model, owned by the worker thread -------------------------------------------------


def _max_positions(config: Any, tokenizer: Any) -> int:
    for name in _POSITION_ATTRIBUTES:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < 1_000_000 else _FALLBACK_POSITIONS


class _Engine:
    """Model, tokenizer and generation settings; used by the worker thread only."""

    def __init__(self, settings: LocalModelSettings, path: Path) -> None:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        self.torch = torch
        self.settings = settings
        self.device = _resolve_device(torch, settings.device)
        self.dtype = _resolve_dtype(torch, settings.dtype, self.device)
        if not (path / "config.json").is_file():
            raise BackendError(
                ErrorKind.NOT_CONFIGURED,
                f"{path} is not a transformers model directory (no config.json); "
                "save one with save_pretrained() or `ibot finetune train`",
            )
        try:
            config = AutoConfig.from_pretrained(path, local_files_only=True)
        except Exception as err:
            raise BackendError(
                ErrorKind.NOT_CONFIGURED, f"cannot read the model config in {path}: {err}"
            ) from None
        if getattr(config, "model_type", None) not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
            raise BackendError(
                ErrorKind.NOT_CONFIGURED,
                f"{path} holds a {getattr(config, 'model_type', 'unknown')!r} model, "
                "not a causal language model (GPT-2, DialoGPT, Llama, Qwen…)",
            )
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except Exception as err:
            raise BackendError(
                ErrorKind.NOT_CONFIGURED, f"cannot load the tokenizer in {path}: {err}"
            ) from None
        try:
            with _no_progress_bars():
                model = AutoModelForCausalLM.from_pretrained(
                    path, local_files_only=True, dtype=self.dtype
                )
        except Exception as err:
            raise BackendError(
                ErrorKind.NOT_CONFIGURED, f"cannot load the model weights in {path}: {err}"
            ) from None
        self.model = model.to(self.device).eval()

        self.eos_ids = _eos_ids(self.model.generation_config, self.tokenizer)
        if not self.eos_ids:
            raise BackendError(
                ErrorKind.NOT_CONFIGURED, f"the tokenizer in {path} has no end-of-text token"
            )
        eos = self.tokenizer.eos_token_id
        self.eos_id = eos if isinstance(eos, int) else self.eos_ids[0]
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if isinstance(pad, int) else self.eos_id

        self.positions = _max_positions(self.model.config, self.tokenizer)
        # The answer may take at most half the window: a prompt always has room.
        self.answer_room = max(1, min(settings.max_new_tokens, self.positions // 2))
        chat = bool(getattr(self.tokenizer, "chat_template", None))
        fmt = settings.prompt_format
        if fmt == "chat_template" and not chat:
            raise BackendError(
                ErrorKind.NOT_CONFIGURED,
                f"local_model.prompt_format is chat_template but the tokenizer in {path} has none",
            )
        self.prompt_format: PromptFormat = (
            fmt if fmt != "auto" else ("chat_template" if chat else "dialogpt")
        )
        self.builder = PromptBuilder(
            self.tokenizer,
            prompt_format=self.prompt_format,
            max_prompt_tokens=self.positions - self.answer_room,
            max_turns=settings.max_context_turns,
            eos_token_id=self.eos_id,
        )

    def warm_up(self) -> None:
        """One short greedy generation: allocates buffers and kernels before any user waits."""
        self._generate([[self.eos_id]], max_new_tokens=2, sample=False, should_stop=None)

    def generate(
        self, prompts: list[list[int]], max_new: list[int], should_stop: Callable[[], bool]
    ) -> list[_Output]:
        sequences = self._generate(
            prompts,
            max_new_tokens=max(max_new),
            sample=self.settings.do_sample,
            should_stop=should_stop,
        )
        return [
            self._output(prompt, generated, limit)
            for prompt, generated, limit in zip(prompts, sequences, max_new, strict=True)
        ]

    def _generate(
        self,
        prompts: list[list[int]],
        *,
        max_new_tokens: int,
        sample: bool,
        should_stop: Callable[[], bool] | None,
    ) -> list[list[int]]:
        """One `generate` call over left-padded prompts; returns each row's new tokens."""
        torch = self.torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        width = max(len(ids) for ids in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, ids in enumerate(prompts):
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention[row, width - len(ids) :] = 1

        config = copy.deepcopy(self.model.generation_config)
        settings = self.settings
        options: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "min_new_tokens": min(settings.min_new_tokens, max_new_tokens),
            "do_sample": sample,
            "num_beams": 1,
            "pad_token_id": self.pad_id,
            "eos_token_id": self.eos_ids,
            "no_repeat_ngram_size": settings.no_repeat_ngram_size,
            "repetition_penalty": settings.repetition_penalty,
            "max_length": None,
        }
        if sample:
            options.update(
                top_k=settings.top_k, top_p=settings.top_p, temperature=settings.temperature
            )
        else:  # defaults a saved generation_config may carry would only cause warnings
            options.update(top_k=None, top_p=None, temperature=None)
        config.update(**options)

        stopping = StoppingCriteriaList()
        if should_stop is not None:

            class _Abandoned(StoppingCriteria):
                """Ends generation early once every request of the batch is cancelled."""

                def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                    stop = bool(should_stop())
                    return torch.full(
                        (input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device
                    )

            stopping.append(_Abandoned())

        with torch.inference_mode():
            output = self.model.generate(
                input_ids=input_ids.to(self.device),
                attention_mask=attention.to(self.device),
                generation_config=config,
                stopping_criteria=stopping,
            )
        return output[:, width:].tolist()

    def _output(self, prompt: list[int], generated: list[int], limit: int) -> _Output:
        """The answer's text and token count: tokens up to and including the first eos."""
        eos = set(self.eos_ids)
        end = next((i for i, token in enumerate(generated) if token in eos), None)
        if end is not None and end < limit:
            kept, completion, finish = generated[:end], end + 1, "stop"
        else:
            kept = generated[:limit]
            completion, finish = len(kept), "length"
        text = self.tokenizer.decode(kept, skip_special_tokens=True).strip()
        return _Output(text, len(prompt), completion, finish)

    def close(self) -> None:
        del self.model
        if self.device.type == "cuda":
            self.torch.cuda.empty_cache()


@contextlib.contextmanager
def _no_progress_bars() -> Iterator[None]:
    """Loading bars would garble the bot's JSON log lines; the load is logged once instead."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _resolve_device(torch: Any, wanted: str) -> Any:
    if wanted == "cpu":
        return torch.device("cpu")
    available = torch.cuda.is_available()
    if wanted == "cuda" and not available:
        raise BackendError(
            ErrorKind.NOT_CONFIGURED, "local_model.device is cuda but no CUDA GPU is available"
        )
    return torch.device("cuda" if available else "cpu")


def _resolve_dtype(torch: Any, wanted: str, device: Any) -> Any:
    if wanted != "auto":
        return getattr(torch, wanted)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def _eos_ids(generation_config: Any, tokenizer: Any) -> list[int]:
    """Every token that ends an answer: the generation config's (chat models list several)."""
    found = getattr(generation_config, "eos_token_id", None)
    ids = [found] if isinstance(found, int) else list(found or [])
    if isinstance(tokenizer.eos_token_id, int) and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


# ---- the backend ---------------------------------------------------------------------------


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
        self._batch_window_s = batch_window_s
        self._clock = clock
        self._cond = threading.Condition()
        self._queue: deque[_Job] = deque()
        self._stats = LocalStats()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._ready: asyncio.Future[None] | None = None
        self._engine: _Engine | None = None

    # -- lifecycle

    async def start(self) -> None:
        """Load and warm up the model on the worker thread; idempotent, safe to await twice."""
        if self._ready is None:
            if self._stopping:
                raise BackendError(ErrorKind.OTHER, "the local model has been stopped")
            loop = asyncio.get_running_loop()
            self._ready = loop.create_future()
            self._thread = threading.Thread(
                target=self._run, args=(loop, self._ready), name="ibot-local-model", daemon=True
            )
            self._thread.start()
        await asyncio.shield(self._ready)

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

    async def __aenter__(self) -> LocalBackend:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- what tests, the server and the benchmark look at

    @property
    def stats(self) -> LocalStats:
        with self._cond:
            return replace(self._stats)

    @property
    def queued(self) -> int:
        """Requests waiting for the worker (not counting the batch being generated)."""
        with self._cond:
            return len(self._queue)

    @property
    def engine(self) -> _Engine:
        if self._engine is None:
            raise RuntimeError("the local backend is not started")
        return self._engine

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
        return self.engine.builder.build(messages)

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
        await self.start()
        loop = asyncio.get_running_loop()
        job = _Job(
            messages=request.messages,
            max_new_tokens=max(1, min(request.max_output_tokens, self.engine.answer_room)),
            loop=loop,
            future=loop.create_future(),
        )
        with self._cond:
            if self._stopping:
                raise BackendError(ErrorKind.OTHER, "the local model was stopped")
            self._queue.append(job)
            self._cond.notify_all()
        try:
            response = await job.future
        except asyncio.CancelledError:
            self._withdraw(job)
            raise
        if on_delta is not None and response.text:
            result = on_delta(response.text)
            if asyncio.iscoroutine(result):
                await result
        return response

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
        started = time.perf_counter()
        try:
            engine = _Engine(self.settings, self.path)
            loaded = time.perf_counter()
            engine.warm_up()
        except BackendError as err:
            _settle(loop, ready, error=err)
            return
        except Exception as err:  # a broken install, out of memory…: one clear line
            message = f"cannot start the local model in {self.path}: {type(err).__name__}: {err}"
            _settle(loop, ready, error=BackendError(ErrorKind.OTHER, message))
            return
        self._engine = engine
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
        _settle(loop, ready)
        try:
            while (batch := self._next_batch()) is not None:
                if batch:
                    self._serve(engine, batch)
        finally:
            engine.close()

    def _next_batch(self) -> list[_Job] | None:
        """Wait for work; None when stopping. Waits `batch_window_s` for companions."""
        limit = self.settings.max_batch_size
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

    def _serve(self, engine: _Engine, batch: list[_Job]) -> None:
        prompts: list[list[int]] = []
        accepted: list[_Job] = []
        for job in batch:
            try:
                prompts.append(engine.builder.build(job.messages))
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
        cost = round(self.settings.gpu_hour_micros * share_s / 3600)
        log.debug("local batch", size=len(accepted), seconds=round(elapsed, 3))
        for job, out in zip(accepted, outputs, strict=True):
            response = BackendResponse(
                text=out.text,
                usage=Usage(
                    prompt_tokens=out.prompt_tokens,
                    completion_tokens=out.completion_tokens,
                    source=UsageSource.MEASURED,
                ),
                model=self.model_name,
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


def local_backend_from_settings(
    settings: LocalModelSettings, *, model_name: str | None = None
) -> LocalBackend | None:
    """The configured local backend, or None when `local_model.path` is not set."""
    if settings.path is None:
        return None
    return LocalBackend(settings, model_name=model_name)
