"""Logs: one pipeline for structlog and stdlib loggers, and no secret ever in a line."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog

from ibot.logging import configure_logging, get_logger, redact_text, register_secret

OPENAI_KEY = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx0123456789"
DISCORD_TOKEN = "MTE4NzY1NDMyMTA5ODc2NTQzMg.GaBcDe.abcdefghijklmnopqrstuvwxyz0123456789"
REGISTERED = "hunter2-registered-secret"
LATE = "registered-later-secret"
SECRETS = (OPENAI_KEY, DISCORD_TOKEN, REGISTERED, LATE)


@pytest.fixture(autouse=True)
def restore_logging():
    """Leave the process's logging as it was: other tests capture structlog events."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    config = structlog.get_config()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.configure(**config)


def configured(fmt: str) -> io.StringIO:
    stream = io.StringIO()
    configure_logging(fmt, "DEBUG", secrets=[REGISTERED], stream=stream)
    return stream


def emit_everything() -> None:
    """Every road a secret can take into a log line."""
    register_secret(LATE)
    log = get_logger("ibot.test")
    log.info(f"starting with key {OPENAI_KEY} and token {DISCORD_TOKEN}")
    log.warning("call_failed", api_key=OPENAI_KEY, header=f"Authorization: Bot {DISCORD_TOKEN}")
    log.info(
        "nested",
        request={"headers": {"x": f"Bearer {OPENAI_KEY}"}, "args": [REGISTERED, (LATE,)]},
        url=f"https://example.com/v1?api_key={REGISTERED}&token=abc",
    )
    try:
        raise RuntimeError(f"Incorrect API key provided: {OPENAI_KEY} ({REGISTERED})")
    except RuntimeError:
        log.exception("exploded")
    logging.getLogger("openai").warning("retrying with Authorization: Bearer %s", OPENAI_KEY)
    logging.getLogger("nextcord.http").error("login failed for %s", DISCORD_TOKEN)
    try:
        raise ValueError(f"token {DISCORD_TOKEN} rejected, key {LATE}")
    except ValueError:
        logging.getLogger("httpx").error("request failed", exc_info=True)


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_no_secret_reaches_the_output(fmt):
    stream = configured(fmt)

    emit_everything()

    output = stream.getvalue()
    assert "exploded" in output and "Incorrect API key provided" in output
    assert "retrying with Authorization" in output and "login failed for" in output
    assert "[REDACTED]" in output
    for secret in SECRETS:
        assert secret not in output, f"{secret} leaked in {fmt} output"


def test_json_lines_are_objects_with_the_fields_passed():
    stream = configured("json")
    log = get_logger("ibot.gateway")

    log.info("model_call", feature="ask", prompt_tokens=12, cost_micros=345, model="gpt-4o")
    logging.getLogger("sqlalchemy.pool").warning("pool is %s", "full")

    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    ours, theirs = (json.loads(line) for line in lines)
    assert ours["event"] == "model_call" and ours["feature"] == "ask"
    assert ours["prompt_tokens"] == 12 and ours["cost_micros"] == 345
    assert ours["level"] == "info" and ours["logger"] == "ibot.gateway"
    assert ours["timestamp"].endswith("Z")  # ISO 8601, UTC
    assert theirs["event"] == "pool is full" and theirs["level"] == "warning"
    assert theirs["logger"] == "sqlalchemy.pool" and theirs["timestamp"].endswith("Z")


def test_exception_is_rendered_into_the_json_line():
    stream = configured("json")

    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        get_logger("ibot.test").exception("boom")

    [line] = stream.getvalue().splitlines()
    event = json.loads(line)
    assert "ZeroDivisionError" in event["exception"] and "Traceback" in event["exception"]


def test_caller_objects_are_not_modified_by_redaction():
    configured("json")
    fields = {"api_key": OPENAI_KEY, "nested": [OPENAI_KEY]}

    get_logger("ibot.test").info("x", fields=fields)

    assert fields == {"api_key": OPENAI_KEY, "nested": [OPENAI_KEY]}


def test_configuring_twice_does_not_duplicate_lines():
    configured("json")
    stream = configured("json")

    get_logger("ibot.test").info("once")
    logging.getLogger("aiohttp.client").warning("once too")

    assert len(stream.getvalue().splitlines()) == 2


def test_level_filters_and_noisy_libraries_are_quieted():
    stream = io.StringIO()
    configure_logging("json", "INFO", stream=stream)

    get_logger("ibot.test").debug("hidden")
    logging.getLogger("sqlalchemy.engine.Engine").info("SELECT 1")
    logging.getLogger("httpx2").info("HTTP Request: POST ...")
    get_logger("ibot.test").info("shown")

    events = [json.loads(line)["event"] for line in stream.getvalue().splitlines()]
    assert events == ["shown"]


def test_auto_format_is_json_when_not_a_terminal():
    stream = io.StringIO()
    configure_logging("auto", stream=stream)

    get_logger("ibot.test").info("hello", n=1)

    assert json.loads(stream.getvalue())["n"] == 1


def test_bad_format_or_level_is_refused():
    with pytest.raises(ValueError, match="format"):
        configure_logging("xml", stream=io.StringIO())
    with pytest.raises(ValueError, match="level"):
        configure_logging("json", "LOUD", stream=io.StringIO())


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        (f"key={OPENAI_KEY}", "key="),
        ("Authorization: Bot abc.def.ghi", "Authorization: Bot "),
        ("GET /x?api_key=s3cr3tvalue&page=2", "page=2"),
        ("postgresql+asyncpg://ibot:pa55word@db/ibot", "postgresql+asyncpg://ibot:"),
        ("curl -H 'Authorization: Bearer abcdef123456'", "Bearer "),
        # An interaction's token, as nextcord's request lines and errors quote the URL.
        (
            "PATCH https://discord.com/api/v10/webhooks/1234567/aW50ZXJhY3Rpb246MTIz.x-Y_z"
            "/messages/@original has returned 404",
            "/webhooks/1234567/",
        ),
        ("POST /api/v10/interactions/987654/aW50ZXJhY3Rpb246MTIz.x-Y_z/callback", "/callback"),
    ],
)
def test_secret_shapes_are_masked_and_the_rest_kept(text, kept):
    masked = redact_text(text)

    assert "[REDACTED]" in masked and kept in masked
    for word in (
        "sk-proj",
        "abc.def.ghi",
        "s3cr3tvalue",
        "pa55word",
        "abcdef123456",
        "aW50ZXJhY3Rpb246MTIz",
    ):
        assert word not in masked


def test_ordinary_text_is_left_alone():
    text = "task-queue-processor-1 ran 3 tasks; prompt_tokens=12 model=gpt-4o-mini"

    assert redact_text(text) == text
