"""Structured logs for iBot and every library under it, with secrets masked on the way out.

Why one pipeline: nextcord, openai, httpx, aiohttp, SQLAlchemy and Alembic log through the
standard `logging` module while iBot logs through structlog. `configure_logging` puts a
single `structlog.stdlib.ProcessorFormatter` on the root handler, so both kinds of line get
the same fields (ISO-8601 UTC `timestamp`, `level`, `logger`), the same renderer (JSON
lines in production, a readable console in a terminal) and, above all, the same redactor.

Redaction is defence in depth, because a key can reach a log line by many roads (an
exception message quoting a header, a URL with `?api_key=`, a library's debug line):

1. `redact_secrets` walks the whole event dict (nested dicts, lists, tuples, the rendered
   `exception` traceback) and masks every registered secret value and every known secret
   shape. It runs last before rendering, after `format_exc_info`, both in the structlog
   chain and in the pre-chain of stdlib records.
2. The renderer's output is masked once more, which also covers values whose `repr` the
   renderer computes itself (an object holding a key, say).

Secret values are registered by `configure_logging(secrets=...)` (the CLI passes
`Settings.secret_values()`) and by `register_secret` at run time; shapes are OpenAI keys
(`sk-...`, `sk-proj-...`), `Bearer ...`, `Authorization: Bot ...`, Discord bot tokens,
`api_key=`/`token=`/`password=` parameters and the password of `scheme://user:pass@host`.

A model-call line (event `model_call`, logged by the gateway, never by callers) carries
these standard fields, so that dashboards and `grep` work the same everywhere:
`feature`, `guild_id`, `channel_id`, `user_id`, `model`, `backend`, `prompt_tokens`,
`completion_tokens`, `cost_micros`, `latency_ms`, `request_id`, `status`.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "[REDACTED]"

# Shorter registered values are ignored: masking "ibot" or "admin" everywhere would make
# the logs unreadable, and no real API key or token is that short.
MIN_SECRET_LENGTH = 8

FORMATS = ("auto", "json", "console")
LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")

# Libraries that are chatty at the level we run at: their floor, raised with ours.
QUIET_LOGGERS = {
    "sqlalchemy.engine": logging.WARNING,
    # "setup plugin alembic.autogenerate…" seven times per migration run: internals.
    "alembic.runtime.plugins": logging.WARNING,
    "nextcord.gateway": logging.INFO,
    "httpx2": logging.WARNING,
    "httpx": logging.WARNING,
    "httpcore": logging.WARNING,
}

# Dict keys whose string value is a credential whatever it looks like.
SENSITIVE_KEYS = frozenset(
    {
        "access_token",
        "api_key",
        "apikey",
        "authorization",
        "bot_token",
        "client_secret",
        "discord_token",
        "openai_api_key",
        "password",
        "secret",
        "token",
    }
)

_NOT_ALREADY = r"(?!\[REDACTED\])"
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # OpenAI keys, including sk-proj-... and sk-svcacct-...
    (re.compile(r"(?<![A-Za-z0-9_-])sk-[A-Za-z0-9_-]{10,}"), REDACTED),
    # Authorization headers, whatever the scheme (Bot for Discord, Bearer for OpenAI).
    (
        re.compile(
            r"(?i)\b(authorization['\"]?\s*[:=]\s*['\"]?)((?:bot|bearer|basic|token)\s+)?+"
            + _NOT_ALREADY
            + r"[^\s'\",;}\]]+"
        ),
        r"\1\2" + REDACTED,
    ),
    (re.compile(r"(?i)\b(bearer\s+)" + _NOT_ALREADY + r"[A-Za-z0-9._~+/=-]{6,}"), r"\1" + REDACTED),
    # Discord bot tokens: three base64url parts separated by dots.
    (
        re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{23,28}\.[A-Za-z0-9_-]{6}\.[A-Za-z0-9_-]{27,}"),
        REDACTED,
    ),
    # Credentials in query strings and key=value text.
    (
        re.compile(
            r"(?i)(?<![A-Za-z0-9_-])((?:api[_-]?key|access[_-]?token|refresh[_-]?token"
            r"|client[_-]?secret|token|secret|password|passwd)=)"
            + _NOT_ALREADY
            + r"[^&\s#'\"\\,;]+"
        ),
        r"\1" + REDACTED,
    ),
    # Interaction tokens in Discord's URLs (a library's request line, an error quoting
    # its URL): /webhooks/{application id}/{token}, /interactions/{id}/{token}/callback.
    # Each command's token is valid 15 minutes; registering every one would grow the
    # secret list without end, and their place in the URL is enough to find them.
    (
        re.compile(r"(/(?:webhooks|interactions)/\d+/)" + _NOT_ALREADY + r"[A-Za-z0-9_.-]{20,}"),
        r"\1" + REDACTED,
    ),
    # The password of a URL: postgresql://user:password@host/db
    (
        re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/\s@'\"]+:)" + _NOT_ALREADY + r"[^@\s/'\"]+@"),
        r"\1" + REDACTED + "@",
    ),
)

_MAX_DEPTH = 32

_lock = threading.Lock()
_secrets: set[str] = set()
_secret_pattern: re.Pattern[str] | None = None


def register_secret(value: str | None) -> None:
    """Mask `value` in every log line from now on (values under 8 characters are ignored)."""
    global _secret_pattern
    if not value:
        return
    candidates = {value, value.strip()}
    with _lock:
        added = {c for c in candidates if len(c) >= MIN_SECRET_LENGTH} - _secrets
        if not added:
            return
        _secrets.update(added)
        # Longest first, so that a secret containing another is masked whole.
        ordered = sorted(_secrets, key=len, reverse=True)
        _secret_pattern = re.compile("|".join(re.escape(s) for s in ordered))


def redact_text(text: str) -> str:
    """`text` with every registered secret and every known secret shape masked."""
    pattern = _secret_pattern
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    for regex, replacement in _PATTERNS:
        text = regex.sub(replacement, text)
    return text


def _is_sensitive_key(key: object) -> bool:
    return isinstance(key, str) and key.lower() in SENSITIVE_KEYS


def _scrub(value: Any, depth: int = 0) -> Any:
    """A copy of `value` with secrets masked in every string it contains.

    Containers are rebuilt rather than changed in place: the dict a caller passed as a
    log field is the caller's and must come out of logging untouched.
    """
    if isinstance(value, str):
        return redact_text(value)
    if depth >= _MAX_DEPTH:
        return value  # the rendered line is still masked as a whole
    if isinstance(value, dict):
        return {
            key: REDACTED
            if _is_sensitive_key(key) and isinstance(item, str) and item
            else _scrub(item, depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_scrub(item, depth + 1) for item in value]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(_scrub(item, depth + 1) for item in value)
    if isinstance(value, set | frozenset):
        return type(value)(_scrub(item, depth + 1) for item in value)
    return value


def redact_secrets(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: mask secrets anywhere in the event dict (run it last)."""
    return {
        key: item
        if key == "_record"
        else REDACTED
        if _is_sensitive_key(key) and isinstance(item, str) and item
        else _scrub(item)
        for key, item in event_dict.items()
    }


