"""Per-feature daily caps: configured or set with /budget, reserved like the other caps
(30 calls at once never overspend one), degrading in the same order (cheaper model,
local model, refusal naming the cap and its reset), alerted once per guild, feature and
day across restarts; and a guild cap's 100 % alert, which now fires when the cap first
stops a call.

BudgetManager is tested directly, on SQLite and PostgreSQL, behind the real gateway and
the real OpenAI client talking to the fake OpenAI server where a model answers.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from cogs._render import failure_text
from cogs.budget import SCOPE_CHOICES, alert_text
from ibot.config import BudgetsSettings, ConfigError, load_settings
from ibot.db.budgets import BudgetStore
from ibot.db.ledger import Ledger, LedgerEntry
from ibot.domain import (
    Backend,
    BackendResponse,
    CallContext,
    CallStatus,
    ChatMessage,
    ErrorKind,
    Feature,
    LLMCallError,
    LLMRequest,
    Usage,
)
from ibot.llm.budget import BudgetExceeded
from ibot.llm.gateway import ModelGateway
from ibot.pricing import default_price_table
from ibot.services.budgets import CAPS, Alert, BudgetManager, Cap, Scope
from ibot.services.outcomes import Failed

GUILD, OTHER_GUILD = 4001, 4002
ALICE = 81
NOW = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
TODAY = f"{NOW:%Y-%m-%d}"
NEXT_MIDNIGHT = NOW.replace(hour=0) + timedelta(days=1)
SUMMARY_CAP = "feature_daily:summary"


class Clock:
    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def manager(sessionmaker, clock: Clock, alerts: list[Alert], **caps: object) -> BudgetManager:
    """A manager as the bot builds one (a fresh one is a restart), its sink recording."""

    async def sink(alert: Alert) -> None:
        alerts.append(alert)

    return BudgetManager(
        ledger=Ledger(sessionmaker),
        store=BudgetStore(sessionmaker),
        settings=BudgetsSettings.model_validate(caps),
        alert_sink=sink,
        clock=clock,
    )


def ctx(feature: Feature = Feature.SUMMARY, guild: int = GUILD) -> CallContext:
    return CallContext(feature=feature, guild_id=guild, channel_id=5, user_id=ALICE)


def request(feature: Feature = Feature.SUMMARY, model: str = "gpt-4o") -> LLMRequest:
    messages = (ChatMessage("system", "Résume."), ChatMessage("user", "alice: Bonjour !"))
    return LLMRequest(messages=messages, model=model, max_output_tokens=50, context=ctx(feature))


async def spend(
    budgets: BudgetManager, micros: int, when: datetime, feature: Feature = Feature.SUMMARY
) -> None:
    """One answered call: reserved, in the ledger, settled."""
    reservation = await budgets.reserve(ctx(feature), "gpt-4o", micros)
    await budgets.ledger.record(
        LedgerEntry(
            feature=feature.value,
            backend="openai",
            model_requested="gpt-4o",
            status="ok",
            guild_id=GUILD,
            user_id=ALICE,
            cost_micros=micros,
            created_at=when,
        )
    )
    await budgets.settle(reservation, micros)


async def refused(
    budgets: BudgetManager, micros: int | None = 4_000, feature: Feature = Feature.SUMMARY
) -> BudgetExceeded:
    with pytest.raises(BudgetExceeded) as caught:
        await budgets.reserve(ctx(feature), "gpt-4o", micros)
    return caught.value


class LocalModel:
    """A local model that answers for free (no GPU in tests)."""

    name = Backend.LOCAL
    model = "tiny-local"

    async def complete(self, request, **kw) -> BackendResponse:
        return BackendResponse(
            text="Résumé local.",
            usage=Usage(prompt_tokens=30, completion_tokens=4),
            model=self.model,
        )


def capped_gateway(gateway, budgets: BudgetManager, **kw) -> ModelGateway:
    """The conftest gateway's OpenAI client and ledger, with these budgets."""
    return ModelGateway(
        ledger=budgets.ledger,
        prices=default_price_table(),
        openai=gateway.openai,
        budget=budgets,
        **kw,
    )


def worst_case(gw: ModelGateway, req: LLMRequest) -> int:
    worst = gw.estimate(req).worst_case_micros
    assert worst is not None
    return worst


# ---- configuration and names ---------------------------------------------------------


