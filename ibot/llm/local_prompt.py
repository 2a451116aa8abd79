"""How a conversation becomes the token ids a local causal LM is prompted with.

Why it is a module of its own: the prompt format is what the model was trained on
(DialoGPT turns, or the tokenizer's chat template) and how it is cut to fit the model's
window; it is pure logic over a tokenizer, testable and readable without the torch engine
(`local_engine`) or the batching worker (`local_worker`) around it. It is not the bot's
`ibot.services.prompts.PromptBuilder`, which renders the prompt *templates* into chat messages;
this one turns those messages into token ids for the local model.

Sources (the server's solved threads a `GroundedMessage` carries as notes) are put in
front of the question in its turn when they fit in what the conversation leaves of the
window, the answer's room being already set aside; each note is cut to a fair share, the
weakest notes go first when even `MIN_NOTE_TOKENS` each do not fit, and the question is
never cut to make room for them. They have the lowest priority of all: older turns and
the persona are kept first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from ibot.domain import BackendError, ChatMessage, ErrorKind
from ibot.llm.grounded import GroundedMessage

# The formats a model is prompted in ("auto" in the settings is resolved to one of them).
PromptFormat = Literal["dialogpt", "chat_template"]

# A source note is quoted with at least this many tokens (about its title and link) or
# its whole length when shorter: fewer notes rather than notes cut to nothing.
MIN_NOTE_TOKENS = 24


def fair_shares(sizes: Sequence[int], budget: int) -> list[int]:
    """Split `budget` tokens among pieces of `sizes` tokens: equal parts, a piece smaller
    than its part keeps all of it and leaves the rest to the larger ones."""
    shares = [0] * len(sizes)
    left = max(0, budget)
    order = sorted(range(len(sizes)), key=lambda i: sizes[i])
    for done, index in enumerate(order):
        share = min(sizes[index], left // (len(order) - done))
        shares[index] = share
        left -= share
    return shares


def _plain(message: ChatMessage) -> ChatMessage:
    """The message as the local model reads it: without its sources block."""
    if isinstance(message, GroundedMessage):
        return ChatMessage(message.role, message.bare, message.images, message.name)
    return message


class ConversationEncoder:
    """Token ids of a conversation, in the model's training format, cut to fit.

    DialoGPT format: `turn1<eos>turn2<eos>…turnN<eos>`, the model then writes the answer
    and ends it with <eos>. System messages are left out: DialoGPT-style models never saw
    one in training, and a long persona would only push real turns out of the window.
    Chat-template format: the tokenizer's own template, system message included as long
    as it fits.

    `tokenizer` is a transformers tokenizer (anything callable as
    `tokenizer(text, add_special_tokens=False)["input_ids"]`, with `apply_chat_template`
    and `decode` for the chat-template format).
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

    def _notes(self, message: ChatMessage | None, room: int) -> list[int]:
        """The token ids of `message`'s source notes (heading, notes, each followed by a
        blank line) in at most `room` tokens; [] when not even one note fits."""
        if not isinstance(message, GroundedMessage) or not message.notes:
            return []
        heading = self._tokens(message.heading.strip() + "\n\n") if message.heading else []
        separator = self._tokens("\n\n")
        notes = [self._tokens(note.strip()) for note in message.notes]
        for count in range(len(notes), 0, -1):
            chosen = notes[:count]
            budget = room - len(heading) - count * len(separator)
            shares = fair_shares([len(note) for note in chosen], budget)
            if all(s >= min(len(n), MIN_NOTE_TOKENS) for s, n in zip(shares, chosen, strict=True)):
                ids = list(heading)
                for note, share in zip(chosen, shares, strict=True):
                    ids += note[:share] + separator
                return ids
        return []

    def _dialogpt(self, messages: Sequence[ChatMessage]) -> list[int]:
        said = [m for m in messages if m.role != "system" and _plain(m).content.strip()]
        said = said[-self.max_turns :]
        turns = [_plain(m).content.strip() for m in said]
        encoded = [[*self._tokens(text), self.eos_token_id] for text in turns]
        total = sum(len(turn) for turn in encoded)
        while len(encoded) > 1 and total > self.max_prompt_tokens:
            total -= len(encoded.pop(0))  # the oldest turn goes first
        ids = [token for turn in encoded for token in turn]
        if not ids:
            return [self.eos_token_id]  # nothing said yet: the model opens the conversation
        if len(ids) > self.max_prompt_tokens:
            # The last turn alone is too long: keep its end, which is what gets answered.
            return ids[-self.max_prompt_tokens :]
        # The sources go in front of the question, in its turn, in the room left.
        notes = self._notes(said[-1], self.max_prompt_tokens - len(ids))
        last = len(encoded[-1])
        return ids[:-last] + notes + ids[-last:]

    def _chat_template(self, messages: Sequence[ChatMessage]) -> list[int]:
        system = [m for m in messages if m.role == "system" and m.content.strip()]
        said = [m for m in messages if m.role != "system" and _plain(m).content.strip()]
        said = said[-self.max_turns :]
        grounded = said[-1] if said else None
        turns = [_plain(m) for m in said]
        while True:
            # Templates that insist on user/assistant alternation must start with a user.
            while len(turns) > 1 and turns[0].role == "assistant":
                turns.pop(0)
            ids = self._render([*system, *turns])
            if len(ids) <= self.max_prompt_tokens:
                return self._with_notes(ids, system, turns, grounded)
            if len(turns) > 1:
                turns.pop(0)
            elif system:
                system = []  # the question matters more than the persona
            else:
                return ids[-self.max_prompt_tokens :]

    def _with_notes(
        self,
        ids: list[int],
        system: Sequence[ChatMessage],
        turns: Sequence[ChatMessage],
        grounded: ChatMessage | None,
    ) -> list[int]:
        """`ids` (the rendered conversation, which fits) with the last turn's source
        notes in front of its text when they fit too; `ids` as it is otherwise."""
        room = self.max_prompt_tokens - len(ids)
        while room > 0:
            notes = self._notes(grounded, room)
            if not notes:
                break
            last = turns[-1]
            text = self.tokenizer.decode(notes) + last.content.strip()
            with_notes = self._render([*system, *turns[:-1], ChatMessage(last.role, text)])
            over = len(with_notes) - self.max_prompt_tokens
            if over <= 0:
                return with_notes
            room -= over  # the template and the joined text count a little differently
        return ids

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
