"""Build (or check) the labelled retrieval set from its hand-written sources.

    python benchmarks/data/build_retrieval_set.py           # writes the two JSONL files
    python benchmarks/data/build_retrieval_set.py --check   # fails if they are stale

The threads and queries are written by hand in `retrieval_source/*.txt` (format in
README.md). This script validates them (every label names an existing thread, no two
threads are duplicates or near-duplicates, sentence counts, no query copies its thread's
title) and gives them what a real forum would: Discord-style snowflake ids derived from a
creation date, a guild (three guilds, most threads in the first), a forum, and a solve
date, all drawn from a fixed seed, so the output is byte-for-byte reproducible.

Outputs, next to this file: retrieval_threads.jsonl and retrieval_queries.jsonl.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "retrieval_source"
THREADS_OUT = HERE / "retrieval_threads.jsonl"
QUERIES_OUT = HERE / "retrieval_queries.jsonl"

SEED = 10  # issue 10
DISCORD_EPOCH_MS = 1_420_070_400_000
# Three guilds: a big French-speaking help server, a smaller one, a tiny one.
GUILDS = (900_000_000_000_000_001, 900_000_000_000_000_002, 900_000_000_000_000_003)
GUILD_WEIGHTS = (0.80, 0.14, 0.06)
FORUMS = {g: g + 10_000 for g in GUILDS}  # one help forum per guild
FIRST_DAY = datetime(2023, 1, 1, tzinfo=UTC)
LAST_DAY = datetime(2025, 6, 30, tzinfo=UTC)

KINDS = {"moderator", "member", "bot"}
LANGS = {"fr", "en"}
STYLES = {"para", "typo", "token", "short", "long", "vague"}
MIN_SENTENCES, MAX_SENTENCES = 2, 6
NEAR_DUPLICATE_JACCARD = 0.5  # on the word sets of question + answer


@dataclass
class SourceThread:
    slug: str
    lang: str
    kind: str
    tags: tuple[str, ...]
    domain: str
    title: str = ""
    question: str = ""
    answer: str = ""


@dataclass
class SourceQuery:
    target: str | None  # a thread slug, or None for "no true match"
    lang: str
    styles: tuple[str, ...]
    text: str
    line: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class SetError(ValueError):
    """The sources break one of the set's rules."""


def parse_threads(path: Path) -> list[SourceThread]:
    domain = path.stem.removeprefix("threads_")
    threads: list[SourceThread] = []
    current: SourceThread | None = None
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        where = f"{path.name}:{number}"
        if not line or line.startswith("#"):
            continue
        if line.startswith("@"):
            parts = line[1:].split()
            if len(parts) != 4:
                raise SetError(f"{where}: header must be '@slug lang kind tags': {line!r}")
            slug, lang, kind, tags = parts
            if lang not in LANGS or kind not in KINDS:
                raise SetError(f"{where}: bad lang or kind in {line!r}")
            current = SourceThread(slug, lang, kind, tuple(tags.split(",")), domain)
            threads.append(current)
            continue
        key, _, value = line.partition(" ")
        if current is None or key not in ("T", "Q", "A"):
            raise SetError(f"{where}: expected a T/Q/A line after a header: {line!r}")
        attribute = {"T": "title", "Q": "question", "A": "answer"}[key]
        if getattr(current, attribute):
            raise SetError(f"{where}: second {key} line for {current.slug}")
        setattr(current, attribute, value.strip())
    for thread in threads:
        if not (thread.title and thread.question and thread.answer):
            raise SetError(f"{path.name}: {thread.slug} lacks a title, question or answer")
    return threads


def parse_queries(path: Path) -> list[SourceQuery]:
    queries = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = [part.strip() for part in line.split(" | ", 3)]
        if len(parts) != 4:
            raise SetError(f"{path.name}:{number}: expected 'target | lang | styles | text'")
        target, lang, styles, text = parts
        style_set = tuple(s.strip() for s in styles.split(","))
        if lang not in LANGS or not set(style_set) <= STYLES or not text:
            raise SetError(f"{path.name}:{number}: bad lang, styles or empty text: {line!r}")
        queries.append(
            SourceQuery(None if target == "none" else target, lang, style_set, text, number)
        )
    return queries


