"""Solved threads from a file written by `ibot finetune export-threads`.

The export's schema is documented in `ibot.finetune.export_threads` (format
``ibot-forum-threads``, version 1, snowflakes as strings). Each thread with an answer
becomes a `SolvedThread`: its title, its starter message as the question, the answer's
text and kind. The export has no "solved at" time, so the answer message's own time is
used (read from its snowflake id): the moment the answer was posted.

The whole file is checked before anything is returned: a file of the wrong format, or
one malformed thread, is one `ExportFormatError` (one line, naming the file and the
thread), and nothing is indexed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ibot.finetune.export_threads import EXPORT_FORMAT, EXPORT_VERSION
from ibot.services.knowledge import SolvedThread

DISCORD_EPOCH_MS = 1_420_070_400_000


class ExportFormatError(ValueError):
    """The file is not a readable export-threads file; `str()` is one line."""


@dataclass(frozen=True, slots=True)
class ExportContents:
    threads: tuple[SolvedThread, ...]
    unsolved: int = 0  # threads without an answer (skipped)
    empty: int = 0  # answered threads with no text to index (skipped)

    @property
    def read(self) -> int:
        return len(self.threads) + self.unsolved + self.empty


def snowflake_time(snowflake: int) -> datetime:
    """When a Discord id was made (its top 42 bits are milliseconds since 2015)."""
    return datetime.fromtimestamp(((snowflake >> 22) + DISCORD_EPOCH_MS) / 1000, UTC)


def _id(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{what} is not a Discord id")
    text = str(value).strip()
    if not text.isdigit() or int(text) <= 0:
        raise ValueError(f"{what} is not a Discord id ({value!r})")
    return int(text)


def _text(value: Any, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{what} is not text")
    return value.strip()


def _time(value: Any, what: str) -> datetime | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise ValueError(f"{what} is not a date")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{what} is not an ISO date ({value!r})") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def solved_thread(entry: Any) -> SolvedThread | None:
    """The thread of one export entry, None when it has no answer; ValueError if bad."""
    if not isinstance(entry, dict):
        raise ValueError("is not an object")
    thread_id = _id(entry.get("id"), "id")
    answer = entry.get("answer")
    if answer is None:
        return None
    if not isinstance(answer, dict):
        raise ValueError("answer is not an object")
    kind = _text(answer.get("kind"), "answer.kind")
    if not kind:
        raise ValueError("answer.kind is missing")
    tags = entry.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ValueError("tags is not a list of names")
    message_id = answer.get("message_id")
    return SolvedThread(
        guild_id=_id(entry.get("guild_id"), "guild_id"),
        forum_id=None
        if entry.get("forum_id") in (None, "")
        else _id(entry["forum_id"], "forum_id"),
        thread_id=thread_id,
        title=_text(entry.get("title"), "title"),
        question=_text(entry.get("question"), "question"),
        answer=_text(answer.get("text"), "answer.text"),
        answer_kind=kind,
        tags=tuple(tags),
        created_at=_time(entry.get("created_at"), "created_at"),
        solved_at=None
        if message_id in (None, "")
        else snowflake_time(_id(message_id, "answer.message_id")),
    )


def parse_export(export: Any, *, source: str = "export") -> ExportContents:
    """The solved threads of an export document (already parsed JSON)."""
    if not isinstance(export, dict) or export.get("format") != EXPORT_FORMAT:
        raise ExportFormatError(
            f"{source}: not an `ibot finetune export-threads` file "
            f'(expected "format": "{EXPORT_FORMAT}")'
        )
    if export.get("version") != EXPORT_VERSION:
        raise ExportFormatError(
            f"{source}: export version {export.get('version')!r} is not supported "
            f"(this iBot reads version {EXPORT_VERSION})"
        )
    entries = export.get("threads")
    if not isinstance(entries, list):
        raise ExportFormatError(f'{source}: "threads" is not a list')
    threads: list[SolvedThread] = []
    unsolved = empty = 0
    for index, entry in enumerate(entries):
        try:
            thread = solved_thread(entry)
        except ValueError as err:
            name = entry.get("id") if isinstance(entry, dict) else None
            where = f"thread {name}" if name else f"threads[{index}]"
            raise ExportFormatError(f"{source}: {where}: {err}") from None
        if thread is None:
            unsolved += 1
        elif not thread.answer or not (thread.title or thread.question):
            empty += 1
        else:
            threads.append(thread)
    return ExportContents(tuple(threads), unsolved=unsolved, empty=empty)


def read_export(path: Path) -> ExportContents:
    """The solved threads of an export file; ExportFormatError (one line) if unreadable."""
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ExportFormatError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ExportFormatError(f"{path}: cannot be read ({err})") from None
    try:
        export = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ExportFormatError(f"{path}: not JSON ({err})") from None
    return parse_export(export, source=str(path))
