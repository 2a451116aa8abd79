"""`ibot kb sync` and the bot's start-up sync, end to end: real nextcord against the
fake Discord (its rate-limit buckets, its archived-thread pages, its faults), a real
SQLite database. What a moderator would notice: every solved thread of the forums is
found once, whatever the number of pages; a second run reads only what is new; a 429
or a 5xx in the middle loses nothing; deleted threads leave; another guild's threads
stay out; the bot does the same by itself when it starts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nextcord
import pytest
from nextcord.http import Route
from structlog.testing import capture_logs

from ibot.config import Settings, load_settings
from ibot.db.engine import create_engine, make_sessionmaker
from ibot.kb_sync import sync_knowledge
from ibot.services.knowledge import KnowledgeBase
from ibot.testing.fake_discord import FakeChannel, FakeDiscord, FakeGuild, FakeMember, FakeRole
from ibot.testing.harness import Harness

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TOKEN = "fake-kb-sync-token"
STAMP0 = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    original = Route.BASE
    async with FakeDiscord(token=TOKEN) as server:
        Route.BASE = server.base_url
        try:
            yield server
        finally:
            Route.BASE = original


@dataclass
class Server:
    guild: FakeGuild
    mod_role: FakeRole
    alice: FakeMember
    bob: FakeMember
    carol: FakeMember
    modo: FakeMember
    forum: FakeChannel


def build_server(fake: FakeDiscord, name: str = "Entraide") -> Server:
    guild = fake.create_guild(name)
    mod_role = fake.create_role(guild, "Modo")
    return Server(
        guild=guild,
        mod_role=mod_role,
        alice=fake.create_member(guild, f"alice-{name}"),
        bob=fake.create_member(guild, f"bob-{name}"),
        carol=fake.create_member(guild, f"carol-{name}"),
        modo=fake.create_member(guild, f"modo-{name}", roles=[mod_role]),
        forum=fake.create_forum(guild, "aide-python", tags=["python", "Résolu"]),
    )


def settings_for(tmp_path: Path, forums: list[FakeChannel], mod_roles: list[int]) -> Settings:
    return load_settings(
        None,
        discord_token=TOKEN,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'ibot.db'}",
        discord={"forum_channel_ids": [f.id for f in forums]},
        roles={"moderators": mod_roles},
        knowledge={"enabled": True},
    )


async def sync(settings: Settings, **options: Any):
    return await sync_knowledge(settings, client_options={"guild_ready_timeout": 0.05}, **options)


@contextlib.asynccontextmanager
async def knowledge_of(settings: Settings) -> AsyncIterator[KnowledgeBase]:
    engine = create_engine(settings.database_url)
    try:
        yield KnowledgeBase(make_sessionmaker(engine))
    finally:
        await engine.dispose()


async def archive(fake: FakeDiscord, thread: FakeChannel, minute: int) -> None:
    """Archived, at a time of its own (the pages are cut on archive times)."""
    await fake.archive_thread(thread)
    thread.archive_timestamp = (STAMP0 + timedelta(minutes=minute)).isoformat()


async def question(s: Server, fake: FakeDiscord, n: int, **fields: Any) -> FakeChannel:
    return await fake.create_forum_thread(
        s.forum,
        author=s.alice,
        title=f"Question {n} : ModuleNotFoundError numéro{n}",
        content=f"import paquet{n} plante avec ModuleNotFoundError",
        **fields,
    )


async def populate(fake: FakeDiscord, s: Server, archived: int) -> dict[str, list[FakeChannel]]:
    """`archived` archived threads, a third each solved by a moderator, accepted by the
    asker's ✅, or left unsolved; and two active ones, one answered by the bot alone."""
    kinds: dict[str, list[FakeChannel]] = {"moderator": [], "accepted": [], "unsolved": []}
    for n in range(archived):
        thread = await question(s, fake, n)
        if n % 3 == 0:
            await fake.post_message(thread, s.modo, f"Installe paquet{n} dans ton venv.")
            kinds["moderator"].append(thread)
        elif n % 3 == 1:
            await fake.post_message(thread, s.carol, "Moi aussi j'ai ce souci")
            fix = await fake.post_message(thread, s.bob, f"python -m pip install paquet{n}")
            await fake.react(fix, s.alice, "✅")
            kinds["accepted"].append(thread)
        else:
            await fake.post_message(thread, s.carol, "Aucune idée")
            kinds["unsolved"].append(thread)
        await archive(fake, thread, n)
    by_bot = await question(s, fake, 1000)
    await fake.post_message(by_bot, fake.bot_user, "Vérifie que paquet1000 est installé.")
    kinds["bot"] = [by_bot]
    open_one = await question(s, fake, 1001)
    await fake.post_message(open_one, s.carol, "Tu as essayé de redémarrer ?")
    await fake.post_message(open_one, s.bob, "Quelle version de Python ?")
    kinds["unsolved"].append(open_one)
    return kinds


