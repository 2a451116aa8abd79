"""Keep only the threads whose answer members marked helpful or solved (``--feedback``).

`ibot finetune export-threads --feedback …` and `ibot finetune prepare --feedback …`
train on what members approved rather than on every answer. The marks are read from
the bot's database (settings' database URL): the `answers` table knows each bot answer
by the id of its first message, the one an export entry names as ``answer.message_id``
when the answer is the bot's, and `answer_feedback` holds the votes on it.

``--feedback`` takes ``helpful``, ``solved`` or both (``helpful,solved``: a thread is
kept when its answer meets either). A thread is judged by the answer the export chose:

- ``helpful``: the bot's answer has at least one 👍 and more 👍 than 👎;
- ``solved``: the bot's answer was marked solved (its ✅ button, ``/solved`` naming it
  or left at its default, a solved tag on the thread), or the answer is an
  ``accepted`` one: the thread's author put ✅ on that reply, whoever wrote it, which
  the export read from Discord.

Replies that are not the bot's carry no buttons, so ``helpful`` never keeps them, and
``solved`` keeps them only when accepted: a moderator's reply named by ``/solved``
goes into the knowledge base as text, but which message it was is not recorded, so it
cannot be matched to the export (reason ``no_buttons``). Every dropped thread is
counted under its reason (`DROP_REASONS`), every kept one under the mark that kept it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from ibot.db.feedback import AnswerMarks

CONNECT_TIMEOUT_S = 30.0


class Mark(StrEnum):
    HELPFUL = "helpful"
    SOLVED = "solved"


KEEP_REASONS: dict[str, str] = {
    "helpful": "the bot's answer: more 👍 than 👎",
    "solved": "the bot's answer, marked solved (✅, /solved or a solved tag)",
    "accepted": "a reply the thread's author marked ✅",
}
DROP_REASONS: dict[str, str] = {
    "unsolved": "thread without an answer",
    "not_marked": "the bot's answer, neither helpful nor solved as asked",
    "unknown_answer": "the bot's answer, not in the database (posted before feedback "
    "existed, or another database)",
    "no_buttons": "a reply that is not the bot's (no buttons) and not accepted",
}


class FeedbackUnavailable(RuntimeError):
    """The bot's database cannot say (unreachable, or without the feedback tables)."""


def parse_marks(text: str) -> frozenset[Mark]:
    """ "helpful", "solved", "helpful,solved" (any order, spaces allowed) -> the marks."""
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    if not names:
        raise ValueError("--feedback needs helpful, solved or helpful,solved")
    unknown = [name for name in names if name not in {mark.value for mark in Mark}]
    if unknown:
        raise ValueError(
            f"--feedback: unknown mark {', '.join(map(repr, unknown))} "
            "(choose helpful, solved or helpful,solved)"
        )
    return frozenset(Mark(name) for name in names)


@dataclass
class Selection:
    """What the filter kept and dropped, by reason."""

    marks: frozenset[Mark]
    kept: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        """One line: 'feedback helpful,solved: kept 3 (2 solved, 1 helpful), dropped 4 (…)'."""

        def listed(counts: Counter[str]) -> str:
            ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
            return ", ".join(f"{count} {reason}" for reason, count in ordered)

        kept, dropped = sum(self.kept.values()), sum(self.dropped.values())
        text = f"feedback {','.join(sorted(self.marks))}: kept {kept}"
        text += f" ({listed(self.kept)})" if kept else ""
        text += f", dropped {dropped}"
        return text + (f" ({listed(self.dropped)})" if dropped else "")

    def to_json(self) -> dict[str, Any]:
        return {
            "only": sorted(self.marks),
            "kept": dict(sorted(self.kept.items())),
            "dropped": dict(sorted(self.dropped.items())),
        }


def answer_ids(threads: Iterable[Mapping[str, Any]]) -> set[int]:
    """The message ids of the threads' answers (what to look up in the database)."""
    found = set()
    for thread in threads:
        answer = thread.get("answer")
        if isinstance(answer, Mapping) and str(answer.get("message_id") or "").isdigit():
            found.add(int(answer["message_id"]))
    return found


def judge(
    thread: Mapping[str, Any], marks: Mapping[int, AnswerMarks], wanted: Collection[Mark]
) -> tuple[bool, str]:
    """(kept, reason) for one export entry, by the rules of the module docstring."""
    answer = thread.get("answer")
    if not isinstance(answer, Mapping):
        return False, "unsolved"
    message_id = str(answer.get("message_id") or "")
    recorded = marks.get(int(message_id)) if message_id.isdigit() else None
    if recorded is not None:
        if Mark.SOLVED in wanted and recorded.solved:
            return True, "solved"
        if Mark.HELPFUL in wanted and recorded.helpful:
            return True, "helpful"
    if Mark.SOLVED in wanted and answer.get("kind") == "accepted":
        return True, "accepted"
    if recorded is not None:
        return False, "not_marked"
    return False, "unknown_answer" if answer.get("kind") == "bot" else "no_buttons"


