"""The knowledge base kept in step with the configured forums (`ibot kb sync`, and the
bot at start): the forums' solved threads in, per guild, reading only what is new.

Discord-free: a `ForumSource` (ibot/forum_reader.py reads Discord with nextcord; the
tests give their own) lists threads and reads their messages; this module decides and
stores. One run for one guild:

1. **Listing.** The guild's active threads (one request), filtered to the configured
   forums of that guild, then each forum's archived public threads, newest archived
   first, page by page, down to `archived_through`: the archive time down to which an
   earlier run read every archived thread. An archived thread cannot change (threads.mdx:
   "Users cannot edit messages, add reactions … in archived threads"; posting or
   tagging unarchives it, and archiving it again gives it a new archive time), so what
   lies below that mark was read in its final form. After each page the pass's cursor
   is stored: a run that stops (a crash, Ctrl-C, a 5xx) keeps what it stored, and the
   next run lists what was archived meanwhile, then goes on from that page.
2. **Reading.** A listed thread is read (its messages, the reactions carrying an accept
   emoji, the authors' roles) unless the sync read it before and it shows the same
   `last_message_id`, applied tags and archived flag: a reply, a tag or its archiving
   (after which reactions can no longer change) make it read again.
3. **Deciding**, for a thread read, first that applies:
   - the knowledge base holds it and the sync did not write that entry (a ✅, `/solved`,
     a solved tag seen live, `ibot kb import`): an explicit mark, **kept** as it is;
   - a bot answer there was marked solved by ✅ or `/solved` (table `answers`) while the
     knowledge base was off: indexed with that answer;
   - one of `knowledge.solved_tags` is applied: solved as when the tag is applied live
     (`SolvedService.solved_by_tag`: the bot's recorded answer, else the last reply by
     someone other than the asker);
   - the answer rules of `ibot.services.thread_records` (accept emoji, moderator, the bot
     when no one else replied): indexed, the entry the sync's own;
   - otherwise unsolved; an entry the sync itself had inferred is **removed** (someone
     replied since, so the bot's answer is no longer known to be the solution).
   A thread whose starter message was deleted keeps its title as its question: it is
   indexed when it has an answer (with an empty question), and counted either way.
4. **Deletions.** A thread that Discord answers 404 for when read, or that the sync had
   seen active and no listing shows any more (checked with one request), was deleted:
   it leaves the knowledge base and the sync's state. An archived thread deleted while
   the bot was not running shows only to a full pass (`ibot kb sync --full`), which
   lists every archived page again (reading only the threads that changed).

Every SolvedThread goes through `Retriever.upsert`, the knowledge base's one way in (the
hybrid retriever embeds what changed there).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ibot.db.knowledge import KnowledgeStore
from ibot.db.knowledge_sync import ForumState, RecordedMark, SyncStateStore, ThreadState
from ibot.domain import utcnow
from ibot.services.knowledge import SolvedThread
from ibot.services.knowledge_import import snowflake_time
from ibot.services.retriever import Retriever
from ibot.services.solved import (
    AlreadySolved,
    ForumThread,
    NoAnswerFound,
    Reply,
    Solved,
    SolvedService,
    folded,
)
from ibot.services.thread_records import (
    DEFAULT_ACCEPT_EMOJIS,
    ArchivedPage,
    ThreadRecord,
    ThreadSummary,
    choose_answer,
    replies,
)

SOLVED = "solved"  # indexed by the sync from the answer rules (its entry)
MARKED = "marked"  # in the knowledge base by an explicit mark (not the sync's entry)
UNSOLVED = "unsolved"


class ForumSource(Protocol):
    """Discord, as the sync reads it."""

    async def active_threads(self, guild_id: int) -> Sequence[ThreadSummary]:
        """The guild's active threads (every channel's: the sync filters)."""
        ...

    async def archived_page(self, forum_id: int, before: datetime | None) -> ArchivedPage:
        """One page of the forum's archived public threads archived before `before`."""
        ...

    async def read(self, thread: ThreadSummary) -> ThreadRecord | None:
        """The thread and its messages; None when it no longer exists."""
        ...

    async def exists(self, thread_id: int) -> bool:
        """False only when Discord says the thread is gone (404)."""
        ...