def archived_pages(fake: FakeDiscord, since: int = 0) -> list[dict[str, str]]:
    return [
        r.query
        for r in fake.requests[since:]
        if r.method == "GET" and r.path.endswith("/threads/archived/public")
    ]


def history_reads(fake: FakeDiscord, since: int = 0) -> Counter[int]:
    """Successful reads of a thread's messages, by thread id."""
    return Counter(
        int(r.path.split("/")[2])
        for r in fake.requests[since:]
        if r.method == "GET"
        and r.path.endswith("/messages")
        and r.path.startswith("/channels/")
        and r.status == 200
    )


async def test_every_solved_thread_of_every_page_then_only_what_is_new(fake, tmp_path):
    s = build_server(fake)
    kinds = await populate(fake, s, archived=120)  # more than a page of 100
    settings = settings_for(tmp_path, [s.forum], [s.mod_role.id])

    outcome = await sync(settings)

    [report] = outcome.reports
    solved = kinds["moderator"] + kinds["accepted"] + kinds["bot"]
    assert (report.listed, report.read, report.added) == (122, 122, len(solved))
    assert report.unsolved == len(kinds["unsolved"]) and report.removed == 0
    pages = archived_pages(fake)
    assert [p["limit"] for p in pages] == ["100", "100"]  # the most the spec allows
    assert "before" not in pages[0] and pages[1]["before"]
    async with knowledge_of(settings) as kb:
        stats = await kb.stats(s.guild.id)
        assert stats.threads == len(solved)
        assert dict(stats.per_answer_kind) == {"moderator": 40, "accepted": 40, "bot": 1}
        oldest = kinds["moderator"][0]  # archived first: on the last page
        [hit] = await kb.search("import paquet0", guild_id=s.guild.id, k=1)
        assert hit.thread_id == oldest.id
        for thread in kinds["unsolved"]:
            assert not await kb.contains(thread.id)
    assert not [r for r in fake.requests if "/commands" in r.path and r.method != "GET"]

    # Since: a moderator answers an unsolved archived thread (posting unarchives it).
    late = kinds["unsolved"][0]
    await fake.archive_thread(late, archived=False)
    await fake.post_message(late, s.modo, "Il manque le __init__.py du paquet.")
    mark = len(fake.requests)

    again = await sync(settings)

    [second] = again.reports
    assert history_reads(fake, mark) == Counter({late.id: 1})  # nothing else read again
    assert (second.read, second.added, second.updated) == (1, 1, 0)
    assert len(archived_pages(fake, mark)) == 1
    async with knowledge_of(settings) as kb:
        [hit] = await kb.search("__init__.py du paquet", guild_id=s.guild.id)
        assert hit.thread_id == late.id
        assert (await kb.stats(s.guild.id)).threads == len(solved) + 1


async def test_a_429_in_the_middle_is_waited_out_and_the_sync_completes(fake, tmp_path):
    s = build_server(fake)
    kinds = await populate(fake, s, archived=9)
    settings = settings_for(tmp_path, [s.forum], [s.mod_role.id])
    slowed = kinds["accepted"][1]
    fake.faults.rate_limit(f"/channels/{slowed.id}/messages", method="GET", retry_after=0.2)
    fake.faults.rate_limit("/threads/archived/public", method="GET", retry_after=0.1)

    outcome = await sync(settings)

    [report] = outcome.reports
    limited = [r for r in fake.requests if r.status == 429]
    assert len(limited) == 2
    assert report.added == 3 + 3 + 1 and report.read == 11
    async with knowledge_of(settings) as kb:
        assert await kb.contains(slowed.id)


