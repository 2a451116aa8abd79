"""Budgets: caps that concurrent calls never overshoot, the degrade order, refusals that
say which budget is spent and when it resets, audited changes, and alerts sent once.

Everything runs for real: AskService -> ModelGateway -> OpenAIBackend (the real openai client)
-> FakeOpenAI on loopback, with the ledger and the budget tables in SQLite.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cogs._render import failure_text
from cogs.budget import alert_text
from ibot.config import BudgetsSettings
from ibot.db.budgets import BudgetStore
from ibot.db.engine import create_engine, make_sessionmaker
from ibot.db.ledger import Ledger, LedgerEntry
from ibot.db.migrate import upgrade
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
from ibot.i18n import load_prompts
from ibot.llm.budget import BudgetExceeded
from ibot.llm.gateway import ModelGateway
from ibot.llm.openai_backend import OpenAIBackend
from ibot.periods import period_of
from ibot.pricing import default_price_table
from ibot.services.ask import AskService
from ibot.services.budgets import Alert, BudgetManager, Scope, parse_cap
from ibot.services.outcomes import Answered, Failed
from ibot.services.prompts import FeatureConfig, PromptBuilder
from ibot.testing.fake_openai import FakeOpenAI

API_KEY = "sk-test-budgets-0123456789abcdef"
GUILD, OTHER_GUILD = 1001, 1002
ANSWER = "Utilise un environnement virtuel : python -m venv .venv"
# A fixed "now" for the budgets, so that reset times are exact in the assertions.
NOW = datetime.now(UTC).replace(microsecond=0)
NEXT_MIDNIGHT = NOW.replace(hour=0, minute=0, second=0) + timedelta(days=1)


@pytest.fixture
async def fake():
    async with FakeOpenAI(api_key=API_KEY) as server:
        server.set_default_answer(ANSWER)
        yield server


async def open_db(url: str):
    await upgrade(url)
    engine = create_engine(url)
    sessionmaker = make_sessionmaker(engine)
    return engine, (Ledger(sessionmaker), BudgetStore(sessionmaker))


@pytest.fixture
async def db(tmp_path: Path):
    engine, stores = await open_db(f"sqlite+aiosqlite:///{tmp_path / 'budgets.db'}")
    yield stores
    await engine.dispose()


@pytest.fixture
async def any_db(db_url: str):
    """SQLite and PostgreSQL: the audit rows and the alerts' unique key on both."""
    engine, stores = await open_db(db_url)
    yield stores
    await engine.dispose()


@pytest.fixture
async def backend(fake):
    client = OpenAIBackend(api_key=API_KEY, base_url=fake.base_url, max_retries=0, timeout_s=10)
    yield client
    await client.aclose()


class Clock:
    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def manager(db, clock: Clock | None = None, alerts: list[Alert] | None = None, **caps):
    ledger, store = db
    settings = BudgetsSettings.model_validate(caps)
    sink = None
    if alerts is not None:

        async def sink(alert: Alert) -> None:
            alerts.append(alert)

    return BudgetManager(
        ledger=ledger, store=store, settings=settings, alert_sink=sink, clock=clock or Clock()
    )


def gateway(db, backend, budgets: BudgetManager, *, degrade=None, local=None) -> ModelGateway:
    return ModelGateway(
        ledger=db[0],
        prices=default_price_table(),
        openai=backend,
        budget=budgets,
        degrade=degrade,
        local=local,
    )


def ask_service(gw: ModelGateway, max_output_tokens: int = 20) -> AskService:
    prompts = PromptBuilder(load_prompts("fr"), extra={"bot_name": "iBot"})
    return AskService(gw, prompts, FeatureConfig("gpt-4o", max_output_tokens, 8000))


def ctx(feature: Feature = Feature.ASK, user: int = 7, guild: int = GUILD) -> CallContext:
    return CallContext(feature=feature, guild_id=guild, channel_id=5, user_id=user)


def request(context: CallContext, model: str = "gpt-4o", max_output: int = 20) -> LLMRequest:
    messages = (ChatMessage("system", "Tu es un assistant."), ChatMessage("user", "Bonjour ?"))
    return LLMRequest(messages=messages, model=model, max_output_tokens=max_output, context=context)


def worst_case(gw: ModelGateway, req: LLMRequest) -> int:
    worst = gw.estimate(req).worst_case_micros
    assert worst is not None
    return worst


