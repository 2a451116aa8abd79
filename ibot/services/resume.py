"""Answer the /ask-gpt and /summary that a crash cut off, and answer every one the same way.

A deferred command is held in the database (ibot/db/pending_interactions.py) from its
deferral to its delivered answer. `ResumeService.held` is that hold for the live path;
`answer_ask` / `answer_summary` are the one way a held command is answered, by the cog
right away or, after a crash, by `resume` at the next start: same service (AskService,
SummaryService), same gateway, same ledger, same rendering (the cogs' own).

At start, `resume` takes each row a dead process left: one younger than `max_age` (14
minutes: Discord's interaction token lasts 15, and the answer takes time) is answered
again and delivered by editing its deferred response; an older one is dropped with a
`pending_interaction_expired` line. A delivery Discord refuses (token expired: 401, the
response deleted: 404) is logged and the row dropped; nothing stops the start.

Discord-free: what needs Discord (an attachment's bytes, a channel's history, the
delivery) comes through the `ResumePort` the caller passes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import structlog

from ibot.db.pending_interactions import PendingInteraction, PendingInteractionStore
from ibot.domain import Feature, utcnow
from ibot.logging import register_secret
from ibot.services.ask import AskOutcome, AskService
from ibot.services.attachments import AttachmentSource
from ibot.services.outcomes import Answered, Failed
from ibot.services.summary import HistoryMessage, SummaryOutcome, SummaryService

log = structlog.get_logger("ibot.resume")

MAX_AGE = timedelta(minutes=14)


class ResumePort(Protocol):
    """What answering a command again needs from Discord (the cogs provide it)."""

    def attachments(self, pending: PendingInteraction) -> Sequence[AttachmentSource]: ...

    async def history(self, pending: PendingInteraction) -> Sequence[HistoryMessage]: ...

    async def deliver_ask(self, pending: PendingInteraction, outcome: AskOutcome) -> None: ...

    async def deliver_summary(
        self, pending: PendingInteraction, outcome: SummaryOutcome
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class ResumeReport:
    answered: int = 0
    expired: int = 0
    undeliverable: int = 0


class ResumeService:
    def __init__(
        self,
        store: PendingInteractionStore,
        ask: AskService,
        summary: SummaryService,
        *,
        max_age: timedelta = MAX_AGE,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.ask = ask
        self.summary = summary
        self.max_age = max_age
        self.clock = clock
        # Held by this process: a command that came before the start-up resume ran is
        # being answered live, and must not be answered twice.
        self._held: set[int] = set()

    @asynccontextmanager
    async def held(self, pending: PendingInteraction) -> AsyncIterator[None]:
        """Hold the command in the database while it is answered. Released when the
        block ends, answered or failed (the global error handler then tells the user);
        kept when the block is cancelled (a stop cut the answer short: the next start
        answers it). The store failing is logged: the answer matters more."""
        self._held.add(pending.interaction_id)
        try:
            await self.store.add(pending)
        except Exception:
            log.exception("pending_interaction_store_failed", interaction_id=pending.interaction_id)
        try:
            yield
        except asyncio.CancelledError:
            raise
        except BaseException:
            await self._release(pending)
            raise
        await self._release(pending)

    async def _release(self, pending: PendingInteraction) -> None:
        self._held.discard(pending.interaction_id)
        try:
            await self.store.remove(pending.interaction_id)
        except Exception:
            log.exception(
                "pending_interaction_release_failed", interaction_id=pending.interaction_id
            )

    async def answer_ask(
        self, pending: PendingInteraction, attachments: Sequence[AttachmentSource] = ()
    ) -> AskOutcome:
        outcome = await self.ask.ask(
            pending.request.question,
            author=pending.request.author,
            context=pending.context(),
            attachments=attachments,
        )
        if isinstance(outcome, Answered | Failed) and outcome.ledger_id is not None:
            try:
                await self.store.note_ledger(pending.interaction_id, outcome.ledger_id)
            except Exception:
                log.warning("pending_interaction_note_failed", exc_info=True)
        return outcome

    async def answer_summary(
        self, pending: PendingInteraction, history: Sequence[HistoryMessage]
    ) -> SummaryOutcome:
        return await self.summary.summarize(
            history, channel=pending.request.channel_name, context=pending.context()
        )

    async def resume(self, port: ResumePort) -> ResumeReport:
        """Answer (or drop) every command a dead process left deferred (not those this
        process holds); concurrently, as live commands are. Never raises for one
        command's failure."""
        rows = [p for p in await self.store.pending() if p.interaction_id not in self._held]
        now = self.clock()
        young: list[PendingInteraction] = []
        expired = 0
        for pending in rows:
            register_secret(pending.token)  # in memory now: masked in every log line
            age = now - pending.created_at
            if age < self.max_age:
                young.append(pending)
                continue
            expired += 1
            log.info(
                "pending_interaction_expired",
                interaction_id=pending.interaction_id,
                feature=str(pending.feature),
                user_id=pending.user_id,
                age_s=round(age.total_seconds()),
            )
            await self.store.remove(pending.interaction_id)
        results = await asyncio.gather(*(self._resume_one(p, port) for p in young))
        report = ResumeReport(
            answered=sum(results), expired=expired, undeliverable=len(results) - sum(results)
        )
        if rows:
            log.info(
                "pending_interactions_resumed",
                answered=report.answered,
                expired=report.expired,
                undeliverable=report.undeliverable,
            )
        return report

    async def _resume_one(self, pending: PendingInteraction, port: ResumePort) -> bool:
        """True once delivered; False when it could not be (the row is dropped either way)."""
        log.info(
            "pending_interaction_resuming",
            interaction_id=pending.interaction_id,
            feature=str(pending.feature),
            user_id=pending.user_id,
            previous_ledger_id=pending.ledger_id,
        )
        try:
            match pending.feature:
                case Feature.ASK:
                    outcome = await self.answer_ask(pending, port.attachments(pending))
                    await port.deliver_ask(pending, outcome)
                case Feature.SUMMARY:
                    history = await port.history(pending)
                    await port.deliver_summary(pending, await self.answer_summary(pending, history))
                case _:
                    raise ValueError(f"no resume for feature {pending.feature}")
        except Exception as err:
            log.warning(
                "pending_interaction_undeliverable",
                interaction_id=pending.interaction_id,
                feature=str(pending.feature),
                status=getattr(err, "status", None),
                code=getattr(err, "code", None),
                error=type(err).__name__,
                exc_info=getattr(err, "status", None) is None,  # a Discord refusal says enough
            )
            await self._release(pending)
            return False
        await self._release(pending)
        return True
