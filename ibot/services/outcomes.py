"""The typed outcomes of a model-backed feature, which a cog (or the CLI) turns into a
message: answered, failed (with why), or refused before any call (too long).

Shared by /ask-gpt, the forum auto-reply, the chat channel and the CLI, so each renders
the same facts the same way; no exception escapes a service for an expected failure.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime

from ibot.domain import (
    Backend,
    CallStatus,
    ErrorKind,
    LLMCallError,
    LLMRequest,
    LLMResult,
    Usage,
)
from ibot.llm.gateway import ModelGateway
from ibot.services.attachments import AttachmentResult
from ibot.services.knowledge import Hit


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
    # The solved threads quoted in the prompt as numbered sources ([1] is the first).
    sources: tuple[Hit, ...] = ()

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
    """The model call failed, or was refused before any (a budget, an empty question);
    `kind` picks the localised message shown to the user.

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
    gateway: ModelGateway,
    request: LLMRequest,
    attachments: tuple[AttachmentResult, ...] = (),
    sources: tuple[Hit, ...] = (),
) -> Answered | Failed:
    """One gateway call, as the typed outcome a cog renders (its ledger row is written)."""
    try:
        result = await gateway.complete(request)
    except LLMCallError as err:
        return Failed.of(err, attachments)
    return dataclasses.replace(Answered.of(result, attachments), sources=sources)


@dataclass(frozen=True, slots=True)
class TooLong:
    """The question alone exceeds the prompt budget: nothing was sent, nothing spent."""

    tokens: int
    limit: int