@dataclass
class SyncReport:
    """What one run did for one guild (`ibot kb sync` prints it)."""

    guild_id: int
    forums: int = 0
    pages: int = 0  # listing requests: the active threads, then each archived page
    listed: int = 0  # distinct threads the listings showed
    read: int = 0  # threads whose messages were read
    unchanged: int = 0  # listed, the same as when last read: not read again
    added: int = 0  # solved threads new in the knowledge base
    updated: int = 0  # solved threads whose stored content changed
    kept: int = 0  # in the knowledge base by an explicit mark: left as they are
    unsolved: int = 0
    removed: int = 0  # left the knowledge base: deleted, or no longer solved
    deleted: int = 0  # threads found deleted on Discord
    starter_missing: int = 0  # read threads whose starter message was deleted
    resumed: int = 0  # forums whose interrupted pass this run went on with
    duration_s: float = 0.0
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["guild_id"] = str(self.guild_id)  # snowflakes as strings, as in the export
        data["duration_s"] = round(self.duration_s, 3)
        return data


@dataclass
class _Run:
    guild_id: int
    forum_ids: frozenset[int]
    started: datetime
    report: SyncReport
    seen: set[int] = field(default_factory=set)


def tags_key(tags: Iterable[str]) -> str:
    """The applied tags as stored in the state: sorted names, one per line."""
    return "\n".join(sorted(tags))


def _unchanged(known: ThreadState, thread: ThreadSummary) -> bool:
    return (
        known.last_message_id == thread.last_message_id
        and known.tags == tags_key(thread.tags)
        and known.archived == thread.archived
    )


def _created_at(record: ThreadRecord) -> datetime | None:
    if not record.created_at:
        return None
    try:
        parsed = datetime.fromisoformat(record.created_at)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _question(record: ThreadRecord) -> str:
    starter = record.starter
    return starter.text.strip() if starter is not None else ""


def inferred_answer(
    record: ThreadRecord, accept_emojis: Iterable[str] = DEFAULT_ACCEPT_EMOJIS
) -> SolvedThread | None:
    """The thread as solved by the answer rules (thread_records), or None: unsolved.
    Solved at: when the answer was posted (its snowflake's time)."""
    answer = choose_answer(record, accept_emojis)
    if answer is None:
        return None
    return SolvedThread(
        guild_id=record.guild_id,
        forum_id=record.forum_id,
        thread_id=record.id,
        title=record.title,
        question=_question(record),
        answer=answer.text,
        answer_kind=answer.kind.value,
        tags=record.tags,
        created_at=_created_at(record),
        solved_at=snowflake_time(answer.message.id),
    )


def marked_answer(record: ThreadRecord, mark: RecordedMark) -> SolvedThread:
    """The thread with the bot answer that ✅ or `/solved` marked, solved when marked."""
    return SolvedThread(
        guild_id=record.guild_id,
        forum_id=record.forum_id,
        thread_id=record.id,
        title=record.title,
        question=_question(record),
        answer=mark.answer.strip(),
        answer_kind="bot",
        tags=record.tags,
        created_at=_created_at(record),
        solved_at=mark.solved_at,
    )


def forum_thread(record: ThreadRecord) -> ForumThread:
    return ForumThread(
        guild_id=record.guild_id,
        forum_id=record.forum_id,
        thread_id=record.id,
        title=record.title,
        question=_question(record),
        owner_id=record.author_id,
        tags=record.tags,
        created_at=_created_at(record),
    )


def last_reply(record: ThreadRecord) -> Reply | None:
    """What a solved tag takes when the bot has no answer there: the last message by
    a human other than the asker (as the live tag handler reads it)."""
    for message in reversed(replies(record)):
        if not message.is_us and message.author_id != record.author_id:
            return Reply(message.text, "moderator" if message.is_moderator else "member")
    return None


