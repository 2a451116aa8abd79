"""The knowledge base of solved threads: what a member searching it would notice.

Every service test runs on SQLite (FTS5) and on a throwaway PostgreSQL (tsvector + GIN)
through the `sessionmaker` fixture: the same queries must find the same threads.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime

import pytest
from alembic import command
from sqlalchemy import inspect, text
from throwaway_pg import database_url

from ibot.config import load_settings
from ibot.db.engine import create_engine, make_sessionmaker
from ibot.db.migrate import alembic_config, upgrade
from ibot.services import lexical
from ibot.services.knowledge import DEFAULT_MIN_SCORE, KnowledgeBase, SolvedThread

GUILD = 111_111_111_111_111_111
OTHER = 222_222_222_222_222_222
FORUM = 333_333_333_333_333_333


def thread(n: int, title: str, question: str, answer: str, **fields) -> SolvedThread:
    values = {
        "guild_id": GUILD,
        "forum_id": FORUM,
        "thread_id": 1_300_000_000_000_000_000 + n,
        "title": title,
        "question": question,
        "answer": answer,
        "answer_kind": "moderator",
        "created_at": datetime(2025, 1, n, 9, 0, tzinfo=UTC),
    }
    return SolvedThread(**{**values, **fields})


WINDOWS = thread(
    1,
    "Installer Python sous Windows 11",
    "Bonjour, l'installateur se ferme tout seul au bout de quelques secondes, je n'arrive "
    "pas à avoir Python sur mon PC portable.",
    "Télécharge l'installateur depuis python.org, coche « Add python.exe to PATH » et "
    "lance-le en administrateur.",
    tags=("windows",),
)
MODULE = thread(
    2,
    "ModuleNotFoundError: No module named 'requests'",
    "J'ai fait pip install requests, pourtant mon script plante toujours dès la première "
    "ligne quand je le lance depuis VS Code.",
    "VS Code utilise un autre interpréteur que ton terminal. Sélectionne celui de ton venv "
    "(venv/bin/python, C:\\Users\\moi\\venv\\Scripts\\python.exe sous Windows) ou "
    "installe avec `python -m pip install requests`.",
    answer_kind="accepted",
)
VENV = thread(
    3,
    "How to create a virtual environment on Linux",
    "python -m venv .venv fails with 'ensurepip is not available'. What am I missing?",
    "On Debian and Ubuntu the venv module is packaged separately: sudo apt install "
    "python3-venv, then create the environment again.",
    answer_kind="bot",
)
BSOD = thread(
    4,
    "Écran bleu 0x0000007B au démarrage",
    "Depuis que j'ai changé de disque, mon PC affiche un écran bleu INACCESSIBLE_BOOT_DEVICE "
    "au démarrage.",
    "Dans le BIOS, remets le contrôleur SATA dans le mode utilisé à l'installation (AHCI ou RAID).",
    answer_kind="member",
)
NPM = thread(
    5,
    "npm ERR! code ERESOLVE avec React 18",
    "npm install s'arrête sur npm ERR! code ERESOLVE unable to resolve dependency tree.",
    "Ajoute --legacy-peer-deps, ou mets à jour les dépendances en conflit.",
    answer_kind="accepted",
)
JUPYTER = thread(
    6,
    "Les bibliothèques ne s'importent pas dans Jupyter",
    "J'ai plusieurs erreurs d'import dans mon notebook alors que les paquets sont bien "
    "présents, ça ne marche toujours pas.",
    "Le notebook tourne sur un autre noyau : enregistre celui de ton environnement avec "
    "python -m ipykernel install --user.",
)
DISCORD_BOT = thread(
    7,
    "Mon bot Discord ne répond plus aux commandes",
    "Le bot est en ligne mais les commandes slash ne marchent plus depuis hier.",
    "Réinvite le bot avec le scope applications.commands et resynchronise les commandes.",
)
GIT = thread(
    8,
    "git push refusé : failed to push some refs",
    "Quand je fais git push, j'ai l'erreur failed to push some refs to origin.",
    "Fais d'abord git pull --rebase pour récupérer les commits distants, puis pousse.",
)
ELSEWHERE = thread(
    9,
    "Installer Python sous Windows 11",
    "Même souci sur l'autre serveur : l'installateur de Python se ferme.",
    "Réponse donnée sur l'autre serveur.",
    guild_id=OTHER,
)
CORPUS = [WINDOWS, MODULE, VENV, BSOD, NPM, JUPYTER, DISCORD_BOT, GIT, ELSEWHERE]


@pytest.fixture
async def kb(sessionmaker) -> KnowledgeBase:
    base = KnowledgeBase(sessionmaker)
    assert await base.upsert(CORPUS) == len(CORPUS)
    return base


async def first(kb: KnowledgeBase, query: str, guild_id: int | None = GUILD) -> int | None:
    hits = await kb.search(query, guild_id=guild_id)
    return hits[0].thread_id if hits else None


# ---- finding threads ---------------------------------------------------------------------


async def test_a_french_paraphrase_finds_the_thread_by_its_title(kb):
    hits = await kb.search("comment installer python sur windows", guild_id=GUILD)

    assert hits[0].thread_id == WINDOWS.thread_id
    assert hits[0].title == "Installer Python sous Windows 11"
    assert hits[0].url == f"https://discord.com/channels/{GUILD}/{WINDOWS.thread_id}"
    assert hits[0].score == 1.0  # every word of the query is in the title


async def test_pip_install_ne_marche_pas_finds_the_module_not_found_thread(kb):
    hits = await kb.search("pip install ne marche pas", guild_id=GUILD)

    assert hits[0].thread_id == MODULE.thread_id
    assert DEFAULT_MIN_SCORE <= hits[0].score < 1.0  # "marche" is not in that thread


async def test_an_english_query_finds_a_french_thread_and_the_reverse(kb):
    assert await first(kb, "install python on windows") == WINDOWS.thread_id
    assert await first(kb, "créer un environnement virtuel sous linux") == VENV.thread_id


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("ecran bleu au demarrage", BSOD),  # typed without accents
        ("ÉCRAN BLEU", BSOD),
        ("bibliotheque jupyter", JUPYTER),  # singular, no accent: "bibliothèques"
        ("erreur d'import", JUPYTER),  # "erreurs"
        ("commande slash du bot", DISCORD_BOT),  # "commandes"
        ("git pull rebase", GIT),
    ],
)
async def test_accents_case_and_plurals_do_not_matter(kb, query, expected):
    assert await first(kb, query) == expected.thread_id


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("0x0000007B", BSOD),
        ("0x0000007b", BSOD),
        ("INACCESSIBLE_BOOT_DEVICE", BSOD),
        ("npm ERR! ERESOLVE", NPM),
        ("ModuleNotFoundError", MODULE),
        ("venv/bin/python", MODULE),
        ("C:\\Users\\moi\\venv\\Scripts\\python.exe", MODULE),
        ("--legacy-peer-deps", NPM),
        ("python3-venv", VENV),
    ],
)
async def test_code_tokens_find_their_thread(kb, query, expected):
    assert await first(kb, query) == expected.thread_id


async def test_a_code_token_alone_scores_full_where_it_appears_whole(kb):
    hits = await kb.search("0x0000007B", guild_id=GUILD)

    assert [(h.thread_id, h.score) for h in hits] == [(BSOD.thread_id, 1.0)]


async def test_the_whole_identifier_ranks_above_its_parts(sessionmaker):
    kb = KnowledgeBase(sessionmaker, min_score=0)
    words = thread(20, "Module not found", "The error says the module was not found.", "…")
    exact = thread(21, "Crash au lancement", "ModuleNotFoundError au démarrage.", "…")
    await kb.upsert([words, exact])

    hits = await kb.search("ModuleNotFoundError", guild_id=GUILD)

    assert [h.thread_id for h in hits] == [exact.thread_id, words.thread_id]


async def test_title_weighs_more_than_the_answer(sessionmaker):
    kb = KnowledgeBase(sessionmaker)
    in_answer = thread(
        30, "Problème de réseau", "Plus rien ne se connecte.", "Redémarre docker compose."
    )
    in_title = thread(31, "Docker compose ne démarre pas", "Rien ne se lance.", "Mets à jour.")
    await kb.upsert([in_answer, in_title])

    hits = await kb.search("docker compose", guild_id=GUILD)

    assert [h.thread_id for h in hits] == [in_title.thread_id, in_answer.thread_id]
    assert hits[0].score > hits[1].score


# ---- per guild ----------------------------------------------------------------------------


async def test_a_thread_of_one_server_is_never_returned_for_another(kb):
    mine = await kb.search("installer python windows 11", guild_id=GUILD, k=10)
    theirs = await kb.search("installer python windows 11", guild_id=OTHER, k=10)
    everywhere = await kb.search("installer python windows 11", guild_id=None, k=10)

    assert ELSEWHERE.thread_id not in {h.thread_id for h in mine}
    assert [h.thread_id for h in theirs] == [ELSEWHERE.thread_id]
    assert {WINDOWS.thread_id, ELSEWHERE.thread_id} <= {h.thread_id for h in everywhere}
    assert await kb.search("0x0000007B", guild_id=OTHER) == []
    assert await kb.search("anything at all", guild_id=999) == []


async def test_a_server_with_no_threads_finds_nothing(sessionmaker):
    assert await KnowledgeBase(sessionmaker).search("python", guild_id=GUILD) == []


# ---- threshold, scores ------------------------------------------------------------------


async def test_an_unrelated_question_finds_nothing_below_the_threshold(kb, sessionmaker):
    assert await kb.search("recette de la tarte aux pommes", guild_id=GUILD) == []
    assert await kb.search("une tarte aux pommes en python", guild_id=GUILD) == []

    everything = KnowledgeBase(sessionmaker, min_score=0)
    shown = await everything.search("une tarte aux pommes en python", guild_id=GUILD)
    assert shown and all(0 < h.score < DEFAULT_MIN_SCORE for h in shown)


async def test_scores_are_in_zero_one_and_best_first(kb):
    for query in ("python", "pip install", "commandes", "erreur", "installer un module"):
        hits = await kb.search(query, guild_id=GUILD, k=10)
        assert hits, query
        scores = [h.score for h in hits]
        assert all(0 < s <= 1 for s in scores)
        assert scores == sorted(scores, reverse=True)


async def test_k_bounds_the_hits(kb):
    assert len(await kb.search("python", guild_id=GUILD, k=1)) == 1
    assert len(await kb.search("python", guild_id=GUILD, k=3)) == 3
    with pytest.raises(ValueError, match="k must be"):
        await kb.search("python", guild_id=GUILD, k=0)


def test_min_score_outside_zero_one_is_refused():
    with pytest.raises(ValueError, match="min_score"):
        KnowledgeBase(None, min_score=1.5)  # type: ignore[arg-type]


def test_the_settings_default_threshold_is_the_service_default():
    knowledge = load_settings().knowledge
    assert knowledge.min_score == DEFAULT_MIN_SCORE
    assert knowledge.k == 3
    assert knowledge.solved_tags == ["Résolu", "Solved"]
    assert knowledge.close_solved is False


async def test_sqlite_and_postgresql_give_the_same_hits_and_scores(tmp_path):
    """The score is computed from the stored terms, not the engine's rank: one threshold
    means the same on both engines."""
    queries = [
        "comment installer python sur windows",
        "pip install ne marche pas",
        "écran bleu après changement de disque",
        "venv/bin/python",
        "les commandes du bot ne marchent plus",
    ]
    results = []
    for kind in ("sqlite", "postgres"):
        async with database_url(kind, tmp_path / kind) as url:
            await upgrade(url)
            engine = create_engine(url)
            try:
                kb = KnowledgeBase(make_sessionmaker(engine), min_score=0)
                await kb.upsert(CORPUS)
                results.append(
                    [
                        [
                            (h.thread_id, round(h.score, 9))
                            for h in await kb.search(q, guild_id=GUILD)
                        ]
                        for q in queries
                    ]
                )
            finally:
                await engine.dispose()
    sqlite_results, postgres_results = results
    assert sqlite_results == postgres_results
    assert all(sqlite_results)


# ---- awkward queries ----------------------------------------------------------------------


@pytest.mark.parametrize("query", ["", "   ", "\n\t ", "😀🎉🔥", "?!…", "comment faire ?"])
async def test_a_query_with_nothing_to_search_finds_nothing(kb, query):
    assert lexical.query_terms(query).groups == ()
    assert await kb.search(query, guild_id=GUILD) == []


async def test_a_ten_thousand_character_query_is_cut_not_refused(kb):
    query = ("Bonjour, pip install requests plante avec ModuleNotFoundError. " * 200)[:10_000]
    noise = " ".join(f"mot{i}" for i in range(2_000))
    assert len(query) == 10_000

    assert await first(kb, query) == MODULE.thread_id
    hits = await kb.search(noise + " " + query, guild_id=GUILD)  # only noise is kept
    assert hits == []
    terms = lexical.query_terms(noise)
    assert terms.truncated and len(terms.groups) == lexical.MAX_QUERY_GROUPS


@pytest.mark.parametrize(
    "query",
    [
        '"python',
        "python*",
        "-python",
        "python:windows",
        "(python OR",
        "NEAR(python windows)",
        "python AND NOT windows",
        "python & windows | !linux",
        "python' OR '1'='1",
        "C:\\Users\\moi\\python.exe",
        "{col}: python ^ windows",
        "' ; DROP TABLE knowledge_threads; --",
    ],
)
async def test_query_syntax_characters_never_raise(kb, query):
    hits = await kb.search(query, guild_id=GUILD)

    assert all(0 < h.score <= 1 for h in hits)
    assert await first(kb, "installer python windows") == WINDOWS.thread_id  # table intact


# ---- importing the same thread again -----------------------------------------------------


async def test_the_same_thread_again_is_indexed_once(sessionmaker):
    kb = KnowledgeBase(sessionmaker)

    assert await kb.upsert([BSOD]) == 1
    assert await kb.upsert([BSOD]) == 0
    assert await kb.upsert([BSOD, BSOD]) == 0
    assert (await kb.stats()).threads == 1
    assert [h.thread_id for h in await kb.search("0x0000007B", guild_id=GUILD, k=10)] == [
        BSOD.thread_id
    ]


async def test_changed_content_is_reindexed(sessionmaker):
    kb = KnowledgeBase(sessionmaker)
    await kb.upsert([BSOD])
    fixed = dataclasses.replace(BSOD, answer="Remplace la pile CMOS de la carte mère.")

    assert await kb.upsert([fixed]) == 1

    assert await first(kb, "pile CMOS carte mère") == BSOD.thread_id
    assert await kb.search("contrôleur SATA AHCI", guild_id=GUILD) == []  # old answer gone
    assert (await kb.stats()).threads == 1


async def test_remove_forgets_the_thread_and_its_index(kb):
    assert await kb.remove(BSOD.thread_id) is True
    assert await kb.remove(BSOD.thread_id) is False

    assert await kb.search("0x0000007B", guild_id=GUILD) == []
    assert await first(kb, "npm ERESOLVE") == NPM.thread_id


async def _term_counts(sessionmaker) -> tuple[dict, dict]:
    """(the stored term counts, the counts recomputed from the stored threads)."""
    async with sessionmaker() as session:
        stored = {
            (g, t): n
            for g, t, n in await session.execute(
                text("SELECT guild_id, term, threads FROM knowledge_terms")
            )
        }
        recount: dict = {}
        for g, *fields in await session.execute(
            text(
                "SELECT guild_id, terms_title, terms_question, terms_answer FROM knowledge_threads"
            )
        ):
            for term in {"", *" ".join(fields).split()}:
                recount[g, term] = recount.get((g, term), 0) + 1
    return stored, recount


async def test_term_counts_stay_exact_through_changes_moves_and_removals(sessionmaker):
    """The idf weights come from stored counts: after any mix of writes they must equal a
    recount, or scores (and what is shown) drift from the threads really there."""
    kb = KnowledgeBase(sessionmaker)
    await kb.upsert(CORPUS)
    await kb.upsert([dataclasses.replace(BSOD, answer="Remplace la pile CMOS de la carte mère.")])
    await kb.upsert([dataclasses.replace(GIT, guild_id=OTHER)])  # moved to another guild
    await kb.remove(NPM.thread_id)
    await kb.remove(NPM.thread_id)  # twice: counted once
    await kb.upsert([WINDOWS, MODULE])  # unchanged: no count moves
    stored, recount = await _term_counts(sessionmaker)
    assert stored == recount
    assert stored[GUILD, ""] == 6 and stored[OTHER, ""] == 2

    for t in CORPUS:
        await kb.remove(t.thread_id)
    assert await _term_counts(sessionmaker) == ({}, {})


async def test_concurrent_writers_of_the_same_thread_count_it_once(sessionmaker):
    kb = KnowledgeBase(sessionmaker)
    versions = [
        dataclasses.replace(BSOD, answer=f"Réponse numéro {n} : change le câble.") for n in range(6)
    ]

    await asyncio.gather(*(kb.upsert([v]) for v in versions), kb.upsert([VENV]))

    stored, recount = await _term_counts(sessionmaker)
    assert stored == recount and stored[GUILD, ""] == 2


@pytest.mark.parametrize(
    "query",
    [
        "python windows installateur se ferme",
        "pip install requests ModuleNotFoundError VS Code",
        "erreur python script plante au lancement",
        "npm install ERESOLVE react dépendances",
        "git push failed refs origin",
        "python python python erreur",
        "bot discord commandes slash",
    ],
)
async def test_leaving_common_words_out_of_the_engine_query_changes_no_result(kb, query):
    """The commonest words are not sent to the engine (module doc of services/knowledge):
    the hits must be exactly those of scoring every thread that holds any query word."""
    from ibot.services import knowledge

    pruned = await kb.search(query, guild_id=GUILD, k=10)
    everything = knowledge.needed_groups
    try:
        knowledge.needed_groups = lambda weights, min_score: list(range(len(weights)))
        full = await kb.search(query, guild_id=GUILD, k=10)
    finally:
        knowledge.needed_groups = everything
    assert pruned == full


def test_the_commonest_words_are_left_out_only_below_the_threshold():
    from ibot.services.knowledge import needed_groups

    # weights 1, 1, 8 (total 10), min_score 0.3: the two common words make 0.2 < 0.3
    assert needed_groups([1.0, 1.0, 8.0], 0.3) == [2]
    # three common words make 0.3: a thread with all three would be shown, keep the last
    assert needed_groups([1.0, 1.0, 1.0, 7.0], 0.3) == [2, 3]
    assert needed_groups([1.0, 1.0, 8.0], 0.0) == [0, 1, 2]
    assert needed_groups([5.0], 0.3) == [0]


# ---- stats --------------------------------------------------------------------------------


async def test_stats_per_guild_answer_kind_and_newest_solved(sessionmaker):
    kb = KnowledgeBase(sessionmaker)
    assert (await kb.stats()).threads == 0
    newest = datetime(2025, 3, 2, 18, 30, tzinfo=UTC)
    await kb.upsert(
        [
            dataclasses.replace(WINDOWS, solved_at=datetime(2025, 2, 1, tzinfo=UTC)),
            dataclasses.replace(MODULE, solved_at=newest),
            NPM,
            dataclasses.replace(ELSEWHERE, solved_at=datetime(2025, 4, 1, tzinfo=UTC)),
        ]
    )

    everything = await kb.stats()
    mine = await kb.stats(GUILD)

    assert everything.threads == 4
    assert dict(everything.per_guild) == {GUILD: 3, OTHER: 1}
    assert dict(everything.per_answer_kind) == {"moderator": 2, "accepted": 2}
    assert everything.newest_solved_at == datetime(2025, 4, 1, tzinfo=UTC)
    assert mine.threads == 3 and dict(mine.per_guild) == {GUILD: 3}
    assert mine.newest_solved_at == newest
    assert mine.newest_solved_at.tzinfo is not None


# ---- the normaliser -----------------------------------------------------------------------


def test_the_same_normaliser_reads_texts_and_queries():
    title = lexical.index_terms("Installer Python sous Windows 11")
    query = lexical.query_terms("comment installer python sur windows")

    assert all(any(term in title for term in group) for group in query.groups)
    assert "sous" not in title and "comment" not in query.terms  # stop words


@pytest.mark.parametrize(
    ("token", "kept"),
    [
        ("ModuleNotFoundError", "modulenotfounderror"),
        ("0x0000007B", "0x0000007b"),
        ("venv/bin/python", "venv/bin/python"),
        ("C:\\Python312\\python.exe", "c:/python312/python.exe"),
        ("node_modules", "node_modules"),
        ("c++", "c++"),
        ("c#", "c#"),
        ("python3.12", "python3.12"),
        (".env", ".env"),
    ],
)
def test_code_tokens_are_kept_whole_and_their_parts_indexed(token, kept):
    terms = lexical.index_terms(f"voir {token} ici")

    assert kept in terms
    assert all(" " not in t and '"' not in t and "'" not in t for t in terms)


def test_identifier_parts_are_words_too():
    assert {"modul", "found", "error"} <= set(lexical.index_terms("ModuleNotFoundError"))
    assert {"venv", "bin", "python"} <= set(lexical.index_terms("venv/bin/python"))
    assert lexical.index_terms("0x0000007B") == ["0x0000007b"]  # a hex literal is not cut


def test_accents_are_folded_and_both_languages_stemmed():
    assert lexical.fold("Élève ÇA œuvre") == "eleve ca oeuvre"
    assert set(lexical.index_terms("bibliothèques")) == set(lexical.index_terms("bibliotheque"))
    assert set(lexical.index_terms("problèmes")) == set(lexical.index_terms("problem"))
    assert set(lexical.index_terms("installer")) & set(lexical.index_terms("installed"))
    assert lexical.index_terms("mise-à-jour") == lexical.index_terms("mise à jour")


# ---- the migration ------------------------------------------------------------------------


def _tables(connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def test_the_migration_adds_and_removes_the_index_on_each_engine(db_url):
    await upgrade(db_url)
    engine = create_engine(db_url)
    try:
        async with engine.connect() as connection:
            tables = await connection.run_sync(_tables)
            if engine.dialect.name == "sqlite":
                assert {"knowledge_threads", "knowledge_fts"} <= tables
            else:
                indexes = await connection.execute(
                    text("SELECT indexdef FROM pg_indexes WHERE tablename = 'knowledge_threads'")
                )
                assert any("gin (search_vector)" in row[0] for row in indexes)

        await asyncio.to_thread(command.downgrade, alembic_config(db_url), "0005")

        async with engine.connect() as connection:
            tables = await connection.run_sync(_tables)
        assert not {t for t in tables if t.startswith("knowledge")}
    finally:
        await engine.dispose()
    await upgrade(db_url)  # and back again
    engine = create_engine(db_url)
    try:
        kb = KnowledgeBase(make_sessionmaker(engine))
        assert await kb.upsert([BSOD]) == 1
        assert await first(kb, "0x0000007B") == BSOD.thread_id
    finally:
        await engine.dispose()


def test_tsvector_and_fts5_literals_quote_every_term():
    from ibot.db.knowledge import fts5_match, tsquery_literal, tsvector_literal

    assert fts5_match(["c:/users", "or"]) == '"c:/users" OR "or"'
    assert tsquery_literal(["c:/users", "not"]) == "'c:/users' | 'not'"
    assert tsvector_literal([(["a", "b", "a"], "A"), (["a"], "C")]) == "'a':1A,3A,4C 'b':2A"
    with pytest.raises(ValueError):
        fts5_match(['bad"term'])


async def test_the_term_counts_migration_builds_them_from_the_stored_threads(db_url):
    await upgrade(db_url)
    engine = create_engine(db_url)
    try:
        sessionmaker = make_sessionmaker(engine)
        await KnowledgeBase(sessionmaker).upsert(CORPUS)
        await asyncio.to_thread(command.downgrade, alembic_config(db_url), "0009")
        await upgrade(db_url)

        stored, recount = await _term_counts(sessionmaker)
        assert stored == recount and stored[GUILD, ""] == 8
        assert await first(KnowledgeBase(sessionmaker), "npm ERESOLVE") == NPM.thread_id
    finally:
        await engine.dispose()


async def test_threads_indexed_under_older_rules_are_indexed_again(sessionmaker, monkeypatch):
    """A knowledge base filled before the French-English lexicon (normaliser 1) gets the
    new terms once re-indexed, once: the stored terms then hold the translations."""
    from ibot.services import knowledge

    kb = KnowledgeBase(sessionmaker)
    with monkeypatch.context() as old_rules:
        old_rules.setattr(knowledge, "NORMALISER_VERSION", 1)
        old_rules.setattr(lexical, "lexicon", lambda: {})
        lexical._with_translations.cache_clear()
        await kb.upsert([BSOD, NPM])
    lexical._with_translations.cache_clear()

    async def title_terms() -> set[str]:
        async with sessionmaker() as session:
            found = await session.scalar(
                text("SELECT terms_title FROM knowledge_threads WHERE thread_id = :id"),
                {"id": BSOD.thread_id},
            )
        return set(found.split())

    assert "screen" not in await title_terms()
    assert await kb.reindex() == 2
    assert await kb.reindex() == 0
    assert {"ecran", "screen", "bleu", "blue"} <= await title_terms()
    assert await first(kb, "blue screen at boot") == BSOD.thread_id
    stored, recount = await _term_counts(sessionmaker)
    assert stored == recount
