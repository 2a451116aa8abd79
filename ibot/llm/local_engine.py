"""The torch/transformers engine of the local backend: load a causal LM, generate batches.

Why it is a module of its own: it is the only code that touches torch and transformers
(heavy and optional: `pip install -e ".[local]"`). They are imported when an engine is
built, on the worker thread when the backend starts, never when this module is imported,
so `ibot --help` and a bot without a local model never load them. Everything else of the
local backend (batching in `local_worker`, prompts in `local_prompt`) is plain Python.

- Batches are left padded, with an attention mask: ONE `generate` per batch, and each
  answer is what it would have been alone.
- The prompt plus the answer must fit the model's positions (GPT-2: 1024): the answer
  may take at most half of them, the prompt is cut to the rest (`ConversationEncoder`).
- Usage is counted by the model's own tokenizer: the prompt's ids, and the new tokens up
  to and including the first end-of-text.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ibot.config import LocalModelSettings
from ibot.domain import BackendError, ChatMessage, ErrorKind
from ibot.llm.local_prompt import ConversationEncoder, PromptFormat
from ibot.llm.local_worker import GenerationOutput

# Config attributes that hold a model's context length, by model family.
_POSITION_ATTRIBUTES = (
    "n_positions",
    "max_position_embeddings",
    "n_ctx",
    "max_sequence_length",
    "seq_length",
)
_FALLBACK_POSITIONS = 1024


class TransformersEngine:
    """Model, tokenizer and generation settings; used by the worker thread only.

    Implements `ibot.llm.local_worker.LocalEngine`. Building one loads the model: seconds,
    and a `BackendError` (NOT_CONFIGURED) naming what is wrong with the directory.
    """

    def __init__(self, settings: LocalModelSettings, path: Path) -> None:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        self.torch: Any = torch
        self.settings = settings
        self.device: Any = _resolve_device(torch, settings.device)
        self.dtype: Any = _resolve_dtype(torch, settings.dtype, self.device)
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
            self.tokenizer: Any = AutoTokenizer.from_pretrained(path, local_files_only=True)
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
        self.model: Any = model.to(self.device).eval()

        self.eos_ids = _eos_ids(self.model.generation_config, self.tokenizer)
        if not self.eos_ids:
            raise BackendError(
                ErrorKind.NOT_CONFIGURED, f"the tokenizer in {path} has no end-of-text token"
            )
        eos = self.tokenizer.eos_token_id
        self.eos_id: int = eos if isinstance(eos, int) else self.eos_ids[0]
        pad = self.tokenizer.pad_token_id
        self.pad_id: int = pad if isinstance(pad, int) else self.eos_id

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
        self.encoder = ConversationEncoder(
            self.tokenizer,
            prompt_format=self.prompt_format,
            max_prompt_tokens=self.positions - self.answer_room,
            max_turns=settings.max_context_turns,
            eos_token_id=self.eos_id,
        )

    def encode_prompt(self, messages: Sequence[ChatMessage]) -> list[int]:
        """The token ids `generate` is fed for these messages (format and window applied)."""
        return self.encoder.encode(messages)

    def warm_up(self) -> None:
        """One short greedy generation: allocates buffers and kernels before any user waits."""
        self._generate([[self.eos_id]], max_new_tokens=2, sample=False, should_stop=None)

    def generate(
        self, prompts: list[list[int]], max_new: list[int], should_stop: Callable[[], bool]
    ) -> list[GenerationOutput]:
        """One batch, sampled or greedy as configured; cut short once `should_stop()`."""
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
            abandoned: Callable[[], bool] = should_stop  # narrowed for the class below

            class _Abandoned(StoppingCriteria):
                """Ends generation early once every request of the batch is cancelled."""

                def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                    stop = bool(abandoned())
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
        rows: list[list[int]] = output[:, width:].tolist()
        return rows

    def _output(self, prompt: list[int], generated: list[int], limit: int) -> GenerationOutput:
        """The answer's text and token count: tokens up to and including the first eos."""
        eos = set(self.eos_ids)
        end = next((i for i, token in enumerate(generated) if token in eos), None)
        if end is not None and end < limit:
            kept, completion, finish = generated[:end], end + 1, "stop"
        else:
            kept = generated[:limit]
            completion, finish = len(kept), "length"
        text = self.tokenizer.decode(kept, skip_special_tokens=True).strip()
        return GenerationOutput(text, len(prompt), completion, finish)

    def close(self) -> None:
        del self.model
        if self.device.type == "cuda":
            self.torch.cuda.empty_cache()


def _max_positions(config: Any, tokenizer: Any) -> int:
    for name in _POSITION_ATTRIBUTES:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < 1_000_000 else _FALLBACK_POSITIONS


@contextlib.contextmanager
def _no_progress_bars() -> Iterator[None]:
    """Loading bars would garble the bot's JSON log lines; the load is logged once instead."""
    from transformers.utils import logging

    hf_logging: Any = logging  # its progress-bar switches are untyped
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
