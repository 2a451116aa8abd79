"""A near duplicate of a solved thread gets a short answer that points to it.

Why: a forum post or an /ask-gpt question that scores `knowledge.duplicate_threshold` or
more against one of the guild's solved threads has been answered already. Writing the
full answer again with the feature's main model costs the most for the least: a few
lines summarising that thread's solution, with its link, are what the member needs, and
the feature's cheaper model writes them well at a fraction of the price (and with a
smaller `max_output_tokens`). The message then says so ("Déjà résolu ici : …", see
`cogs/_render.py`), with the usual cost line and feedback buttons.

Discord-free. The services (`ask`, `forum`) build the request (the `duplicate` template
in place of `sources`, quoting that one thread); this module makes the call and says
what comes of it:

- answered (by the cheaper model, or by the local model when OpenAI could not): an
  `AlreadySolved`, an `Answered` that also names the thread;
- refused by a budget: `Failed`, the refusal's message. The gateway has already tried
  the feature's fallbacks for that request (the local model); the normal answer costs
  more and would be refused as well;
- failed in a way that belongs to the cheaper model (unknown to this server, its own
  rate limit or outage, an unexpected error): None, and the service gives the normal
  answer instead, with all of its own fallbacks. A failure of the account or of the
  connection (key, quota, timeout, network) would only fail again: `Failed` at once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import structlog

from ibot.domain import ErrorKind, LLMCallError, LLMRequest
from ibot.llm.gateway import ModelGateway
from ibot.services.attachments import AttachmentResult
from ibot.services.knowledge import Hit
from ibot.services.outcomes import Answered, Failed

log = structlog.get_logger("ibot.duplicates")

# Failures of the short answer after which the normal answer is tried (module doc).
NORMAL_ANSWER_AFTER = frozenset(
    {ErrorKind.BAD_REQUEST, ErrorKind.RATE_LIMIT, ErrorKind.SERVER, ErrorKind.OTHER}
)


@dataclass(frozen=True, slots=True)
class AlreadySolved(Answered):
    """A short answer to a near duplicate of `solved`, the thread the message links."""

    solved: Hit = field(kw_only=True)

    @classmethod
    def of_answer(cls, answered: Answered, solved: Hit) -> AlreadySolved:
        values = {f.name: getattr(answered, f.name) for f in dataclasses.fields(Answered)}
        return cls(**{**values, "sources": (solved,)}, solved=solved)


async def answer_duplicate(
    gateway: ModelGateway,
    request: LLMRequest,
    solved: Hit,
    attachments: tuple[AttachmentResult, ...] = (),
) -> AlreadySolved | Failed | None:
    """The short answer to `request` (built with the `duplicate` template and the cheaper
    model), a clear failure, or None: give the normal answer instead (module doc)."""
    try:
        result = await gateway.complete(request)
    except LLMCallError as err:
        if err.kind in NORMAL_ANSWER_AFTER:
            log.warning(
                "duplicate_answer_failed",
                model=request.model,
                error_kind=err.kind.value,
                thread_id=solved.thread_id,
                ledger_id=err.ledger_id,
            )
            return None
        return Failed.of(err, attachments)
    return AlreadySolved.of_answer(Answered.of(result, attachments), solved)
