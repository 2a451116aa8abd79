"""The knowledge-base sync's decisions and its memory, Discord aside: a forum made of
plain records (`Forums`, a ForumSource) on SQLite and PostgreSQL. What a member would
notice: the solved threads become searchable, once each; a second run reads nothing
it read already; an interrupted run loses nothing; deleted threads leave."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest

from ibot.db.feedback import FeedbackStore, StoredAnswer
from ibot.db.knowledge_sync import SyncStateStore
from ibot.services.feedback import FeedbackService
from ibot.services.knowledge import KnowledgeBase, SolvedThread
from ibot.services.knowledge_sync import KnowledgeSync
from ibot.services.permissions import RolePolicy
from ibot.services.solved import SolvedService
from ibot.services.thread_records import (
    ArchivedPage,
    MessageRecord,
    ThreadRecord,
    ThreadSummary,
)

GUILD = 111_111_111_111_111_111
OTHER_GUILD = 222_222_222_222_222_222
FORUM = 333_333_333_333_333_333
OTHER_FORUM = 444_444_444_444_444_444  # OTHER_GUILD's
UNCONFIGURED = 555_555_555_555_555_555  # GUILD's, not configured
ASKER, HELPER, MODO, CAROL, BOT = 10, 20, 30, 40, 99
NAMES = {ASKER: "alice", HELPER: "bob", MODO: "modo", CAROL: "carol", BOT: "ibot"}
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def tid(n: int) -> int:
    return 1_300_000_000_000_000_000 + n * 1_000_000


@dataclass
class Post:
    """A forum thread of the fake forums: what Discord would list and read."""

    id: int
    title: str
    messages: list[MessageRecord]
    forum_id: int = FORUM
    guild_id: int = GUILD
    tags: tuple[str, ...] = ()
    archived_at: datetime | None = None  # None: active

    def say(self, author: int, text: str, **flags: object) -> MessageRecord:
        last = max((m.id for m in self.messages), default=self.id)
        message = MessageRecord(
            id=last + 1,
            author_id=author,
            author_name=NAMES[author],
            text=text,
            is_us=author == BOT,
            is_moderator=author == MODO,
            **flags,  # type: ignore[arg-type]
        )
        self.messages.append(message)
        return message

    def summary(self) -> ThreadSummary:
        return ThreadSummary(
            id=self.id,
            guild_id=self.guild_id,
            forum_id=self.forum_id,
            last_message_id=max((m.id for m in self.messages), default=None),
            tags=self.tags,
            archived=self.archived_at is not None,
            archive_timestamp=self.archived_at or T0,
        )

    def record(self) -> ThreadRecord:
        return ThreadRecord(
            id=self.id,
            guild_id=self.guild_id,
            forum_id=self.forum_id,
            forum_name="aide-python",
            title=self.title,
            author_id=ASKER,
            messages=tuple(self.messages),
            tags=self.tags,
            created_at="2025-03-01T09:00:00+00:00",
            archived=self.archived_at is not None,
        )


def post(n: int, title: str, question: str, **fields: object) -> Post:
    starter = MessageRecord(id=tid(n), author_id=ASKER, author_name="alice", text=question)
    return Post(id=tid(n), title=title, messages=[starter], **fields)  # type: ignore[arg-type]


@dataclass
class Forums:
    """A ForumSource over `posts`, paging archived threads `page_size` at a time, that
    records what it was asked; `fail_after_reads`: the read after that many raises, as a
    5xx or a dropped connection would."""

    page_size: int = 3
    posts: dict[int, Post] = field(default_factory=dict)
    reads: list[int] = field(default_factory=list)
    pages: list[tuple[int, datetime | None]] = field(default_factory=list)
    checked: list[int] = field(default_factory=list)
    fail_after_reads: int | None = None

    def add(self, *posts: Post) -> None:
        self.posts.update({p.id: p for p in posts})

    async def active_threads(self, guild_id: int) -> list[ThreadSummary]:
        return [p.summary() for p in self.posts.values() if p.archived_at is None]

    async def archived_page(self, forum_id: int, before: datetime | None) -> ArchivedPage:
        self.pages.append((forum_id, before))
        archived = sorted(
            (
                p
                for p in self.posts.values()
                if p.forum_id == forum_id
                and p.archived_at is not None
                and (before is None or p.archived_at < before)
            ),
            key=lambda p: p.archived_at or T0,
            reverse=True,
        )
        page = tuple(p.summary() for p in archived[: self.page_size])
        return ArchivedPage(page, len(archived) > self.page_size)

    async def read(self, thread: ThreadSummary) -> ThreadRecord | None:
        if self.fail_after_reads is not None and len(self.reads) >= self.fail_after_reads:
            raise ConnectionError("503: Service Unavailable")
        self.reads.append(thread.id)
        found = self.posts.get(thread.id)
        return found.record() if found is not None else None

    async def exists(self, thread_id: int) -> bool:
        self.checked.append(thread_id)
        return thread_id in self.posts


@pytest.fixture
def knowledge(sessionmaker) -> KnowledgeBase:
    return KnowledgeBase(sessionmaker)


@pytest.fixture
def sync(sessionmaker, knowledge) -> KnowledgeSync:
    solved = SolvedService(
        FeedbackService(FeedbackStore(sessionmaker)), knowledge, RolePolicy(frozenset())
    )
    return KnowledgeSync(knowledge, SyncStateStore(sessionmaker), solved, sessionmaker)


def archived(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def solved_forum() -> tuple[Forums, dict[str, Post]]:
    """Nine threads, seven archived (three pages of three), two active."""
    p = {
        "accepted": post(1, "pip introuvable", "pip: command not found"),
        "moderator": post(2, "Boucle infinie", "Mon while ne s'arrête pas"),
        "bot": post(3, "Erreur 404 avec requests", "requests.get renvoie 404"),
        "talk": post(4, "Quel IDE choisir ?", "VS Code ou PyCharm ?"),
        "contested": post(5, "Venv introuvable", "python -m venv plante"),
        "silent": post(6, "Au secours", "ça ne marche pas"),
        "unicode": post(7, "UnicodeDecodeError en lisant un CSV", "open() plante sur é"),
        "active_mod": post(8, "Tkinter ne s'ouvre pas", "la fenêtre reste noire"),
        "active_open": post(9, "Installer numpy", "pip install numpy échoue"),
    }
    p["accepted"].say(CAROL, "Réinstalle tout ?")
    p["accepted"].say(HELPER, "Utilise python -m pip install", author_reactions=frozenset({"✅"}))
    p["moderator"].say(MODO, "La condition ne change jamais.")
    p["moderator"].say(MODO, "Incrémente i dans la boucle.")
    p["bot"].say(BOT, "Vérifie l'URL : la page n'existe pas.")
    p["talk"].say(HELPER, "PyCharm")
    p["talk"].say(CAROL, "VS Code")
    p["contested"].say(BOT, "Installe le paquet python3-venv.")
    p["contested"].say(CAROL, "Chez moi ça n'a pas suffi")  # the bot is not known to be right
    p["unicode"].say(MODO, "Passe encoding='utf-8' à open().")
    p["active_mod"].say(MODO, "Lance-le avec pythonw.")
    p["active_open"].say(HELPER, "Quelle version de Python ?")
    for minutes, key in enumerate(
        ["accepted", "moderator", "bot", "talk", "contested", "silent", "unicode"]
    ):
        p[key].archived_at = archived(minutes)
    forums = Forums()
    forums.add(*p.values())
    return forums, p


async def test_a_first_sync_indexes_every_solved_thread_of_every_page(sync, knowledge):
    forums, p = solved_forum()

    report = await sync.sync_guild(forums, GUILD, [FORUM])

    stats = await knowledge.stats(GUILD)
    assert stats.threads == 5
    assert dict(stats.per_answer_kind) == {"moderator": 3, "accepted": 1, "bot": 1}
    [hit] = await knowledge.search("pip command not found", guild_id=GUILD)
    assert hit.thread_id == p["accepted"].id
    for unsolved in ("talk", "contested", "silent", "active_open"):
        assert not await knowledge.contains(p[unsolved].id)
    assert (report.listed, report.read, report.unchanged) == (9, 9, 0)
    assert (report.added, report.updated, report.unsolved, report.removed) == (5, 0, 4, 0)
    assert report.pages == 1 + 3  # the active threads, then three archived pages
    assert [before for _, before in forums.pages] == [None, archived(4), archived(1)]


async def test_a_second_sync_reads_only_what_changed_since(sync, knowledge):
    forums, p = solved_forum()
    await sync.sync_guild(forums, GUILD, [FORUM])
    forums.reads.clear()
    forums.pages.clear()
    p["active_open"].say(MODO, "Mets pip à jour : python -m pip install -U pip")  # a reply
    p["active_mod"].archived_at = archived(30)  # archived since: read once more, for good
    late = post(10, "Matplotlib n'affiche rien", "plt.plot ne montre pas de fenêtre")
    late.say(MODO, "Appelle plt.show() à la fin.")
    late.archived_at = archived(31)
    forums.add(late)

    report = await sync.sync_guild(forums, GUILD, [FORUM])

    assert sorted(forums.reads) == sorted([p["active_open"].id, p["active_mod"].id, late.id])
    # Listed: the two active threads, and the newest archived page down to the archive
    # time the first run had read to (the thread archived at that time, unchanged).
    assert (report.listed, report.read, report.unchanged) == (4, 3, 1)
    assert (report.added, report.updated, report.removed) == (2, 0, 0)
    assert len(forums.pages) == 1 and report.pages == 2
    assert (await knowledge.stats(GUILD)).threads == 7
    [hit] = await knowledge.search("plt.show matplotlib", guild_id=GUILD)
    assert hit.thread_id == late.id

    again = await sync.sync_guild(forums, GUILD, [FORUM])
    assert again.read == 0 and again.added == 0 and again.pages == 2


async def test_an_interrupted_sync_goes_on_where_it_stopped_and_stores_each_thread_once(
    sync, knowledge, sessionmaker
):
    forums = Forums(page_size=3)
    posts = []
    for n in range(1, 11):
        thread = post(n, f"Question numéro {n}", f"Détail de la question {n}")
        thread.say(MODO, f"Réponse de la modération {n}")
        thread.archived_at = archived(n)
        posts.append(thread)
    forums.add(*posts)
    forums.fail_after_reads = 5

    with pytest.raises(ConnectionError):
        await sync.sync_guild(forums, GUILD, [FORUM])

    assert (await knowledge.stats(GUILD)).threads == 5  # what it stored is kept
    state = await SyncStateStore(sessionmaker).forum(FORUM)
    assert state is not None and state.interrupted
    meanwhile = post(11, "Question arrivée entre-temps", "Une de plus")
    meanwhile.say(MODO, "Réponse tardive")
    meanwhile.archived_at = archived(60)
    forums.add(meanwhile)
    forums.fail_after_reads = None

    report = await sync.sync_guild(forums, GUILD, [FORUM])

    assert report.resumed == 1
    assert Counter(forums.reads) == Counter({t.id: 1 for t in [*posts, meanwhile]})
    assert (await knowledge.stats(GUILD)).threads == 11
    assert report.added == 6 and report.read == 6
    state = await SyncStateStore(sessionmaker).forum(FORUM)
    assert state is not None and not state.interrupted
    assert state.archived_through == archived(60)

    forums.pages.clear()
    quiet = await sync.sync_guild(forums, GUILD, [FORUM])
    assert quiet.read == 0 and quiet.resumed == 0 and len(forums.pages) == 1


async def test_a_thread_whose_starter_was_deleted_keeps_its_title(sync, knowledge):
    answered = post(1, "ModuleNotFoundError: No module named cv2", "")
    answered.messages.clear()  # the starter message was deleted; the thread stays
    answered.say(MODO, "Installe opencv-python, pas cv2.")
    silent = post(2, "Question sans message", "")
    silent.messages.clear()
    forums = Forums()
    forums.add(answered, silent)

    report = await sync.sync_guild(forums, GUILD, [FORUM])

    assert report.starter_missing == 2 and report.added == 1 and report.unsolved == 1
    [hit] = await knowledge.search("No module named cv2", guild_id=GUILD)
    assert hit.thread_id == answered.id
    [source] = await knowledge.sources("No module named cv2", guild_id=GUILD)
    assert source.question == "" and source.answer == "Installe opencv-python, pas cv2."
    assert not await knowledge.contains(silent.id)


async def test_deleted_threads_leave_the_knowledge_base(sync, knowledge):
    forums, p = solved_forum()
    await sync.sync_guild(forums, GUILD, [FORUM])
    assert await knowledge.contains(p["active_mod"].id)
    assert await knowledge.contains(p["unicode"].id)
    del forums.posts[p["active_mod"].id]  # an active thread deleted
    del forums.posts[p["unicode"].id]  # an archived one

    report = await sync.sync_guild(forums, GUILD, [FORUM])

    assert not await knowledge.contains(p["active_mod"].id)
    assert report.deleted == 1 and report.removed == 1
    assert forums.checked == [p["active_mod"].id]  # the one missing from the listings
    # Below the archived mark nothing is listed again: only a full pass sees it gone.
    assert await knowledge.contains(p["unicode"].id)

    full = await sync.sync_guild(forums, GUILD, [FORUM], full=True)

    assert not await knowledge.contains(p["unicode"].id)
    assert full.deleted == 1 and full.read == 0  # every page listed, nothing read again
    assert (await knowledge.stats(GUILD)).threads == 3

    after = await sync.sync_guild(forums, GUILD, [FORUM], full=True)
    assert after.deleted == 0 and after.removed == 0


async def test_a_thread_gone_between_listing_and_reading_is_removed(sync, knowledge):
    forums, p = solved_forum()
    await sync.sync_guild(forums, GUILD, [FORUM])
    gone = p["active_mod"]
    gone.say(CAROL, "Merci !")  # changed: it will be read…
    original = forums.read

    async def deleted_meanwhile(thread: ThreadSummary) -> ThreadRecord | None:
        forums.posts.pop(gone.id, None)  # …and is deleted just before
        return await original(thread)

    forums.read = deleted_meanwhile  # type: ignore[method-assign]

    report = await sync.sync_guild(forums, GUILD, [FORUM])

    assert report.deleted == 1 and report.removed == 1
    assert not await knowledge.contains(gone.id)


async def test_threads_of_another_guild_are_never_indexed_into_this_one(sync, knowledge):
    ours = post(1, "Erreur pip", "pip plante")
    ours.say(MODO, "Mets pip à jour.")
    theirs = post(2, "Erreur pip chez les voisins", "pip plante aussi", guild_id=OTHER_GUILD)
    theirs.forum_id = OTHER_FORUM
    theirs.say(MODO, "Réinstalle Python.")
    aside = post(3, "Erreur pip hors forum", "pip plante encore", forum_id=UNCONFIGURED)
    aside.say(MODO, "Pas ici.")
    forums = Forums()
    forums.add(ours, theirs, aside)  # a listing that shows them all

    report = await sync.sync_guild(forums, GUILD, [FORUM])

    assert report.listed == 1 and report.added == 1
    assert [h.thread_id for h in await knowledge.search("erreur pip", guild_id=GUILD)] == [ours.id]
    assert (await knowledge.stats(OTHER_GUILD)).threads == 0

    await sync.sync_guild(forums, OTHER_GUILD, [OTHER_FORUM])

    assert [h.thread_id for h in await knowledge.search("erreur pip", guild_id=GUILD)] == [ours.id]
    [theirs_hit] = await knowledge.search("erreur pip", guild_id=OTHER_GUILD)
    assert theirs_hit.thread_id == theirs.id


async def test_an_explicit_mark_is_kept_and_an_inferred_one_follows_the_thread(sync, knowledge):
    forums, p = solved_forum()
    marked = p["talk"]  # the rules find no answer there, but the asker said /solved
    by_hand = SolvedThread(
        guild_id=GUILD,
        forum_id=FORUM,
        thread_id=marked.id,
        title=marked.title,
        question="VS Code ou PyCharm ?",
        answer="PyCharm",
        answer_kind="member",
    )
    await knowledge.upsert([by_hand])

    first = await sync.sync_guild(forums, GUILD, [FORUM])

    assert first.kept == 1
    [source] = await knowledge.sources("PyCharm IDE", guild_id=GUILD)
    assert source.answer == "PyCharm"  # left as the asker marked it
    assert await knowledge.contains(p["bot"].id)  # the bot alone answered: solved
    bot_thread = p["bot"]
    bot_thread.archived_at = None  # unarchived to post, as Discord does
    bot_thread.say(CAROL, "Chez moi l'URL est bonne pourtant")

    second = await sync.sync_guild(forums, GUILD, [FORUM])

    assert not await knowledge.contains(bot_thread.id)  # no longer known to be solved
    assert second.removed == 1 and second.deleted == 0
    assert await knowledge.contains(marked.id)


async def test_a_solved_tag_applied_while_the_bot_was_away(sync, knowledge):
    tagged = post(1, "Police trop petite dans IDLE", "Le texte est minuscule", tags=("Résolu",))
    tagged.say(CAROL, "Options > Configure IDLE > Fonts")
    tagged.say(ASKER, "Merci, c'est réglé")
    empty = post(2, "Sujet clos", "plus besoin", tags=("solved",))
    forums = Forums()
    forums.add(tagged, empty)

    report = await sync.sync_guild(forums, GUILD, [FORUM])

    [source] = await knowledge.sources("police IDLE", guild_id=GUILD)
    assert source.answer == "Options > Configure IDLE > Fonts"
    assert dict((await knowledge.stats(GUILD)).per_answer_kind) == {"member": 1}
    assert report.added == 1 and report.unsolved == 1


async def test_a_tick_recorded_while_the_knowledge_base_was_off(sync, knowledge, sessionmaker):
    thread = post(1, "Python introuvable sous Windows", "python n'est pas reconnu")
    answer = thread.say(BOT, "Coche « Add python.exe to PATH » à l'installation.")
    thread.say(CAROL, "Moi j'ai réinstallé")  # the rules alone would not say solved
    store = FeedbackStore(sessionmaker)
    await store.add_answer(
        StoredAnswer(
            message_id=answer.id,
            guild_id=GUILD,
            channel_id=FORUM,
            thread_id=thread.id,
            feature="auto_reply",
            ledger_id=None,
            asker_id=ASKER,
            title=thread.title,
            question="python n'est pas reconnu",
            answer=answer.text,
            solved_at=None,
            solved_by=None,
        )
    )
    await store.mark_solved(answer.id, ASKER, T0)
    forums = Forums()
    forums.add(thread)

    report = await sync.sync_guild(forums, GUILD, [FORUM])

    assert report.added == 1
    [source] = await knowledge.sources("python PATH Windows", guild_id=GUILD)
    assert source.answer == answer.text
    stats = await knowledge.stats(GUILD)
    assert dict(stats.per_answer_kind) == {"bot": 1} and stats.newest_solved_at == T0


def test_a_listed_thread_is_unchanged_only_when_it_shows_the_same():
    from ibot.db.knowledge_sync import ThreadState
    from ibot.services.knowledge_sync import _unchanged, tags_key

    thread = post(1, "t", "q", tags=("python", "débutant")).summary()
    known = ThreadState(
        thread_id=thread.id,
        guild_id=GUILD,
        forum_id=FORUM,
        last_message_id=thread.last_message_id,
        tags=tags_key(["débutant", "python"]),
        archived=False,
        outcome="unsolved",
        content_hash=None,
        read_at=T0,
        listed_at=T0,
    )
    assert _unchanged(known, thread)
    assert not _unchanged(replace(known, last_message_id=1), thread)
    assert not _unchanged(replace(known, tags="python"), thread)
    assert not _unchanged(replace(known, archived=True), thread)
