"""SIGKILL in the middle of a burst: the bot process dies wherever it is, starts again,
and every thread still ends with exactly one answer, with a ledger that misses no call
the OpenAI server served and holds no half-written row.

The bot runs as its own process (`python -m ibot run`, as deployed) against the fake
Discord and the fake OpenAI server, which live in the test process and outlive it.
"""

from __future__ import annotations

import pytest

from ibot.db.engine import create_engine, make_sessionmaker
from ibot.db.ledger import Ledger
from ibot.db.threads import ThreadState, ThreadStore
from ibot.domain import CallStatus, ErrorKind, Usage, UsageSource
from ibot.pricing import default_price_table
from ibot.testing.bot_process import BotProcess
from ibot.testing.harness import Harness

pytestmark = pytest.mark.slow

THREADS = 40
OPENED_WHILE_DOWN = 5
FINAL_STATUSES = {CallStatus.OK, CallStatus.ERROR, CallStatus.FALLBACK, CallStatus.REFUSED}


async def test_sigkill_mid_burst_then_restart_answers_each_thread_once(tmp_path):
    settings = {
        "openai": {"max_concurrent_calls": 4},
        "features": {"auto_reply": {"max_output_tokens": 120}},
    }
    async with Harness(tmp_path, in_process_bot=False, openai={"seed": 3}) as harness:
        discord, fake, world = harness.discord, harness.openai, harness.world
        assert world is not None
        fake.latency_s = 0.3  # answers take a while, so calls are in flight at the kill
        bot = BotProcess(harness, tmp_path, settings=settings)
        await bot.start()

        async def open_thread(i: int):
            return await discord.create_forum_thread(
                world.forum,
                author=world.member,
                title=f"Question {i}",
                content=f"Mon script {i} plante avec une KeyError, pourquoi ?",
            )

        threads = [await open_thread(i) for i in range(THREADS)]

        def answered() -> int:
            return sum(1 for t in threads if discord.messages_in(t))

        def in_flight() -> list:
            return [r for r in fake.requests if r.billed and r.status == 0]

        # Kill once a quarter is answered, at a moment calls are being generated.
        await discord.wait_for(lambda: answered() >= THREADS // 4 and in_flight(), timeout=60)
        killed_during = {r.client_request_id for r in in_flight()}
        await bot.kill()
        assert killed_during and answered() < THREADS  # it really died mid-burst
        assert len(killed_during) <= 4  # openai.max_concurrent_calls

        # Questions asked while the bot is down are caught up at the next start.
        threads += [await open_thread(THREADS + i) for i in range(OPENED_WHILE_DOWN)]
        await bot.start()
        await discord.wait_for(lambda: answered() == len(threads), timeout=120)
        assert await bot.stop() == 0
        await discord.flush()

        # Every thread: exactly one message, the answer embed.
        for thread in threads:
            messages = discord.messages_in(thread)
            assert len(messages) == 1, (thread.name, [m.data for m in messages])
            assert messages[0].embeds

        engine = create_engine(f"sqlite+aiosqlite:///{bot.database}")
        try:
            sessionmaker = make_sessionmaker(engine)
            rows = await Ledger(sessionmaker).rows()
            states = await ThreadStore(sessionmaker, owner="test").states(t.id for t in threads)
        finally:
            await engine.dispose()

    assert {state for state, _ in states.values()} == {ThreadState.ANSWERED}
    assert len(states) == len(threads)

    # No torn rows: every row has a final status; an ok row has measured usage and a price.
    assert {row.status for row in rows} <= FINAL_STATUSES
    by_call = {row.call_id: row for row in rows}
    assert len(by_call) == len(rows) and None not in by_call
    prices = default_price_table()
    served = {r.request_id: r for r in fake.requests if r.served}
    for row in rows:
        if row.status == CallStatus.OK:
            record = served[row.request_id]
            assert row.usage_source == UsageSource.MEASURED
            assert (row.prompt_tokens, row.completion_tokens) == (
                record.prompt_tokens,
                record.completion_tokens,
            )
            assert row.cost_micros == prices.cost_micros(
                Usage(record.prompt_tokens, record.completion_tokens), record.model
            )

    # No missing rows: every call the server billed, answered or cut off by the kill, is
    # in the ledger by its call id; the cut-off ones as interrupted, at a cost no lower
    # than what the server billed.
    for record in fake.requests:
        if not record.billed:
            continue
        row = by_call[record.client_request_id]
        billed = prices.cost_micros(
            Usage(record.prompt_tokens, record.completion_tokens), record.model
        )
        assert row.cost_micros is not None and row.cost_micros >= billed
        if record.client_request_id in killed_during:
            assert (row.status, row.error_kind) == (CallStatus.ERROR, ErrorKind.INTERRUPTED)
            assert row.usage_source == UsageSource.ESTIMATED
    assert bot.starts == 2