async def test_200_concurrent_asks_never_spend_past_the_guild_daily_cap(db, backend, fake):
    budgets = manager(db)
    gw = gateway(db, backend, budgets)
    service = ask_service(gw)
    question = "Comment créer un environnement virtuel ?"
    # Measure one ask's worst case on another guild, then allow about 50 of them here.
    seen: list[int | None] = []
    reserve = budgets.reserve

    async def spy(context, model, worst):
        seen.append(worst)
        return await reserve(context, model, worst)

    budgets.reserve = spy  # type: ignore[method-assign]
    warm = await service.ask(question, author="alice", context=ctx(guild=OTHER_GUILD))
    assert isinstance(warm, Answered) and seen[0] is not None
    cap = 50 * seen[0]
    await budgets.set_cap(GUILD, Scope.GUILD_DAILY, cap, changed_by=42)
    ledger_reads = 0
    spent_micros = db[0].spent_micros

    async def counted(**kw):
        nonlocal ledger_reads
        ledger_reads += 1
        return await spent_micros(**kw)

    db[0].spent_micros = counted  # type: ignore[method-assign]

    outcomes = await asyncio.gather(
        *(service.ask(question, author="alice", context=ctx(user=100 + i % 10)) for i in range(200))
    )

    answered = [o for o in outcomes if isinstance(o, Answered)]
    refused = [o for o in outcomes if isinstance(o, Failed)]
    assert 50 <= len(answered) <= 60  # worst cases held; a few fit once real costs settle
    assert len(answered) + len(refused) == 200
    assert {(o.kind, o.budget, o.resets_at) for o in refused} == {
        (ErrorKind.BUDGET, "guild_daily", NEXT_MIDNIGHT)
    }
    rows = [r for r in await db[0].rows() if r.guild_id == GUILD]
    assert len(rows) == 200
    assert sum(r.cost_micros or 0 for r in rows) <= cap
    assert sorted({r.status for r in rows}) == ["ok", "refused"]
    assert all(r.error_kind == "budget" for r in rows if r.status == "refused")
    assert len([r for r in rows if r.status == "ok"]) == len(answered)
    assert len([r for r in fake.requests if r.served]) == len(answered) + 1  # + the warm-up
    # Spending was read from the ledger once per scope (2 guild scopes, the feature's
    # own daily cap, 10 members).
    assert ledger_reads <= 13
    # Nothing stays held once every call is settled.
    status = {s.scope: s for s in await budgets.status(GUILD)}
    assert status[Scope.GUILD_DAILY].reserved_micros == 0
    assert status[Scope.GUILD_DAILY].spent_micros == sum(r.cost_micros or 0 for r in rows)


async def test_degrade_order_cheaper_model_then_local_then_refusal(db, backend, fake):
    budgets = manager(db)
    probe = gateway(db, backend, budgets)
    big, mini = request(ctx()), request(ctx(), model="gpt-4o-mini")
    # Room for gpt-4o-mini's worst case, not for gpt-4o's.
    await budgets.set_cap(GUILD, Scope.GUILD_DAILY, worst_case(probe, mini) + 1, changed_by=42)
    gw = gateway(db, backend, budgets, degrade={Feature.ASK: ["gpt-4o-mini"]})

    result = await gw.complete(big)

    assert result.status is CallStatus.FALLBACK
    assert (result.model_requested, result.model) == ("gpt-4o", "gpt-4o-mini-2024-07-18")
    assert fake.requests[-1].body["model"] == "gpt-4o-mini"
    [row] = await db[0].rows()
    assert (row.status, row.model_requested, row.model) == (
        "fallback",
        "gpt-4o",
        "gpt-4o-mini-2024-07-18",
    )
    assert "guild_daily" in row.note and row.cost_micros == result.cost_micros

    # A feature with no cheaper model is refused outright, and so is a cap with no room.
    with pytest.raises(LLMCallError) as no_cheaper:
        await gw.complete(request(ctx(Feature.SUMMARY)))
    await budgets.set_cap(GUILD, Scope.GUILD_DAILY, 0, changed_by=42)
    with pytest.raises(LLMCallError) as no_room:
        await gw.complete(big)
    for caught in (no_cheaper, no_room):
        assert (caught.value.kind, caught.value.budget) == (ErrorKind.BUDGET, "guild_daily")
        assert caught.value.resets_at == NEXT_MIDNIGHT
    rows = await db[0].rows()
    assert [(r.status, r.error_kind) for r in rows[1:]] == [("refused", "budget")] * 2
    assert len([r for r in fake.requests if r.served]) == 1

    # With a local model configured, it answers when no OpenAI model fits.
    class LocalModel:
        name = Backend.LOCAL
        model = "tiny-local"

        async def complete(self, request, **kw) -> BackendResponse:
            return BackendResponse(
                text="Réponse locale.",
                usage=Usage(prompt_tokens=30, completion_tokens=4),
                model="tiny-local",
            )

    with_local = gateway(
        db, backend, budgets, degrade={Feature.ASK: ["gpt-4o-mini"]}, local=LocalModel()
    )
    local = await with_local.complete(big)
    assert (local.status, local.backend, local.cost_micros) == (
        CallStatus.FALLBACK,
        Backend.LOCAL,
        0,
    )
    last = (await db[0].rows())[-1]
    assert (last.status, last.backend, last.model_requested) == ("fallback", "local", "gpt-4o")
    assert "guild_daily" in last.note and "local" in last.note


