"""Fixtures shared by the whole suite.

Every test runs offline: the host's real credentials and config are kept out, so a
developer's own OPENAI_API_KEY or BOT_TOKEN can neither leak into nor change a test.
"""

from __future__ import annotations

import os

import pytest

_HOST_VARIABLES = (
    "BOT_TOKEN",
    "DISCORD_TOKEN",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "FORUM_CHANNEL_IDS",
    "GPT_CHANNEL_ID",
    "IBOT_CONFIG",
    "IBOT_DATABASE_URL",
)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _HOST_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name in list(os.environ):
        if name.startswith("IBOT_"):
            monkeypatch.delenv(name, raising=False)
