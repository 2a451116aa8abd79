"""The vocabulary every model call is described in.

These types are the contract between the services (which build requests), the gateway
(which reserves budget, calls a backend and writes the ledger) and the backends, and the
ledger row each call leaves (`LedgerEntry`, `LedgerRow`). They are plain frozen
dataclasses so that services and tests can build them without any client library, and
this module sits below everything: it imports nothing of iBot, nor openai, torch,
nextcord or a database, so that config, pricing, tokens, metrics, the database layer and
the gateway can all depend on it without depending on each other.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal


class Feature(StrEnum):
    """What a model call was for; a ledger column and a budget dimension."""

    AUTO_REPLY = "auto_reply"
    ASK = "ask"
    SUMMARY = "summary"
    CHAT = "chat"
    # Embeddings of the knowledge base (ibot/services/semantic.py): no chat model, no
    # [features] section; a query's row and a backfill's differ by their note.
    KB_EMBED = "kb_embed"


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
    # Nothing to answer (an empty or blank question): refused before any call, no ledger row.
    EMPTY_QUESTION = "empty_question"
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


@dataclass(frozen=True)
class PacerStats:
    """The model-call queue at one moment (the pacer's, read by /metrics)."""

    depth: int
    oldest_wait_s: float
    in_flight: int
    depth_by_priority: dict[str, int]


# ---- the ledger row of a call ---------------------------------------------------------


def utcnow() -> datetime:
    """Now, aware, in UTC: how every time in the ledger and the database is kept."""
    return datetime.now(UTC)


NOTE_MAX = 255  # the column's length: PostgreSQL rejects a longer value outright

# The token columns, named as the fields of `Usage` are, in the order the
# reports and metrics list them.
TOKEN_COLUMNS = ("prompt_tokens", "cached_tokens", "image_tokens", "completion_tokens")


@dataclass(frozen=True, kw_only=True, slots=True)
class LedgerEntry:
    """One model call as the gateway describes it, before it gets an id.

    With `LedgerRecord` (the table) this is the one place the row is spelled out: every
    field is a column of the same name, and what is derived from the row (the stored
    values, `LedgerRow`, the log line, the metrics) is derived from these fields, so that
    a column added here and in the table (and its migration) reaches all of them.
    """

    feature: Feature | str
    backend: Backend | str
    model_requested: str
    status: CallStatus | str
    model: str | None = None  # the model that answered, which is what gets priced
    guild_id: int | None = None
    channel_id: int | None = None
    thread_id: int | None = None
    user_id: int | None = None
    request_id: str | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0
    image_tokens: int = 0
    completion_tokens: int = 0
    cost_micros: int | None = None  # None: no known price (not zero)
    latency_ms: int = 0
    error_kind: ErrorKind | str | None = None
    usage_source: UsageSource | str = UsageSource.MEASURED
    attempts: int = 1
    note: str | None = None
    call_id: str | None = None
    created_at: datetime = field(default_factory=utcnow)

    def __post_init__(self) -> None:
        # A float cost would be stored as REAL by SQLite and summed with rounding errors.
        cost = self.cost_micros
        if cost is not None and (isinstance(cost, bool) or not isinstance(cost, int)):
            raise TypeError(f"cost_micros must be an int or None, not {type(cost).__name__}")

    @property
    def model_label(self) -> str:
        """The model the call is reported and priced under: the one that answered, else
        (no answer came) the one asked for."""
        return self.model or self.model_requested


@dataclass(frozen=True, kw_only=True, slots=True)
class LedgerRow(LedgerEntry):
    """A stored ledger row: the entry as written, with its id.

    Enum-like columns come back as the stored strings (StrEnums compare equal to them),
    so rows written by a newer version with values this one does not know still load.
    """

    id: int

    @classmethod
    def from_record(cls, record: object) -> LedgerRow:
        """The row of a stored record (any object with the columns as attributes: the
        ORM's `LedgerRecord`)."""
        return cls(**{f.name: getattr(record, f.name) for f in fields(cls)})


def column_values(entry: LedgerEntry) -> dict[str, Any]:
    """The entry as the values of its row, by column name (every field is a column).

    Enums go in as their values, the strings a `LedgerRow` reads back; the note is cut
    to fit its column.
    """
    values = {f.name: _stored(getattr(entry, f.name)) for f in fields(LedgerEntry)}
    values["note"] = fit_note(entry.note)
    return values


def fit_note(note: str | None) -> str | None:
    """A note cut to its column's length (PostgreSQL rejects a longer value outright)."""
    if note is not None and len(note) > NOTE_MAX:
        return note[: NOTE_MAX - 1] + "…"
    return note


def _stored(value: Any) -> Any:
    return str(value) if isinstance(value, StrEnum) else value
