"""`ibot finetune …`: prepare data, export solved threads, train, chat.

Registered by ibot/cli.py as ``app.add_typer(finetune_app, name="finetune")``. torch and
transformers are imported inside the commands that need them; a problem the user can fix
prints one ``error:`` line and exits with status 2.
"""

from __future__ import annotations

import asyncio
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from ibot.cli_options import HELP_MARKUP, ConfigOption
from ibot.finetune.prepare import DEFAULT_WINDOW, InputFormat

if TYPE_CHECKING:
    from ibot.config import Settings
    from ibot.finetune.export_threads import ReadStats
    from ibot.finetune.feedback_filter import Mark

finetune_app = typer.Typer(
    help="Fine-tune a GPT-2-family model (DialoGPT) for the local fallback.",
    no_args_is_help=True,
    rich_markup_mode=HELP_MARKUP,
)

LOCAL_EXTRA_HINT = "fine-tuning needs torch and transformers: pip install 'ibot[local]'"


class LossOn(StrEnum):
    response = "response"
    all = "all"


class Precision(StrEnum):
    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


FEEDBACK_OPTION = typer.Option(
    "--feedback",
    help="Only threads whose answer members marked helpful (more 👍 than 👎) or solved "
    "(✅, /solved, a solved tag; or accepted by the thread's author): helpful, solved or "
    "helpful,solved. Read from the bot's database (database_url).",
    show_default=False,
)


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _feedback_marks(text: str) -> frozenset[Mark]:
    from ibot.finetune.feedback_filter import parse_marks

    try:
        return parse_marks(text)
    except ValueError as err:
        _fail(str(err))


def _settings(config: Path | None) -> Settings:
    """The settings (for the database URL and the token), or exit 2 with one line."""
    from ibot.config import ConfigError, fail_on_config_error, load_settings
    from ibot.logging import configure_logging

    try:
        settings = load_settings(config)
    except ConfigError as err:
        fail_on_config_error(err)
    configure_logging(settings.logging.format, "WARNING", secrets=settings.secret_values())
    return settings


def _require_torch() -> None:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        _fail(LOCAL_EXTRA_HINT)


@finetune_app.command()
def prepare(
    inputs: Annotated[
        list[Path],
        typer.Argument(help="CSV files, `Name: line` transcripts or an export-threads JSON."),
    ],
    out: Annotated[Path, typer.Option(help="Directory for train.jsonl, validation.jsonl.")],
    input_format: Annotated[
        InputFormat | None,
        typer.Option(
            "--format",
            help="Input format (default: from the extension: .csv, .json, "
            "anything else is a transcript).",
        ),
    ] = None,
    character: Annotated[
        str | None, typer.Option(help="The character whose lines are learned (CSV, transcript).")
    ] = None,
    window: Annotated[
        int, typer.Option(help="Previous lines given as context.", min=1)
    ] = DEFAULT_WINDOW,
    min_context: Annotated[
        int, typer.Option(help="Skip target lines with fewer previous lines.", min=0)
    ] = 1,
    character_column: Annotated[str, typer.Option(help="CSV column of the speaker.")] = "name",
    line_column: Annotated[str, typer.Option(help="CSV column of the line.")] = "line",
    conversation_column: Annotated[
        str | None,
        typer.Option(help="CSV column (episode, scene) across which context never reaches."),
    ] = None,
    answer_kinds: Annotated[
        str, typer.Option(help="Forum answers kept: accepted, moderator, bot (comma-separated).")
    ] = "accepted,moderator,bot",
    val_fraction: Annotated[
        float, typer.Option(help="Share of samples for validation.", min=0.0, max=0.99)
    ] = 0.1,
    seed: Annotated[int, typer.Option(help="Seed of the train/validation split.")] = 0,
    tokenizer: Annotated[
        Path | None, typer.Option(help="Model directory: count tokens, not just characters.")
    ] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bars.")] = False,
    feedback: Annotated[str | None, FEEDBACK_OPTION] = None,
    config: ConfigOption = None,
) -> None:
    """Turn character lines or solved forum threads into train/validation JSONL samples.

    Each sample is {"context": [previous turns], "response": "…"}. Statistics (samples,
    tokens or words, skipped lines and why) are printed and saved in stats.json.
    With --feedback, only the threads whose answer members marked helpful or solved
    (read from the bot's database) become samples.
    """
    from ibot.finetune.feedback_filter import FeedbackFilter, FeedbackUnavailable
    from ibot.finetune.prepare import PrepareError, format_stats
    from ibot.finetune.prepare import prepare as run_prepare

    if tokenizer is not None:
        _require_torch()
    chosen = None
    if feedback is not None:
        from ibot.finetune.feedback_filter import database_lookup

        marks = _feedback_marks(feedback)
        chosen = FeedbackFilter(marks, database_lookup(_settings(config).database_url))
    try:
        stats = run_prepare(
            inputs,
            out,
            val_fraction=val_fraction,
            seed=seed,
            tokenizer_dir=tokenizer,
            show_progress=not no_progress,
            input_format=input_format,
            character=character,
            window=window,
            min_context=min_context,
            character_column=character_column,
            line_column=line_column,
            conversation_column=conversation_column,
            answer_kinds=[k.strip() for k in answer_kinds.split(",") if k.strip()],
            feedback=chosen,
        )
    except (PrepareError, FeedbackUnavailable, ValueError, OSError) as err:
        _fail(str(err))
    typer.echo(format_stats(stats))
    typer.echo(f"wrote {out}/train.jsonl, validation.jsonl and stats.json")
    if stats.samples == 0:
        _fail("no samples: check --character and --format", 1)


