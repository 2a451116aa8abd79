"""The `ibot` command line.

Every command loads and validates the settings first: a bad value prints one line
naming the key and exits with code 2. Heavy imports (nextcord, the fakes, torch) happen
inside the commands that need them, so `ibot --help` stays fast and torch-free (and
free of aiohttp, nextcord, SQLAlchemy: tests/test_cli_startup.py). A start-up failure
the user can fix (database, Discord, a path) is one line and exit code 2 too: `main`
hands it to ibot/startup_errors.py.
"""

from __future__ import annotations

import asyncio
import functools
import mimetypes
import sys
from collections.abc import Coroutine
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, assert_never

import typer

from ibot import startup_errors
from ibot.cli_options import (
    HELP_MARKUP,
    ConfigOption,
    full_log,
    global_options,
    level_from_environment,
)
from ibot.finetune.cli import finetune_app
from ibot.kb_cli import kb_app
from ibot.llm.serve_local_cli import serve_local_command

if TYPE_CHECKING:
    from ibot.config import Settings
    from ibot.services.report_view import ReportView


app = typer.Typer(
    help="iBot: an AI help assistant for Discord forum communities.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=HELP_MARKUP,
    callback=global_options,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True, rich_markup_mode=HELP_MARKUP)
costs_app = typer.Typer(
    help="Cost reports from the ledger.", no_args_is_help=True, rich_markup_mode=HELP_MARKUP
)
config_app = typer.Typer(help="Configuration.", no_args_is_help=True, rich_markup_mode=HELP_MARKUP)
app.add_typer(db_app, name="db")
app.add_typer(costs_app, name="costs")
app.add_typer(config_app, name="config")
app.add_typer(finetune_app, name="finetune")
app.add_typer(kb_app, name="kb")
app.command("serve-local")(serve_local_command)


class OutputFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


def _settings(config: Path | None, **overrides: Any) -> Settings:
    """Load settings and configure logging, or exit 2 with one clear line.

    A command run by hand logs only warnings and errors: its user wants the answer and
    its cost, not Alembic's and the gateway's info lines around it. `--verbose`, a level
    set in the environment (IBOT_LOG_LEVEL, IBOT_LOGGING__LEVEL) and the bot itself
    (`ibot run`) log at the configured level (IBOT_LOG_LEVEL's, when set).
    """
    from ibot.config import ConfigError, fail_on_config_error, load_settings
    from ibot.logging import LEVELS, configure_logging, quiet_level

    try:
        settings = load_settings(config, **overrides)
    except ConfigError as err:
        fail_on_config_error(err)
    startup_errors.remember_database_url(settings.database_url)
    level: str | int = settings.logging.level
    if (short := level_from_environment()) is not None:
        if short not in LEVELS:
            typer.echo(f"error: IBOT_LOG_LEVEL={short} is not one of {', '.join(LEVELS)}", err=True)
            raise typer.Exit(2)
        level = short
    if not full_log():
        level = quiet_level(level)
    configure_logging(settings.logging.format, level, secrets=settings.secret_values())
    return settings


def _run[T](coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question to ask.")],
    image: Annotated[
        list[Path] | None, typer.Option("--image", "-i", help="Attach an image (repeatable).")
    ] = None,
    file: Annotated[
        list[Path] | None, typer.Option("--file", "-f", help="Attach a text/log file.")
    ] = None,
    author: Annotated[str, typer.Option(help="Name the question is asked as.")] = "terminal",
    config: ConfigOption = None,
) -> None:
    """Ask a question through the same pipeline as /ask-gpt; prints the answer and its cost."""
    settings = _settings(config)
    raise typer.Exit(_run(_ask(settings, question, [*(image or []), *(file or [])], author)))