async def test_a_5xx_stops_the_sync_and_the_next_run_goes_on_from_there(fake, tmp_path):
    s = build_server(fake)
    kinds = await populate(fake, s, archived=110)
    settings = settings_for(tmp_path, [s.forum], [s.mod_role.id])
    victim = kinds["moderator"][1]  # archived early: on the second page
    fake.faults.server_error(f"/channels/{victim.id}/messages", method="GET", status=503)

    with pytest.raises(nextcord.DiscordServerError):
        await sync(settings)

    async with knowledge_of(settings) as kb:
        kept = (await kb.stats(s.guild.id)).threads
    assert 0 < kept < 37 + 37 + 1  # what the stopped run stored is there
    mark = len(fake.requests)

    outcome = await sync(settings)

    [report] = outcome.reports
    assert report.resumed == 1
    reads = history_reads(fake)
    assert set(reads) == {t.id for group in kinds.values() for t in group}
    assert set(reads.values()) == {1}  # each thread read once over both runs
    second_page = archived_pages(fake, mark)
    assert "before" in second_page[-1]  # went on from the stopped pass's page
    async with knowledge_of(settings) as kb:
        assert (await kb.stats(s.guild.id)).threads == 37 + 37 + 1


async def test_bad_input_deleted_starters_deleted_threads_and_another_guild(fake, tmp_path):
    s = build_server(fake)
    elsewhere = build_server(fake, "Voisins")
    settings = settings_for(
        tmp_path, [s.forum, elsewhere.forum], [s.mod_role.id, elsewhere.mod_role.id]
    )
    headless = await question(s, fake, 1)
    await fake.post_message(headless, s.modo, "Installe paquet1, le nom du module diffère.")
    await fake.delete_message(headless.id)  # the starter message is deleted
    empty = await question(s, fake, 2)
    await fake.delete_message(empty.id)
    active = await question(s, fake, 3)
    await fake.post_message(active, s.modo, "Active ton venv avant pip.")
    old = await question(s, fake, 4)
    await fake.post_message(old, s.modo, "Vérifie ton PYTHONPATH.")
    await archive(fake, old, 4)
    theirs = await fake.create_forum_thread(
        elsewhere.forum, author=elsewhere.alice, title="ModuleNotFoundError chez nous", content="?"
    )
    await fake.post_message(theirs, elsewhere.modo, "Installe le paquet.")

    outcome = await sync(settings, guild_id=s.guild.id)

    [report] = outcome.reports
    assert report.guild_id == s.guild.id
    assert report.starter_missing == 2 and report.added == 3 and report.unsolved == 1
    async with knowledge_of(settings) as kb:
        [source] = await kb.sources("paquet1 module diffère", guild_id=s.guild.id)
        assert source.hit.thread_id == headless.id and source.question == ""
        assert not await kb.contains(empty.id)
        assert not await kb.contains(theirs.id)
        assert (await kb.stats(elsewhere.guild.id)).threads == 0

    await fake.delete_thread(active)
    await fake.delete_thread(old)
    gone = await sync(settings, guild_id=s.guild.id)

    assert gone.reports[0].deleted == 1  # the active one: missing from the listing
    async with knowledge_of(settings) as kb:
        assert not await kb.contains(active.id)
        assert await kb.contains(old.id)  # archived: out of an incremental run's sight

    full = await sync(settings, guild_id=s.guild.id, full=True)

    assert full.reports[0].deleted == 1 and full.reports[0].read == 0
    everyone = await sync(settings)
    assert [r.guild_id for r in everyone.reports] == sorted([s.guild.id, elsewhere.guild.id])
    async with knowledge_of(settings) as kb:
        assert not await kb.contains(old.id)
        assert (await kb.stats(s.guild.id)).threads == 1
        [hit] = await kb.search("ModuleNotFoundError chez nous", guild_id=elsewhere.guild.id)
        assert hit.thread_id == theirs.id
        ours = await kb.search("ModuleNotFoundError chez nous", guild_id=s.guild.id)
        assert theirs.id not in {h.thread_id for h in ours}


# ---- the command -------------------------------------------------------------------------


async def run_kb(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """`python -m ibot kb ARGS` in a process of its own (the fake keeps serving meanwhile)."""
    full_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("IBOT_", "OPENAI_")) and k not in ("BOT_TOKEN", "DISCORD_TOKEN")
    }
    full_env.update(env)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ibot", "kb", *args,
        cwd=REPO, env=full_env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    return process.returncode or 0, out.decode(), err.decode()


