"""A member's own daily cap, reached: one alert per member and day in the admin channel,
whatever the concurrency, across restarts and across processes; the member's refusal
names the cap and its reset.

BudgetManager is tested directly, on SQLite and PostgreSQL (the `budget_alerts` unique
key is what makes "once" hold between processes).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from structlog.testing import capture_logs

from cogs._render import failure_text
from cogs.budget import alert_text
from ibot.config import BudgetsSettings
from ibot.db.budgets import BudgetStore
from ibot.db.ledger import Ledger, LedgerEntry
from ibot.domain import CallContext, ErrorKind, Feature
from ibot.llm.budget import BudgetExceeded
from ibot.services.budgets import Alert, BudgetManager, Scope
from ibot.services.outcomes import Failed

GUILD = 3001
ALICE, BOB = 71, 72
NOW = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
NEXT_MIDNIGHT = NOW.replace(hour=0) + timedelta(days=1)
CAP = 10_000  # 0.01 USD a member a day
ONE_CALL = 4_000  # a call's worst case


class Clock:
    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def manager(sessionmaker, clock: Clock, alerts: list[Alert], **caps: str) -> BudgetManager:
    """A manager as the bot builds one (a fresh one is a restart), its sink recording."""

    async def sink(alert: Alert) -> None:
        alerts.append(alert)

    return BudgetManager(
        ledger=Ledger(sessionmaker),
        store=BudgetStore(sessionmaker),
        settings=BudgetsSettings.model_validate({"user_daily_usd": "0.01", **caps}),
        alert_sink=sink,
        clock=clock,
    )


def ctx(user: int, feature: Feature = Feature.ASK) -> CallContext:
    return CallContext(feature=feature, guild_id=GUILD, channel_id=5, user_id=user)


async def spend(budgets: BudgetManager, user: int, micros: int, when: datetime) -> None:
    """One answered call of `user`: reserved, in the ledger, settled."""
    reservation = await budgets.reserve(ctx(user), "gpt-4o", micros)
    await budgets.ledger.record(
        LedgerEntry(
            feature="ask",
            backend="openai",
            model_requested="gpt-4o",
            status="ok",
            guild_id=GUILD,
            user_id=user,
            cost_micros=micros,
            created_at=when,
        )
    )
    await budgets.settle(reservation, micros)


async def refused(
    budgets: BudgetManager, user: int, micros: int | None = ONE_CALL
) -> BudgetExceeded:
    with pytest.raises(BudgetExceeded) as caught:
        await budgets.reserve(ctx(user), "gpt-4o", micros)
    return caught.value


async def test_a_member_reaching_their_cap_is_alerted_once_a_day_concurrency_and_restart(
    sessionmaker,
):
    clock, alerts = Clock(), []
    budgets = manager(sessionmaker, clock, alerts)
    await spend(budgets, ALICE, 7_000, NOW)  # 70 %: members get no 50 / 80 % alerts
    await budgets.drain()
    assert alerts == []

    # 30 of Alice's calls at once, none fits any more: one alert, not 30.
    with capture_logs() as logs:
        stopped = await asyncio.gather(
            *(budgets.reserve(ctx(ALICE), "gpt-4o", ONE_CALL) for _ in range(30)),
            return_exceptions=True,
        )
        await budgets.drain()
    assert all(isinstance(e, BudgetExceeded) and e.budget == "user_daily" for e in stopped)
    [alert] = alerts
    assert (alert.user_id, alert.scope, alert.threshold) == (ALICE, Scope.USER_DAILY, 100)
    assert (alert.spent_micros, alert.cap_micros) == (7_000, CAP)
    assert (alert.period_key, alert.resets_at) == (f"{NOW:%Y-%m-%d}", NEXT_MIDNIGHT)
    [reached] = [entry for entry in logs if entry["event"] == "budget_cap_reached"]
    assert (reached["guild_id"], reached["user_id"]) == (GUILD, ALICE)
    assert (reached["cap_micros"], reached["spent_micros"]) == (CAP, 7_000)

    # Bob's cap is his own: Alice reaching hers neither stops nor alerts about him.
    await spend(budgets, BOB, ONE_CALL, NOW)
    await budgets.drain()
    assert len(alerts) == 1

    # A restart: the new process knows from budget_alerts that Alice's alert was sent.
    restarted_alerts: list[Alert] = []
    restarted = manager(sessionmaker, clock, restarted_alerts)
    assert (await refused(restarted, ALICE)).budget == "user_daily"
    await restarted.drain()
    assert restarted_alerts == []

    # Bob reaches his cap by real spending (up to it exactly): his own alert.
    await spend(restarted, BOB, CAP - ONE_CALL, NOW)
    await restarted.drain()
    assert [(a.user_id, a.spent_micros) for a in restarted_alerts] == [(BOB, CAP)]

    # Tomorrow is a new period: Alice's cap, reached again, is alerted again.
    clock.now = NEXT_MIDNIGHT + timedelta(hours=2)
    await spend(restarted, ALICE, 8_000, clock.now)
    await refused(restarted, ALICE)
    await restarted.drain()
    assert [(a.user_id, a.period_key) for a in restarted_alerts[1:]] == [
        (ALICE, f"{clock.now:%Y-%m-%d}")
    ]
    assert restarted_alerts[1].resets_at == NEXT_MIDNIGHT + timedelta(days=1)


async def test_two_processes_stopping_the_same_member_alert_once(sessionmaker):
    clock, alerts = Clock(), []
    first, second = manager(sessionmaker, clock, alerts), manager(sessionmaker, clock, alerts)
    await spend(first, ALICE, 7_000, NOW)
    await second.status(GUILD, ALICE)  # the second process reads the spending too

    await asyncio.gather(refused(first, ALICE), refused(second, ALICE))
    await asyncio.gather(first.drain(), second.drain())

    assert [(a.user_id, a.threshold) for a in alerts] == [(ALICE, 100)]


async def test_what_does_not_reach_a_member_cap_alerts_nothing(sessionmaker):
    clock, alerts = Clock(), []
    budgets = manager(sessionmaker, clock, alerts, guild_daily_usd="0.001")
    # The guild's cap stops this call, not Alice's own (she spent nothing): the guild's
    # cap is reached (its own alert), no member's.
    assert (await refused(budgets, ALICE)).budget == "guild_daily"
    # An unpriced model is refused whatever was spent: no cap was reached by it.
    await refused(budgets, BOB, None)
    await budgets.drain()
    assert [(a.scope, a.user_id) for a in alerts] == [(Scope.GUILD_DAILY, None)]


async def test_forum_auto_replies_never_reach_a_member_cap(sessionmaker):
    """They are not the member's to ration: past the member's cap, nothing is alerted."""
    clock, alerts = Clock(), []
    budgets = manager(sessionmaker, clock, alerts)
    for _ in range(3):
        reservation = await budgets.reserve(ctx(ALICE, Feature.AUTO_REPLY), "gpt-4o", 6_000)
        await budgets.settle(reservation, 6_000)
    await budgets.drain()
    assert alerts == []


async def test_a_member_cap_of_zero_stops_calls_without_alerting(sessionmaker):
    """An admin who sets 0 stopped the spending on purpose: no alert to tell them so."""
    clock, alerts = Clock(), []
    budgets = manager(sessionmaker, clock, alerts, user_daily_usd="0")
    assert (await refused(budgets, ALICE)).budget == "user_daily"
    await budgets.drain()
    assert alerts == []


def test_the_member_alert_names_them_the_cap_and_the_reset_in_both_languages():
    alert = Alert(
        guild_id=GUILD,
        scope=Scope.USER_DAILY,
        threshold=100,
        period_key=f"{NOW:%Y-%m-%d}",
        spent_micros=496_000,
        cap_micros=500_000,
        resets_at=NEXT_MIDNIGHT,
        user_id=ALICE,
    )
    stamp = f"<t:{int(NEXT_MIDNIGHT.timestamp())}:R>"

    assert alert_text(alert, "fr") == (
        f"🛑 <@{ALICE}> a atteint son plafond quotidien de 0.5000 USD (0.4960 USD dépensés) : "
        f"ses demandes passent au modèle moins cher ou sont refusées jusqu'au "
        f"renouvellement, {stamp}."
    )
    assert alert_text(alert, "en") == (
        f"🛑 <@{ALICE}> reached their daily cap of 0.5000 USD (0.4960 USD spent): their "
        f"requests go to the cheaper model or are refused until it renews {stamp}."
    )


def test_the_members_refusal_names_their_cap_and_when_it_resets():
    refusal = Failed(kind=ErrorKind.BUDGET, budget="user_daily", resets_at=NEXT_MIDNIGHT)
    stamp = f"<t:{int(NEXT_MIDNIGHT.timestamp())}:R>"
    assert failure_text(refusal, "fr") == (
        f"Le budget quotidien par membre est épuisé ; il se renouvelle {stamp}."
    )
    assert (
        failure_text(refusal, "en") == f"The per-member daily budget is spent; it renews {stamp}."
    )