async def _ask(settings: Settings, question: str, paths: list[Path], author: str) -> int:
    from ibot.app import build_services
    from ibot.i18n import t
    from ibot.money import format_usd
    from ibot.services.attachments import AttachmentSource
    from ibot.services.outcomes import Answered, Failed, TooLong

    lang = settings.prompts.language
    sources = []
    for path in paths:
        if not path.is_file():
            typer.echo(f"error: no such file: {path}", err=True)
            return 2
        sources.append(
            AttachmentSource(
                filename=path.name,
                size=path.stat().st_size,
                content_type=mimetypes.guess_type(path.name)[0],
                read=functools.partial(asyncio.to_thread, path.read_bytes),
            )
        )
    services = await build_services(settings)
    try:
        outcome = await services.ask_service().ask(question, author=author, attachments=sources)
    finally:
        await services.aclose()
    for result in getattr(outcome, "attachments", ()):
        if result.problem:
            typer.echo(
                t(
                    result.problem,
                    lang,
                    name=result.name,
                    limit=f"{settings.attachments.max_download_bytes // (1024 * 1024)} MB",
                ),
                err=True,
            )
    match outcome:
        case Answered():
            typer.echo(outcome.text)
            typer.echo("")
            typer.echo(
                f"{outcome.model} ({outcome.backend}) · "
                + t(
                    "cost_footer",
                    lang,
                    tokens=outcome.usage.total_tokens,
                    cost=format_usd(outcome.cost_micros),
                )
                + f" · prompt {outcome.usage.prompt_tokens} (cached {outcome.usage.cached_tokens}"
                f", images {outcome.usage.image_tokens}) + completion "
                f"{outcome.usage.completion_tokens}"
            )
            return 0
        case Failed():
            typer.echo(t(f"error.{outcome.kind.value}", lang, budget="", reset=""), err=True)
            return 1
        case TooLong():
            typer.echo(
                t("ask.too_long", lang, tokens=outcome.tokens, limit=outcome.limit), err=True
            )
            return 1
        case _:
            assert_never(outcome)


@app.command()
def demo(config: ConfigOption = None) -> None:
    """Play the offline demo against the fake OpenAI server and print what users would see."""
    from ibot.demo import play_demo

    raise typer.Exit(play_demo(_settings(config), echo=typer.echo))


@app.command()
def run(config: ConfigOption = None) -> None:
    """Start the bot; without a Discord token, say so in one line and play the demo."""
    settings = _settings(config)
    if settings.discord_token is None:
        typer.echo("No Discord token configured (BOT_TOKEN): playing the offline demo instead.")
        from ibot.demo import play_demo

        raise typer.Exit(play_demo(settings, echo=typer.echo))
    from ibot.bot import run_bot

    raise typer.Exit(_run(run_bot(settings)))


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = None) -> None:
    """Create or upgrade the ledger schema (the bot also does this at start)."""
    from ibot.db.migrate import current_revision, upgrade

    settings = _settings(config)

    async def go() -> str | None:
        await upgrade(settings.database_url)
        return await current_revision(settings.database_url)

    revision = _run(go())
    typer.echo(f"database at revision {revision}")


def _group_by_choice(value: str) -> str:
    """`--group-by`, checked against the report's groupings; a wrong one is a usage error
    that lists them. (A str, not the enum, so that `ibot --help` needs no SQLAlchemy.)"""
    from ibot.db.reports import GroupBy

    if value not in set(GroupBy):
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(GroupBy)}.")
    return value


