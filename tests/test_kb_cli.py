"""`ibot kb import | stats | search`, run as a real process, on SQLite and PostgreSQL.

The export files are written by the real writer of `ibot finetune export-threads`
(`build_export` + `write_export`), so the reader is tested against what users have.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ibot.finetune.export_threads import (
    MessageRecord,
    ThreadRecord,
    build_export,
    write_export,
)

REPO = Path(__file__).resolve().parents[1]
GUILD = 111_111_111_111_111_111
OTHER = 222_222_222_222_222_222
FORUM = 333_333_333_333_333_333
AUTHOR, HELPER, BOT = 10, 20, 30


async def run_kb(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """`python -m ibot kb ARGS` in a process of its own."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("IBOT_", "OPENAI_"))}
    full_env.update(env)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ibot", "kb", *args,
        cwd=REPO, env=full_env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    return process.returncode or 0, out.decode(), err.decode()


def record(
    n: int, title: str, question: str, answer: str | None, *, kind: str = "moderator", guild=GUILD
) -> ThreadRecord:
    thread_id = 1_300_000_000_000_000_000 + n * 1_000
    messages = [MessageRecord(id=thread_id, author_id=AUTHOR, author_name="alice", text=question)]
    if answer is not None:
        messages.append(
            MessageRecord(
                id=thread_id + 1,
                author_id=BOT if kind == "bot" else HELPER,
                author_name="ibot" if kind == "bot" else "bob",
                text=answer,
                is_us=kind == "bot",
                is_moderator=kind == "moderator",
                author_reactions=frozenset({"✅"}) if kind == "accepted" else frozenset(),
            )
        )
    return ThreadRecord(
        id=thread_id,
        guild_id=guild,
        forum_id=FORUM,
        forum_name="aide-python",
        title=title,
        author_id=AUTHOR,
        messages=tuple(messages),
        tags=("python",),
        created_at="2025-01-05T09:00:00+00:00",
        archived=True,
    )


THREADS = [
    record(
        1,
        "Installer Python sous Windows 11",
        "L'installateur se ferme tout seul, je n'arrive pas à avoir Python sur mon PC.",
        "Télécharge l'installateur sur python.org et coche « Add python.exe to PATH ».",
    ),
    record(
        2,
        "ModuleNotFoundError: No module named 'requests'",
        "J'ai fait pip install requests mais mon script plante toujours.",
        "Ton éditeur utilise un autre interpréteur : python -m pip install requests.",
        kind="accepted",
    ),
    record(
        3,
        "Écran bleu 0x0000007B au démarrage",
        "Écran bleu INACCESSIBLE_BOOT_DEVICE depuis que j'ai changé de disque.",
        "Remets le mode SATA du BIOS sur AHCI.",
        kind="bot",
    ),
    record(4, "Question sans réponse", "Quelqu'un sait pourquoi ?", None),
    record(
        5,
        "Installer Python sous Windows 11",
        "La même question, posée sur un autre serveur.",
        "La réponse de l'autre serveur.",
        guild=OTHER,
    ),
]


def export_file(path: Path, threads=THREADS) -> Path:
    write_export(path, build_export(threads, exported_at=datetime(2025, 2, 1, tzinfo=UTC)))
    return path


@pytest.fixture
def env(db_url: str) -> dict[str, str]:
    """SQLite, then PostgreSQL, by URL only."""
    return {"IBOT_DATABASE_URL": db_url, "IBOT_LOGGING__FORMAT": "json"}


@pytest.fixture
def sqlite_env(tmp_path: Path) -> dict[str, str]:
    """For the checks made before the database is opened."""
    return {"IBOT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'kb.db'}"}


