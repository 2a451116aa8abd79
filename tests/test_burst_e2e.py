"""A burst of forum threads through the real bot: none lost, none answered twice,
answered as fast as the rate limits allow (429s rare), with and without faults.

The scaled-down version of benchmarks' burst: the fake OpenAI's rate-limit "minute"
lasts two seconds so the pacing is exercised within seconds. (At one second the faults
case went over its 429 bound once in about five full-suite runs: 2 of 68 requests.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ibot.testing.harness import Harness

pytestmark = pytest.mark.slow

THREADS = 50
SETTINGS = {
    "features": {"auto_reply": {"max_output_tokens": 150}},
    "openai": {"timeout_s": 1.0, "max_retries": 8, "retry_max_wait_s": 5},
}


async def run_burst(tmp_path: Path, *, faults: bool) -> dict[str, int]:
    openai = {"rpm": 2000, "tpm": 8000, "window_s": 2.0, "seed": 7}
    async with Harness(tmp_path, settings=SETTINGS, openai=openai) as harness:
        world, discord, fake = harness.world, harness.discord, harness.openai
        fake.hang_s = 30.0
        if faults:
            fake.fault_rates = {"5xx": 0.10, "hang": 0.05}
        threads = []
        for i in range(THREADS):
            threads.append(
                await discord.create_forum_thread(
                    world.forum,
                    author=world.member,
                    title=f"Question {i}",
                    content=f"Mon script numéro {i} plante, pourquoi ?",
                )
            )
            if faults and i == THREADS // 2:
                await discord.drop_gateway(replay_last=5)
        await discord.wait_for(lambda: all(discord.messages_in(t) for t in threads), timeout=120)
        await discord.flush()
        answers = [discord.messages_in(t) for t in threads]
        model_requests = [r for r in fake.requests if r.body.get("messages")]
        return {
            "lost": sum(1 for a in answers if not a or not a[0].embeds),
            "duplicates": sum(max(0, len(a) - 1) for a in answers),
            "http_429": sum(1 for r in model_requests if r.status == 429),
            "requests": len(model_requests),
        }


async def test_burst_without_faults(tmp_path):
    result = await run_burst(tmp_path, faults=False)
    assert result["lost"] == 0 and result["duplicates"] == 0
    assert result["http_429"] <= 0.02 * result["requests"], result


async def test_burst_with_faults_and_a_gateway_drop(tmp_path):
    result = await run_burst(tmp_path, faults=True)
    assert result["lost"] == 0 and result["duplicates"] == 0, result
    assert result["http_429"] <= 0.02 * result["requests"], result
