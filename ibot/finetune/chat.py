"""A conversation with a fine-tuned model in the terminal (`ibot finetune chat`).

The prompt is the DialoGPT turn format the model was trained on: the last
``--history`` turns (yours and its own, default 7 like the training window), each
followed by end-of-text, cut from the oldest turn to leave room for the answer.
Sampling defaults are the tutorials' (top_k 100, top_p 0.7, temperature 0.8, no repeated
trigram) plus a repetition penalty against "hey, hey, hey" loops.

`chat_loop` takes the reply function and the input/output functions as arguments, so it
is tested without a terminal. ``/quit`` (or end of input) leaves, ``/reset`` forgets the
conversation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ibot.finetune.dialogpt import encode_prompt, eos_id, model_max_length

QUIT_COMMANDS = frozenset({"/quit", "/exit", "/q"})
RESET_COMMAND = "/reset"


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int = 64
    min_new_tokens: int = 1
    do_sample: bool = True
    top_k: int = 100
    top_p: float = 0.7
    temperature: float = 0.8
    no_repeat_ngram_size: int = 3
    repetition_penalty: float = 1.3


class DialoGPTChat:
    """Answers the next turn of a conversation with a causal LM and its tokenizer."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        sampling: Sampling | None = None,
        history_turns: int = 7,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.sampling = sampling or Sampling()
        self.history_turns = history_turns
        self.positions = model_max_length(model.config, tokenizer)
        if self.sampling.max_new_tokens >= self.positions:
            raise ValueError(f"max_new_tokens must be below the model's {self.positions} positions")

    @classmethod
    def load(
        cls,
        path: Path,
        *,
        device: str = "auto",
        precision: str = "auto",
        sampling: Sampling | None = None,
        history_turns: int = 7,
    ) -> DialoGPTChat:
        from ibot.finetune.runtime import pick_device, pick_dtype
        from ibot.finetune.train import load_causal_lm, load_tokenizer

        chosen = pick_device(device)
        model = load_causal_lm(path, pick_dtype(chosen, precision)).to(chosen)
        model.eval()
        return cls(model, load_tokenizer(path), sampling=sampling, history_turns=history_turns)

    def prompt_ids(self, history: Sequence[str]) -> list[int]:
        turns = list(history)[-self.history_turns :]
        return encode_prompt(
            self.tokenizer, turns, max_length=self.positions - self.sampling.max_new_tokens
        )

    def reply(self, history: Sequence[str]) -> str:
        """The model's answer to the conversation so far (`history`, oldest first)."""
        import torch

        ids = self.prompt_ids(history)
        device = next(self.model.parameters()).device
        input_ids = torch.tensor([ids], dtype=torch.long, device=device)
        eos = eos_id(self.tokenizer)
        sampling = asdict(self.sampling)
        if not self.sampling.do_sample:
            for name in ("top_k", "top_p", "temperature"):
                sampling.pop(name)
        with torch.no_grad():
            output = self.model.generate(
                input_ids,
                attention_mask=torch.ones_like(input_ids),
                pad_token_id=eos,
                eos_token_id=eos,
                **sampling,
            )
        text: str = self.tokenizer.decode(output[0, len(ids) :], skip_special_tokens=True)
        return text.strip()


def chat_loop(
    reply: Callable[[list[str]], str],
    *,
    read: Callable[[str], str] = input,
    write: Callable[[str], None] = print,
    bot_name: str = "Bot",
) -> list[str]:
    """Read a line, answer it, keep the history; returns the history at the end."""
    history: list[str] = []
    write(f"Talking to {bot_name}. /reset forgets the conversation, /quit leaves.")
    while True:
        try:
            text = read("You: ").strip()
        except (EOFError, KeyboardInterrupt):
            write("")
            break
        if not text:
            continue
        if text.lower() in QUIT_COMMANDS:
            break
        if text.lower() == RESET_COMMAND:
            history.clear()
            write("(conversation forgotten)")
            continue
        history.append(text)
        answer = reply(list(history))
        history.append(answer)
        write(f"{bot_name}: {answer or '…'}")
    return history
