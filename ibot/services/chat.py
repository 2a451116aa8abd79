"""Chat mode: the bot answers every message in the GPT channel(s), remembering the
recent conversation of each channel within a token budget.

Discord-free. nextcord delivers a replayed MESSAGE_CREATE (after a gateway RESUME) to
`on_message` again, so messages already handled are recognised by id and skipped.
Messages of one channel are answered in order, one at a time.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass

from ibot import tokens
from ibot.domain import CallContext, ChatMessage, LLMRequest
from ibot.llm.gateway import ModelGateway
from ibot.services.outcomes import Answered, Failed, call_for_outcome
from ibot.services.prompts import FeatureConfig, PromptBuilder

SEEN_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class Duplicate:
    """This message was already answered (a replayed gateway event)."""


@dataclass(frozen=True, slots=True)
class Turn:
    """One earlier message of a conversation, as read from Discord history."""

    author: str
    content: str
    from_bot: bool


ChatOutcome = Answered | Failed | Duplicate


class ChatService:
    def __init__(
        self,
        gateway: ModelGateway,
        prompts: PromptBuilder,
        config: FeatureConfig,
        *,
        memory_messages: int = 40,
    ) -> None:
        self.gateway = gateway
        self.prompts = prompts
        self.config = config
        self._memory: dict[int, deque[ChatMessage]] = defaultdict(
            lambda: deque(maxlen=memory_messages)
        )
        self._locks: dict[int, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._seen: OrderedDict[int, None] = OrderedDict()

    def _first_time(self, message_id: int) -> bool:
        if message_id in self._seen:
            return False
        self._seen[message_id] = None
        if len(self._seen) > SEEN_LIMIT:
            self._seen.popitem(last=False)
        return True

    async def reply(
        self,
        *,
        channel_id: int,
        message_id: int,
        author: str,
        content: str,
        context: CallContext,
        history: Sequence[Turn] | None = None,
    ) -> ChatOutcome:
        """Answer one message; `history` replaces the channel memory (forum follow-ups)."""
        if not self._first_time(message_id):
            return Duplicate()
        async with self._locks[channel_id]:
            memory = self._memory[channel_id]
            if history is not None:
                memory.clear()
                memory.extend(
                    ChatMessage("assistant", turn.content)
                    if turn.from_bot
                    else ChatMessage("user", f"{turn.author}: {turn.content}")
                    for turn in history
                )
            user = ChatMessage("user", f"{author}: {content}")
            system = ChatMessage(
                "system", self.prompts.persona + "\n\n" + self.prompts.render("chat")
            )
            messages = tokens.fit_messages(
                [system, *memory, user], self.config.max_prompt_tokens, self.config.model
            )
            request = LLMRequest(
                messages=tuple(messages),
                model=self.config.model,
                max_output_tokens=self.config.max_output_tokens,
                context=context,
                temperature=self.config.temperature,
            )
            outcome = await call_for_outcome(self.gateway, request)
            if isinstance(outcome, Answered):
                memory.append(user)
                memory.append(ChatMessage("assistant", outcome.text))
            return outcome