class _RedactedRenderer:
    """Wraps the final renderer so that its output string is masked too."""

    def __init__(self, renderer: Callable[[WrappedLogger, str, EventDict], str | bytes]) -> None:
        self.renderer = renderer

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> str:
        rendered = self.renderer(logger, method_name, event_dict)
        if isinstance(rendered, bytes):
            rendered = rendered.decode("utf-8", errors="replace")
        return redact_text(rendered)


def _stack_info_to_stack(
    logger: WrappedLogger, method_name: str, event_dict: EventDict
) -> EventDict:
    """A stdlib record's `stack_info` is already text: give it the key structlog renders."""
    stack = event_dict.pop("stack_info", None)
    if isinstance(stack, str):
        event_dict["stack"] = stack
    return event_dict


class _IBotHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Our root handler, recognised on reconfiguration so it is replaced, not duplicated."""


def _resolve_level(level: str | int) -> int:
    if isinstance(level, int):
        return level
    name = level.strip().upper()
    if name == "WARN":
        name = "WARNING"
    if name not in LEVELS:
        raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(LEVELS)}")
    return logging.getLevelNamesMapping()[name]


def _use_json(fmt: str, stream: TextIO) -> bool:
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if fmt == "auto":
        isatty = getattr(stream, "isatty", None)
        return not (callable(isatty) and isatty())
    return fmt == "json"


def configure_logging(
    fmt: str = "auto",
    level: str | int = "INFO",
    *,
    secrets: Iterable[str | None] = (),
    stream: TextIO | None = None,
) -> None:
    """Send structlog and stdlib logging through one redacting pipeline to `stream`.

    `fmt` is "json" (one JSON object per line), "console" (readable, coloured on a
    terminal) or "auto" (console when `stream` is a terminal, else JSON). Calling it again
    replaces the previous setup instead of adding a second handler.
    """
    stream = stream if stream is not None else sys.stderr
    use_json = _use_json(fmt.strip().lower(), stream)
    root_level = _resolve_level(level)
    for secret in secrets:
        register_secret(secret)

    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        timestamper,
    ]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            structlog.processors.UnicodeDecoder(),
            redact_secrets,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: structlog.testing.capture_logs and a later reconfiguration must
        # reach loggers that modules created at import time.
        cache_logger_on_first_use=False,
    )

    renderer: Callable[[WrappedLogger, str, EventDict], str | bytes]
    if use_json:
        renderer = structlog.processors.JSONRenderer()
    else:
        isatty = getattr(stream, "isatty", None)
        renderer = structlog.dev.ConsoleRenderer(
            colors=bool(callable(isatty) and isatty()),
            # Tracebacks arrive already formatted (and masked) in the `exception` field.
            exception_formatter=structlog.dev.plain_traceback,
        )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            *shared,
            structlog.stdlib.ExtraAdder(),
            _stack_info_to_stack,
            structlog.processors.format_exc_info,
            redact_secrets,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _RedactedRenderer(renderer),
        ],
    )

    handler = _IBotHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _IBotHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(root_level)
    for name, floor in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(max(floor, root_level))


def quiet_level(level: str | int) -> int:
    """`level`, raised to WARNING at least: what a command run by hand logs, so that its
    user sees the answer and the warnings, not every library's info lines."""
    return max(_resolve_level(level), logging.WARNING)


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    """A structlog logger that goes through the pipeline `configure_logging` set up."""
    return structlog.stdlib.get_logger(name)
