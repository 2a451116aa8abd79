"""Forum threads as plain records, and the one rule for what answered a thread.

Discord-free and shared: `ibot finetune export-threads` writes these records to its
export, and the knowledge-base sync (`ibot.services.knowledge_sync`) decides from them
whether a thread is solved. Both read Discord through `ibot.forum_reader`, which also
gives the sync its listings (`ThreadSummary`, `ArchivedPage`).

**The answer of a thread** ("accepted or moderator answer"), first rule that applies:

1. ``accepted``: the first reply that the thread's author marked with an accept emoji
   (✅, ✔️ or ☑️ by default), whoever wrote it, the bot included;
2. ``moderator``: the first reply by a moderator, someone other than the thread's author
   with a role of ``roles.moderators`` or ``roles.admins``, the Manage Messages or
   Administrator permission, or the server's ownership (the bot's own rule for
   moderators);
3. ``bot``: the bot's first reply, but only when no human other than the author replied
   (when people discussed without marking an answer, the bot's answer is not known to
   be the solution);

otherwise the thread is unsolved. Replies with no text (an image alone) are never
answers. An answer continues over the same author's directly following messages (long
answers are split over several), joined by a blank line. The text of a message is its
content followed by its embeds' descriptions (the bot answers in embeds; their titles
and footers, cost included, are left out). Other bots' messages are ignored.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

DEFAULT_ACCEPT_EMOJIS: tuple[str, ...] = ("✅", "✔️", "☑️")


class AnswerKind(StrEnum):
    ACCEPTED = "accepted"
    MODERATOR = "moderator"
    BOT = "bot"


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """One message of a thread, as far as choosing the answer needs it."""

    id: int
    author_id: int
    author_name: str
    text: str
    is_us: bool = False  # written by this bot
    is_other_bot: bool = False  # written by another bot account (ignored)
    is_moderator: bool = False
    author_reactions: frozenset[str] = frozenset()  # emojis the thread's author put on it


@dataclass(frozen=True, slots=True)
class ThreadRecord:
    id: int
    guild_id: int
    forum_id: int
    forum_name: str
    title: str
    author_id: int
    messages: tuple[MessageRecord, ...]  # oldest first; the starter has the thread's id
    tags: tuple[str, ...] = ()
    created_at: str = ""
    archived: bool = False

    @property
    def starter(self) -> MessageRecord | None:
        """The message that opened the thread (its id is the thread's); None when it
        was deleted (the thread and its replies stay)."""
        return next((m for m in self.messages if m.id == self.id), None)


@dataclass(frozen=True, slots=True)
class ThreadSummary:
    """A thread as a listing shows it, without its messages: enough to tell whether it
    changed since it was read."""

    id: int
    guild_id: int
    forum_id: int
    last_message_id: int | None
    tags: tuple[str, ...]
    archived: bool
    archive_timestamp: datetime


@dataclass(frozen=True, slots=True)
class ArchivedPage:
    threads: tuple[ThreadSummary, ...]  # newest archived first
    has_more: bool


@dataclass(frozen=True, slots=True)
class Answer:
    kind: AnswerKind
    message: MessageRecord
    text: str


def normalize_emoji(emoji: str) -> str:
    """✔️ and ✔ are the same mark (the variation selector is presentation only)."""
    return emoji.replace("\ufe0f", "")


def replies(thread: ThreadRecord) -> list[MessageRecord]:
    """The messages after the starter that can be answers: with text, not another bot's."""
    return [
        m for m in thread.messages if m.id != thread.id and not m.is_other_bot and m.text.strip()
    ]


def choose_answer(
    thread: ThreadRecord, accept_emojis: Iterable[str] = DEFAULT_ACCEPT_EMOJIS
) -> Answer | None:
    """The thread's answer by the module's rules, or None when it is unsolved."""
    accept = {normalize_emoji(e) for e in accept_emojis}
    others = [m for m in replies(thread) if m.author_id != thread.author_id]
    chosen: tuple[AnswerKind, MessageRecord] | None = None
    for message in others:
        if {normalize_emoji(e) for e in message.author_reactions} & accept:
            chosen = (AnswerKind.ACCEPTED, message)
            break
    if chosen is None:
        for message in others:
            if message.is_moderator and not message.is_us:
                chosen = (AnswerKind.MODERATOR, message)
                break
    if chosen is None and not any(not m.is_us for m in others):
        ours = [m for m in others if m.is_us]
        if ours:
            chosen = (AnswerKind.BOT, ours[0])
    if chosen is None:
        return None
    kind, message = chosen
    return Answer(kind, message, answer_text(thread, message))


def answer_text(thread: ThreadRecord, first: MessageRecord) -> str:
    """The chosen message plus the same author's directly following messages."""
    messages = [m for m in thread.messages if m.id != thread.id and not m.is_other_bot]
    start = next(i for i, m in enumerate(messages) if m.id == first.id)
    parts = []
    for message in messages[start:]:
        if message.author_id != first.author_id:
            break
        if message.text.strip():
            parts.append(message.text.strip())
    return "\n\n".join(parts)