def test_feature_caps_come_from_a_toml_table_and_an_unknown_feature_is_one_line(tmp_path: Path):
    good = tmp_path / "good.toml"
    good.write_text("[budgets.feature_daily_usd]\nsummary = 0.5\nkb_embed = 0.02\n")
    settings = load_settings(good)
    assert settings.budgets.feature_daily_micros == {
        Feature.SUMMARY: 500_000,
        Feature.KB_EMBED: 20_000,
    }

    bad = tmp_path / "bad.toml"
    bad.write_text("[budgets.feature_daily_usd]\nsummry = 0.5\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(bad)
    text = str(caught.value)
    assert "\n" not in text
    assert text == (
        "config error: budgets.feature_daily_usd: unknown feature 'summry'; did you mean "
        "'summary'? the features are auto_reply, ask, summary, chat, kb_embed"
    )


def test_every_cap_name_fits_the_scope_columns_and_can_be_chosen_in_budget_set():
    assert {cap.name for cap in CAPS} >= {f"feature_daily:{f.value}" for f in Feature}
    # budget_changes.scope and budget_alerts.scope are String(32).
    assert max(len(cap.name) for cap in CAPS) <= 32
    assert set(SCOPE_CHOICES.values()) == {cap.name for cap in CAPS}
    assert len(SCOPE_CHOICES) <= 25  # Discord's limit of choices per option
    assert Cap.of(SCOPE_CHOICES[SUMMARY_CAP]) == Cap(Scope.FEATURE_DAILY, Feature.SUMMARY)
    for nonsense in ("feature_daily", "feature_daily:resume", "guild_daily:summary"):
        with pytest.raises(ValueError):
            Cap.of(nonsense)


# ---- reserving -----------------------------------------------------------------------


async def test_a_feature_cap_stops_only_its_feature_and_is_named_with_its_reset(sessionmaker):
    clock, alerts = Clock(), []
    budgets = manager(sessionmaker, clock, alerts, feature_daily_usd={"summary": "0.01"})
    await spend(budgets, 8_000, NOW)

    stopped = await refused(budgets, 4_000)
    assert (stopped.budget, stopped.resets_at) == (SUMMARY_CAP, NEXT_MIDNIGHT)
    # /ask-gpt and the forum are not summaries: the summary cap leaves them alone.
    for feature in (Feature.ASK, Feature.AUTO_REPLY):
        await budgets.settle(await budgets.reserve(ctx(feature), "gpt-4o", 4_000), 4_000)
    # The local model costs nothing: it always fits.
    await budgets.settle(await budgets.reserve(ctx(), "tiny-local", 0), 0)
    # Another guild's summaries have their own cap.
    other = await budgets.reserve(ctx(guild=OTHER_GUILD), "gpt-4o", 9_000)
    assert other.micros == 9_000


async def test_30_calls_at_once_never_overspend_a_feature_cap(sessionmaker, gateway):
    clock, alerts = Clock(), []
    budgets = manager(sessionmaker, clock, alerts)
    gw = capped_gateway(gateway, budgets)
    cap = 10 * worst_case(gw, request())
    await budgets.set_cap(GUILD, SUMMARY_CAP, cap, changed_by=42)

    with capture_logs() as logs:
        outcomes = await asyncio.gather(
            *(gw.complete(request()) for _ in range(30)), return_exceptions=True
        )
        await budgets.drain()

    answered = [o for o in outcomes if not isinstance(o, BaseException)]
    stopped = [o for o in outcomes if isinstance(o, LLMCallError)]
    assert len(answered) + len(stopped) == 30
    assert 10 <= len(answered) < 30  # worst cases held; a few fit once real costs settle
    assert {(e.kind, e.budget, e.resets_at) for e in stopped} == {
        (ErrorKind.BUDGET, SUMMARY_CAP, NEXT_MIDNIGHT)
    }
    rows = await budgets.ledger.rows()
    assert sum(r.cost_micros or 0 for r in rows) <= cap
    assert len([r for r in gateway.fake.requests if r.served]) == len(answered)
    # One alert for the 20-odd refusals, and the log line that goes with it.
    [alert] = alerts
    assert (alert.scope, alert.feature, alert.threshold) == (
        Scope.FEATURE_DAILY,
        Feature.SUMMARY,
        100,
    )
    assert (alert.budget, alert.cap_micros, alert.resets_at) == (SUMMARY_CAP, cap, NEXT_MIDNIGHT)
    [reached] = [entry for entry in logs if entry["event"] == "budget_cap_reached"]
    assert (reached["scope"], reached["feature"], reached["guild_id"]) == (
        "feature_daily",
        Feature.SUMMARY,
        GUILD,
    )
    status = {s.budget: s for s in await budgets.status(GUILD)}
    assert status[SUMMARY_CAP].reserved_micros == 0
    assert status[SUMMARY_CAP].spent_micros == sum(r.cost_micros or 0 for r in rows)


async def test_a_feature_cap_degrades_cheaper_model_then_local_then_refuses(sessionmaker, gateway):
    clock, alerts = Clock(), []
    budgets = manager(sessionmaker, clock, alerts)
    probe = capped_gateway(gateway, budgets)
    mini = worst_case(probe, request(model="gpt-4o-mini"))
    assert mini < worst_case(probe, request())
    await budgets.set_cap(GUILD, SUMMARY_CAP, mini + 1, changed_by=42)
    degrade = {Feature.SUMMARY: ["gpt-4o-mini"]}

    cheaper = await capped_gateway(gateway, budgets, degrade=degrade).complete(request())
    assert cheaper.status is CallStatus.FALLBACK
    assert (cheaper.model_requested, cheaper.model) == ("gpt-4o", "gpt-4o-mini-2024-07-18")

    local = await capped_gateway(gateway, budgets, degrade=degrade, local=LocalModel()).complete(
        request()
    )
    assert (local.status, local.backend) == (CallStatus.FALLBACK, Backend.LOCAL)

    with pytest.raises(LLMCallError) as caught:
        await capped_gateway(gateway, budgets, degrade=degrade).complete(request())
    assert (caught.value.kind, caught.value.budget) == (ErrorKind.BUDGET, SUMMARY_CAP)
    rows = await budgets.ledger.rows()
    assert [r.status for r in rows] == ["fallback", "fallback", "refused"]
    assert all(SUMMARY_CAP in (r.note or "") for r in rows)
    await budgets.drain()
    assert [a.budget for a in alerts] == [SUMMARY_CAP]  # reached once, alerted once


def test_the_refusal_names_the_feature_cap_and_its_reset_in_both_languages():
    refusal = Failed(kind=ErrorKind.BUDGET, budget=SUMMARY_CAP, resets_at=NEXT_MIDNIGHT)
    stamp = f"<t:{int(NEXT_MIDNIGHT.timestamp())}:R>"
    assert failure_text(refusal, "fr") == (
        f"Le budget quotidien des résumés est épuisé ; il se renouvelle {stamp}."
    )
    assert failure_text(refusal, "en") == f"The daily summary budget is spent; it renews {stamp}."
    for cap in CAPS:  # every feature's cap has a name in both languages
        for lang in ("fr", "en"):
            shown = failure_text(Failed(kind=ErrorKind.BUDGET, budget=cap.name), lang)
            assert cap.name not in shown


# ---- alerts --------------------------------------------------------------------------


async def test_a_feature_cap_is_alerted_once_a_day_across_restarts(sessionmaker):
    clock, alerts = Clock(), []
    caps = {"feature_daily_usd": {"summary": "0.01"}}
    budgets = manager(sessionmaker, clock, alerts, **caps)
    await spend(budgets, 7_000, NOW)  # 70 %: feature caps get no 50 / 80 % alerts
    await budgets.drain()
    assert alerts == []

    await refused(budgets)
    await refused(budgets)
    await budgets.drain()
    [alert] = alerts
    assert (alert.budget, alert.spent_micros, alert.cap_micros) == (SUMMARY_CAP, 7_000, 10_000)
    assert alert.period_key == TODAY and alert.user_id is None

    # A restart: budget_alerts remembers today's alert.
    restarted_alerts: list[Alert] = []
    restarted = manager(sessionmaker, clock, restarted_alerts, **caps)
    assert (await refused(restarted)).budget == SUMMARY_CAP
    await spend(restarted, 3_000, NOW)  # real spending up to the cap: still no repeat
    await restarted.drain()
    assert restarted_alerts == []

    # Tomorrow: reached again by real spending, alerted again.
    clock.now = NEXT_MIDNIGHT + timedelta(hours=1)
    await spend(restarted, 10_000, clock.now)
    await restarted.drain()
    assert [(a.budget, a.period_key, a.spent_micros) for a in restarted_alerts] == [
        (SUMMARY_CAP, f"{clock.now:%Y-%m-%d}", 10_000)
    ]


async def test_the_guild_caps_spent_alert_fires_when_the_cap_first_stops_a_call(sessionmaker):
    clock, alerts = Clock(), []
    budgets = manager(sessionmaker, clock, alerts, guild_daily_usd="1", guild_monthly_usd="100")
    await spend(budgets, 850_000, NOW, Feature.ASK)  # 85 %: the 80 % alert, as before
    await budgets.drain()
    assert [(a.scope, a.threshold) for a in alerts] == [(Scope.GUILD_DAILY, 80)]

    # 0.85 spent + 0.20 held would pass 1.00: the call is stopped, the cap is spent.
    with capture_logs() as logs:
        stopped = await asyncio.gather(*(refused(budgets, 200_000) for _ in range(5)))
        await budgets.drain()
    assert {e.budget for e in stopped} == {"guild_daily"}
    assert [(a.scope, a.threshold, a.spent_micros) for a in alerts[1:]] == [
        (Scope.GUILD_DAILY, 100, 850_000)
    ]
    assert alert_text(alerts[1], "fr").startswith(
        "🛑 Budget quotidien du serveur épuisé (0.85 / 1.00 USD)"
    )
    assert [e["scope"] for e in logs if e["event"] == "budget_cap_reached"] == ["guild_daily"]

    # Once per period: not again after a restart, nor when spending then gets to 100 %.
    restarted_alerts: list[Alert] = []
    restarted = manager(
        sessionmaker, clock, restarted_alerts, guild_daily_usd="1", guild_monthly_usd="100"
    )
    await refused(restarted, 200_000)
    await spend(restarted, 150_000, NOW, Feature.ASK)
    await restarted.drain()
    assert restarted_alerts == []

    # A new day: stopped at once (a call bigger than the cap) is "spent" straight away,
    # and the 50 / 80 % it jumped over are not sent after it.
    clock.now = NEXT_MIDNIGHT + timedelta(hours=1)
    await refused(restarted, 1_500_000)
    await spend(restarted, 900_000, clock.now, Feature.ASK)
    await restarted.drain()
    assert [(a.threshold, a.period_key) for a in restarted_alerts] == [
        (100, f"{clock.now:%Y-%m-%d}")
    ]


async def test_a_stopped_call_alerts_nothing_when_the_settings_leave_100_out(sessionmaker):
    clock, alerts = Clock(), []
    budgets = manager(sessionmaker, clock, alerts, guild_daily_usd="1", alert_thresholds=[0.5, 0.8])
    await refused(budgets, 2_000_000)
    await budgets.drain()
    assert alerts == []


def test_the_feature_alert_names_the_cap_and_its_reset_in_both_languages():
    alert = Alert(
        guild_id=GUILD,
        scope=Scope.FEATURE_DAILY,
        threshold=100,
        period_key=TODAY,
        spent_micros=490_000,
        cap_micros=500_000,
        resets_at=NEXT_MIDNIGHT,
        feature=Feature.SUMMARY,
    )
    stamp = f"<t:{int(NEXT_MIDNIGHT.timestamp())}:R>"
    assert alert_text(alert, "fr") == (
        "🛑 Budget quotidien des résumés épuisé (0.49 / 0.50 USD) : les demandes passent au "
        f"modèle moins cher ou sont refusées jusqu'au renouvellement, {stamp}."
    )
    assert alert_text(alert, "en") == (
        "🛑 The daily summary budget is spent (0.49 / 0.50 USD): requests go to the cheaper "
        f"model or are refused until it renews {stamp}."
    )


# ---- /budget set and show ------------------------------------------------------------


async def test_a_feature_cap_set_at_run_time_is_audited_shown_and_survives_a_restart(
    sessionmaker,
):
    clock, alerts = Clock(), []
    caps = {"feature_daily_usd": {"chat": "2"}}
    budgets = manager(sessionmaker, clock, alerts, **caps)
    # Only capped features have a /budget show line (chat, from the TOML).
    shown = [s.budget for s in await budgets.status(GUILD)]
    assert shown == ["guild_daily", "guild_monthly", "user_daily", "feature_daily:chat"]

    await spend(budgets, 120_000, NOW)
    change = await budgets.set_cap(GUILD, SUMMARY_CAP, 500_000, changed_by=42)
    assert (change.scope, change.cap_micros, change.previous_micros) == (SUMMARY_CAP, 500_000, None)
    [stored] = await budgets.store.changes(GUILD, SUMMARY_CAP)
    assert (stored.changed_by, stored.changed_at) == (42, NOW)

    restarted = manager(sessionmaker, clock, alerts, **caps)
    assert await restarted.cap(GUILD, SUMMARY_CAP) == 500_000
    assert await restarted.cap(OTHER_GUILD, SUMMARY_CAP) is None
    status = {s.budget: s for s in await restarted.status(GUILD)}
    line = status[SUMMARY_CAP]
    assert (line.cap_micros, line.spent_micros, line.change) == (500_000, 120_000, stored)
    assert line.resets_at == NEXT_MIDNIGHT
    assert "feature_daily:ask" not in status