def fold(text: str) -> str:
    """Lowercase without accents: for the duplicate and copy checks only."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def words(text: str) -> set[str]:
    return set(re.findall(r"\w+", fold(text)))


_CODE = re.compile(r"`[^`]*`")
_SENTENCE_END = re.compile(r"[.!?…]+[\"»”)]*(?=\s+\S|$)")


def sentence_count(text: str) -> int:
    """Sentences in prose, not counting dots inside `code` spans or file names."""
    # A code span that ends a sentence keeps its final punctuation: `... not found.` Next.
    prose = _CODE.sub(lambda m: "CODE." if m.group()[-2] in ".!?" else "CODE", text)
    prose = re.sub(r"\b(e\.g|i\.e|etc|vs|ex|cf)\.", r"\1", prose, flags=re.IGNORECASE)
    prose = re.sub(r"(\w)\.(\w)", r"\1\2", prose)  # file.txt, 3.12, v14.x
    return len(_SENTENCE_END.findall(prose.strip()))


def validate_threads(threads: list[SourceThread]) -> None:
    slugs = Counter(t.slug for t in threads)
    repeated = [slug for slug, n in slugs.items() if n > 1]
    if repeated:
        raise SetError(f"duplicate slugs: {repeated}")
    for attribute in ("title", "question", "answer"):
        seen: dict[str, str] = {}
        for thread in threads:
            key = " ".join(sorted(words(getattr(thread, attribute))))
            if key in seen:
                raise SetError(f"same {attribute} in {seen[key]} and {thread.slug}")
            seen[key] = thread.slug
    for thread in threads:
        for attribute in ("question", "answer"):
            n = sentence_count(getattr(thread, attribute))
            if not MIN_SENTENCES <= n <= MAX_SENTENCES:
                raise SetError(f"{thread.slug}: {attribute} has {n} sentences")
    bags = [(t.slug, words(t.question + " " + t.answer)) for t in threads]
    for i, (slug_a, a) in enumerate(bags):
        for slug_b, b in bags[i + 1 :]:
            jaccard = len(a & b) / len(a | b)
            if jaccard > NEAR_DUPLICATE_JACCARD:
                raise SetError(f"near-duplicates {slug_a} / {slug_b} (jaccard {jaccard:.2f})")


def validate_queries(queries: list[SourceQuery], threads: dict[str, SourceThread]) -> None:
    problems: list[str] = []
    texts: dict[str, int] = {}
    for query in queries:
        where = f"queries.txt:{query.line}"
        if query.target is not None and query.target not in threads:
            problems.append(f"{where}: label {query.target!r} is not a thread")
            continue
        key = fold(query.text)
        if key in texts:
            problems.append(f"{where}: same text as line {texts[key]}")
        texts[key] = query.line
        n_words = len(query.text.split())
        if "short" in query.styles and not 2 <= n_words <= 5:
            problems.append(f"{where}: 'short' query has {n_words} words")
        if "long" in query.styles and n_words < 30:
            problems.append(f"{where}: 'long' query has only {n_words} words")
        if query.target is None:
            continue
        title = fold(threads[query.target].title).strip(" ?!.")
        if fold(query.text).strip(" ?!.") == title:
            problems.append(f"{where}: copies the title of {query.target} verbatim")
    if problems:
        raise SetError("\n  ".join(["the queries break the rules:", *problems]))


def snowflake(moment: datetime, sequence: int) -> int:
    ms = int(moment.timestamp() * 1000) - DISCORD_EPOCH_MS
    return (ms << 22) | (1 << 17) | (sequence & 0xFFF)


def build() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    threads: list[SourceThread] = []
    for path in sorted(SOURCE.glob("threads_*.txt")):
        threads.extend(parse_threads(path))
    validate_threads(threads)
    by_slug = {t.slug: t for t in threads}
    queries = parse_queries(SOURCE / "queries.txt")
    validate_queries(queries, by_slug)

    rng = random.Random(SEED)
    span_s = int((LAST_DAY - FIRST_DAY).total_seconds())
    dated = sorted(
        ((FIRST_DAY + timedelta(seconds=rng.randrange(span_s)), t) for t in threads),
        key=lambda pair: (pair[0], pair[1].slug),
    )
    thread_rows: list[dict[str, Any]] = []
    ids: dict[str, int] = {}
    guild_of: dict[str, int] = {}
    for sequence, (created, thread) in enumerate(dated):
        guild = rng.choices(GUILDS, GUILD_WEIGHTS)[0]
        solved = created + timedelta(minutes=rng.randrange(5, 3 * 24 * 60))
        thread_id = snowflake(created, sequence)
        ids[thread.slug] = thread_id
        guild_of[thread.slug] = guild
        thread_rows.append(
            {
                "thread_id": thread_id,
                "guild_id": guild,
                "forum_id": FORUMS[guild],
                "title": thread.title,
                "question": thread.question,
                "answer": thread.answer,
                "answer_kind": thread.kind,
                "tags": list(thread.tags),
                "lang": thread.lang,
                "domain": thread.domain,
                "slug": thread.slug,
                "created_at": created.isoformat(),
                "solved_at": solved.isoformat(),
            }
        )
    if len(set(ids.values())) != len(ids):
        raise SetError("thread ids collide")

    query_rows: list[dict[str, Any]] = []
    for number, query in enumerate(queries, 1):
        target = by_slug.get(query.target) if query.target else None
        if target is not None:
            guild = guild_of[target.slug]
        else:
            guild = rng.choices(GUILDS, GUILD_WEIGHTS)[0]
        query_rows.append(
            {
                "query_id": f"q{number:03d}",
                "text": query.text,
                "lang": query.lang,
                "styles": list(query.styles),
                "cross_language": target is not None
                and "token" not in query.styles
                and query.lang != target.lang,
                "guild_id": guild,
                "target": ids[target.slug] if target else None,
                "target_slug": target.slug if target else None,
            }
        )
    for row in query_rows:  # the assertion the issue asks for, on the final output
        assert row["target"] is None or row["target"] in set(ids.values()), row
    return thread_rows, query_rows


def to_jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def summary(threads: list[dict[str, Any]], queries: list[dict[str, Any]]) -> str:
    langs = Counter(t["lang"] for t in threads)
    guilds = Counter(t["guild_id"] for t in threads)
    kinds = Counter(t["answer_kind"] for t in threads)
    labelled = [q for q in queries if q["target"] is not None]
    styles = Counter(s for q in labelled for s in q["styles"])
    return "\n".join(
        [
            f"threads: {len(threads)} (fr {langs['fr']}, en {langs['en']};"
            f" guilds {[guilds[g] for g in GUILDS]}; kinds {dict(sorted(kinds.items()))})",
            f"domains: {dict(sorted(Counter(t['domain'] for t in threads).items()))}",
            f"queries: {len(queries)}: {len(labelled)} paraphrases of one thread"
            f" ({sum(q['cross_language'] for q in labelled)} in the other language;"
            f" styles {dict(sorted(styles.items()))};"
            f" {len({q['target'] for q in labelled})} distinct threads targeted),"
            f" {len(queries) - len(labelled)} with no true match",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if the outputs are stale")
    args = parser.parse_args(argv)
    try:
        threads, queries = build()
    except SetError as exc:
        print(f"invalid retrieval set: {exc}", file=sys.stderr)
        return 1
    outputs = {THREADS_OUT: to_jsonl(threads), QUERIES_OUT: to_jsonl(queries)}
    if args.check:
        stale = [
            p.name
            for p, text in outputs.items()
            if not p.exists() or p.read_text(encoding="utf-8") != text
        ]
        if stale:
            print(f"stale: {', '.join(stale)}: run {Path(__file__).name}", file=sys.stderr)
            return 1
    else:
        for path, text in outputs.items():
            path.write_text(text, encoding="utf-8")
    print(summary(threads, queries))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
