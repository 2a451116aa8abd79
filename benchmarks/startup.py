"""Start-up time: `ibot --help`, and the bot's own start until it is ready.

(a) `ibot --help` as a user types it (the installed `ibot` script, a process each time),
median of `--runs` runs, against a baseline measured in the same run: the same Python
starting and doing nothing (`python -c pass`). `help_ratio` is help / baseline: what
the command line costs on top of the interpreter. Also listed: the heavy libraries
`import ibot.cli` loads (none expected).

(b) `ibot run` as its own process (ibot/testing/bot_process.py: `python -m ibot run`,
settings from a TOML file and the environment) against the project's fake Discord and
fake OpenAI server on 127.0.0.1, from the process's start until its /healthz says the
Discord gateway is connected (polled every 0.1 s), median of `--runs` starts. The first
start creates the database (all migrations); the others find it up to date, as a
restart does. Each start is ended with SIGTERM before the next.

    python benchmarks/startup.py              # 5 runs of each
    python benchmarks/startup.py --runs 3

Prints one line per measure, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import structlog

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ibot.testing.bot_process import BotProcess  # noqa: E402
from ibot.testing.harness import Harness  # noqa: E402

HEAVY = ("aiohttp", "matplotlib", "torch", "nextcord", "openai", "sqlalchemy", "alembic")


def quiet() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    logging.disable(logging.WARNING)


def wall_times(command: list[str], runs: int, cwd: Path) -> list[float]:
    """Seconds each of `runs` runs of `command` took, start to exit (one warm-up first,
    so that the first figure is not the file system cache's)."""
    subprocess.run(command, cwd=cwd, capture_output=True, check=True)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, cwd=cwd, capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    return times


def heavy_imports() -> list[str]:
    code = f"import sys, ibot.cli; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [name for name in out.stdout.strip().split(",") if name]


async def ready_times(runs: int) -> list[float]:
    """Seconds from `ibot run`'s process start to a connected gateway, `runs` starts."""
    times = []
    with tempfile.TemporaryDirectory(prefix="ibot-startup-") as tmp:
        async with Harness(Path(tmp), in_process_bot=False) as harness:
            bot = BotProcess(harness, Path(tmp))
            for _ in range(runs):
                started = time.perf_counter()
                await bot.start()
                times.append(time.perf_counter() - started)
                code = await bot.stop()
                if code != 0:
                    raise RuntimeError(f"ibot run exited with {code}:\n{bot.log_tail()}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each measure")
    args = parser.parse_args()
    quiet()
    ibot = Path(sys.executable).with_name("ibot")
    with tempfile.TemporaryDirectory(prefix="ibot-help-") as tmp:
        help_runs = wall_times([str(ibot), "--help"], args.runs, Path(tmp))
        baseline_runs = wall_times([sys.executable, "-c", "pass"], args.runs, Path(tmp))
    help_s, baseline_s = statistics.median(help_runs), statistics.median(baseline_runs)
    heavy = heavy_imports()
    print(f"ibot --help: median {help_s:.3f} s; python -c pass: {baseline_s:.3f} s")
    print(f"heavy libraries imported by `import ibot.cli`: {heavy or 'none'}")
    ready_runs = asyncio.run(ready_times(args.runs))
    ready_s = statistics.median(ready_runs)
    shown = ", ".join(f"{t:.2f}" for t in ready_runs)
    print(f"ibot run until ready: median {ready_s:.2f} s (runs: {shown})")
    result = {
        "runs": args.runs,
        "help_s": round(help_s, 4),
        "baseline_s": round(baseline_s, 4),
        "help_ratio": round(help_s / baseline_s, 2),
        "help_runs_s": [round(t, 4) for t in help_runs],
        "baseline_runs_s": [round(t, 4) for t in baseline_runs],
        "cli_heavy_imports": heavy,
        "ready_s": round(ready_s, 3),
        "ready_runs_s": [round(t, 3) for t in ready_runs],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
