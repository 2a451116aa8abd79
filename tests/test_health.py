"""/healthz tells the truth about the gateway and the database; /metrics is Prometheus."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ibot.db.engine import create_engine
from ibot.db.ledger import LedgerEntry
from ibot.domain import PacerStats
from ibot.health import GatewayStatus, HealthServer
from ibot.metrics import Metrics


@pytest.fixture
async def engine(tmp_path: Path):
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'h.db'}")
    yield engine
    await engine.dispose()


async def get(server: HealthServer, path: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{server.port}{path}") as response,
    ):
        return response.status, await response.text()


async def test_healthz_is_200_only_when_gateway_and_database_are_up(engine):
    status = {"value": GatewayStatus(connected=True, latency_s=0.042)}
    server = HealthServer(
        metrics=Metrics(), engine=engine, gateway_status=lambda: status["value"], port=0
    )
    await server.start()
    try:
        code, body = await get(server, "/healthz")
        assert code == 200 and '"heartbeat_latency_ms": 42.0' in body
        status["value"] = GatewayStatus(connected=False, latency_s=float("inf"))
        code, body = await get(server, "/healthz")
        assert code == 503 and '"gateway_connected": false' in body
    finally:
        await server.stop()


async def test_healthz_reports_an_unreachable_database(tmp_path: Path):
    broken = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'no-such-dir' / 'x.db'}")
    (tmp_path / "no-such-dir").rmdir()  # create_engine made it; take it away again
    server = HealthServer(
        metrics=Metrics(), engine=broken, gateway_status=lambda: GatewayStatus(True, 0.01), port=0
    )
    await server.start()
    try:
        code, body = await get(server, "/healthz")
        assert code == 503 and '"database": "unreachable"' in body
    finally:
        await server.stop()
        await broken.dispose()


async def test_metrics_count_calls_tokens_cost_errors_and_queue(engine):
    metrics = Metrics()
    metrics.observe_call(
        LedgerEntry(
            feature="ask",
            backend="openai",
            model_requested="gpt-4o",
            model="gpt-4o-2024-08-06",
            status="ok",
            prompt_tokens=100,
            completion_tokens=20,
            cost_micros=450,
            latency_ms=800,
        )
    )
    metrics.observe_call(
        LedgerEntry(
            feature="auto_reply",
            backend="openai",
            model_requested="gpt-4o",
            status="error",
            error_kind="timeout",
            latency_ms=30_000,
        )
    )
    metrics.watch_queue(
        lambda: PacerStats(
            depth=3,
            oldest_wait_s=12.5,
            in_flight=2,
            depth_by_priority={"interactive": 1, "background": 2},
        )
    )
    server = HealthServer(
        metrics=metrics, engine=engine, gateway_status=lambda: GatewayStatus(True, 0.01), port=0
    )
    await server.start()
    try:
        code, body = await get(server, "/metrics")
    finally:
        await server.stop()
    assert code == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert (
        value(
            "ibot_model_calls_total",
            feature="ask",
            model="gpt-4o-2024-08-06",
            backend="openai",
            status="ok",
        )
        == 1
    )
    assert (
        value("ibot_model_tokens_total", feature="ask", model="gpt-4o-2024-08-06", kind="prompt")
        == 100
    )
    assert value("ibot_cost_usd_total", feature="ask", model="gpt-4o-2024-08-06") == 0.00045
    assert value("ibot_model_errors_total", feature="auto_reply", kind="timeout") == 1
    assert value("ibot_queue_depth", priority="background") == 2
    assert value("ibot_queue_oldest_wait_seconds") == 12.5
    assert value("ibot_model_latency_seconds_count", feature="auto_reply", backend="openai") == 1