@costs_app.command("report")
def costs_report(
    period: Annotated[
        str, typer.Option(help="today, 24h, 7d, 30d, month, or YYYY-MM-DD..YYYY-MM-DD.")
    ] = "7d",
    group_by: Annotated[
        str,
        typer.Option(
            "--group-by",
            help="feature, user, model, channel, day, backend or status.",
            callback=_group_by_choice,
        ),
    ] = "feature",
    output: Annotated[OutputFormat, typer.Option("--format")] = OutputFormat.table,
    rows: Annotated[
        bool, typer.Option("--rows", help="List every call instead of groups.")
    ] = False,
    guild: Annotated[int | None, typer.Option(help="Only this guild.")] = None,
    chart: Annotated[
        Path | None,
        typer.Option(
            "--chart",
            help="Also write the daily spend chart (PNG) to this file; with --guild, "
            "the guild's daily cap of each day (its /budget changes too) is drawn on it.",
            dir_okay=False,
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Spending by feature, user, model, channel or day, from the ledger, with the change
    against the previous period of the same length (table and JSON), and the members'
    feedback on the answers posted in the period: answers, helpful rate, solved, cost
    per solved thread (last columns)."""
    from ibot import periods
    from ibot.db.reports import GroupBy
    from ibot.services import report_render, report_view, reports

    settings = _settings(config)
    try:
        chosen = periods.parse_period(period)
        grouping = GroupBy(group_by)
    except ValueError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    if chart is not None:  # before the queries, which take long on a big ledger
        startup_errors.ensure_writable(chart, "--chart")

    cap = settings.budgets.guild_daily_micros  # until a /budget set changed it (--guild)

    async def go() -> str:
        from ibot.db.engine import create_engine, make_sessionmaker
        from ibot.db.migrate import upgrade

        await upgrade(settings.database_url)
        engine = create_engine(settings.database_url)
        try:
            sessionmaker = make_sessionmaker(engine)
            view = None
            if not rows or chart is not None:  # --rows needs the view only for its chart
                view = await report_view.build_report_view(
                    sessionmaker,
                    chosen,
                    grouping,
                    guild_id=guild,
                    top=None,
                    configured_cap_micros=cap,
                )
            if rows:
                entries = await reports.ledger_rows(sessionmaker, chosen, guild_id=guild)
                text = report_render.render_rows_csv(entries)
            else:
                assert view is not None
                text = _render_view(view, output)
        finally:
            await engine.dispose()
        if chart is not None and view is not None:  # the cap of each day, /budget included
            png = await report_view.render_chart_async(
                view.daily, periods.period_days(chosen), caps=view.caps
            )
            await asyncio.to_thread(chart.write_bytes, png)
        return text

    typer.echo(_run(go()), nl=False)
    if chart is not None:
        typer.echo(f"chart written to {chart}", err=True)


def _render_view(view: ReportView, output: OutputFormat) -> str:
    from ibot.services import report_render, report_view

    if output is OutputFormat.csv:  # one line per group: no room for a comparison
        return report_render.render_csv(view.report)
    if output is OutputFormat.json:
        return report_view.render_view_json(view)
    return report_render.render_table(view.report) + report_view.render_comparison(view)


@config_app.command("check")
def config_check(config: ConfigOption = None) -> None:
    """Validate the settings, open the database, and say what is configured (secrets are
    never shown)."""
    from ibot.pricing import PriceTable

    settings = _settings(config)
    try:  # a URL can be well-formed and still name no database that answers
        _run(startup_errors.probe_database(settings.database_url))
    except Exception as exc:
        typer.echo(startup_errors.database_line(exc, settings.database_url), err=True)
        raise typer.Exit(startup_errors.EXIT_CODE) from None
    prices = PriceTable.load(Path(settings.prices_file))
    discord = settings.discord
    lines = [
        "configuration OK",
        f"  discord token: {'set' if settings.discord_token else 'not set (demo mode)'}",
        f"  openai key: {'set' if settings.openai_api_key else 'not set'}"
        + (f", base_url {settings.openai_base_url}" if settings.openai_base_url else ""),
        f"  forums: {list(discord.forum_channel_ids) or 'none'}; "
        f"chat channels: {list(discord.gpt_channel_ids) or 'none'}",
        f"  language: {settings.prompts.language}",
        f"  database: OK ({startup_errors.redact_url(settings.database_url)})",
        f"  prices: {settings.prices_file} (read on {prices.read_on}, {len(prices.models)} models)",
    ]
    for feature in ("auto_reply", "ask", "summary", "chat"):
        fs = getattr(settings.features, feature)
        lines.append(f"  {feature}: {fs.model}, max {fs.max_output_tokens} output tokens")
    typer.echo("\n".join(lines))


def main() -> None:
    """`ibot`: a start-up failure the user can fix (database, Discord, a path) ends in
    one line on stderr and exit code 2; any other exception keeps its traceback."""
    try:
        app()
    except Exception as exc:
        line = startup_errors.describe(exc)
        if line is None:
            raise
        print(line, file=sys.stderr)
        raise SystemExit(startup_errors.EXIT_CODE) from None


if __name__ == "__main__":
    main()
