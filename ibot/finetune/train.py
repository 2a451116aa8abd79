"""Fine-tuning (`ibot finetune train --base DIR --data DIR --out DIR`).

The tutorials cut every conversation into fixed 128-token blocks padded to the full
length, so most of each batch was padding the model computed and learned on. Here:

- each sample is one DialoGPT sequence (`ibot.finetune.dialogpt`), as long as it is,
  cut from its oldest turns only when it exceeds the model's positions;
- batches are padded to their own longest sequence (`DynamicPaddingCollator`), and the
  sampler groups samples of similar lengths, so little padding is left;
- labels are ignored on padding, and on the context too (``--loss-on response``, the
  default): the model learns to answer, not to predict the question;
- the transformers `Trainer` does the rest: gradient accumulation, bf16 (or fp16) mixed
  precision on a GPU and fp32 on the CPU, checkpoints every ``--save-steps`` (the last
  ``--save-total-limit`` kept, with optimizer state) and ``--resume``.

Perplexity on the validation file is measured before and after training with the same
masking, token-weighted (exp of the mean loss per supervised token), printed and saved
in ``metrics.json``. The output directory gets the model and tokenizer through
`save_pretrained`, so `AutoModelForCausalLM.from_pretrained(out, local_files_only=True)`
and the local backend load it as they load `microsoft/DialoGPT-small`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ibot.finetune.dialogpt import IGNORE_INDEX, Encoded, LossOn, encode_samples, model_max_length
from ibot.finetune.prepare import TRAIN_FILE, VALIDATION_FILE, PrepareError, read_jsonl
from ibot.finetune.runtime import dtype_name, pick_device, pick_dtype, progress

if TYPE_CHECKING:
    import torch

METRICS_FILE = "metrics.json"
CHECKPOINTS_DIR = "checkpoints"


class TrainError(ValueError):
    """A problem with the inputs the user can fix (no data, no checkpoint…); one line."""


@dataclass
class TrainConfig:
    base: Path
    data: Path
    out: Path
    epochs: float = 3.0
    max_steps: int = -1  # > 0: stop after this many optimizer steps (overrides epochs)
    batch_size: int = 4
    grad_accum: int = 1
    learning_rate: float = 5e-5
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_length: int | None = None  # default: the model's positions
    loss_on: LossOn = "response"
    device: str = "auto"
    precision: str = "auto"  # auto: bf16 (or fp16) on a GPU, fp32 on the CPU
    eval_batch_size: int = 8
    save_steps: int = 500
    save_total_limit: int = 2
    logging_steps: int = 50
    seed: int = 42
    resume: bool | Path = False  # True: the latest checkpoint in out/checkpoints
    group_by_length: bool = True
    show_progress: bool = True


@dataclass
class EvalResult:
    loss: float
    perplexity: float
    tokens: int  # supervised tokens the loss is averaged over

    def to_json(self) -> dict[str, Any]:
        return {"loss": self.loss, "perplexity": self.perplexity, "tokens": self.tokens}


@dataclass
class _Counter:
    """Real (non-padding) tokens the training collator produced, and steps run."""

    tokens: int = 0
    steps: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class DynamicPaddingCollator:
    """Pads a batch to its own longest sequence; labels are IGNORE_INDEX on padding.

    Padding uses the pad (or eos) id with attention_mask 0; labels come from the
    features, so masking never depends on token ids (eos is both a real turn separator
    and the pad token in GPT-2 tokenizers).
    """

    def __init__(
        self,
        pad_token_id: int,
        *,
        pad_to_multiple_of: int | None = None,
        max_length: int | None = None,
        count: Callable[[int], None] | None = None,
    ) -> None:
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of
        self.max_length = max_length
        self.count = count

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        import torch

        lengths = [len(f["input_ids"]) for f in features]
        width = max(lengths)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
            if self.max_length:
                width = min(width, max(self.max_length, max(lengths)))
        input_ids = torch.full((len(features), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(features), width), dtype=torch.long)
        for row, (feature, length) in enumerate(zip(features, lengths, strict=True)):
            input_ids[row, :length] = torch.tensor(feature["input_ids"], dtype=torch.long)
            labels[row, :length] = torch.tensor(feature["labels"], dtype=torch.long)
            attention_mask[row, :length] = 1
        if self.count is not None:
            self.count(sum(lengths))
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def as_features(encoded: Sequence[Encoded]) -> list[dict[str, list[int]]]:
    return [{"input_ids": e.input_ids, "labels": e.labels} for e in encoded]


def evaluate(
    model: Any,
    features: Sequence[dict[str, list[int]]],
    collator: DynamicPaddingCollator,
    *,
    batch_size: int = 8,
    device: torch.device | None = None,
    autocast_dtype: torch.dtype | None = None,
    show_progress: bool = False,
    desc: str = "evaluating",
) -> EvalResult | None:
    """Token-weighted mean loss and perplexity on `features` (None when empty)."""
    import torch
    import torch.nn.functional as F

    if not features:
        return None
    device = device or next(model.parameters()).device
    order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for indices in progress(batches, desc=desc, enabled=show_progress, unit="batch"):
                batch = collator([features[i] for i in indices])
                batch = {k: v.to(device) for k, v in batch.items()}
                with torch.autocast(
                    device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None
                ):
                    logits = model(
                        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                    ).logits
                targets = batch["labels"][:, 1:]
                nll = F.cross_entropy(
                    logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                    targets.reshape(-1),
                    ignore_index=IGNORE_INDEX,
                    reduction="sum",
                )
                total += float(nll)
                count += int((targets != IGNORE_INDEX).sum())
    finally:
        model.train(was_training)
    if count == 0:
        return None
    loss = total / count
    return EvalResult(loss=loss, perplexity=math.exp(min(loss, 700)), tokens=count)


def load_causal_lm(path: Path, dtype: Any) -> Any:
    """`AutoModelForCausalLM.from_pretrained` offline, in `dtype` (transformers 4 and 5)."""
    import transformers
    from transformers import AutoModelForCausalLM

    major = int(transformers.__version__.split(".")[0])
    key = "dtype" if major >= 5 else "torch_dtype"
    return AutoModelForCausalLM.from_pretrained(path, local_files_only=True, **{key: dtype})


def load_tokenizer(path: Path) -> Any:
    """The tokenizer, with a pad token (GPT-2 has none: eos serves, masked by attention)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _training_arguments(config: TrainConfig, device: torch.device, dtype: torch.dtype) -> Any:
    """TrainingArguments for this run, spelled for the installed transformers."""
    import dataclasses

    import torch
    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    kwargs: dict[str, Any] = {
        "output_dir": str(config.out / CHECKPOINTS_DIR),
        "num_train_epochs": config.epochs,
        "max_steps": config.max_steps,
        "per_device_train_batch_size": config.batch_size,
        "per_device_eval_batch_size": config.eval_batch_size,
        "gradient_accumulation_steps": config.grad_accum,
        "learning_rate": config.learning_rate,
        "warmup_steps": config.warmup_steps,
        "weight_decay": config.weight_decay,
        "save_strategy": "steps",
        "save_steps": config.save_steps,
        "save_total_limit": config.save_total_limit,
        "logging_steps": config.logging_steps,
        "report_to": "none",
        "seed": config.seed,
        "data_seed": config.seed,
        "bf16": dtype == torch.bfloat16,
        "fp16": dtype == torch.float16,
        "use_cpu": device.type == "cpu",
        "dataloader_pin_memory": device.type == "cuda",
        "remove_unused_columns": False,
        "disable_tqdm": not config.show_progress,
    }
    if "eval_strategy" in names:
        kwargs["eval_strategy"] = "no"
    if config.group_by_length:
        if "train_sampling_strategy" in names:
            kwargs["train_sampling_strategy"] = "group_by_length"
        else:
            kwargs["group_by_length"] = True
    return TrainingArguments(**{k: v for k, v in kwargs.items() if k in names})


