"""`ibot kb …`: the knowledge base of solved threads (import, sync, stats, search).

Registered by ibot/cli.py as ``app.add_typer(kb_app, name="kb")``. Like the rest of the
CLI, the database and the services are imported inside the commands, so `ibot --help`
stays fast. A problem the user can fix (a file of the wrong format, a query with nothing
to search for) prints one ``error:`` line and exits with status 2.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from ibot.cli_options import HELP_MARKUP, ConfigOption

if TYPE_CHECKING:
    from ibot.config import Settings
    from ibot.services.knowledge import Hit, KnowledgeStats, SolvedThread
    from ibot.services.retriever import Retriever
    from ibot.services.semantic import EmbeddingReport

kb_app = typer.Typer(
    help="The knowledge base of solved forum threads (lexical search, hybrid with embeddings).",
    no_args_is_help=True,
    rich_markup_mode=HELP_MARKUP,
)


class KbFormat(StrEnum):
    table = "table"
    json = "json"


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _settings(config: Path | None) -> Settings:
    from ibot.cli import _settings as load

    return load(config)


def _with_kb[T](
    settings: Settings, work: Callable[[Retriever], Awaitable[T]], *, min_score: float
) -> T:
    """Run `work` on the knowledge base of the configured database (upgraded first):
    hybrid when knowledge.embeddings is on and an OpenAI key is set (its embedding calls
    go through a gateway with the ledger, the prices and the budgets), else lexical."""

    async def go() -> T:
        from ibot.app import build_openai
        from ibot.db.budgets import BudgetStore
        from ibot.db.engine import create_engine, make_sessionmaker
        from ibot.db.ledger import Ledger
        from ibot.db.migrate import upgrade
        from ibot.llm.gateway import ModelGateway
        from ibot.pricing import PriceTable
        from ibot.services.budgets import BudgetManager
        from ibot.services.knowledge import KnowledgeBase
        from ibot.services.semantic import HybridKnowledgeBase, build_retriever, embedding_config

        await upgrade(settings.database_url)
        engine = create_engine(settings.database_url)
        sessionmaker = make_sessionmaker(engine)
        config = embedding_config(settings.knowledge.embeddings)
        openai = build_openai(settings) if config is not None else None
        ledger = Ledger(sessionmaker)
        budgets = BudgetManager(
            ledger=ledger, store=BudgetStore(sessionmaker), settings=settings.budgets
        )
        gateway = ModelGateway(
            ledger=ledger,
            prices=PriceTable.load(settings.prices_file),
            openai=openai,
            budget=budgets,
        )
        kb = build_retriever(
            KnowledgeBase(sessionmaker, min_score=min_score), sessionmaker, gateway, config
        )
        try:
            return await work(kb)
        finally:
            if isinstance(kb, HybridKnowledgeBase):
                await kb.drain()
            await budgets.drain(timeout_s=5)
            if openai is not None:
                await openai.aclose()
            await engine.dispose()

    return asyncio.run(go())


async def _index(kb: Retriever, threads: Sequence[SolvedThread]) -> tuple[int, str]:
    """Store (and, with embeddings on, embed) `threads`: rows changed, and a line on
    the embeddings ("" without them)."""
    from ibot.services.semantic import HybridKnowledgeBase

    if not isinstance(kb, HybridKnowledgeBase):
        return await kb.upsert(threads), ""
    indexed = await kb.index(threads)
    return indexed.changed, "embeddings: " + render_embedding(indexed.embedding)


def render_embedding(report: EmbeddingReport) -> str:
    """One line on what a (back)fill of embeddings did and cost."""
    from ibot.money import format_usd

    line = (
        f"{report.embedded} threads embedded in {report.calls} "
        f"call{'' if report.calls == 1 else 's'}, {report.tokens} tokens, "
        f"{format_usd(report.cost_micros, digits=6)} USD; {report.up_to_date} already up to date"
    )
    if report.failed:
        line += f"; {report.failed} not embedded ({'; '.join(report.problems)})"
    return line


@kb_app.command("import")
def kb_import(
    export: Annotated[
        Path, typer.Argument(help="A JSON file written by `ibot finetune export-threads`.")
    ],
    config: ConfigOption = None,
) -> None:
    """Index the solved threads of an export (a thread already indexed with the same
    content is left alone; a changed one is updated)."""
    from ibot.services.knowledge_import import ExportFormatError, read_export

    settings = _settings(config)
    try:
        contents = read_export(export)
    except ExportFormatError as err:
        _fail(str(err))
    threads = contents.threads
    changed, embedded = _with_kb(
        settings, lambda kb: _index(kb, threads), min_score=settings.knowledge.min_score
    )
    skipped = []
    if contents.unsolved:
        skipped.append(f"{contents.unsolved} unsolved")
    if contents.empty:
        skipped.append(f"{contents.empty} without text")
    typer.echo(
        f"{export.name}: {len(threads)} solved threads, {changed} added or changed, "
        f"{len(threads) - changed} already indexed"
        + (f"; skipped {', '.join(skipped)}" if skipped else "")
    )
    if embedded:
        typer.echo(embedded)


@kb_app.command("embed")
def kb_embed(
    guild: Annotated[int | None, typer.Option(help="Only this guild's threads.")] = None,
    config: ConfigOption = None,
) -> None:
    """Embed every stored thread that lacks an up-to-date vector (after turning
    knowledge.embeddings on, or changing its model or dimensions): batched calls, each
    a ledger row of feature kb_embed."""
    from ibot.services.semantic import HybridKnowledgeBase

    settings = _settings(config)
    if not settings.knowledge.embeddings.enabled or settings.openai_api_key is None:
        _fail("embeddings are off: set knowledge.embeddings.enabled = true and OPENAI_API_KEY")

    async def backfill(kb: Retriever) -> str:
        if not isinstance(kb, HybridKnowledgeBase):
            return "embeddings are off"
        if not await kb.vectors.available():
            return f"no vector index: {kb.vectors.problem}; the search stays lexical"
        return render_embedding(await kb.backfill(guild))

    typer.echo(_with_kb(settings, backfill, min_score=settings.knowledge.min_score))


@kb_app.command("stats")
def kb_stats(
    guild: Annotated[int | None, typer.Option(help="Only this guild.")] = None,
    output: Annotated[KbFormat, typer.Option("--format")] = KbFormat.table,
    config: ConfigOption = None,
) -> None:
    """Threads indexed per guild and per answer kind, and the newest solved one."""
    settings = _settings(config)
    stats = _with_kb(settings, lambda kb: kb.stats(guild), min_score=settings.knowledge.min_score)
    typer.echo(render_stats_json(stats) if output is KbFormat.json else render_stats(stats))


@kb_app.command("search")
def kb_search(
    query: Annotated[str, typer.Argument(help="What to look for, as a member would ask it.")],
    guild: Annotated[
        int | None, typer.Option(help="Only this guild's threads (default: all guilds).")
    ] = None,
    k: Annotated[
        int | None,
        typer.Option("--k", "-k", help="Threads shown at most (default: knowledge.k).", min=1),
    ] = None,
    min_score: Annotated[
        float | None,
        typer.Option(
            help="Hide hits below this score (default: knowledge.min_score).", min=0, max=1
        ),
    ] = None,
    output: Annotated[KbFormat, typer.Option("--format")] = KbFormat.table,
    config: ConfigOption = None,
) -> None:
    """The solved threads closest to QUERY, best first. JSON: a list of
    {"thread_id", "title", "url", "score"}, ids as strings (as in the export)."""
    from ibot.services.knowledge import MAX_K
    from ibot.services.lexical import query_terms

    settings = _settings(config)
    if not query_terms(query):
        _fail("nothing to search for: the query has no word left once spaces, emoji, "
              "punctuation and stop words are set aside")  # fmt: skip
    top = k if k is not None else settings.knowledge.k
    if top > MAX_K:
        _fail(f"--k: at most {MAX_K}")
    threshold = settings.knowledge.min_score if min_score is None else min_score
    hits = _with_kb(
        settings, lambda kb: kb.search(query, guild_id=guild, k=top), min_score=threshold
    )
    if output is KbFormat.json:
        typer.echo(render_hits_json(hits))
    elif not hits:
        typer.echo(f"no solved thread scores {threshold:.2f} or more for this query")
    else:
        typer.echo(render_hits(hits))


@kb_app.command("sync")
def kb_sync(
    guild: Annotated[
        int | None, typer.Option(help="Only this guild's forums (default: every guild's).")
    ] = None,
    full: Annotated[
        bool,
        typer.Option(
            "--full",
            help="List every archived page again (finds archived threads deleted meanwhile).",
        ),
    ] = False,
    output: Annotated[KbFormat, typer.Option("--format")] = KbFormat.table,
    config: ConfigOption = None,
) -> None:
    """Index the solved threads of the configured forums (discord.forum_channel_ids),
    active and archived, reading only what changed since the last sync; a deleted
    thread leaves the knowledge base. An interrupted sync goes on where it stopped."""
    import nextcord

    from ibot.forum_reader import ForumReadError
    from ibot.kb_sync import (
        SyncSetupError,
        check_settings,
        render_json,
        render_table,
        sync_knowledge,
    )

    settings = _settings(config)
    try:
        check_settings(settings)
        outcome = asyncio.run(sync_knowledge(settings, guild_id=guild, full=full))
    except SyncSetupError as err:
        _fail(str(err))
    except nextcord.LoginFailure:
        _fail("Discord refused the bot token (BOT_TOKEN)")
    except (ForumReadError, nextcord.HTTPException, OSError, TimeoutError) as err:
        typer.echo(
            f"error: the sync stopped ({' '.join(str(err).split())}); what it stored is "
            "kept: run it again to go on",
            err=True,
        )
        raise typer.Exit(1) from None
    typer.echo(render_json(outcome) if output is KbFormat.json else render_table(outcome))


def render_hits(hits: list[Hit]) -> str:
    lines = ["score  title", "-----  -----"]
    for hit in hits:
        title = hit.title if len(hit.title) <= 70 else hit.title[:69] + "…"
        lines.append(f"{hit.score:.3f}  {title}")
        lines.append(f"       {hit.url}")
    return "\n".join(lines)


def render_hits_json(hits: list[Hit]) -> str:
    return json.dumps(
        [
            {
                "thread_id": str(hit.thread_id),
                "title": hit.title,
                "url": hit.url,
                "score": round(hit.score, 4),
            }
            for hit in hits
        ],
        ensure_ascii=False,
        indent=2,
    )


def render_stats(stats: KnowledgeStats) -> str:
    lines = [f"solved threads: {stats.threads}"]
    for guild_id, count in stats.per_guild.items():
        lines.append(f"  guild {guild_id}: {count}")
    if stats.per_answer_kind:
        kinds = ", ".join(f"{kind} {count}" for kind, count in stats.per_answer_kind.items())
        lines.append(f"answers: {kinds}")
    newest = stats.newest_solved_at
    lines.append(f"newest solved: {newest:%Y-%m-%d %H:%M} UTC" if newest else "newest solved: -")
    return "\n".join(lines)


def render_stats_json(stats: KnowledgeStats) -> str:
    newest = stats.newest_solved_at
    return json.dumps(
        {
            "threads": stats.threads,
            "per_guild": {str(g): n for g, n in stats.per_guild.items()},
            "per_answer_kind": dict(stats.per_answer_kind),
            "newest_solved_at": newest.isoformat() if newest else None,
        },
        ensure_ascii=False,
        indent=2,
    )