@finetune_app.command("export-threads")
def export_threads_command(
    out: Annotated[Path, typer.Option(help="The JSON export to write.")] = Path(
        "data/forum-threads.json"
    ),
    forum: Annotated[
        list[int] | None,
        typer.Option(help="Forum channel id (repeatable; default: discord.forum_channel_ids)."),
    ] = None,
    accept_emoji: Annotated[
        list[str] | None,
        typer.Option(help="Emoji by which a thread's author accepts an answer (repeatable)."),
    ] = None,
    limit: Annotated[
        int | None, typer.Option(help="Only the newest N threads of each forum.", min=1)
    ] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bars.")] = False,
    feedback: Annotated[str | None, FEEDBACK_OPTION] = None,
    config: ConfigOption = None,
) -> None:
    """Export the forums' threads and their answers through the bot's Discord connection.

    The answer is the reply the thread's author marked ✅, else the first moderator's reply,
    else the bot's when no other human replied (unsolved threads are kept, answer null).
    With --feedback, only the threads whose answer members marked helpful or solved
    (read from the bot's database) are written.
    """
    from ibot.finetune.export_threads import (
        DEFAULT_ACCEPT_EMOJIS,
        ExportError,
        export_summary,
        export_threads,
    )
    from ibot.finetune.feedback_filter import (
        FeedbackUnavailable,
        Selection,
        export_selector,
        read_marks,
    )

    marks = _feedback_marks(feedback) if feedback is not None else None
    settings = _settings(config)
    selection: Selection | None = None
    select = None
    if marks is not None:
        select, selection = export_selector(settings.database_url, marks)

    async def go() -> tuple[dict[str, Any], ReadStats]:
        if marks is not None:  # before Discord: a wrong database fails in a second
            await read_marks(settings.database_url, ())
        return await export_threads(
            settings,
            out,
            forum_ids=forum or None,
            accept_emojis=tuple(accept_emoji or DEFAULT_ACCEPT_EMOJIS),
            limit=limit,
            show_progress=not no_progress,
            select=select,
        )

    try:
        export, stats = asyncio.run(go())
    except (ExportError, FeedbackUnavailable) as err:
        _fail(str(err))
    summary = export_summary(export)
    typer.echo(
        f"{summary['threads']} threads from {stats.forums} forums ({stats.messages} messages): "
        + ", ".join(
            f"{summary.get(kind, 0)} {kind}"
            for kind in ("accepted", "moderator", "bot", "unsolved")
        )
    )
    if selection is not None:
        typer.echo(selection.summary())
    if stats.reaction_lookups_failed:
        typer.echo(f"warning: {stats.reaction_lookups_failed} reaction lookups failed", err=True)
    typer.echo(f"wrote {out}")


