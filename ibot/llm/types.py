"""The vocabulary every model call is described in.

These types are the contract between the services (which build requests), the gateway
(which reserves budget, calls a backend and writes the ledger) and the backends. They are
plain frozen dataclasses so that services and tests can build them without any client
library, and so that nothing here imports openai, torch or nextcord.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Literal


class Feature(StrEnum):
    """What a model call was for; a ledger column and a budget dimension."""

    AUTO_REPLY = "auto_reply"
    ASK = "ask"
    SUMMARY = "summary"
    CHAT = "chat"


class Backend(StrEnum):
    OPENAI = "openai"
    LOCAL = "local"


class CallStatus(StrEnum):
    """Outcome of one gateway call, as stored in the ledger."""

    OK = "ok"
    ERROR = "error"
    FALLBACK = "fallback"  # answered, but not by the primary backend/model
    REFUSED = "refused"  # never sent: a budget or policy said no
    # Written before the call is sent and replaced by its outcome: a row still pending
    # at start-up is a call of a process that died, closed as ERROR/INTERRUPTED.
    PENDING = "pending"


class ErrorKind(StrEnum):
    """Why a call failed; decides retries, fallbacks and the message a user sees."""

    RATE_LIMIT = "rate_limit"  # 429 still there after the retries
    QUOTA = "insufficient_quota"  # 429 that no retry will fix
    SERVER = "server_error"  # 5xx after the retries
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    BAD_REQUEST = "bad_request"  # 400/404/422: our request is wrong, retrying is useless
    AUTH = "auth"  # 401/403: the key is wrong or revoked
    BUDGET = "budget"  # refused by a budget cap before any call
    NOT_CONFIGURED = "not_configured"  # no backend can serve the call (no key, no local model)
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"  # the process died during the call (crash, SIGKILL)
    OTHER = "other"

    @property
    def transient(self) -> bool:
        """Whether the same request may succeed if sent again a little later."""
        return self in _TRANSIENT


_TRANSIENT = frozenset(
    {ErrorKind.RATE_LIMIT, ErrorKind.SERVER, ErrorKind.TIMEOUT, ErrorKind.CONNECTION}
)


class UsageSource(StrEnum):
    MEASURED = "measured"  # the API's usage object
    ESTIMATED = "estimated"  # counted by us (interrupted stream, local tokenizer absent…)


Detail = Literal["low", "high"]
Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class ImageInput:
    """An image already downloaded, checked and resized (see services); sent inline.

    Discord CDN links are signed and expire, so images always travel as data URLs, and
    `detail` is always explicit so that the image-token estimate is exact.
    """

    data: bytes
    mime: str  # image/png, image/jpeg, image/gif, image/webp
    width: int
    height: int
    detail: Detail = "high"
    name: str = ""

    def data_url(self) -> str:
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode('ascii')}"


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str
    images: tuple[ImageInput, ...] = ()
    name: str | None = None


@dataclass(frozen=True, slots=True)
class CallContext:
    """Who and where a call is for: ledger columns, budget scopes, log fields."""

    feature: Feature
    guild_id: int | None = None
    channel_id: int | None = None
    thread_id: int | None = None
    user_id: int | None = None


@dataclass(frozen=True, slots=True)
class LLMRequest:
    messages: tuple[ChatMessage, ...]
    model: str
    max_output_tokens: int
    context: CallContext
    temperature: float | None = None
    stream: bool = False
    # Set by the gateway: the ledger row's call id, sent as X-Client-Request-Id so that a
    # call can be matched with the provider's records even when its answer never came.
    call_id: str | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one call. `prompt_tokens` already includes cached and image tokens."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    image_tokens: int = 0
    source: UsageSource = UsageSource.MEASURED

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class RateLimitInfo:
    """The x-ratelimit-* headers of the last answer, for pacing."""

    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests_s: float | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens_s: float | None = None


@dataclass(frozen=True, slots=True)
class BackendResponse:
    """What a backend returns; the gateway adds cost, latency and the ledger row."""

    text: str
    usage: Usage
    model: str  # the model that answered (response.model), which is what gets priced
    request_id: str | None = None
    finish_reason: str | None = None
    rate_limits: RateLimitInfo | None = None
    attempts: int = 1
    # Set by backends that price themselves (the local model: GPU time × price per hour);
    # None: the gateway prices the usage with the price table.
    cost_micros: int | None = None


@dataclass(frozen=True, slots=True)
class LLMResult:
    """A successful gateway call, as services see it."""

    text: str
    usage: Usage
    cost_micros: int | None  # None: the answering model has no price in the table
    latency_s: float
    backend: Backend
    model_requested: str
    model: str
    status: CallStatus
    request_id: str | None = None
    ledger_id: int | None = None
    finish_reason: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


class BackendError(Exception):
    """A backend call that failed, already classified.

    Messages never carry secrets: backends build them from status codes and error codes,
    not from request headers.
    """

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        request_id: str | None = None,
        retry_after_s: float | None = None,
        attempts: int = 1,
        model: str | None = None,
        usage: Usage | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.request_id = request_id
        self.retry_after_s = retry_after_s
        self.attempts = attempts
        self.model = model
        # Tokens billed despite the failure (a stream cut after some output), else None.
        self.usage = usage


class LLMCallError(Exception):
    """Raised by the gateway when no answer could be produced; its ledger row is written."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        ledger_id: int | None = None,
        budget: str | None = None,
        resets_at: datetime | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.ledger_id = ledger_id
        # For ErrorKind.BUDGET: which cap is spent ("guild_daily"…) and when it frees up,
        # so that the user is told both.
        self.budget = budget
        self.resets_at = resets_at
