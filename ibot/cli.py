"""The `ibot` command line.

Every command loads and validates the settings first: a bad value prints one line
naming the key and exits with code 2. Heavy imports (nextcord, the fakes, torch) happen
inside the commands that need them, so `ibot --help` stays fast and torch-free.
"""

from __future__ import annotations

import asyncio
import functools
import mimetypes
from collections.abc import Coroutine
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, assert_never

import typer

from ibot.cli_options import ConfigOption
from ibot.config import ConfigError, Settings, fail_on_config_error, load_settings
from ibot.finetune.cli import finetune_app
from ibot.kb_cli import kb_app
from ibot.llm.serve_local import serve_local_command

if TYPE_CHECKING:
    from ibot.services.report_view import ReportView

app = typer.Typer(
    help="iBot: an AI help assistant for Discord forum communities.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
costs_app = typer.Typer(help="Cost reports from the ledger.", no_args_is_help=True)
config_app = typer.Typer(help="Configuration.", no_args_is_help=True)
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
    """Load settings and configure logging, or exit 2 with one clear line."""
    from ibot.logging import configure_logging

    try:
        settings = load_settings(config, **overrides)
    except ConfigError as err:
        fail_on_config_error(err)
    configure_logging(
        settings.logging.format, settings.logging.level, secrets=settings.secret_values()
    )
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
    from ibot.demo import run_demo
    from ibot.logging import configure_logging

    settings = _settings(config)
    # The transcript is the point: only warnings and errors go to the log.
    configure_logging(settings.logging.format, "WARNING", secrets=settings.secret_values())
    raise typer.Exit(_run(run_demo(settings, echo=typer.echo)))


@app.command()
def run(config: ConfigOption = None) -> None:
    """Start the bot; without a Discord token, say so in one line and play the demo."""
    settings = _settings(config)
    if settings.discord_token is None:
        typer.echo("No Discord token configured (BOT_TOKEN): playing the offline demo instead.")
        from ibot.demo import run_demo

        raise typer.Exit(_run(run_demo(settings, echo=typer.echo)))
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


@costs_app.command("report")
def costs_report(
    period: Annotated[
        str, typer.Option(help="today, 24h, 7d, 30d, month, or YYYY-MM-DD..YYYY-MM-DD.")
    ] = "7d",
    group_by: Annotated[
        str,
        typer.Option("--group-by", help="feature, user, model, channel, day, backend or status."),
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
            "the guild's configured daily cap is drawn on it.",
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

    async def go() -> str:
        from ibot.db.engine import create_engine, make_sessionmaker
        from ibot.db.migrate import upgrade

        await upgrade(settings.database_url)
        engine = create_engine(settings.database_url)
        try:
            sessionmaker = make_sessionmaker(engine)
            if rows:
                entries = await reports.ledger_rows(sessionmaker, chosen, guild_id=guild)
                text = report_render.render_rows_csv(entries)
                view = None
                if chart is not None:
                    view = await report_view.build_report_view(
                        sessionmaker, chosen, grouping, guild_id=guild, top=None
                    )
            else:
                view = await report_view.build_report_view(
                    sessionmaker, chosen, grouping, guild_id=guild, top=None
                )
                text = _render_view(view, output)
        finally:
            await engine.dispose()
        if chart is not None and view is not None:
            cap = settings.budgets.guild_daily_micros if guild is not None else None
            png = await report_view.render_chart_async(
                view.daily, periods.period_days(chosen), daily_cap_micros=cap
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
    """Validate the settings and say what is configured (secrets are never shown)."""
    from ibot.pricing import PriceTable

    settings = _settings(config)
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
        f"  database: {_redact_url(settings.database_url)}",
        f"  prices: {settings.prices_file} (read on {prices.read_on}, {len(prices.models)} models)",
    ]
    for feature in ("auto_reply", "ask", "summary", "chat"):
        fs = getattr(settings.features, feature)
        lines.append(f"  {feature}: {fs.model}, max {fs.max_output_tokens} output tokens")
    typer.echo("\n".join(lines))


def _redact_url(url: str) -> str:
    """Hide a password in a database URL (postgresql://user:secret@host/db)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable URL>"


def main() -> None:
    app()


if __name__ == "__main__":
    main()