class KnowledgeSync:
    """Runs the sync of one guild at a time (see the module docstring)."""

    def __init__(
        self,
        knowledge: Retriever,
        state: SyncStateStore,
        solved: SolvedService,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        solved_tags: Iterable[str] = ("Résolu", "Solved"),
        accept_emojis: Iterable[str] = DEFAULT_ACCEPT_EMOJIS,
    ) -> None:
        self.knowledge = knowledge
        self.state = state
        self.solved = solved
        self.solved_tags = folded(solved_tags)
        self.accept_emojis = tuple(accept_emojis)
        self._entries = KnowledgeStore(sessionmaker)  # read-only: whose entry a thread has

    async def sync_guild(
        self, source: ForumSource, guild_id: int, forum_ids: Iterable[int], *, full: bool = False
    ) -> SyncReport:
        """Bring the knowledge base in step with these forums of `guild_id`. `full`:
        list every archived page again (finds archived threads deleted meanwhile)."""
        clock = time.perf_counter()
        forums = frozenset(forum_ids)
        report = SyncReport(guild_id=guild_id, forums=len(forums))
        run = _Run(guild_id, forums, utcnow(), report)
        active = await source.active_threads(guild_id)
        report.pages += 1
        await self._visit(source, run, active)
        for forum_id in sorted(forums):
            full_pass = await self._archived(source, run, forum_id, full=full)
            await self._deletions(source, run, forum_id, full_pass)
        report.duration_s = time.perf_counter() - clock
        return report

    # -- listing ---------------------------------------------------------------------

    async def _archived(
        self, source: ForumSource, run: _Run, forum_id: int, *, full: bool
    ) -> datetime | None:
        """The forum's archived pages down to its mark (all of them for a full pass);
        the start of the full pass that ended here, else None."""
        stored = await self.state.forum(forum_id) or ForumState(forum_id, run.guild_id)
        tops: list[datetime] = [t for t in (stored.archived_through,) if t is not None]
        resume = stored.interrupted and (stored.pass_full or not full)
        if resume:
            run.report.resumed += 1
            assert stored.pass_top is not None  # set with pass_before, at the first page
            # What was archived since the interrupted pass listed its first page.
            newest = await self._pages(source, run, forum_id, None, stored.pass_top, None)
            tops += [t for t in (newest, stored.pass_top) if t is not None]
            cursor = stored
        else:
            cursor = ForumState(
                forum_id,
                run.guild_id,
                archived_through=stored.archived_through,
                pass_full=full,
                pass_started_at=run.started,
            )
        stop = None if cursor.pass_full else stored.archived_through
        newest = await self._pages(source, run, forum_id, cursor.pass_before, stop, cursor)
        tops += [newest] if newest is not None else []
        await self.state.save_forum(
            ForumState(
                forum_id,
                run.guild_id,
                archived_through=max(tops, default=None),
                synced_at=utcnow(),
            )
        )
        return cursor.pass_started_at if cursor.pass_full else None

    async def _pages(
        self,
        source: ForumSource,
        run: _Run,
        forum_id: int,
        before: datetime | None,
        stop: datetime | None,
        cursor: ForumState | None,
    ) -> datetime | None:
        """Archived pages from `before` (None: the newest) down to `stop` (None: the
        end); after each page `cursor`, when given, is stored with where to go on.
        Returns the newest archive time listed."""
        newest: datetime | None = None
        while True:
            page = await source.archived_page(forum_id, before)
            run.report.pages += 1
            threads = [t for t in page.threads if stop is None or t.archive_timestamp >= stop]
            if page.threads and newest is None:
                newest = max(t.archive_timestamp for t in page.threads)
            await self._visit(source, run, threads)
            if not page.has_more or not page.threads:
                return newest
            oldest = min(t.archive_timestamp for t in page.threads)
            if stop is not None and oldest <= stop:
                return newest  # what lies below was read when it was listed before
            if before is not None and oldest >= before:
                run.report.problems.append(
                    f"forum {forum_id}: the archived pages stopped moving back at {oldest}"
                )
                return newest
            before = oldest
            if cursor is not None:
                cursor = ForumState(
                    forum_id,
                    run.guild_id,
                    archived_through=cursor.archived_through,
                    pass_top=cursor.pass_top or newest,
                    pass_before=before,
                    pass_full=cursor.pass_full,
                    pass_started_at=cursor.pass_started_at,
                    synced_at=cursor.synced_at,
                )
                await self.state.save_forum(cursor)

    async def _visit(
        self, source: ForumSource, run: _Run, threads: Iterable[ThreadSummary]
    ) -> None:
        """Read the listed threads that are new or changed; note the others as listed."""
        fresh = []
        for thread in threads:
            if thread.guild_id != run.guild_id or thread.forum_id not in run.forum_ids:
                continue  # another guild's, or a forum not configured: never indexed here
            if thread.id not in run.seen:
                run.seen.add(thread.id)
                fresh.append(thread)
        if not fresh:
            return
        run.report.listed += len(fresh)
        known = await self.state.threads(t.id for t in fresh)
        same = [t.id for t in fresh if t.id in known and _unchanged(known[t.id], t)]
        await self.state.listed(same, run.started)
        run.report.unchanged += len(same)
        changed = [t for t in fresh if t.id not in same]
        marks = await self.state.recorded_marks(t.id for t in changed)
        for thread in changed:
            await self._read(source, run, thread, known.get(thread.id), marks.get(thread.id))

    # -- one thread --------------------------------------------------------------------

    async def _read(
        self,
        source: ForumSource,
        run: _Run,
        thread: ThreadSummary,
        known: ThreadState | None,
        mark: RecordedMark | None,
    ) -> None:
        record = await source.read(thread)
        run.report.read += 1
        if record is None:
            await self._gone(run, thread.id)
            return
        if record.starter is None:
            run.report.starter_missing += 1
        outcome, ours = await self._settle(run, record, known, mark)
        await self.state.save_thread(
            ThreadState(
                thread_id=thread.id,
                guild_id=run.guild_id,
                forum_id=thread.forum_id,
                last_message_id=thread.last_message_id,
                tags=tags_key(thread.tags),
                archived=thread.archived,
                outcome=outcome,
                content_hash=ours,
                read_at=utcnow(),
                listed_at=run.started,
            )
        )

    async def _settle(
        self,
        run: _Run,
        record: ThreadRecord,
        known: ThreadState | None,
        mark: RecordedMark | None,
    ) -> tuple[str, str | None]:
        """Decide and store; (the outcome, the hash of the entry the sync wrote)."""
        report = run.report
        stored = (await self._entries.content_hashes([record.id])).get(record.id)
        ours = stored is not None and known is not None and known.content_hash == stored
        if stored is not None and not ours:
            report.kept += 1
            return MARKED, None
        if mark is not None and mark.answer.strip():
            await self._store(run, marked_answer(record, mark), stored)
            return MARKED, None
        if folded(record.tags) & self.solved_tags:
            outcome = await self.solved.solved_by_tag(
                forum_thread(record), reply=last_reply(record)
            )
            match outcome:
                case Solved():
                    report.added += 1
                    return MARKED, None
                case AlreadySolved():  # the sync's own entry: a moderator confirmed it
                    report.kept += 1
                    return MARKED, None
                case NoAnswerFound():
                    pass
        solved = inferred_answer(record, self.accept_emojis)
        if solved is not None:
            await self._store(run, solved, stored)
            return SOLVED, solved.content_hash()
        report.unsolved += 1
        if ours and await self.knowledge.remove(record.id):
            report.removed += 1
        return UNSOLVED, None

    async def _store(self, run: _Run, thread: SolvedThread, stored: str | None) -> None:
        if not await self.knowledge.upsert([thread]):
            return
        if stored is None:
            run.report.added += 1
        else:
            run.report.updated += 1

    async def _gone(self, run: _Run, thread_id: int) -> None:
        """The thread was deleted on Discord: out of the knowledge base and the state."""
        run.report.deleted += 1
        if await self.knowledge.remove(thread_id):
            run.report.removed += 1
        await self.state.forget(thread_id)

    async def _deletions(
        self, source: ForumSource, run: _Run, forum_id: int, full_pass: datetime | None
    ) -> None:
        """Threads seen active before and listed nowhere now (and, after a full pass,
        every thread it did not list): each checked, removed when Discord says gone."""
        missing = await self.state.unlisted(forum_id, listed_before=run.started, active_only=True)
        if full_pass is not None:
            missing += await self.state.unlisted(
                forum_id, listed_before=full_pass, active_only=False
            )
        still_there = []
        for thread_id in dict.fromkeys(missing):
            if await source.exists(thread_id):
                still_there.append(thread_id)  # out of the listings' sight: kept
            else:
                await self._gone(run, thread_id)
        await self.state.listed(still_there, run.started)
