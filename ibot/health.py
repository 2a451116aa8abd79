"""/healthz and /metrics for uptime monitors and Prometheus (off unless configured).

Replaces the "keep-alive web page" of bot tutorials with something that tells the
truth: 200 only when the Discord gateway is connected and the database answers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ibot.metrics import Metrics


@dataclass(frozen=True)
class GatewayStatus:
    connected: bool
    latency_s: float | None  # the last heartbeat's round trip


class HealthServer:
    def __init__(
        self,
        *,
        metrics: Metrics,
        engine: AsyncEngine,
        gateway_status: Callable[[], GatewayStatus],
        host: str = "127.0.0.1",
        port: int = 8080,
    ) -> None:
        self.metrics = metrics
        self.engine = engine
        self.gateway_status = gateway_status
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _database_ok(self) -> bool:
        try:
            async with self.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception:
            return False
        return True

    async def _healthz(self, request: web.Request) -> web.Response:
        gateway = self.gateway_status()
        database = await self._database_ok()
        latency = gateway.latency_s
        body = {
            "status": "ok" if gateway.connected and database else "unhealthy",
            "gateway_connected": gateway.connected,
            "heartbeat_latency_ms": None
            if latency is None or not math.isfinite(latency)
            else round(latency * 1000, 1),
            "database": "ok" if database else "unreachable",
        }
        status = 200 if body["status"] == "ok" else 503
        return web.Response(
            body=json.dumps(body).encode(), status=status, content_type="application/json"
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )
