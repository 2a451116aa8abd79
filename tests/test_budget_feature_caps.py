"""A feature's own daily cap per guild (`[budgets.feature_daily_usd]`, `/budget set
feature_daily:summary`): never overspent by concurrent calls, alerted once per guild,
feature and day (across restarts), named in the refusal; and a guild cap that stops a
call alerts "spent" at once instead of never (reservations keep real spending under it).

BudgetManager is tested directly, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs
from test_budget_alerts_member import NEXT_MIDNIGHT, NOW, Clock

from cogs._render import failure_text
from cogs.budget import SCOPE_CHOICES, alert_text
from ibot.config import BudgetsSettings
from ibot.db.budgets import BudgetStore
from ibot.db.ledger import Ledger, LedgerEntry
from ibot.domain import CallContext, ErrorKind, Feature
from ibot.llm.budget import BudgetExceeded
from ibot.services.budgets import Alert, BudgetManager, Scope
from ibot.services.outcomes import Failed

GUILD = 3002
ADMIN = 9
CAP = 10_000  # 0.01 USD of summaries a day
ONE_CALL = 4_000


def manager(sessionmaker, clock: Clock, alerts: list[Alert], **settings) -> BudgetManager:
    async def sink(alert: Alert) -> None:
        alerts.append(alert)

    values = {"feature_daily_usd": {"summary": "0.01"}, **settings}
    return BudgetManager(
        ledger=Ledger(sessionmaker),
        store=BudgetStore(sessionmaker),
        settings=BudgetsSettings.model_validate(values),
        alert_sink=sink,
        clock=clock,
    )


def ctx(feature: Feature = Feature.SUMMARY, user: int = 71) -> CallContext:
    return CallContext(feature=feature, guild_id=GUILD, channel_id=5, user_id=user)


def test_feature_caps_are_read_from_the_config_and_a_wrong_name_is_one_clear_error():
    settings = BudgetsSettings.model_validate({"feature_daily_usd": {"summary": "1.50"}})
    assert settings.feature_daily_micros == {Feature.SUMMARY: 1_500_000}

    with pytest.raises(ValidationError, match="unknown feature 'sumary'; did you mean 'summary'"):
        BudgetsSettings.model_validate({"feature_daily_usd": {"sumary": "1"}})


async def test_concurrent_summaries_never_pass_the_feature_cap_and_alert_once(sessionmaker):
    clock, alerts = Clock(), []
    budgets = manager(sessionmaker, clock, alerts)

    with capture_logs() as logs:
        results = await asyncio.gather(
            *(budgets.reserve(ctx(user=u), "gpt-4o", ONE_CALL) for u in range(30)),
            return_exceptions=True,
        )
        await budgets.drain()
    held = [r for r in results if not isinstance(r, BaseException)]
    stopped = [r for r in results if isinstance(r, BudgetExceeded)]
    # 2 x 4 000 fit under 10 000, a third would not: whoever asks, it is the feature's cap.
    assert len(held) == 2 and len(stopped) == 28
    assert {e.budget for e in stopped} == {"feature_daily:summary"}
    assert {e.resets_at for e in stopped} == {NEXT_MIDNIGHT}
    [alert] = alerts
    assert (alert.scope, alert.feature, alert.threshold) == (
        Scope.FEATURE_DAILY,
        Feature.SUMMARY,
        100,
    )
    assert (alert.cap_micros, alert.user_id, alert.budget) == (
        CAP,
        None,
        "feature_daily:summary",
    )
    assert [e["feature"] for e in logs if e["event"] == "budget_cap_reached"] == [Feature.SUMMARY]

    # Other features are not the summaries' cap: /ask-gpt still gets its answer.
    ask = await budgets.reserve(ctx(Feature.ASK), "gpt-4o", ONE_CALL)
    await budgets.settle(ask, ONE_CALL)

    # A restart: still stopped, not alerted again; a new day alerts again.
    later: list[Alert] = []
    restarted = manager(sessionmaker, clock, later)
    for reservation in held:  # the two summaries answered: in the ledger, settled
        await budgets.ledger.record(
            LedgerEntry(
                feature="summary",
                backend="openai",
                model_requested="gpt-4o",
                status="ok",
                guild_id=GUILD,
                cost_micros=ONE_CALL,
                created_at=NOW,
            )
        )
        await budgets.settle(reservation, ONE_CALL)
    with pytest.raises(BudgetExceeded):
        await restarted.reserve(ctx(), "gpt-4o", CAP)
    await restarted.drain()
    assert later == []
    clock.now = NEXT_MIDNIGHT + timedelta(hours=1)
    await restarted.reserve(ctx(), "gpt-4o", ONE_CALL)  # a new day: the cap is whole again
    with pytest.raises(BudgetExceeded):
        await restarted.reserve(ctx(), "gpt-4o", CAP)
    await restarted.drain()
    assert [(a.feature, a.period_key) for a in later] == [
        (Feature.SUMMARY, f"{clock.now:%Y-%m-%d}")
    ]


async def test_budget_set_changes_a_feature_cap_and_show_lists_it(sessionmaker):
    clock, alerts = Clock(), []
    budgets = manager(sessionmaker, clock, alerts, feature_daily_usd={})
    names = [status.budget for status in await budgets.status(GUILD)]
    assert "feature_daily:summary" not in names  # no cap, no change: not listed

    change = await budgets.set_cap(GUILD, "feature_daily:summary", 5_000, changed_by=ADMIN)
    assert (change.scope, change.previous_micros, change.cap_micros) == (
        "feature_daily:summary",
        None,
        5_000,
    )
    assert await budgets.cap(GUILD, "feature_daily:summary") == 5_000
    [line] = [s for s in await budgets.status(GUILD) if s.budget == "feature_daily:summary"]
    assert (line.cap_micros, line.change) == (5_000, change)
    with pytest.raises(BudgetExceeded):
        await budgets.reserve(ctx(), "gpt-4o", 6_000)
    # A restart reads the change back from the audit table.
    assert await manager(sessionmaker, clock, []).cap(GUILD, "feature_daily:summary") == 5_000
    assert "feature_daily:summary" in SCOPE_CHOICES  # the /budget set choice exists
    with pytest.raises(ValueError):
        await budgets.set_cap(GUILD, "feature_daily:nothing", 1, changed_by=ADMIN)


async def test_a_guild_cap_that_stops_calls_is_alerted_spent_once(sessionmaker):
    """Reservations keep real spending under the cap, so waiting for spending to reach
    100 % meant the "spent" alert never came: it comes when the cap first stops a call."""
    clock, alerts = Clock(), []
    budgets = manager(sessionmaker, clock, alerts, feature_daily_usd={}, guild_daily_usd="0.01")
    first = await budgets.reserve(ctx(Feature.ASK), "gpt-4o", 6_000)
    await budgets.settle(first, 6_000)  # 60 %: the 50 % alert
    await asyncio.gather(
        *(budgets.reserve(ctx(Feature.ASK), "gpt-4o", 6_000) for _ in range(10)),
        return_exceptions=True,
    )
    await budgets.drain()
    assert [(a.scope, a.threshold) for a in alerts] == [
        (Scope.GUILD_DAILY, 50),
        (Scope.GUILD_DAILY, 100),
    ]
    assert alerts[1].spent_micros == 6_000


def test_the_feature_alert_and_refusal_name_the_feature_in_both_languages():
    alert = Alert(
        guild_id=GUILD,
        scope=Scope.FEATURE_DAILY,
        threshold=100,
        period_key=f"{NOW:%Y-%m-%d}",
        spent_micros=9_000,
        cap_micros=CAP,
        resets_at=NEXT_MIDNIGHT,
        feature=Feature.SUMMARY,
    )
    assert "quotidien des résumés" in alert_text(alert, "fr")
    assert "daily summary" in alert_text(alert, "en")
    refusal = Failed(kind=ErrorKind.BUDGET, budget="feature_daily:summary", resets_at=NEXT_MIDNIGHT)
    stamp = f"<t:{int(NEXT_MIDNIGHT.timestamp())}:R>"
    assert "quotidien des résumés" in failure_text(refusal, "fr")
    assert stamp in failure_text(refusal, "fr")
    assert "daily summary" in failure_text(refusal, "en")