async def test_refusal_names_the_budget_and_when_it_resets(db, backend):
    budgets = manager(db, guild_monthly_usd="0")
    service = ask_service(gateway(db, backend, budgets))

    outcome = await service.ask("Une question ?", author="alice", context=ctx())

    first_of_next_month = period_of(Scope.GUILD_MONTHLY, NOW).end
    assert first_of_next_month.day == 1 and first_of_next_month > NOW
    assert isinstance(outcome, Failed)
    assert (outcome.kind, outcome.budget, outcome.resets_at) == (
        ErrorKind.BUDGET,
        "guild_monthly",
        first_of_next_month,
    )
    shown_fr = failure_text(outcome, "fr")
    shown_en = failure_text(outcome, "en")
    stamp = f"<t:{int(first_of_next_month.timestamp())}:R>"
    assert shown_fr == f"Le budget mensuel du serveur est épuisé ; il se renouvelle {stamp}."
    assert shown_en == f"The server's monthly budget is spent; it renews {stamp}."
    [row] = await db[0].rows()
    assert (row.status, row.error_kind) == ("refused", "budget")
    assert "guild_monthly" in row.note and first_of_next_month.isoformat() in row.note


async def test_when_several_caps_are_spent_the_latest_reset_is_named(db):
    budgets = manager(db, guild_daily_usd="0", guild_monthly_usd="0")
    with pytest.raises(BudgetExceeded) as caught:
        await budgets.reserve(ctx(), "gpt-4o", 10)
    assert caught.value.budget == "guild_monthly"


async def test_user_cap_applies_to_ask_and_chat_not_to_auto_reply(db, backend):
    budgets = manager(db)
    probe = gateway(db, backend, budgets)
    one_call = worst_case(probe, request(ctx()))
    await budgets.set_cap(GUILD, Scope.USER_DAILY, one_call, changed_by=42)
    gw = gateway(db, backend, budgets)

    first = await gw.complete(request(ctx(Feature.ASK, user=7)))
    assert first.status is CallStatus.OK
    with pytest.raises(LLMCallError) as ask_again:
        await gw.complete(request(ctx(Feature.ASK, user=7)))
    with pytest.raises(LLMCallError) as chat:
        await gw.complete(request(ctx(Feature.CHAT, user=7)))
    forum = await gw.complete(request(ctx(Feature.AUTO_REPLY, user=7)))
    other_member = await gw.complete(request(ctx(Feature.ASK, user=8)))

    assert ask_again.value.budget == chat.value.budget == "user_daily"
    assert ask_again.value.resets_at == NEXT_MIDNIGHT
    assert forum.status is other_member.status is CallStatus.OK


async def test_unpriced_model_is_refused_only_when_a_cap_applies(db):
    capped = manager(db, guild_daily_usd="100")
    with pytest.raises(BudgetExceeded):
        await capped.reserve(ctx(), "mystery-model", None)
    uncapped = manager(db)
    reservation = await uncapped.reserve(ctx(), "mystery-model", None)
    await uncapped.settle(reservation, None)
    outside_a_guild = await capped.reserve(CallContext(feature=Feature.ASK), "mystery", None)
    assert outside_a_guild.micros == 0


