"""A burst of forum threads through the real bot, against rate limits (and faults).

The real bot (nextcord, AsyncOpenAI, gateway, pacer, ledger) runs against the fake
Discord and the fake OpenAI server on 127.0.0.1. N threads are opened over
`--spread-s` seconds; the fake OpenAI enforces `--rpm` and `--tpm` per window of
`--window-s` seconds (60 = real minutes; shrink it to run the same burst faster: the
pacer learns the window from the x-ratelimit-reset headers). With `--faults`: 10 % 5xx,
5 % timeouts, and one websocket drop with replayed dispatches half-way. With `--crash`:
the bot runs as its own process (`python -m ibot run`), is killed with SIGKILL half-way
and started again at once; the figures then include the ledger's check (billed calls
missing from it, rows left pending) and the bot process's own max RSS.

`ceiling_ratio` is the tokens served (as the rate limiter counts them: prompt +
max_tokens) divided by the most the limit allowed in the same time (a full bucket at
the start plus the refill over the burst's duration). `--baseline` runs the same burst
again with the pacer off (retries alone), in the same process, for comparison.

Prints human lines, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import resource
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ibot.db.engine import create_engine, make_sessionmaker
from ibot.db.ledger import Ledger
from ibot.domain import CallStatus
from ibot.testing.bot_process import BotProcess
from ibot.testing.fake_openai import FakeOpenAI
from ibot.testing.harness import Harness


def quiet() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    logging.disable(logging.WARNING)


async def one_burst(args: argparse.Namespace, *, paced: bool) -> dict[str, object]:
    settings = {
        "features": {"auto_reply": {"max_output_tokens": args.max_output_tokens}},
        "openai": {"timeout_s": args.timeout_s, "max_retries": 8, "retry_max_wait_s": 30},
    }
    openai = {"rpm": args.rpm, "tpm": args.tpm, "window_s": args.window_s, "seed": 1}
    with tempfile.TemporaryDirectory(prefix="ibot-burst-") as tmp:
        harness = Harness(
            Path(tmp), settings=settings, openai=openai, in_process_bot=not args.crash
        )
        async with harness:
            world, discord, fake = harness.world, harness.discord, harness.openai
            assert world is not None
            process = None
            if args.crash:
                process = BotProcess(harness, Path(tmp), settings=settings)
                await process.start()
            else:
                assert harness.services is not None
                if not paced:
                    harness.services.gateway.pacer = None
            fake.hang_s = args.timeout_s * 5
            fake.latency_s = args.latency_s
            if args.faults:
                fake.fault_rates = {"5xx": 0.10, "hang": 0.05}
            opened: dict[int, float] = {}
            threads = []
            started = time.time()
            gap = args.spread_s / max(1, args.threads)
            restarting: asyncio.Task[None] | None = None
            for i in range(args.threads):
                thread = await discord.create_forum_thread(
                    world.forum,
                    author=world.member,
                    title=f"Question {i}",
                    content=f"Mon script numéro {i} plante au démarrage, pourquoi ?",
                )
                opened[thread.id] = time.time()
                threads.append(thread)
                if i == args.threads // 2:
                    if args.faults:
                        await discord.drop_gateway(replay_last=5)
                    if process is not None:
                        # SIGKILL half-way, then start again while the burst goes on.
                        await process.kill()
                        restarting = asyncio.create_task(process.start(timeout=120))
                target = started + gap * (i + 1)
                if target > time.time():
                    await asyncio.sleep(target - time.time())
            if restarting is not None:
                await restarting
            await discord.wait_for(
                lambda: all(discord.messages_in(t) for t in threads), timeout=args.deadline_s
            )
            await discord.flush()
            finished = time.time()
            if process is not None:
                await process.stop()
            answers = {t.id: discord.messages_in(t) for t in threads}
            latencies = sorted(
                datetime.fromisoformat(answers[t.id][0].data["timestamp"]).timestamp()
                - opened[t.id]
                for t in threads
                if answers[t.id]
            )
            requests = [r for r in fake.requests if r.body.get("messages")]
            served = [r for r in requests if r.served]
            counted = sum(
                r.prompt_tokens + int(r.body.get("max_completion_tokens") or 0) for r in served
            )
            first = min(r.at for r in requests)
            duration = max(r.at for r in served) - first if served else 0.0
            ceiling = args.tpm * (1 + duration / args.window_s)
            result: dict[str, object] = {
                "threads": args.threads,
                "answered": sum(1 for a in answers.values() if a and a[0].embeds),
                "lost": sum(1 for a in answers.values() if not a or not a[0].embeds),
                "duplicates": sum(max(0, len(a) - 1) for a in answers.values()),
                "model_requests": len(requests),
                "http_429": sum(1 for r in requests if r.status == 429),
                "ceiling_ratio": round(counted / ceiling, 3),
                "p50_s": round(statistics.median(latencies), 2),
                "p99_s": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 2),
                "wall_s": round(finished - started, 1),
            }
            if process is not None:
                result.update(await ledger_check(process, fake))
            return result


async def ledger_check(process: BotProcess, fake: FakeOpenAI) -> dict[str, object]:
    """After a crash: calls the server billed with no ledger row, and rows left pending."""
    engine = create_engine(f"sqlite+aiosqlite:///{process.database}")
    try:
        rows = await Ledger(make_sessionmaker(engine)).rows()
    finally:
        await engine.dispose()
    call_ids = {row.call_id for row in rows}
    return {
        "bot_starts": process.starts,
        "billed_calls_missing_from_ledger": sum(
            1 for r in fake.requests if r.billed and r.client_request_id not in call_ids
        ),
        "ledger_rows_pending": sum(1 for row in rows if row.status == CallStatus.PENDING),
        "ledger_rows_interrupted": sum(1 for row in rows if row.error_kind == "interrupted"),
        "bot_max_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1000)
    parser.add_argument("--rpm", type=int, default=500)
    parser.add_argument("--tpm", type=int, default=30000)
    parser.add_argument(
        "--window-s", type=float, default=60.0, help="length of the rate-limit 'minute' (60 = real)"
    )
    parser.add_argument(
        "--spread-s", type=float, default=60.0, help="the threads are opened over this many seconds"
    )
    parser.add_argument("--max-output-tokens", type=int, default=150)
    parser.add_argument("--timeout-s", type=float, default=2.0)
    parser.add_argument(
        "--latency-s", type=float, default=0.0, help="how long each model answer takes"
    )
    parser.add_argument("--deadline-s", type=float, default=3600.0)
    parser.add_argument("--faults", action="store_true")
    parser.add_argument(
        "--crash",
        action="store_true",
        help="run the bot as its own process, SIGKILL it half-way and start it again",
    )
    parser.add_argument(
        "--baseline", action="store_true", help="also run the burst with the pacer off"
    )
    args = parser.parse_args()
    if args.crash and args.baseline:
        parser.error("--baseline turns the pacer off inside the process: not with --crash")
    quiet()
    ours = asyncio.run(one_burst(args, paced=True))
    print(f"paced : {ours}")
    result: dict[str, object] = dict(ours)
    if args.baseline:
        base = asyncio.run(one_burst(args, paced=False))
        print(f"no pacer (baseline): {base}")
        result["baseline"] = base
        result["http_429_ratio_vs_baseline"] = round(
            int(ours["http_429"]) / max(1, int(base["http_429"])), 3
        )
    result["faults"] = args.faults
    result["crash"] = args.crash
    result["max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result["note"] = (
        "max_rss_mb: this process (both fake servers; the bot too unless --crash); "
        "bot_max_rss_mb: the bot process (--crash)"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
