"""Answer one question: the pipeline behind `/ask-gpt` and `ibot ask`.

Discord-free: the caller passes the question, the author's display name, where it was
asked, and attachments as `AttachmentSource`s. The result is a typed outcome that the
cog (or the CLI) turns into a message; no exception escapes for an expected failure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ibot import tokens
from ibot.llm.gateway import Gateway
from ibot.llm.types import (
    Backend,
    CallContext,
    CallStatus,
    ChatMessage,
    ErrorKind,
    Feature,
    LLMCallError,
    LLMRequest,
    LLMResult,
    Usage,
)
from ibot.services.attachments import (
    AttachmentKind,
    AttachmentLimits,
    AttachmentResult,
    AttachmentSource,
    process_attachments,
)


@dataclass(frozen=True, slots=True)
class FeatureConfig:
    """The per-feature knobs a service needs (built from settings by the caller)."""

    model: str
    max_output_tokens: int
    max_prompt_tokens: int
    temperature: float | None = None


@dataclass(frozen=True, slots=True)
class Answered:
    text: str
    usage: Usage
    cost_micros: int | None
    model: str
    backend: Backend
    attachments: tuple[AttachmentResult, ...] = ()
    ledger_id: int | None = None
    # The model asked for, when a budget made a cheaper (or the local) model answer.
    degraded_from: str | None = None

    @classmethod
    def of(cls, result: LLMResult, attachments: tuple[AttachmentResult, ...] = ()) -> Answered:
        fallback = result.status is CallStatus.FALLBACK
        return cls(
            text=result.text,
            usage=result.usage,
            cost_micros=result.cost_micros,
            model=result.model,
            backend=result.backend,
            attachments=attachments,
            ledger_id=result.ledger_id,
            degraded_from=result.model_requested if fallback else None,
        )


@dataclass(frozen=True, slots=True)
class Failed:
    """The model call failed; `kind` picks the localised message shown to the user.

    For a budget refusal, `budget` names the spent cap ("guild_daily"…) and `resets_at`
    says when it frees up, so the user is told both.
    """

    kind: ErrorKind
    attachments: tuple[AttachmentResult, ...] = ()
    ledger_id: int | None = None
    budget: str | None = None
    resets_at: datetime | None = None

    @classmethod
    def of(cls, err: LLMCallError, attachments: tuple[AttachmentResult, ...] = ()) -> Failed:
        return cls(
            kind=err.kind,
            attachments=attachments,
            ledger_id=err.ledger_id,
            budget=err.budget,
            resets_at=err.resets_at,
        )


async def call_for_outcome(
    gateway: Gateway, request: LLMRequest, attachments: tuple[AttachmentResult, ...] = ()
) -> Answered | Failed:
    """One gateway call, as the typed outcome a cog renders (its ledger row is written)."""
    try:
        result = await gateway.complete(request)
    except LLMCallError as err:
        return Failed.of(err, attachments)
    return Answered.of(result, attachments)


@dataclass(frozen=True, slots=True)
class TooLong:
    """The question alone exceeds the prompt budget: nothing was sent, nothing spent."""

    tokens: int
    limit: int


AskOutcome = Answered | Failed | TooLong


@dataclass
class PromptBuilder:
    """Fills the configured templates; `today` is injectable for reproducible tests."""

    templates: Mapping[str, str]
    today: datetime | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def render(self, key: str, **values: str) -> str:
        date = (self.today or datetime.now(UTC)).strftime("%Y-%m-%d")
        return self.templates[key].format(date=date, **self.extra, **values)

    @property
    def persona(self) -> str:
        return self.render("persona")


def attachments_block(results: Sequence[AttachmentResult]) -> str:
    """The text files, inlined after the question, each fenced with its name."""
    blocks = []
    for result in results:
        if result.kind is AttachmentKind.TEXT and result.text is not None:
            blocks.append(f"\n\n--- {result.name} ---\n```\n{result.text}\n```")
    return "".join(blocks)


class AskService:
    def __init__(
        self,
        gateway: Gateway,
        prompts: PromptBuilder,
        config: FeatureConfig,
        attachment_limits: AttachmentLimits | None = None,
    ) -> None:
        self.gateway = gateway
        self.prompts = prompts
        self.config = config
        self.attachment_limits = attachment_limits or AttachmentLimits()

    async def ask(
        self,
        question: str,
        *,
        author: str,
        context: CallContext | None = None,
        attachments: Sequence[AttachmentSource] = (),
    ) -> AskOutcome:
        context = context or CallContext(feature=Feature.ASK)
        processed = tuple(await process_attachments(attachments, self.attachment_limits))
        user_text = self.prompts.render("ask", author=author, question=question)
        user_text += attachments_block(processed)
        images = tuple(r.image for r in processed if r.image is not None)
        messages = (
            ChatMessage("system", self.prompts.persona),
            ChatMessage("user", user_text, images=images),
        )
        prompt_tokens = tokens.count_messages(messages, self.config.model)
        if prompt_tokens > self.config.max_prompt_tokens:
            return TooLong(tokens=prompt_tokens, limit=self.config.max_prompt_tokens)
        request = LLMRequest(
            messages=messages,
            model=self.config.model,
            max_output_tokens=self.config.max_output_tokens,
            context=context,
            temperature=self.config.temperature,
        )
        return await call_for_outcome(self.gateway, request, processed)
