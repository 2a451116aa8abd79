"""`--feedback helpful|solved` on `ibot finetune export-threads` and `prepare`: only the
threads whose answer members marked helpful or solved are kept, read from the bot's
database (SQLite and PostgreSQL), with the counts of what was dropped and why."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ibot.db.engine import create_engine, make_sessionmaker
from ibot.db.feedback import AnswerMarks, FeedbackStore, StoredAnswer
from ibot.db.migrate import upgrade
from ibot.finetune.cli import finetune_app
from ibot.finetune.export_threads import MessageRecord, ThreadRecord, build_export, write_export
from ibot.finetune.feedback_filter import (
    FeedbackUnavailable,
    Mark,
    export_selector,
    parse_marks,
    read_marks,
    select_threads,
)
from ibot.finetune.prepare import read_jsonl

runner = CliRunner()
GUILD = 1
ASKER, MEMBER, MODO, BOT = 10, 11, 12, 99
# Each thread's answer message: the bot's ones are (or are not) in the answers table.
HELPFUL, SOLVED, TIED, UNVOTED, OLD_BOT, ACCEPTED, MODERATED = (
    1001, 1002, 1003, 1004, 1005, 1006, 1007,
)  # fmt: skip
# message id -> (👍, 👎, solved) as the bot's database holds them
RECORDED = {
    HELPFUL: (2, 1, False),
    SOLVED: (0, 1, True),  # solved, though one member disliked it
    TIED: (1, 1, False),
    UNVOTED: (0, 0, False),
}


def forum_thread(answer_id: int, title: str, reply: MessageRecord | None) -> ThreadRecord:
    starter = MessageRecord(answer_id - 1000, ASKER, "asker", f"{title} ?")
    messages = (starter,) if reply is None else (starter, reply)
    return ThreadRecord(
        id=starter.id,
        guild_id=GUILD,
        forum_id=2,
        forum_name="aide",
        title=title,
        author_id=ASKER,
        messages=messages,
    )


def bot_reply(mid: int, text: str) -> MessageRecord:
    return MessageRecord(mid, BOT, "iBot", text, is_us=True)


def the_export() -> dict[str, Any]:
    threads = [
        forum_thread(HELPFUL, "aimée", bot_reply(HELPFUL, "réponse aimée")),
        forum_thread(SOLVED, "résolue", bot_reply(SOLVED, "réponse résolue")),
        forum_thread(TIED, "partagée", bot_reply(TIED, "réponse 1 👍 1 👎")),
        forum_thread(UNVOTED, "ignorée", bot_reply(UNVOTED, "réponse sans vote")),
        forum_thread(OLD_BOT, "ancienne", bot_reply(OLD_BOT, "réponse d'avant les boutons")),
        forum_thread(
            ACCEPTED,
            "acceptée",
            MessageRecord(
                ACCEPTED, MEMBER, "bob", "réponse acceptée", author_reactions=frozenset({"✅"})
            ),
        ),
        forum_thread(
            MODERATED,
            "modérée",
            MessageRecord(MODERATED, MODO, "modo", "réponse du modo", is_moderator=True),
        ),
        forum_thread(1008, "sans réponse", None),
    ]
    return build_export(threads, exported_at=datetime(2025, 3, 1, tzinfo=UTC))


def marks() -> dict[int, AnswerMarks]:
    return {mid: AnswerMarks(up, down, solved) for mid, (up, down, solved) in RECORDED.items()}


def kept_titles(threads) -> list[str]:
    return [thread["title"] for thread in threads]


async def record_feedback(url: str, recorded: dict[int, tuple[int, int, bool]] = RECORDED) -> None:
    """The bot's database: its recorded answers with their votes and solved marks."""
    await upgrade(url)
    engine = create_engine(url)
    try:
        store = FeedbackStore(make_sessionmaker(engine))
        for mid, (up, down, solved) in recorded.items():
            await store.add_answer(
                StoredAnswer(
                    message_id=mid, guild_id=GUILD, channel_id=2, thread_id=mid - 1000,
                    feature="auto_reply", ledger_id=None, asker_id=ASKER, title="", question="",
                    answer="", solved_at=None, solved_by=None,
                )
            )  # fmt: skip
            members = iter(range(500, 600))
            for vote, count in ((1, up), (-1, down)):
                for _ in range(count):
                    await store.vote(mid, next(members), vote)
            if solved:
                await store.mark_solved(mid, ASKER, datetime(2025, 3, 2, tzinfo=UTC))
    finally:
        await engine.dispose()