def select_threads(
    threads: Sequence[Mapping[str, Any]],
    marks: Mapping[int, AnswerMarks],
    wanted: frozenset[Mark],
    selection: Selection | None = None,
) -> tuple[list[Mapping[str, Any]], Selection]:
    """The threads kept (in their order) and the counts of why each was kept or dropped."""
    selection = selection or Selection(wanted)
    kept = []
    for thread in threads:
        keep, reason = judge(thread, marks, wanted)
        if keep:
            kept.append(thread)
            selection.kept[reason] += 1
        else:
            selection.dropped[reason] += 1
    return kept, selection


# ---- the bot's database ----------------------------------------------------------------


def _is_file(database: str) -> bool:
    """A SQLite database path names an existing file (a `file:` URI is taken as is)."""
    return database.startswith("file:") or Path(database).expanduser().is_file()


def _shown(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable URL>"


async def read_marks(database_url: str, message_ids: Iterable[int]) -> dict[int, AnswerMarks]:
    """The votes and solved marks of these answers in the bot's database.

    Read only: the schema is never created nor upgraded here, so pointing at the wrong
    database (an empty SQLite file, a server without the bot's tables) is an error that
    says so rather than a silent "nothing was marked".
    """
    from sqlalchemy import inspect
    from sqlalchemy.exc import SQLAlchemyError

    from ibot.db.engine import create_engine, is_memory_sqlite, make_sessionmaker, normalize_url
    from ibot.db.feedback import FeedbackStore

    shown = _shown(database_url)
    try:
        url = normalize_url(database_url)
    except Exception as err:
        raise FeedbackUnavailable(f"the database URL {shown} cannot be read ({err})") from None
    database = url.database or ""
    on_disk = url.get_backend_name() == "sqlite" and not is_memory_sqlite(url)
    # Connecting would create an empty file in its place: say that it is missing.
    if on_disk and not await asyncio.to_thread(_is_file, database):
        raise FeedbackUnavailable(
            f"no database at {database}: --feedback reads the votes from the bot's "
            "database (set IBOT_DATABASE_URL or database_url in --config)"
        )
    engine = create_engine(url)
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            async with engine.connect() as connection:
                tables = await connection.run_sync(
                    lambda sync: {
                        name
                        for name in ("answers", "answer_feedback")
                        if inspect(sync).has_table(name)
                    }
                )
        if tables != {"answers", "answer_feedback"}:
            raise FeedbackUnavailable(
                f"the database {shown} has no feedback tables (answers, answer_feedback): "
                "is it the bot's? `ibot db upgrade` creates them"
            )
        return await FeedbackStore(make_sessionmaker(engine)).marks(message_ids)
    except (SQLAlchemyError, OSError, TimeoutError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FeedbackUnavailable(f"cannot read the bot's database {shown}: {reason}") from None
    finally:
        await engine.dispose()


def export_selector(
    database_url: str, marks: frozenset[Mark]
) -> tuple[Callable[[dict[str, Any]], Awaitable[dict[str, Any]]], Selection]:
    """The `select` step of `export_threads` for `marks`, and the counts it fills in.

    The written export keeps its format (prepare and `ibot kb import` read it as any
    other) with the kept threads only, and says how it was filtered under
    ``"feedback_filter"``.
    """
    selection = Selection(marks)

    async def select(export: dict[str, Any]) -> dict[str, Any]:
        threads = export.get("threads", [])
        found = await read_marks(database_url, answer_ids(threads))
        kept, _ = select_threads(threads, found, marks, selection)
        return {**export, "threads": kept, "feedback_filter": selection.to_json()}

    return select, selection


MarksLookup = Callable[[Collection[int]], Mapping[int, AnswerMarks]]


def database_lookup(database_url: str) -> MarksLookup:
    """A blocking lookup for synchronous callers (`prepare`): one query batch per call."""

    def lookup(message_ids: Collection[int]) -> Mapping[int, AnswerMarks]:
        return asyncio.run(read_marks(database_url, message_ids))

    return lookup


@dataclass(frozen=True, slots=True)
class FeedbackFilter:
    """What `prepare` needs to filter the threads of an export: the marks asked for and
    where to look them up (one lookup per export file)."""

    marks: frozenset[Mark]
    lookup: MarksLookup
