"""The bot as an operating-system process of its own, against the harness's fakes.

`ibot run` is started exactly as a deployer starts it (`python -m ibot run`, settings
from a TOML file and the environment), except that `discord.api_base_url` and the
OpenAI base URL point at the fake servers on 127.0.0.1. The crash test and
`benchmarks/burst.py --crash` kill it with SIGKILL, which no in-process bot can
imitate: nothing gets to run a `finally`, close a session or finish a database write.
Readiness is read from the bot's own /healthz, as an uptime monitor would.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import IO, Any

import aiohttp

from ibot.testing.harness import DISCORD_TOKEN, OPENAI_KEY, Harness, world_settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def toml_text(table: dict[str, Any], prefix: str = "") -> str:
    """Plain values and nested tables as TOML (JSON's scalars and arrays are valid TOML)."""
    lines = [
        f"{key} = {json.dumps(value)}"
        for key, value in table.items()
        if not isinstance(value, dict)
    ]
    for key, value in table.items():
        if isinstance(value, dict):
            name = f"{prefix}{key}"
            lines.append(f"\n[{name}]")
            lines.append(toml_text(value, prefix=f"{name}."))
    return "\n".join(lines)


class BotProcess:
    """Start, SIGKILL and restart `ibot run` on one database and one configuration."""

    def __init__(self, harness: Harness, workdir: Path, *, settings: dict[str, Any] | None = None):
        world = harness.world
        assert world is not None, "start the harness first"
        self.harness = harness
        self.workdir = workdir
        self.health_port = free_port()
        self.database = workdir / "ibot.db"
        self.log_path = workdir / "bot.log"
        config = world_settings(world, settings or {})
        config["discord"].setdefault("api_base_url", harness.discord.base_url)
        config["health"] = {"enabled": True, "port": self.health_port}
        config["logging"] = {"format": "json", "level": "INFO"}
        self.config_path = workdir / "ibot.toml"
        self.config_path.write_text(toml_text(config) + "\n", encoding="utf-8")
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", str(workdir)),
            "IBOT_CONFIG": str(self.config_path),
            "BOT_TOKEN": DISCORD_TOKEN,
            "OPENAI_API_KEY": OPENAI_KEY,
            "OPENAI_BASE_URL": harness.openai.base_url,
            "IBOT_DATABASE_URL": f"sqlite+aiosqlite:///{self.database}",
        }
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0
        self._log: IO[bytes] | None = None

    async def start(self, *, timeout: float = 60.0) -> None:  # noqa: ASYNC109
        """Start `ibot run` and return once its /healthz says the gateway is connected."""
        assert self.process is None or self.process.returncode is not None, "already running"
        self._log = self.log_path.open("ab")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ibot",
            "run",
            cwd=self.workdir,  # no .env of the developer's checkout is read
            env=self.env,
            stdout=self._log,
            stderr=asyncio.subprocess.STDOUT,
        )
        self.starts += 1
        try:
            async with asyncio.timeout(timeout):
                await self._until_healthy()
        except TimeoutError:
            await self.kill()
            message = f"the bot process was not healthy in {timeout}s:\n{self.log_tail()}"
            raise TimeoutError(message) from None

    async def _until_healthy(self) -> None:
        url = f"http://127.0.0.1:{self.health_port}/healthz"
        async with aiohttp.ClientSession() as session:
            while True:
                assert self.process is not None
                if self.process.returncode is not None:
                    raise RuntimeError(
                        f"the bot process exited with {self.process.returncode}:\n{self.log_tail()}"
                    )
                try:
                    async with session.get(url) as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass  # not listening yet
                await asyncio.sleep(0.1)

    async def kill(self) -> None:
        """SIGKILL: the process ends at once, wherever it is. The signal goes out before
        this coroutine first waits, so what the caller saw just before still holds."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()
        self._close_log()

    async def stop(self, *, timeout: float = 30.0) -> int:  # noqa: ASYNC109
        """SIGTERM, as a service manager stops the bot; returns the exit code."""
        process = self.process
        if process is None:
            self._close_log()
            return 0
        if process.returncode is not None:
            self._close_log()
            return process.returncode
        process.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            await self.kill()
            raise
        self._close_log()
        return code

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
