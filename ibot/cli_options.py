"""Options shared by the command-line apps (`ibot …`, `ibot kb …`): one definition, so
every command spells `--config` the same way, and the global options of `ibot`."""

from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated

import typer

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="TOML settings file (default: $IBOT_CONFIG or config/ibot.toml).",
        show_default=False,
    ),
]

# Help texts are shown as written: Typer's default Rich markup takes any "[word]" for a
# style tag and drops it ("TOML settings whose [local_model] …" lost its table name).
# Every Typer app of the command line is made with this mode.
HELP_MARKUP = None

# Commands that are the bot itself: their log is the product, at the configured level.
SERVICE_COMMANDS = frozenset({"run"})
# The configured level, given in the environment: the user asked for that log.
LEVEL_VARIABLE = "IBOT_LOGGING__LEVEL"
# The short spelling, for a command line: `IBOT_LOG_LEVEL=INFO ibot ask …`; it wins.
SHORT_LEVEL_VARIABLE = "IBOT_LOG_LEVEL"

# Set by `global_options` for the command it runs; True (the configured level) when a
# command is called some other way (a sub-app on its own, from code).
_full_log: ContextVar[bool] = ContextVar("ibot_full_log", default=True)


def global_options(
    ctx: typer.Context,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Also print the log's info lines (migrations, each model call) on stderr.",
        ),
    ] = False,
) -> None:
    """The options of `ibot` itself, before the command: whether it logs fully."""
    full = (
        verbose
        or ctx.invoked_subcommand in SERVICE_COMMANDS
        or any(name.upper() in (LEVEL_VARIABLE, SHORT_LEVEL_VARIABLE) for name in os.environ)
    )
    token = _full_log.set(full)
    ctx.call_on_close(lambda: _full_log.reset(token))


def full_log() -> bool:
    """Whether this command logs at the configured level; otherwise only warnings and
    errors: a command run by hand shows its answer, not every library's info lines."""
    return _full_log.get()


def level_from_environment() -> str | None:
    """`IBOT_LOG_LEVEL`, upper-cased, when set (not empty); else None."""
    value = os.environ.get(SHORT_LEVEL_VARIABLE, "").strip()
    return value.upper() or None
