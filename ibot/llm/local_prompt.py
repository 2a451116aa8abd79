"""How a conversation becomes the token ids a local causal LM is prompted with.

Why it is a module of its own: the prompt format is what the model was trained on
(DialoGPT turns, or the tokenizer's chat template) and how it is cut to fit the model's
window; it is pure logic over a tokenizer, testable and readable without the torch engine
(`local_engine`) or the batching worker (`local_worker`) around it. It is not the bot's
`ibot.services.prompts.PromptBuilder`, which renders the prompt *templates* into chat messages;
this one turns those messages into token ids for the local model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from ibot.domain import BackendError, ChatMessage, ErrorKind

# The formats a model is prompted in ("auto" in the settings is resolved to one of them).
PromptFormat = Literal["dialogpt", "chat_template"]


class ConversationEncoder:
    """Token ids of a conversation, in the model's training format, cut to fit.

    DialoGPT format: `turn1<eos>turn2<eos>…turnN<eos>`, the model then writes the answer
    and ends it with <eos>. System messages are left out: DialoGPT-style models never saw
    one in training, and a long persona would only push real turns out of the window.
    Chat-template format: the tokenizer's own template, system message included as long
    as it fits.

    `tokenizer` is a transformers tokenizer (anything callable as
    `tokenizer(text, add_special_tokens=False)["input_ids"]`, with `apply_chat_template`
    for the chat-template format).
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

    def encode(self, messages: Sequence[ChatMessage]) -> list[int]:
        """The prompt's token ids, at most `max_prompt_tokens` of them."""
        if self.prompt_format == "chat_template":
            return self._chat_template(messages)
        return self._dialogpt(messages)

    def _tokens(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _dialogpt(self, messages: Sequence[ChatMessage]) -> list[int]:
        turns = [m.content.strip() for m in messages if m.role != "system" and m.content.strip()]
        encoded = [[*self._tokens(text), self.eos_token_id] for text in turns[-self.max_turns :]]
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
        return self._tokens(text)