async def test_budget_change_is_audited_and_survives_a_restart(any_db):
    db = any_db
    clock = Clock()
    budgets = manager(db, clock, guild_daily_usd="5")
    assert await budgets.cap(GUILD, Scope.GUILD_DAILY) == 5_000_000

    first = await budgets.set_cap(GUILD, "guild_daily", parse_cap("2,50 $"), changed_by=42)
    clock.now += timedelta(minutes=3)
    second = await budgets.set_cap(GUILD, Scope.GUILD_DAILY, parse_cap("none"), changed_by=43)

    history = await db[1].changes(GUILD)
    assert [(c.scope, c.cap_micros, c.previous_micros, c.changed_by) for c in history] == [
        ("guild_daily", 2_500_000, 5_000_000, 42),
        ("guild_daily", None, 2_500_000, 43),
    ]
    assert [c.changed_at for c in history] == [NOW, NOW + timedelta(minutes=3)]
    assert (first.id, second.id) == (history[0].id, history[1].id)
    restarted = manager(db, guild_daily_usd="5")
    assert await restarted.cap(GUILD, Scope.GUILD_DAILY) is None  # removed, not the TOML's
    assert await restarted.cap(OTHER_GUILD, Scope.GUILD_DAILY) == 5_000_000


@pytest.mark.parametrize(
    ("typed", "micros"),
    [("5", 5_000_000), ("0", 0), ("2.5", 2_500_000), ("1,25 USD", 1_250_000), ("aucun", None)],
)
def test_cap_parsing(typed, micros):
    assert parse_cap(typed) == micros


@pytest.mark.parametrize("typed", ["-1", "abc", "", "nan"])
def test_cap_parsing_refuses_nonsense(typed):
    with pytest.raises(ValueError):
        parse_cap(typed)


async def spend(budgets: BudgetManager, ledger: Ledger, micros: int, when: datetime) -> None:
    """One call's worth of real spending: reserved, written to the ledger, settled."""
    reservation = await budgets.reserve(ctx(), "gpt-4o", micros)
    await ledger.record(
        LedgerEntry(
            feature="ask",
            backend="openai",
            model_requested="gpt-4o",
            status="ok",
            guild_id=GUILD,
            user_id=7,
            cost_micros=micros,
            created_at=when,
        )
    )
    await budgets.settle(reservation, micros)
    await budgets.drain()


async def test_alerts_fire_once_per_threshold_and_period_even_across_a_restart(any_db):
    db = any_db
    ledger = db[0]
    clock = Clock()
    alerts: list[Alert] = []
    budgets = manager(db, clock, alerts, guild_daily_usd="1")

    await spend(budgets, ledger, 300_000, NOW)  # 30 %
    assert alerts == []
    await spend(budgets, ledger, 250_000, NOW)  # 55 %
    await spend(budgets, ledger, 100_000, NOW)  # 65 %
    await spend(budgets, ledger, 200_000, NOW)  # 85 %
    assert [(a.scope, a.threshold) for a in alerts] == [
        (Scope.GUILD_DAILY, 50),
        (Scope.GUILD_DAILY, 80),
    ]
    assert alerts[1].spent_micros == 850_000 and alerts[1].cap_micros == 1_000_000
    assert alerts[1].resets_at == NEXT_MIDNIGHT and alerts[1].period_key == f"{NOW:%Y-%m-%d}"

    restarted_alerts: list[Alert] = []
    restarted = manager(db, clock, restarted_alerts, guild_daily_usd="1")
    await spend(restarted, ledger, 50_000, NOW)  # 90 %: 50 and 80 were sent before
    assert restarted_alerts == []
    await spend(restarted, ledger, 100_000, NOW)  # 100 %
    assert [a.threshold for a in restarted_alerts] == [100]

    # A new day is a new period; a jump past two thresholds gives one message.
    clock.now = NEXT_MIDNIGHT + timedelta(hours=1)
    tomorrow = clock.now
    await spend(restarted, ledger, 850_000, tomorrow)
    await spend(restarted, ledger, 10_000, tomorrow)
    assert [(a.threshold, a.period_key) for a in restarted_alerts[1:]] == [
        (80, f"{tomorrow:%Y-%m-%d}")
    ]


async def test_a_failing_or_slow_alert_sink_never_blocks_or_fails_a_call(db):
    ledger = db[0]
    release = asyncio.Event()
    delivered: list[int] = []

    async def slow_sink(alert: Alert) -> None:
        await release.wait()
        delivered.append(alert.threshold)

    budgets = manager(db, guild_daily_usd="1")
    budgets.alert_sink = slow_sink
    reservation = await budgets.reserve(ctx(), "gpt-4o", 600_000)
    await budgets.settle(reservation, 600_000)  # returns while the sink still waits
    assert delivered == []
    release.set()
    await budgets.drain()
    assert delivered == [50]

    async def broken_sink(alert: Alert) -> None:
        raise RuntimeError("Discord is down")

    budgets.alert_sink = broken_sink
    await spend(budgets, ledger, 300_000, NOW)  # crosses 80 %: the sink raises, logged
    assert (await budgets.status(GUILD))[0].spent_micros == 900_000