# ---- the rules -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wanted", "titles", "kept", "dropped"),
    [
        (
            "helpful",
            ["aimée"],
            {"helpful": 1},
            {"not_marked": 3, "unknown_answer": 1, "no_buttons": 2, "unsolved": 1},
        ),
        (
            "solved",
            ["résolue", "acceptée"],
            {"solved": 1, "accepted": 1},
            {"not_marked": 3, "unknown_answer": 1, "no_buttons": 1, "unsolved": 1},
        ),
        (
            "helpful,solved",
            ["aimée", "résolue", "acceptée"],
            {"helpful": 1, "solved": 1, "accepted": 1},
            {"not_marked": 2, "unknown_answer": 1, "no_buttons": 1, "unsolved": 1},
        ),
    ],
)
def test_the_filter_keeps_exactly_the_helpful_or_solved_answers(wanted, titles, kept, dropped):
    threads, selection = select_threads(the_export()["threads"], marks(), parse_marks(wanted))

    assert kept_titles(threads) == titles
    assert dict(selection.kept) == kept
    assert dict(selection.dropped) == dropped


def test_marks_are_named_clearly():
    assert parse_marks(" Solved , helpful") == {Mark.SOLVED, Mark.HELPFUL}
    with pytest.raises(ValueError, match="unknown mark 'liked'"):
        parse_marks("helpful,liked")
    with pytest.raises(ValueError, match="helpful, solved or helpful,solved"):
        parse_marks(" , ")


def test_a_helpful_answer_needs_more_likes_than_dislikes_and_one_at_least():
    assert [AnswerMarks(up, down).helpful for up, down in ((1, 0), (2, 1), (1, 1), (0, 0))] == [
        True,
        True,
        False,
        False,
    ]


# ---- the bot's database --------------------------------------------------------------


async def test_marks_are_read_from_the_bots_database(db_url):
    await record_feedback(db_url)

    found = await read_marks(db_url, [HELPFUL, SOLVED, TIED, UNVOTED, OLD_BOT, MODERATED])

    assert found == marks()  # the ids it does not know are absent


async def test_a_missing_sqlite_file_is_an_error_and_is_not_created(tmp_path: Path):
    path = tmp_path / "nope.db"

    with pytest.raises(FeedbackUnavailable, match="no database at"):
        await read_marks(f"sqlite+aiosqlite:///{path}", [1])
    assert not path.exists()


async def test_a_database_without_the_feedback_tables_is_an_error(tmp_path: Path):
    path = tmp_path / "other.db"
    sqlite3.connect(path).close()

    with pytest.raises(FeedbackUnavailable, match="no feedback tables"):
        await read_marks(f"sqlite+aiosqlite:///{path}", [1])


async def test_an_unreachable_server_is_an_error_without_its_password():
    url = "postgresql+asyncpg://ibot:s3cret@127.0.0.1:9/ibot"

    with pytest.raises(FeedbackUnavailable, match="cannot read the bot's database") as caught:
        await read_marks(url, [1])
    assert "s3cret" not in str(caught.value)


# ---- prepare -------------------------------------------------------------------------


def config_for(tmp_path: Path, url: str) -> Path:
    config = tmp_path / "ibot.toml"
    config.write_text(f'database_url = "{url}"\n', encoding="utf-8")
    return config


