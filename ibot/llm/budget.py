"""The budget hook the gateway asks before every call.

The gateway reserves a call's worst-case cost before sending it and settles the
reservation with the real cost afterwards, so that concurrent calls can never push
spending past a cap. The real caps come with the budgets feature; until then
`AllowAll` lets every call through. Reservations live in memory only: after a crash
they are simply gone and only the ledger's real costs count.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from ibot.domain import CallContext


@dataclass(frozen=True, slots=True)
class Reservation:
    """Money held for one call in flight, to be settled with its real cost."""

    context: CallContext
    model: str
    micros: int
    token: int = 0  # the hook's own handle


class BudgetExceeded(Exception):
    """A cap would be passed: the call must not be sent.

    `budget` names the cap for the user ("guild_daily", "feature_daily:summary"…; see
    ibot.services.budgets.Cap), `resets_at` says when it frees up.
    """

    def __init__(self, budget: str, resets_at: datetime | None = None) -> None:
        super().__init__(f"budget {budget} is spent")
        self.budget = budget
        self.resets_at = resets_at


class BudgetHook(Protocol):
    async def reserve(
        self, context: CallContext, model: str, worst_case_micros: int | None
    ) -> Reservation:
        """Hold `worst_case_micros` against every cap that applies, or raise BudgetExceeded.

        `worst_case_micros` is None when the model has no price: the hook decides whether
        an unpriced call may run.
        """
        ...

    async def settle(self, reservation: Reservation, actual_micros: int | None) -> None:
        """Replace the reservation by the real cost (0 for a call that cost nothing)."""
        ...


class AllowAll:
    """The hook with no caps: every call is allowed, nothing is held."""

    async def reserve(
        self, context: CallContext, model: str, worst_case_micros: int | None
    ) -> Reservation:
        return Reservation(context=context, model=model, micros=worst_case_micros or 0)

    async def settle(self, reservation: Reservation, actual_micros: int | None) -> None:
        return None