def test_alert_messages_say_how_far_and_when_it_renews():
    reset = NEXT_MIDNIGHT
    half = Alert(GUILD, Scope.GUILD_DAILY, 50, f"{NOW:%Y-%m-%d}", 520_000, 1_000_000, reset)
    spent = Alert(GUILD, Scope.GUILD_MONTHLY, 100, f"{NOW:%Y-%m}", 20_000_000, 20_000_000, reset)
    stamp = f"<t:{int(reset.timestamp())}:R>"

    assert alert_text(half, "fr") == (
        f"⚠️ Budget quotidien du serveur : 50 % atteint (0.52 / 1.00 USD). Il se renouvelle {stamp}."
    )
    assert alert_text(half, "en").startswith("⚠️ The server's daily budget has reached 50%")
    assert alert_text(spent, "fr").startswith("🛑 Budget mensuel du serveur épuisé (20.00 / 20.00")
    assert stamp in alert_text(spent, "en")


async def test_a_call_cancelled_after_it_was_sent_counts_its_worst_case(db, backend, fake):
    # A graceful stop that runs past its grace cancels the answers still in flight: the
    # request has gone out, OpenAI may bill it, so the ledger and the budget both count
    # its worst case, marked as an estimate, never 0.
    budgets = manager(db, guild_daily_usd=5)
    gw = gateway(db, backend, budgets)
    req = request(ctx())
    worst = worst_case(gw, req)
    fake.hang()

    task = asyncio.create_task(gw.complete(req))
    await fake.wait_for_requests(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    [row] = await db[0].rows()
    assert (row.status, row.error_kind) == ("error", "cancelled")
    assert row.cost_micros == worst
    assert row.usage_source == "estimated" and row.completion_tokens == req.max_output_tokens
    status = {s.scope: s for s in await budgets.status(GUILD, user_id=7)}
    for scope in status:  # every cap shown: a feature's only has a line once capped
        assert (status[scope].spent_micros, status[scope].reserved_micros) == (worst, 0)


async def test_a_call_cancelled_before_it_was_sent_costs_nothing(db, backend, fake):
    # Still waiting for its turn (here: its budget check), nothing went out: nothing counts.
    budgets = manager(db, guild_daily_usd=5)
    gw = gateway(db, backend, budgets)
    entered, release = asyncio.Event(), asyncio.Event()
    reserve = budgets.reserve

    async def slow_reserve(context, model, worst):
        entered.set()
        await release.wait()
        return await reserve(context, model, worst)

    budgets.reserve = slow_reserve  # type: ignore[method-assign]
    task = asyncio.create_task(gw.complete(request(ctx())))
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert fake.requests == []
    assert all(row.cost_micros in (0, None) for row in await db[0].rows())
    status = {s.scope: s for s in await budgets.status(GUILD)}
    assert status[Scope.GUILD_DAILY].spent_micros == 0


async def test_a_slow_budget_lookup_for_one_guild_does_not_delay_another_guilds_call(
    db, backend, fake
):
    # The database is slow for one guild (its caps take long to read): the other guild's
    # calls go on meanwhile instead of waiting behind a lock held across that read.
    budgets = manager(db, guild_daily_usd=5)
    gw = gateway(db, backend, budgets)
    entered, release = asyncio.Event(), asyncio.Event()
    latest_changes = budgets.store.latest_changes

    async def slow_for_guild(guild_id: int):
        if guild_id == GUILD:
            entered.set()
            await release.wait()
        return await latest_changes(guild_id)

    budgets.store.latest_changes = slow_for_guild  # type: ignore[method-assign]
    stuck = asyncio.create_task(gw.complete(request(ctx(guild=GUILD))))
    await entered.wait()

    other = await asyncio.wait_for(gw.complete(request(ctx(guild=OTHER_GUILD))), timeout=10)

    assert other.status == CallStatus.OK and not stuck.done()
    release.set()
    assert (await stuck).status == CallStatus.OK
    status = {s.scope: s for s in await budgets.status(GUILD)}
    assert status[Scope.GUILD_DAILY].reserved_micros == 0