def test_prepare_trains_only_on_the_marked_answers(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ibot.db'}"
    asyncio.run(record_feedback(url))
    export = tmp_path / "threads.json"
    write_export(export, the_export())
    out = tmp_path / "data"

    result = runner.invoke(
        finetune_app,
        [
            "prepare", str(export), "--out", str(out), "--feedback", "helpful,solved",
            "--val-fraction", "0", "--config", str(config_for(tmp_path, url)), "--no-progress",
        ],
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    samples = read_jsonl(out / "train.jsonl")
    assert [sample.response for sample in samples] == [
        "réponse aimée",
        "réponse résolue",
        "réponse acceptée",
    ]
    assert (
        "feedback filter (helpful,solved): kept 3 thread(s) (1 accepted, 1 helpful, 1 solved), "
        "dropped 4" in result.stdout
    )
    assert "feedback_not_marked" in result.stdout and "unsolved" in result.stdout
    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    assert stats["skipped"] == {
        "feedback_no_buttons": 1,
        "feedback_not_marked": 2,
        "feedback_unknown_answer": 1,
        "unsolved": 1,
    }
    assert stats["feedback_kept"] == {"accepted": 1, "helpful": 1, "solved": 1}


def test_prepare_says_when_the_database_has_no_feedback(tmp_path: Path) -> None:
    export = tmp_path / "threads.json"
    write_export(export, the_export())
    missing = f"sqlite+aiosqlite:///{tmp_path / 'missing.db'}"

    result = runner.invoke(
        finetune_app,
        [
            "prepare", str(export), "--out", str(tmp_path / "data"), "--feedback", "solved",
            "--config", str(config_for(tmp_path, missing)), "--no-progress",
        ],
    )  # fmt: skip

    assert result.exit_code == 2
    assert "error: no database at" in result.output
    assert not (tmp_path / "data" / "train.jsonl").exists()


def test_prepare_refuses_the_filter_without_an_export(tmp_path: Path) -> None:
    lines = tmp_path / "rick.txt"
    lines.write_text("Morty: Hi\nRick: Hello\n", encoding="utf-8")

    result = runner.invoke(
        finetune_app,
        ["prepare", str(lines), "--out", str(tmp_path / "d"), "--character", "Rick",
         "--feedback", "helpful", "--config", str(config_for(tmp_path, "sqlite://"))],
    )  # fmt: skip

    assert result.exit_code == 2
    assert "--feedback filters forum threads" in result.output


# ---- export-threads ------------------------------------------------------------------

TOKEN = "fake-export-token"


@pytest.fixture
async def fake() -> AsyncIterator[Any]:
    from nextcord.http import Route

    from ibot.testing.fake_discord import FakeDiscord

    original = Route.BASE
    async with FakeDiscord(token=TOKEN) as server:
        Route.BASE = server.base_url
        try:
            yield server
        finally:
            Route.BASE = original


async def test_export_threads_writes_only_the_marked_threads(fake: Any, tmp_path: Path) -> None:
    from ibot.config import load_settings
    from ibot.finetune.export_threads import export_threads

    guild = fake.create_guild("Entraide")
    mod_role = fake.create_role(guild, "Modo")
    alice = fake.create_member(guild, "alice")
    modo = fake.create_member(guild, "modo", roles=[mod_role])
    forum = fake.create_forum(guild, "aide-python")
    answers = {}
    for title in ("aimée", "résolue", "ignorée"):
        posted = await fake.create_forum_thread(forum, author=alice, title=title, content="?")
        answers[title] = await fake.post_message(posted, fake.bot_user, f"réponse {title}")
    moderated = await fake.create_forum_thread(forum, author=alice, title="modérée", content="?")
    await fake.post_message(moderated, modo, "réponse du modo")
    await fake.create_forum_thread(forum, author=alice, title="sans réponse", content="?")
    url = f"sqlite+aiosqlite:///{tmp_path / 'ibot.db'}"
    await record_feedback(
        url,
        {
            answers["aimée"].id: (3, 0, False),
            answers["résolue"].id: (0, 0, True),
            answers["ignorée"].id: (0, 2, False),
        },
    )
    settings = load_settings(
        None,
        discord_token=TOKEN,
        database_url=url,
        discord={"guild_ids": [guild.id], "forum_channel_ids": [forum.id]},
        roles={"moderators": [mod_role.id]},
    )
    out = tmp_path / "threads.json"
    select, selection = export_selector(url, frozenset({Mark.HELPFUL, Mark.SOLVED}))

    export, _ = await export_threads(
        settings,
        out,
        show_progress=False,
        client_options={"guild_ready_timeout": 0.05},
        select=select,
    )

    written = json.loads(out.read_text(encoding="utf-8"))
    assert written == export
    assert kept_titles(written["threads"]) == ["aimée", "résolue"]
    assert written["feedback_filter"] == {
        "only": ["helpful", "solved"],
        "kept": {"helpful": 1, "solved": 1},
        "dropped": {"no_buttons": 1, "not_marked": 1, "unsolved": 1},
    }
    assert selection.summary() == (
        "feedback helpful,solved: kept 2 (1 helpful, 1 solved), "
        "dropped 3 (1 no_buttons, 1 not_marked, 1 unsolved)"
    )


def test_export_threads_checks_the_database_before_reading_discord(tmp_path: Path) -> None:
    config = config_for(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'missing.db'}")

    result = runner.invoke(
        finetune_app,
        ["export-threads", "--config", str(config), "--feedback", "helpful",
         "--out", str(tmp_path / "t.json")],
        env={"BOT_TOKEN": "not-used"},
    )  # fmt: skip

    assert result.exit_code == 2
    assert "error: no database at" in result.output
    assert not (tmp_path / "t.json").exists()