@finetune_app.command()
def train(
    base: Annotated[Path, typer.Option(help="Model directory to start from (save_pretrained).")],
    data: Annotated[Path, typer.Option(help="Directory written by `prepare`.")],
    out: Annotated[Path, typer.Option(help="Where the fine-tuned model and checkpoints go.")],
    epochs: Annotated[float, typer.Option(help="Passes over the training samples.")] = 3.0,
    max_steps: Annotated[int, typer.Option(help="Stop after N optimizer steps (-1: epochs).")] = -1,
    batch_size: Annotated[int, typer.Option(help="Samples per device batch.", min=1)] = 4,
    grad_accum: Annotated[
        int, typer.Option(help="Batches accumulated per optimizer step.", min=1)
    ] = 1,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 5e-5,
    warmup_steps: Annotated[int, typer.Option(min=0)] = 0,
    weight_decay: Annotated[float, typer.Option(min=0.0)] = 0.0,
    max_length: Annotated[
        int | None, typer.Option(help="Cut sequences to N tokens (default: model positions).")
    ] = None,
    loss_on: Annotated[
        LossOn, typer.Option(help="Learn the response only, or the whole conversation.")
    ] = LossOn.response,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    precision: Annotated[
        Precision, typer.Option(help="auto: bf16/fp16 on a GPU, fp32 on the CPU.")
    ] = Precision.auto,
    save_steps: Annotated[int, typer.Option(help="Checkpoint every N steps.", min=1)] = 500,
    save_total_limit: Annotated[int, typer.Option(help="Checkpoints kept.", min=1)] = 2,
    logging_steps: Annotated[int, typer.Option(min=1)] = 50,
    seed: Annotated[int, typer.Option()] = 42,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the latest checkpoint in OUT.")
    ] = False,
    resume_from: Annotated[
        Path | None, typer.Option(help="Continue from this checkpoint directory.")
    ] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bars.")] = False,
) -> None:
    """Fine-tune BASE on the prepared samples; perplexity before/after goes to metrics.json."""
    _require_torch()
    from ibot.finetune.train import TrainConfig, TrainError, format_metrics
    from ibot.finetune.train import train as run_train

    config = TrainConfig(
        base=base,
        data=data,
        out=out,
        epochs=epochs,
        max_steps=max_steps,
        batch_size=batch_size,
        grad_accum=grad_accum,
        learning_rate=lr,
        warmup_steps=warmup_steps,
        weight_decay=weight_decay,
        max_length=max_length,
        loss_on=loss_on.value,
        device=device,
        precision=precision.value,
        save_steps=save_steps,
        save_total_limit=save_total_limit,
        logging_steps=logging_steps,
        seed=seed,
        resume=resume_from if resume_from is not None else resume,
        show_progress=not no_progress,
    )
    try:
        metrics = run_train(config)
    except (TrainError, ValueError, OSError) as err:
        _fail(str(err))
    typer.echo(format_metrics(metrics))
    typer.echo(f"saved to {out} (metrics in {out}/metrics.json)")


@finetune_app.command()
def chat(
    model: Annotated[Path, typer.Option(help="Model directory (e.g. the output of `train`).")],
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    precision: Annotated[Precision, typer.Option()] = Precision.auto,
    history: Annotated[int, typer.Option(help="Turns kept in the prompt.", min=1)] = 7,
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 64,
    top_k: Annotated[int, typer.Option(min=0)] = 100,
    top_p: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.7,
    temperature: Annotated[float, typer.Option(min=0.01)] = 0.8,
    no_repeat_ngram_size: Annotated[int, typer.Option(min=0)] = 3,
    repetition_penalty: Annotated[float, typer.Option(min=1.0)] = 1.3,
    greedy: Annotated[bool, typer.Option("--greedy", help="No sampling (reproducible).")] = False,
    seed: Annotated[int | None, typer.Option(help="Seed the sampling.")] = None,
    name: Annotated[str, typer.Option(help="The model's name in the conversation.")] = "Bot",
) -> None:
    """Talk to a model in the terminal (DialoGPT turns); /reset forgets, /quit leaves."""
    _require_torch()
    import torch

    from ibot.finetune.chat import DialoGPTChat, Sampling, chat_loop

    if not model.is_dir():
        _fail(f"no model directory at {model}")
    if seed is not None:
        torch.manual_seed(seed)
    sampling = Sampling(
        max_new_tokens=max_new_tokens,
        do_sample=not greedy,
        top_k=top_k,
        top_p=top_p,
        temperature=temperature,
        no_repeat_ngram_size=no_repeat_ngram_size,
        repetition_penalty=repetition_penalty,
    )
    try:
        bot = DialoGPTChat.load(
            model,
            device=device,
            precision=precision.value,
            sampling=sampling,
            history_turns=history,
        )
    except (ValueError, OSError) as err:
        _fail(str(err))
    chat_loop(bot.reply, read=input, write=typer.echo, bot_name=name)
