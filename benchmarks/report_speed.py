"""How fast is a cost report on a big ledger? Builds one, times it, prints the figures.

    python benchmarks/report_speed.py            # 1 000 000 rows (about a minute to build)
    python benchmarks/report_speed.py --rows 50000

It writes a ledger of `--rows` calls over 90 days into a temporary SQLite file (about
500 users, 4 features, 3 models, 20 channels, 3 guilds with most calls in one), migrates
it with the real migrations, then times the 30-day report for every grouping through the
same code the bot and the CLI use (best of `--runs`). The baseline is the same queries on
a copy of the same ledger without the report indexes of migration 0003, measured in the
same run: shared machines are noisy, so only a same-run ratio means something.

The last line printed is one JSON object: {"rows", "seconds" (30 days grouped by user),
"groupings", "baseline", ...}.
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
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO))

from ibot.db.engine import create_engine, make_sessionmaker  # noqa: E402
from ibot.db.migrate import upgrade_sync  # noqa: E402
from ibot.db.reports import GroupBy  # noqa: E402
from ibot.periods import Period, parse_period  # noqa: E402
from ibot.services.report_view import build_report_view  # noqa: E402
from ibot.services.reports import cost_report  # noqa: E402

END = datetime(2025, 6, 30, 18, 0, tzinfo=UTC)  # "now" for the report: fixed, reproducible
DAYS = 90
MAIN_GUILD = 900_000_000_000_000_001
SMALL_GUILD = MAIN_GUILD + 2
GUILDS = (MAIN_GUILD, MAIN_GUILD + 1, SMALL_GUILD)  # 80 %, 15 %, 5 % of the calls
GROUPINGS = (GroupBy.user, GroupBy.feature, GroupBy.model, GroupBy.channel, GroupBy.day)
BATCH = 50_000

# Prices in micro-dollars per 1M tokens (input, output): close enough to make costs look real.
MODELS = {
    "gpt-4o-2024-08-06": (2_500_000, 10_000_000),
    "gpt-4o-mini-2024-07-18": (150_000, 600_000),
    "gpt-4.1-2025-04-14": (2_000_000, 8_000_000),
}
FEATURES = (("auto_reply", 0.45), ("ask", 0.30), ("chat", 0.20), ("summary", 0.05))
STATUSES = (("ok", 0.93), ("error", 0.03), ("fallback", 0.02), ("refused", 0.02))

INSERT = """
INSERT INTO ledger (created_at, guild_id, channel_id, thread_id, user_id, feature, backend,
    model_requested, model, request_id, prompt_tokens, cached_tokens, image_tokens,
    completion_tokens, cost_micros, latency_ms, status, error_kind, usage_source, attempts,
    note)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""