def _resume_checkpoint(config: TrainConfig) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    if config.resume is False:
        return None
    if isinstance(config.resume, Path):
        if not config.resume.is_dir():
            raise TrainError(f"no checkpoint at {config.resume}")
        return str(config.resume)
    folder = config.out / CHECKPOINTS_DIR
    # transformers leaves get_last_checkpoint unannotated; it returns a path or None.
    last: str | None = (
        get_last_checkpoint(str(folder))  # type: ignore[no-untyped-call]
        if folder.is_dir()
        else None
    )
    if last is None:
        raise TrainError(f"--resume: no checkpoint in {folder}")
    return last


def _read_split(data: Path) -> tuple[list[Any], list[Any]]:
    train_path, val_path = data / TRAIN_FILE, data / VALIDATION_FILE
    if not train_path.is_file():
        raise TrainError(f"no {TRAIN_FILE} in {data} (run `ibot finetune prepare` first)")
    try:
        train = read_jsonl(train_path)
        validation = read_jsonl(val_path) if val_path.is_file() else []
    except PrepareError as err:
        raise TrainError(str(err)) from None
    if not train:
        raise TrainError(f"{train_path} has no samples")
    return train, validation


def train(config: TrainConfig, *, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Fine-tune `config.base` on `config.data` into `config.out`; returns the metrics.

    `callbacks` are extra transformers TrainerCallbacks (tests stop a run with one).
    """
    import torch
    from transformers import Trainer, TrainerCallback, set_seed

    started = time.perf_counter()
    if not config.base.is_dir():
        raise TrainError(f"no model directory at {config.base}")
    train_samples, val_samples = _read_split(config.data)
    resume_from = _resume_checkpoint(config)
    device = pick_device(config.device)
    dtype = pick_dtype(device, config.precision)
    set_seed(config.seed)

    tokenizer = load_tokenizer(config.base)
    model = load_causal_lm(config.base, torch.float32)  # fp32 master weights; autocast on GPU
    model.config.pad_token_id = tokenizer.pad_token_id
    max_length = min(config.max_length or 10**9, model_max_length(model.config, tokenizer))

    def encode(samples: list[Any]) -> list[Encoded]:
        return encode_samples(
            tokenizer,
            [(s.context, s.response) for s in samples],
            max_length=max_length,
            loss_on=config.loss_on,
        )

    train_encoded, val_encoded = encode(train_samples), encode(val_samples)
    train_features, val_features = as_features(train_encoded), as_features(val_encoded)
    counter = _Counter()
    multiple = 8 if device.type == "cuda" else None
    eval_collator = DynamicPaddingCollator(
        tokenizer.pad_token_id, pad_to_multiple_of=multiple, max_length=max_length
    )

    def count_tokens(n: int) -> None:
        counter.tokens += n

    train_collator = DynamicPaddingCollator(
        tokenizer.pad_token_id,
        pad_to_multiple_of=multiple,
        max_length=max_length,
        count=count_tokens,
    )
    autocast = dtype if device.type == "cuda" and dtype != torch.float32 else None

    def measure(desc: str) -> EvalResult | None:
        return evaluate(
            model,
            val_features,
            eval_collator,
            batch_size=config.eval_batch_size,
            device=next(model.parameters()).device,
            autocast_dtype=autocast,
            show_progress=config.show_progress,
            desc=desc,
        )

    model.to(device)
    before = measure("validation before")

    class CountSteps(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            counter.steps += 1

    import inspect

    # transformers < 4.46 calls the tokenizer argument `tokenizer`.
    takes = "processing_class" in inspect.signature(Trainer.__init__).parameters
    trainer = Trainer(
        model=model,
        args=_training_arguments(config, device, dtype),
        data_collator=train_collator,
        train_dataset=train_features,
        callbacks=[CountSteps(), *callbacks],
        **{"processing_class" if takes else "tokenizer": tokenizer},
    )
    train_started = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=resume_from)
    train_seconds = time.perf_counter() - train_started
    after = measure("validation after")

    config.out.mkdir(parents=True, exist_ok=True)
    trainer.save_model(str(config.out))
    tokenizer.save_pretrained(config.out)
    state = trainer.state
    metrics: dict[str, Any] = {
        "base": str(config.base),
        "data": str(config.data),
        "device": device.type,
        "precision": dtype_name(dtype),
        "loss_on": config.loss_on,
        "prompt_format": "dialogpt",
        # A base with a chat template would be prompted with it by the local backend's
        # "auto" format: the trained model expects DialoGPT turns instead.
        "base_has_chat_template": bool(getattr(tokenizer, "chat_template", None)),
        "max_length": max_length,
        "train_samples": len(train_features),
        "validation_samples": len(val_features),
        "truncated_samples": sum(e.truncated for e in train_encoded + val_encoded),
        "train_tokens": sum(len(f["input_ids"]) for f in train_features),
        "supervised_train_tokens": sum(e.supervised_tokens for e in train_encoded),
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "grad_accum": config.grad_accum,
        "learning_rate": config.learning_rate,
        "global_step": state.global_step,
        "max_steps": state.max_steps,
        "completed": state.global_step >= state.max_steps,
        "steps_run": counter.steps,
        "resumed_from": Path(resume_from).name if resume_from else None,
        "train_loss": output.training_loss,
        "train_seconds": round(train_seconds, 3),
        "train_tokens_per_s": round(counter.tokens / train_seconds, 1) if train_seconds else None,
        "before": before.to_json() if before else None,
        "after": after.to_json() if after else None,
        "seconds": round(time.perf_counter() - started, 3),
    }
    (config.out / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return metrics


def format_metrics(metrics: dict[str, Any]) -> str:
    """The lines `train` prints at the end."""
    lines = [
        f"trained {metrics['steps_run']} steps (global step {metrics['global_step']}"
        f"/{metrics['max_steps']}) on {metrics['train_samples']} samples, "
        f"{metrics['device']} {metrics['precision']}, "
        f"{metrics['train_tokens_per_s']} tokens/s",
    ]
    if metrics["resumed_from"]:
        lines.append(f"resumed from {metrics['resumed_from']}")
    before, after = metrics["before"], metrics["after"]
    if before and after:
        lines.append(
            f"validation perplexity: {before['perplexity']:.2f} before → "
            f"{after['perplexity']:.2f} after (loss {before['loss']:.4f} → {after['loss']:.4f})"
        )
    else:
        lines.append("validation perplexity: no validation samples")
    if metrics.get("base_has_chat_template"):
        lines.append(
            "note: the base has a chat template but was trained on DialoGPT turns: set "
            'local_model.prompt_format = "dialogpt" for the local backend'
        )
    if metrics["truncated_samples"]:
        lines.append(
            f"{metrics['truncated_samples']} samples cut to {metrics['max_length']} tokens"
        )
    return "\n".join(lines)