async def test_the_command_prints_what_it_read_and_stored(fake, tmp_path):
    s = build_server(fake)
    kinds = await populate(fake, s, archived=6)
    env = {
        "BOT_TOKEN": TOKEN,
        "FORUM_CHANNEL_IDS": str(s.forum.id),
        "IBOT_DISCORD__API_BASE_URL": fake.base_url,
        "IBOT_KNOWLEDGE__ENABLED": "true",
        "IBOT_ROLES__MODERATORS": str(s.mod_role.id),
        "IBOT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
    }

    code, out, err = await run_kb("sync", "--format", "json", env=env)

    assert code == 0, err
    [guild] = json.loads(out)["guilds"]
    assert guild["guild_id"] == str(s.guild.id)
    assert (guild["listed"], guild["read"], guild["added"]) == (8, 8, 2 + 2 + 1)
    assert guild["pages"] == 2 and guild["duration_s"] >= 0

    code, out, err = await run_kb("sync", env=env)

    assert code == 0, err
    # Listed again: the two active threads and the one archived at the mark.
    assert f"guild {s.guild.id}: 1 forum(s), 2 page(s) listed, 3 thread(s)" in out
    assert "read 0, skipped as unchanged 3" in out
    assert "solved: 0 added, 0 updated, 0 kept as marked" in out
    assert len(kinds["bot"]) == 1


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"IBOT_KNOWLEDGE__ENABLED": "true", "FORUM_CHANNEL_IDS": "1"}, "no Discord token"),
        ({"BOT_TOKEN": TOKEN, "FORUM_CHANNEL_IDS": "1"}, "the knowledge base is off"),
        ({"BOT_TOKEN": TOKEN, "IBOT_KNOWLEDGE__ENABLED": "true"}, "no forum to sync"),
    ],
)
async def test_the_command_refuses_a_setup_it_cannot_sync_with_one_line(env, message, tmp_path):
    env = {**env, "IBOT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"}

    code, out, err = await run_kb("sync", env=env)

    assert code == 2
    assert err.strip().startswith(f"error: {message}") and len(err.strip().splitlines()) == 1
    assert out == ""


# ---- the bot at start --------------------------------------------------------------------


async def until_true(check: Any, within_s: float = 20.0) -> None:
    """Poll `check` (the sync runs in the bot's background and posts nothing to wait on);
    a coroutine function is awaited."""
    async with asyncio.timeout(within_s):
        while not (await check() if asyncio.iscoroutinefunction(check) else check()):  # noqa: ASYNC110
            await asyncio.sleep(0.05)


def synced(logs: list[dict[str, Any]]) -> bool:
    return any(entry["event"] == "knowledge_sync" for entry in logs)


async def test_the_bot_syncs_a_forum_configured_while_it_was_down(tmp_path):
    async with Harness(tmp_path, settings={"knowledge": {"enabled": True}}) as harness:
        world, discord = harness.world, harness.discord
        assert world is not None
        await harness.stop_bot()
        web = discord.create_forum(world.guild, "aide-web", tags=["css", "Résolu"])
        solved = await discord.create_forum_thread(
            web, author=world.member, title="Mon CSS ne charge pas", content="style.css ignoré"
        )
        await discord.post_message(solved, world.moderator, "Le chemin du <link href> est faux.")
        await archive(discord, solved, 1)
        tagged = await discord.create_forum_thread(
            web, author=world.member, title="Flexbox centré", content="comment centrer ?"
        )
        await discord.post_message(tagged, world.admin, "justify-content: center")
        await discord.tag_thread(tagged, ["Résolu"])
        await archive(discord, tagged, 2)
        open_one = await discord.create_forum_thread(
            web, author=world.member, title="Quel framework JS ?", content="React ou Vue ?"
        )
        await discord.post_message(open_one, world.denied, "Vue !")
        await archive(discord, open_one, 3)
        harness.overrides["discord"] = {"forum_channel_ids": [world.forum.id, web.id]}

        with capture_logs() as logs:
            await harness.start_bot()
            assert harness.services is not None
            kb = harness.services.knowledge
            assert kb is not None

            async def both_indexed() -> bool:
                return await kb.contains(solved.id) and await kb.contains(tagged.id)

            await until_true(both_indexed)
            await until_true(lambda: synced(logs))
        assert not await kb.contains(open_one.id)
        [hit] = await kb.search("CSS ne charge pas", guild_id=world.guild.id)
        assert hit.thread_id == solved.id

        mark = len(discord.requests)
        with capture_logs() as logs:
            await harness.restart_bot()
            await until_true(lambda: synced(logs))
        [entry] = [e for e in logs if e["event"] == "knowledge_sync"]
        assert entry["read"] == 0 and entry["added"] == 0  # nothing new: nothing read
        assert history_reads(discord, mark) == Counter()
