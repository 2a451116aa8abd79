"""The labelled retrieval set (benchmarks/data) is consistent and up to date.

Fast: no database. The benchmark itself is benchmarks/retrieval.py.
"""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


builder = _load("build_retrieval_set", REPO / "benchmarks" / "data" / "build_retrieval_set.py")
retrieval = _load("retrieval_benchmark", REPO / "benchmarks" / "retrieval.py")


@pytest.fixture(scope="module")
def labelled():  # type: ignore[no-untyped-def]
    return retrieval.load_set()


def test_the_jsonl_files_are_what_the_sources_build() -> None:
    threads, queries = builder.build()
    assert builder.THREADS_OUT.read_text(encoding="utf-8") == builder.to_jsonl(threads)
    assert builder.QUERIES_OUT.read_text(encoding="utf-8") == builder.to_jsonl(queries)


def test_sizes_languages_and_guilds(labelled) -> None:  # type: ignore[no-untyped-def]
    assert len(labelled.threads) >= 300
    langs = Counter(labelled.langs.values())
    assert 0.55 <= langs["fr"] / len(labelled.threads) <= 0.65
    assert len(labelled.paraphrases) >= 150
    assert len(labelled.no_match) >= 50
    guilds = Counter(t.guild_id for t in labelled.threads)
    assert 2 <= len(guilds) <= 3
    assert guilds.most_common(1)[0][1] > len(labelled.threads) / 2  # mostly one guild
    assert {t.answer_kind for t in labelled.threads} == {"moderator", "member", "bot"}


def test_labels_name_existing_threads_of_the_query_guild(labelled) -> None:  # type: ignore[no-untyped-def]
    by_id = {t.thread_id: t for t in labelled.threads}
    assert len(by_id) == len(labelled.threads)
    for query in labelled.paraphrases:
        assert query.target in by_id, query
        assert by_id[query.target].guild_id == query.guild_id, query
    assert len({q.query_id for q in labelled.queries}) == len(labelled.queries)


def test_no_two_threads_are_duplicates(labelled) -> None:  # type: ignore[no-untyped-def]
    for field in ("title", "question", "answer"):
        texts = [" ".join(sorted(builder.words(getattr(t, field)))) for t in labelled.threads]
        assert len(set(texts)) == len(texts), field


def test_the_builder_rejects_a_label_of_no_thread(tmp_path: Path) -> None:
    threads = {"a.b": builder.SourceThread("a.b", "en", "member", ("x",), "d", "T", "Q", "A")}
    query = builder.SourceQuery("a.c", "en", ("para",), "some text", line=1)
    with pytest.raises(builder.SetError, match="not a thread"):
        builder.validate_queries([query], threads)


def test_word_overlap_baseline() -> None:
    thread = retrieval.SolvedThread(
        guild_id=1,
        forum_id=None,
        thread_id=7,
        title="No module named cv2",
        question="import cv2 fails",
        answer="pip install opencv-python",
        answer_kind="member",
    )
    other = retrieval.SolvedThread(1, None, 8, "git push rejected", "help", "pull first", "bot")
    overlap = retrieval.WordOverlap([thread, other])
    assert overlap.ranked("No module named 'cv2'", guild_id=1, k=3) == [(7, 4)]
    assert overlap.ranked("nothing in common", guild_id=1, k=3) == []
    assert overlap.ranked("cv2", guild_id=2, k=3) == []  # another guild's threads


def test_quality_metrics() -> None:
    q = retrieval.Query
    hit = q("q1", "a", "en", ("para",), False, 1, 10)
    second = q("q2", "b", "en", ("para",), False, 1, 20)
    missed = q("q3", "c", "en", ("para",), False, 1, 30)
    none = q("q4", "d", "en", ("para",), False, 1, None)
    top = {"q1": [10, 5], "q2": [5, 20], "q3": [], "q4": [99]}
    figures = retrieval.quality([hit, second, missed], [none], top)
    assert figures["recall_at_1"] == round(1 / 3, 4)
    assert figures["recall_at_3"] == round(2 / 3, 4)
    assert figures["mrr_at_10"] == round((1 + 0.5) / 3, 4)
    assert figures["false_match_rate"] == 1.0
