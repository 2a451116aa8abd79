"""What the fake received and what it answered: the ledger a test reconciles against.

iBot keeps its own ledger of every model call; the point of the fake is to check that
ledger against what was really served and billed. So each request is recorded on arrival
(a hanging one too) and completed as it is answered, in one shape that every route fills
and every test reads. Only the data lives here; the server fills the records.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RecordedRequest:
    """What the server received and what it answered."""

    body: dict[str, Any]
    status: int
    endpoint: str = "chat.completions"  # or "embeddings"
    model: str | None = None
    request_id: str | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0
    image_tokens: int = 0
    completion_tokens: int = 0
    fault: str | None = None
    had_authorization: bool = False
    client_request_id: str | None = None  # the X-Client-Request-Id header
    # Tokens counted and generation started: OpenAI bills this even when the client goes
    # away before the answer arrives (what `served` cannot see).
    billed: bool = False
    at: float = field(default_factory=time.time)

    @property
    def served(self) -> bool:
        """True when the answer was delivered and billed (status 200, usage sent)."""
        return self.status == 200 and self.fault is None


@dataclass(frozen=True)
class UsageTotals:
    """Sums over the served requests: what OpenAI's invoice would say."""

    requests: int
    prompt_tokens: int
    cached_tokens: int
    image_tokens: int
    completion_tokens: int


def served_totals(requests: Iterable[RecordedRequest]) -> UsageTotals:
    """The usage of the requests that were served (see `RecordedRequest.served`)."""
    served = [r for r in requests if r.served]
    return UsageTotals(
        requests=len(served),
        prompt_tokens=sum(r.prompt_tokens for r in served),
        cached_tokens=sum(r.cached_tokens for r in served),
        image_tokens=sum(r.image_tokens for r in served),
        completion_tokens=sum(r.completion_tokens for r in served),
    )
