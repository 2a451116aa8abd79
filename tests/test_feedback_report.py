"""Members' feedback in the cost reports: answers, helpful rate, solved, cost per solved
thread, per feature and per model, exact to the micro-dollar, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from typer.testing import CliRunner

from ibot.db.engine import create_engine, make_sessionmaker
from ibot.db.feedback import AnswerRecord, VoteRecord
from ibot.db.ledger import Ledger, LedgerEntry
from ibot.db.migrate import upgrade
from ibot.db.reports import GroupBy
from ibot.periods import Period
from ibot.services.report_render import render_csv, render_json, render_table
from ibot.services.reports import cost_report

GUILD = 111_222_333_444_555_666
OTHER_GUILD = GUILD + 1
PERIOD = Period(datetime(2025, 3, 10, tzinfo=UTC), datetime(2025, 3, 16, tzinfo=UTC), "test")
INSIDE = datetime(2025, 3, 12, 9, 0, tzinfo=UTC)
BIG = "gpt-4o-2024-08-06"
MINI = "gpt-4o-mini-2024-07-18"


@dataclass(frozen=True)
class Call:
    feature: str
    model: str
    cost: int
    guild: int = GUILD
    at: datetime = INSIDE
    up: int = 0  # 👍 on its answer; no answer at all when `answered` is False
    down: int = 0
    solved: bool = False
    answered: bool = True


# Two features on two models, votes, solved answers, a failed call with no answer, an
# answer posted before the period, and a solved, liked answer in another guild.
CALLS = (
    Call("auto_reply", BIG, 10_000, up=3, down=1, solved=True),
    Call("auto_reply", BIG, 20_001, down=1, solved=True),
    Call("auto_reply", BIG, 5_000, answered=False),  # an error: cost, no answer
    Call("ask", MINI, 1_000),  # an answer nobody voted on
    Call("ask", MINI, 2_000, up=1),
    Call("ask", MINI, 700, at=PERIOD.start - timedelta(hours=1), up=2, solved=True),
    Call("ask", MINI, 3_000, guild=OTHER_GUILD, up=2, solved=True),
)


async def record(sessionmaker, calls: tuple[Call, ...] = CALLS) -> None:
    """Each call in the ledger, and its answer (posted a second after the call) with its
    votes, as the bot and the buttons store them."""
    ledger = Ledger(sessionmaker)
    message_id = 10**18
    for call in calls:
        ledger_id = await ledger.record(
            LedgerEntry(
                created_at=call.at,
                guild_id=call.guild,
                feature=call.feature,
                backend="openai",
                model_requested=call.model,
                model=call.model,
                status="ok" if call.answered else "error",
                prompt_tokens=100,
                completion_tokens=10,
                cost_micros=call.cost,
            )
        )
        if not call.answered:
            continue
        message_id += 1
        posted = call.at + timedelta(seconds=1)
        async with sessionmaker() as session:
            session.add(
                AnswerRecord(
                    message_id=message_id,
                    guild_id=call.guild,
                    feature=call.feature,
                    ledger_id=ledger_id,
                    asker_id=42,
                    created_at=posted,
                    solved_at=posted + timedelta(minutes=5) if call.solved else None,
                    solved_by=42 if call.solved else None,
                )
            )
            await session.flush()
            members = iter(range(1, 100))
            for vote, count in ((1, call.up), (-1, call.down)):
                for _ in range(count):
                    session.add(
                        VoteRecord(message_id=message_id, member_id=next(members), vote=vote)
                    )
            await session.commit()


def figures(row) -> tuple:
    return (
        row.key,
        row.calls,
        row.cost_micros,
        row.answers,
        row.helpful_votes,
        row.unhelpful_votes,
        row.solved,
        row.cost_per_solved_micros,
    )


async def test_feedback_per_feature_and_model_with_exact_cost_per_solved_thread(sessionmaker):
    await record(sessionmaker)

    by_feature = await cost_report(sessionmaker, PERIOD, GroupBy.feature, guild_id=GUILD)
    by_model = await cost_report(sessionmaker, PERIOD, GroupBy.model, guild_id=GUILD)

    # auto_reply: 3 calls for 35 001 µ$, 2 answers, 3 👍 / 2 👎, 2 solved:
    # 35 001 / 2 = 17 500.5 µ$ per solved thread, rounded half up to 17 501.
    # ask: the answer posted before the period and the other guild's are not counted.
    assert [figures(row) for row in by_feature.rows] == [
        ("auto_reply", 3, 35_001, 2, 3, 2, 2, 17_501),
        ("ask", 2, 3_000, 2, 1, 0, 0, None),
    ]
    assert [figures(row)[1:] for row in by_model.rows] == [
        figures(row)[1:] for row in by_feature.rows
    ]
    assert [row.key for row in by_model.rows] == [BIG, MINI]
    assert figures(by_feature.totals) == ("TOTAL", 5, 38_001, 4, 4, 2, 2, 19_001)
    assert by_model.totals == by_feature.totals
    rates = [row.helpful_rate for row in (*by_feature.rows, by_feature.totals)]
    assert [float(rate) for rate in rates if rate is not None] == [0.6, 1.0, 4 / 6]


async def test_a_guilds_report_leaves_out_the_votes_of_other_guilds(sessionmaker):
    await record(sessionmaker)

    everywhere = await cost_report(sessionmaker, PERIOD, GroupBy.feature)

    ask = next(row for row in everywhere.rows if row.key == "ask")
    # Now with the other guild's call (3 000 µ$), answer, 2 👍 and solved answer.
    assert figures(ask) == ("ask", 3, 6_000, 3, 3, 0, 1, 6_000)
    assert figures(everywhere.totals) == ("TOTAL", 6, 41_001, 5, 6, 2, 3, 13_667)


async def test_an_answer_posted_outside_the_period_is_not_counted(sessionmaker):
    await record(sessionmaker)
    before = Period(PERIOD.start - timedelta(days=1), PERIOD.start, "the day before")

    report = await cost_report(sessionmaker, before, GroupBy.feature, guild_id=GUILD)

    # Only the answer posted the hour before the period: liked twice and solved.
    assert [figures(row) for row in report.rows] == [("ask", 1, 700, 1, 2, 0, 1, 700)]


async def test_without_votes_or_solved_answers_the_figures_say_none(sessionmaker):
    await record(sessionmaker, (Call("chat", MINI, 1_234),))

    report = await cost_report(sessionmaker, PERIOD, GroupBy.feature)

    [row] = report.rows
    assert (row.answers, row.votes, row.helpful_rate, row.cost_per_solved_micros) == (
        1,
        0,
        None,
        None,
    )
    [line] = [line for line in render_table(report).splitlines() if line.startswith("chat")]
    assert line.split()[-4:] == ["1", "—", "0", "—"]  # answers, helpful, solved, per solved
    [parsed] = csv.DictReader(io.StringIO(render_csv(report)))
    assert (parsed["helpful_rate"], parsed["cost_per_solved_usd"]) == ("", "")
    assert parsed["cost_per_solved_micros"] == ""
    document = json.loads(render_json(report))
    assert document["rows"][0]["helpful_rate"] is None
    assert document["totals"]["cost_per_solved_micros"] is None


async def test_table_csv_and_json_show_the_feedback_exactly(sessionmaker):
    await record(sessionmaker)
    report = await cost_report(sessionmaker, PERIOD, GroupBy.feature, guild_id=GUILD)

    table = {line.split()[0]: line.split() for line in render_table(report).splitlines()[3:]}
    rows = {row["key"]: row for row in csv.DictReader(io.StringIO(render_csv(report)))}
    document = json.loads(render_json(report))

    assert table["auto_reply"][-4:] == ["2", "60.0%", "2", "0.017501"]
    assert table["ask"][-4:] == ["2", "100.0%", "0", "—"]
    assert table["TOTAL"][-4:] == ["4", "66.7%", "2", "0.019001"]
    auto = rows["auto_reply"]
    assert (auto["calls"], auto["cost_micros"]) == ("3", "35001")  # the old columns, unmoved
    assert list(auto)[:8] == [
        "key", "calls", "prompt_tokens", "cached_tokens", "completion_tokens", "cost_usd",
        "cost_micros", "unknown_cost_calls",
    ]  # fmt: skip
    assert [auto[name] for name in list(auto)[8:]] == [
        "2", "3", "2", "0.6000", "2", "0.017501", "17501",
    ]  # fmt: skip
    first, totals = document["rows"][0], document["totals"]
    assert (first["answers"], first["helpful_rate"], first["solved"]) == (2, 0.6, 2)
    assert (first["cost_per_solved_micros"], first["cost_per_solved_usd"]) == (17_501, "0.017501")
    assert (totals["helpful_votes"], totals["unhelpful_votes"]) == (4, 2)
    assert totals["helpful_rate"] == 0.6667  # 4 / 6, four decimals, half up
    assert totals["cost_per_solved_usd"] == "0.019001"


async def test_by_day_an_answer_counts_on_the_day_it_was_posted(sessionmaker):
    late = datetime(2025, 3, 11, 23, 59, 59, 500_000, tzinfo=UTC)  # posted the next day
    await record(sessionmaker, (Call("ask", MINI, 900, at=late, up=1, solved=True),))

    report = await cost_report(sessionmaker, PERIOD, GroupBy.day)

    assert [figures(row) for row in report.rows] == [
        ("2025-03-11", 1, 900, 0, 0, 0, 0, None),
        ("2025-03-12", 0, 0, 1, 1, 0, 1, 0),
    ]
    assert figures(report.totals) == ("TOTAL", 1, 900, 1, 1, 0, 1, 900)


def test_costs_report_command_prints_the_feedback(tmp_path: Path, monkeypatch) -> None:
    from ibot.cli import app

    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"

    async def fill() -> None:
        await upgrade(url)
        engine = create_engine(url)
        try:
            await record(make_sessionmaker(engine))
        finally:
            await engine.dispose()

    asyncio.run(fill())
    monkeypatch.setenv("IBOT_DATABASE_URL", url)
    runner = CliRunner()
    span = ["--period", "2025-03-10..2025-03-15", "--guild", str(GUILD)]

    table = runner.invoke(app, ["costs", "report", *span, "--group-by", "model"])
    as_csv = runner.invoke(app, ["costs", "report", *span, "--format", "csv"])
    as_json = runner.invoke(app, ["costs", "report", *span, "--format", "json"])

    assert table.exit_code == as_csv.exit_code == as_json.exit_code == 0, table.output
    header = next(line for line in table.output.splitlines() if line.startswith("model"))
    assert header.split()[-4:] == ["answers", "helpful", "solved", "usd_per_solved"]
    [big] = [line.split() for line in table.output.splitlines() if line.startswith(BIG)]
    assert big[-4:] == ["2", "60.0%", "2", "0.017501"]
    parsed = {row["key"]: row for row in csv.DictReader(io.StringIO(as_csv.stdout))}
    assert parsed["auto_reply"]["cost_per_solved_micros"] == "17501"
    assert json.loads(as_json.stdout)["totals"]["cost_per_solved_micros"] == 19_001