async def test_import_then_stats_then_search(env, tmp_path):
    export = export_file(tmp_path / "forum-threads.json")

    code, out, err = await run_kb("import", str(export), env=env)
    assert code == 0, err
    assert out.strip() == (
        "forum-threads.json: 4 solved threads, 4 added or changed, 0 already indexed; "
        "skipped 1 unsolved"
    )

    code, out, err = await run_kb("import", str(export), env=env)
    assert code == 0, err
    assert "4 solved threads, 0 added or changed, 4 already indexed" in out

    code, out, err = await run_kb("stats", "--format", "json", env=env)
    assert code == 0, err
    stats = json.loads(out)
    assert stats["threads"] == 4
    assert stats["per_guild"] == {str(GUILD): 3, str(OTHER): 1}
    assert stats["per_answer_kind"] == {"moderator": 2, "accepted": 1, "bot": 1}
    assert stats["newest_solved_at"].startswith("20")  # the answers' own time

    code, out, err = await run_kb("stats", env=env)
    assert code == 0, err
    assert "solved threads: 4" in out and f"guild {GUILD}: 3" in out

    code, out, err = await run_kb(
        "search", "comment installer python sur windows", "--guild", str(GUILD),
        "--format", "json", env=env,
    )  # fmt: skip
    assert code == 0, err
    hits = json.loads(out)
    windows = THREADS[0]
    assert hits[0] == {
        "thread_id": str(windows.id),
        "title": "Installer Python sous Windows 11",
        "url": f"https://discord.com/channels/{GUILD}/{windows.id}",
        "score": 1.0,
    }
    assert all(set(hit) == {"thread_id", "title", "url", "score"} for hit in hits)
    assert all(0 < hit["score"] <= 1 for hit in hits)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert str(THREADS[4].id) not in {h["thread_id"] for h in hits}  # the other server's

    code, out, err = await run_kb(
        "search", "pip install requests ne marche pas", "--k", "1", env=env
    )
    assert code == 0, err
    assert "ModuleNotFoundError: No module named 'requests'" in out
    assert f"https://discord.com/channels/{GUILD}/{THREADS[1].id}" in out
    assert "Installer Python" not in out  # --k 1

    code, out, err = await run_kb(
        "search", "installer python windows", "--guild", str(OTHER), "--format", "json", env=env
    )
    assert code == 0, err
    assert [h["thread_id"] for h in json.loads(out)] == [str(THREADS[4].id)]


async def test_search_without_a_match_says_so(env, tmp_path):
    await run_kb("import", str(export_file(tmp_path / "e.json")), env=env)

    code, out, err = await run_kb("search", "recette de la tarte aux pommes", env=env)
    assert code == 0, err
    assert out.strip() == "no solved thread scores 0.35 or more for this query"

    code, out, _ = await run_kb("search", "tarte aux pommes", "--format", "json", env=env)
    assert code == 0 and json.loads(out) == []


@pytest.mark.parametrize("query", ["", "   ", "😀🎉", "comment ?"])
async def test_a_query_with_nothing_to_search_is_one_line_exit_2(sqlite_env, query):
    code, out, err = await run_kb("search", query, env=sqlite_env)

    assert code == 2
    assert out == ""
    assert err.strip().startswith("error: nothing to search for")
    assert len(err.strip().splitlines()) == 1


async def test_a_very_long_query_is_answered(env, tmp_path):
    await run_kb("import", str(export_file(tmp_path / "e.json")), env=env)
    query = ("pip install requests ModuleNotFoundError " * 300)[:10_000]

    code, out, err = await run_kb("search", query, "--format", "json", env=env)

    assert code == 0, err
    assert json.loads(out)[0]["thread_id"] == str(THREADS[1].id)


def _wrong_files(tmp_path: Path) -> list[tuple[Path, str]]:
    good = build_export(THREADS, exported_at=datetime(2025, 2, 1, tzinfo=UTC))
    bad_entry = json.loads(json.dumps(good))
    bad_entry["threads"][2]["guild_id"] = "not-a-number"  # after two good threads
    cases = {
        "not-json.json": ("{ this is not json", "not JSON"),
        "a-list.json": (json.dumps([1, 2, 3]), "not an `ibot finetune export-threads` file"),
        "other-format.json": (
            json.dumps({"format": "something-else", "threads": []}),
            "not an `ibot finetune export-threads` file",
        ),
        "version-2.json": (json.dumps({**good, "version": 2}), "export version 2"),
        "threads-not-a-list.json": (json.dumps({**good, "threads": {}}), '"threads" is not'),
        "bad-entry.json": (json.dumps(bad_entry), "guild_id is not a Discord id"),
    }
    files = []
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_text(content, encoding="utf-8")
        files.append((path, message))
    return files


async def test_an_export_of_the_wrong_format_exits_2_and_indexes_nothing(sqlite_env, tmp_path):
    env = sqlite_env
    for path, message in [*_wrong_files(tmp_path), (tmp_path / "missing.json", "no such file")]:
        code, out, err = await run_kb("import", str(path), env=env)

        assert code == 2, (path.name, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), err
        assert message in lines[0] and path.name in lines[0]
        assert "Traceback" not in err

    code, out, err = await run_kb("stats", "--format", "json", env=env)
    assert code == 0, err
    assert json.loads(out)["threads"] == 0


async def test_help_lists_the_kb_commands_without_loading_the_database_layer():
    probe = (
        "import sys, ibot.cli\n"
        "from typer.testing import CliRunner\n"
        "result = CliRunner().invoke(ibot.cli.app, ['kb', '--help'])\n"
        "assert result.exit_code == 0, result.output\n"
        "assert all(c in result.output for c in ('import', 'stats', 'search')), result.output\n"
        "print(sorted(m for m in ('sqlalchemy', 'snowballstemmer', 'ibot.services.knowledge')"
        " if m in sys.modules))\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", probe, cwd=REPO, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    assert process.returncode == 0
    assert out.decode().strip() == "[]"