def ledger_tuples(rows: int, seed: int) -> Iterator[tuple[Any, ...]]:
    """Calls in time order (as the gateway writes them), with skewed users and channels."""
    rng = random.Random(seed)
    users = [300_000_000_000_000_000 + rng.randrange(10**17) for _ in range(500)]
    user_weights = [1 / (rank + 1) ** 0.8 for rank in range(len(users))]  # a few heavy users
    channels = [500_000_000_000_000_000 + rng.randrange(10**17) for _ in range(20)]
    models = list(MODELS)
    features, feature_weights = zip(*FEATURES, strict=True)
    statuses, status_weights = zip(*STATUSES, strict=True)
    start = END - timedelta(days=DAYS)
    step = DAYS * 86_400 / rows
    chunk = 10_000
    for first in range(0, rows, chunk):
        n = min(chunk, rows - first)
        picked_users = rng.choices(users, user_weights, k=n)
        picked_features = rng.choices(features, feature_weights, k=n)
        picked_statuses = rng.choices(statuses, status_weights, k=n)
        for i in range(n):
            moment = start + timedelta(seconds=(first + i) * step + rng.random() * step)
            status = picked_statuses[i]
            requested = rng.choice(models)
            answered = status in ("ok", "fallback")
            model = (models[1] if status == "fallback" else requested) if answered else None
            prompt = rng.randrange(200, 6_000) if status != "refused" else 0
            cached = rng.randrange(0, prompt // 2 + 1) if prompt else 0
            completion = rng.randrange(50, 900) if answered else 0
            if model is None:
                cost: int | None = 0
            else:
                cost_in, cost_out = MODELS[model]
                cost = (prompt * cost_in + completion * cost_out) // 1_000_000
            guild = rng.choices(GUILDS, (0.8, 0.15, 0.05))[0]
            yield (
                moment.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f"),
                guild,
                rng.choice(channels),
                rng.randrange(10**18) if picked_features[i] == "auto_reply" else None,
                picked_users[i],
                picked_features[i],
                "openai",
                requested,
                model,
                f"req_{rng.getrandbits(128):032x}" if answered else None,
                prompt,
                cached,
                0,
                completion,
                cost,
                rng.randrange(300, 9_000),
                status,
                None if status in ("ok", "fallback") else "rate_limit",
                "measured",
                1,
                None,
            )


def build_ledger(path: Path, rows: int, seed: int) -> float:
    """Schema up to before the report indexes, then a bulk insert; returns its seconds."""
    upgrade_sync(f"sqlite+aiosqlite:///{path}", "0002")
    began = time.perf_counter()
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA synchronous=OFF")
        data = ledger_tuples(rows, seed)
        while True:
            batch = [row for _, row in zip(range(BATCH), data, strict=False)]
            if not batch:
                break
            with connection:  # one transaction per batch
                connection.executemany(INSERT, batch)
    finally:
        connection.close()
    return time.perf_counter() - began


async def best_of(runs: int, work: Callable[[], Awaitable[object]]) -> float:
    best = float("inf")
    for _ in range(runs):
        began = time.perf_counter()
        await work()
        best = min(best, time.perf_counter() - began)
    return best


async def time_reports(path: Path, period: Period, runs: int) -> dict[str, Any]:
    """Best-of-`runs` seconds of each report on the ledger at `path`."""
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    sessionmaker = make_sessionmaker(engine)

    async def timed(work: Callable[[], Awaitable[object]]) -> float:
        return round(await best_of(runs, work), 4)

    try:
        return {
            "groupings": {
                str(g): await timed(lambda g=g: cost_report(sessionmaker, period, g))
                for g in GROUPINGS
            },
            "one_guild": {
                str(g): await timed(
                    lambda g=g: cost_report(sessionmaker, period, g, guild_id=MAIN_GUILD)
                )
                for g in GROUPINGS
            },
            "small_guild_by_user": await timed(
                lambda: cost_report(sessionmaker, period, GroupBy.user, guild_id=SMALL_GUILD)
            ),
            # What /cost-report runs: the grouped report, the previous period's totals
            # and the daily cost by feature for the chart (the chart itself not included).
            "cost_report_view": await timed(
                lambda: build_report_view(
                    sessionmaker, period, GroupBy.user, guild_id=MAIN_GUILD, now=END
                )
            ),
        }
    finally:
        await engine.dispose()


def query_plan(path: Path, period: Period, guild_id: int | None = None) -> str:
    """SQLite's plan for the 30-day report by user: shows which index answers it."""
    where = "created_at >= ? AND created_at < ?"
    params: list[Any] = [
        f"{period.start:%Y-%m-%d %H:%M:%S.%f}",
        f"{period.end:%Y-%m-%d %H:%M:%S.%f}",
    ]
    if guild_id is not None:
        where += " AND guild_id = ?"
        params.append(guild_id)
    connection = sqlite3.connect(path)
    try:
        rows = connection.execute(
            "EXPLAIN QUERY PLAN SELECT user_id, count(*), sum(prompt_tokens), sum(cost_micros)"
            f" FROM ledger WHERE {where} GROUP BY user_id",
            params,
        ).fetchall()
    finally:
        connection.close()
    return "; ".join(row[-1] for row in rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="ledger size")
    parser.add_argument("--runs", type=int, default=3, help="timings keep the best of these")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-baseline", action="store_true", help="skip the copy without indexes")
    parser.add_argument("--workdir", type=Path, default=None, help="where to build (default: tmp)")
    return parser.parse_args(argv)


def print_timings(label: str, timings: dict[str, Any], versus: dict[str, Any] | None) -> None:
    """One line per report; with `versus`, the baseline's time and how many times slower."""

    def compared(new: float, old: float | None) -> str:
        return "" if old is None else f"   baseline {old:.3f} s ({old / new:.2f}x)"

    print(label)
    for scope, title in (("groupings", "all guilds"), ("one_guild", "one guild ")):
        for name, seconds in timings[scope].items():
            old = versus[scope][name] if versus else None
            print(f"  30 days, {title}, by {name:<8} {seconds:.3f} s{compared(seconds, old)}")
    for key, text in (
        ("small_guild_by_user", "30 days, small guild, by user   "),
        ("cost_report_view", "/cost-report (3 queries)        "),
    ):
        old = versus[key] if versus else None
        print(f"  {text} {timings[key]:.3f} s{compared(timings[key], old)}")


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    path = workdir / "ledger.db"
    period = parse_period("30d", now=END)
    print(f"building a ledger of {args.rows:,} calls over {DAYS} days in {path} …", flush=True)
    insert_s = build_ledger(path, args.rows, args.seed)
    print(f"  inserted in {insert_s:.1f} s", flush=True)

    baseline_path = workdir / "baseline.db"
    if not args.no_baseline:
        shutil.copyfile(path, baseline_path)  # the same rows, without migration 0003

    began = time.perf_counter()
    await asyncio.to_thread(upgrade_sync, f"sqlite+aiosqlite:///{path}")
    index_s = time.perf_counter() - began
    print(f"  migrated to head (report index built) in {index_s:.1f} s", flush=True)
    print(f"  plan, all guilds: {query_plan(path, period)}")
    print(f"  plan, one guild:  {query_plan(path, period, MAIN_GUILD)}", flush=True)

    timings = await time_reports(path, period, args.runs)
    base = None
    if not args.no_baseline:
        base = await time_reports(baseline_path, period, args.runs)
    print_timings(f"timings with every migration (best of {args.runs}):", timings, base)
    if base is not None:
        print("baseline: the same ledger and queries without migration 0003's index")
        print(f"  plan, one guild:  {query_plan(baseline_path, period, MAIN_GUILD)}")

    result: dict[str, Any] = {
        "rows": args.rows,
        "seconds": timings["groupings"]["user"],  # 30 days, grouped by user
        "period": "30d",
        "runs": args.runs,
        **timings,
    }
    if base is not None:
        result["baseline"] = base
        result["speedup"] = {
            name: round(base[group][key] / timings[group][key], 2)
            for name, group, key in (
                ("all_guilds_by_user", "groupings", "user"),
                ("one_guild_by_user", "one_guild", "user"),
            )
        }
        result["speedup"]["small_guild_by_user"] = round(
            base["small_guild_by_user"] / timings["small_guild_by_user"], 2
        )
    result["build_s"] = {"insert": round(insert_s, 1), "index": round(index_s, 1)}
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        result = asyncio.run(run(args, Path(tempfile.mkdtemp(dir=args.workdir))))
    else:
        with tempfile.TemporaryDirectory(prefix="ibot-bench-") as tmp:
            result = asyncio.run(run(args, Path(tmp)))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
