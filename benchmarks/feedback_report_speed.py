"""How much do the members' feedback figures add to a cost report on a big ledger?

    python benchmarks/feedback_report_speed.py                 # 1 000 000 calls
    python benchmarks/feedback_report_speed.py --rows 200000

Builds the ledger of benchmarks/report_speed.py (same generator, same 90 days), then an
answer (the `answers` table) for every answered forum, /ask-gpt and chat call (about
90 % of the calls), 1 to 3 votes on a third of them and a solved mark on a tenth, and
times, best of `--runs`, for the 30-day report by feature and by model, all guilds and
one guild: the ledger's sums alone (`grouped_sums`, what the report did before), the
feedback sums alone (`feedback_sums`), and the whole `cost_report` (both, merged).

Each answer row carries `--text-chars` of question and answer text (the bot stores
both, for the knowledge base), so that scanning the table costs what it would in
production. The same timings are then taken on a copy with the covering index
`PROPOSED_INDEX` (not in any migration: it measures whether one is worth asking for).

The last line printed is one JSON object with every timing in seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
for path in (HERE.parent, HERE):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from report_speed import END, MAIN_GUILD, best_of, build_ledger  # noqa: E402

from ibot.db.engine import create_engine, make_sessionmaker  # noqa: E402
from ibot.db.migrate import upgrade_sync  # noqa: E402
from ibot.db.reports import GroupBy, feedback_sums, grouped_sums  # noqa: E402
from ibot.periods import parse_period  # noqa: E402
from ibot.services.reports import cost_report  # noqa: E402

BATCH = 50_000
PROPOSED_INDEX = (
    "CREATE INDEX ix_answers_guild_report ON answers"
    " (guild_id, created_at, ledger_id, feature, solved_at, message_id)"
)


def add_feedback(path: Path, seed: int, text_chars: int = 0) -> tuple[int, int]:
    """Answers, votes and solved marks for the ledger's answered calls; their counts."""
    rng = random.Random(seed)
    question, answer = "q" * (text_chars // 3), "a" * (text_chars - text_chars // 3)
    connection = sqlite3.connect(path)
    answers = votes = 0
    try:
        connection.execute("PRAGMA synchronous=OFF")
        calls = connection.execute(
            "SELECT id, created_at, guild_id, channel_id, thread_id, user_id, feature FROM ledger"
            " WHERE status IN ('ok', 'fallback') AND feature IN ('auto_reply', 'ask', 'chat')"
        ).fetchall()
        answer_rows, vote_rows = [], []
        for n, (ledger_id, at, guild, channel, thread, user, feature) in enumerate(calls):
            message_id = 10**18 + n
            solved = rng.random() < 0.1
            answer_rows.append(
                (message_id, guild, channel, thread, feature, ledger_id, user, "", question, answer,
                 at, at if solved else None, user if solved else None)
            )  # fmt: skip
            if rng.random() < 1 / 3:
                for member in range(rng.randint(1, 3)):
                    vote_rows.append((message_id, member, 1 if rng.random() < 0.7 else -1, at))
        with connection:
            for first in range(0, len(answer_rows), BATCH):
                connection.executemany(
                    "INSERT INTO answers (message_id, guild_id, channel_id, thread_id, feature,"
                    " ledger_id, asker_id, title, question, answer, created_at, solved_at,"
                    " solved_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    answer_rows[first : first + BATCH],
                )
            for first in range(0, len(vote_rows), BATCH):
                connection.executemany(
                    "INSERT INTO answer_feedback (message_id, member_id, vote, voted_at)"
                    " VALUES (?, ?, ?, ?)",
                    vote_rows[first : first + BATCH],
                )
        answers, votes = len(answer_rows), len(vote_rows)
        connection.execute("ANALYZE")
    finally:
        connection.close()
    return answers, votes


def feedback_plan(path: Path, start: str, end: str) -> str:
    """SQLite's plan for the feedback sums of one guild by model."""
    connection = sqlite3.connect(path)
    try:
        rows = connection.execute(
            "EXPLAIN QUERY PLAN SELECT coalesce(l.model, l.model_requested), count(DISTINCT"
            " a.message_id), sum(f.vote > 0) FROM answers a LEFT JOIN ledger l ON l.id ="
            " a.ledger_id LEFT JOIN answer_feedback f ON f.message_id = a.message_id WHERE"
            " a.created_at >= ? AND a.created_at < ? AND a.guild_id = ? GROUP BY 1",
            (start, end, MAIN_GUILD),
        ).fetchall()
    finally:
        connection.close()
    return "; ".join(row[-1] for row in rows)


async def time_all(path: Path, runs: int) -> dict[str, Any]:
    period = parse_period("30d", now=END)
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    sm = make_sessionmaker(engine)
    start, end = period.start, period.end

    async def measure(group: GroupBy, guild: int | None) -> dict[str, float]:
        async def ledger() -> object:
            return await grouped_sums(sm, group, start=start, end=end, guild_id=guild)

        async def feedback() -> object:
            return await feedback_sums(sm, group, start=start, end=end, guild_id=guild)

        async def both() -> object:
            return await cost_report(sm, period, group, guild_id=guild)

        return {
            "ledger_sums": round(await best_of(runs, ledger), 4),
            "feedback_sums": round(await best_of(runs, feedback), 4),
            "cost_report": round(await best_of(runs, both), 4),
        }

    timings: dict[str, Any] = {}
    try:
        for group in (GroupBy.feature, GroupBy.model):
            for scope, guild in (("all_guilds", None), ("one_guild", MAIN_GUILD)):
                timings[f"{scope}_by_{group}"] = await measure(group, guild)
    finally:
        await engine.dispose()
    timings["plan_one_guild_by_model"] = feedback_plan(
        path, f"{start:%Y-%m-%d %H:%M:%S.%f}", f"{end:%Y-%m-%d %H:%M:%S.%f}"
    )
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="ledger size")
    parser.add_argument("--runs", type=int, default=3, help="timings keep the best of these")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--text-chars", type=int, default=1500, help="text per answer row")
    parser.add_argument("--no-index", action="store_true", help="skip the indexed copy")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ibot-bench-") as tmp:
        path = Path(tmp) / "ledger.db"
        print(f"building a ledger of {args.rows:,} calls …", flush=True)
        build_ledger(path, args.rows, args.seed)
        upgrade_sync(f"sqlite+aiosqlite:///{path}")
        began = time.perf_counter()
        answers, votes = add_feedback(path, args.seed, args.text_chars)
        print(f"  {answers:,} answers, {votes:,} votes in {time.perf_counter() - began:.1f} s")
        result: dict[str, Any] = {"rows": args.rows, "answers": answers, "votes": votes}
        result["as_migrated"] = asyncio.run(time_all(path, args.runs))
        if not args.no_index:
            indexed = Path(tmp) / "indexed.db"
            shutil.copyfile(path, indexed)
            connection = sqlite3.connect(indexed)
            try:
                connection.execute(PROPOSED_INDEX)
                connection.execute("ANALYZE")
            finally:
                connection.close()
            result["with_proposed_index"] = asyncio.run(time_all(indexed, args.runs))
    for variant in ("as_migrated", "with_proposed_index"):
        for name, figures in result.get(variant, {}).items():
            print(f"  {variant}, {name}: {figures}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
