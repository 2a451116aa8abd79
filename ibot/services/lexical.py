"""Text normalisation for the knowledge base: the same terms on SQLite and PostgreSQL.

**Why in Python, not the engines' own configurations.** SQLite's FTS5 has no French
stemmer and no stop words (its `porter` tokenizer is English only), and PostgreSQL's
`french`/`english` configurations stem one language each, need the right one chosen per
text, and their parser cuts `venv/bin/python`, `mise-à-jour` or `c++` in ways FTS5 does
not. Normalising here, once, with one function used both to index and to query, makes
both engines index *exactly the same terms*: FTS5 stores them space-separated (its
`unicode61` tokenizer is told that our connector characters are part of a token), and
PostgreSQL gets them as a `tsvector` literal, never through `to_tsvector`, so no parser
or dictionary of the server's touches them.

**What a text becomes** (`analyze`), in order:

1. NFKC (full-width letters, ligatures), backslashes read as slashes (Windows paths);
2. tokens: runs of letters and digits joined by ``. / : # + -`` and ``_``, with an
   optional leading dot (``.env``) and trailing ``++`` or ``#`` (``c++``, ``c#``);
3. each token is case-folded and accent-folded (``é`` → ``e``, ``œ`` → ``oe``), so a
   query typed without accents finds a text written with them, and the reverse;
4. a *code token* (``ModuleNotFoundError``, ``0x0000007B``, ``venv/bin/python``,
   ``node_modules``, ``python3.12``, ``utf-8``) is kept whole, unstemmed, and its parts
   are indexed too (``module``, ``found``, ``error``; ``venv``, ``bin``, ``python``), so a
   query with the exact identifier ranks its thread first while the words still match;
   a hexadecimal literal is never cut; a hyphenated word of letters only
   (``mise-à-jour``) is just its words;
5. a plain word: dropped when it is a French or English stop word (``ne``, ``pas``,
   ``comment``, ``the``, ``how``, greetings and thanks) or a single letter; else its
   French *and* English Snowball stems (``installer`` → ``install``/``instal``; the
   French stemmer also sees the word with its accents, whose rules need them:
   ``installées`` → ``install``). Both stemmers run on every word because a forum mixes
   the languages and a short query's language cannot be told; a query word matches a
   text when any of its stems is there (``installed`` and ``installation`` meet on
   ``instal``);
6. a word on a line of the French ↔ English lexicon (``lexicon_fr_en.txt``: the words
   of computer help, ``écran`` = ``screen``, ``rejoindre`` = ``join``) also gets the
   stems of the other words of its line, in both directions and on both sides (text and
   query), so a question in one language finds a thread solved in the other.

A token yields one *group* of alternative terms (the stems of a word; the single term of
a code token or a number). The index stores every term of every group; a query is its
distinct groups, at most `MAX_QUERY_GROUPS` (a 10 000-character query is cut to its first
groups, it does not fail). Terms are bounded in length (`MAX_TERM_CHARS`) and contain only
letters, digits and the connectors above: never a space, a quote or an operator of FTS5's
or tsquery's syntax, so no user text can break a query.

`NORMALISER_VERSION` is part of each stored thread's content hash: a change to these
rules makes the next import re-index every thread instead of keeping stale terms.
"""

from __future__ import annotations

import functools
import itertools
import re
import threading
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from typing import Protocol, cast

NORMALISER_VERSION = 2  # 2: the French ↔ English lexicon

MAX_TERM_CHARS = 64  # longer tokens (base64 blobs, very long paths) keep only their parts
MAX_QUERY_GROUPS = 32  # words and code tokens of a query; the rest is ignored
MAX_QUERY_CHARS = 20_000  # a query is cut here before it is even tokenised
MAX_FIELD_TERMS = 5_000  # terms indexed per field (title, question, answer)

LEXICON_FILE = "lexicon_fr_en.txt"  # beside this module

# The characters that join the parts of a code token; FTS5 is told they are token chars.
CONNECTORS = "./:#+-_"

_TOKEN = re.compile(r"(?<!\w)\.?\w+(?:[./:#+\-]+\w+)*(?:\+\+|#)?")
_SPLIT_CONNECTORS = re.compile(r"[./:#+\-_]+")
_HEX = re.compile(r"0x[0-9a-f]+")
_ABBREVIATION = re.compile(r"[^\W\d_](?:\.[^\W\d_])+")  # e.g, i.e, a.k.a
_HYPHENATED_WORDS = re.compile(r"[^\W\d_]+(?:-[^\W\d_]+)+")  # mise-à-jour, peut-être
_FOLD = str.maketrans({"œ": "oe", "æ": "ae", "ø": "o", "ł": "l", "đ": "d", "ð": "d"})

_ENGLISH = """
    a about above after again against all also am an and any are aren as at be because
    been before being below between both but by can cannot could couldn did didn do does
    doesn doing don down during each either else ever every few for from further had hadn
    has hasn have haven having he her here hers herself him himself his how however if in
    into is isn it its itself just let ll may me might mine more most much must mustn my
    myself neither no nor not now of off often on once only or other our ours ourselves
    out over own per quite rather re same shall shan she should shouldn since so some
    still such than that the their theirs them themselves then there these they this
    those though through thus to too under until up upon us ve very was wasn we were
    weren what whatever when where whether which while who whom whose why will with
    within without won would wouldn yet you your yours yourself yourselves
    hi hello hey thanks thank thx please pls anyone someone anybody somebody help need
"""

_FRENCH = """
    ai aie aient aies ait alors apres as au aucun aucune aupres aura aurai auraient
    aurais aurait auras aurez auriez aurions aurons auront aussi autre autres aux avaient
    avais avait avant avec avez aviez avions avoir avons ayant ayez ayons bah beaucoup
    bien bon ca car ce ceci cela celle celles celui cependant ces cet cette ceux chaque
    chez ci comme comment dans de deja depuis des donc dont du elle elles en encore entre
    es est et etaient etais etait etant etc ete etes etiez etions etre eu eue eues eurent
    eus eusse eut eux faire fais fait faut fois furent fus fut ici il ils jusqu jusque la
    le les leur leurs lors lorsque lui ma mais me meme memes mes moi mon ne ni nos notre
    nous on ont ou par parce pas peu peut peuvent peux plus pour pourquoi puis qu quand
    que quel quelle quelles quels qui quoi sa sans se sera serai seraient serais serait
    seras serez seriez serions serons seront ses si sien sienne siens soi soient sois
    soit sommes son sont sous soyez soyons suis sur ta te tes toi ton tous tout toute
    toutes tres tu un une unes uns vers voici voila vos votre vous
    bonjour bonsoir salut coucou merci svp stp aide aider besoin quelqu quelqun
"""

ENGLISH_STOP_WORDS = frozenset(_ENGLISH.split())
FRENCH_STOP_WORDS = frozenset(_FRENCH.split())  # accent-folded, as words are compared
STOP_WORDS = ENGLISH_STOP_WORDS | FRENCH_STOP_WORDS


class _Stemmer(Protocol):
    def stemWord(self, word: str) -> str: ...  # snowballstemmer's name


_local = threading.local()


def _stemmers() -> tuple[_Stemmer, _Stemmer]:
    """French and English Snowball stemmers, one pair per thread (they keep state)."""
    pair = getattr(_local, "stemmers", None)
    if pair is None:
        import snowballstemmer

        pair = (
            cast(_Stemmer, snowballstemmer.stemmer("french")),
            cast(_Stemmer, snowballstemmer.stemmer("english")),
        )
        _local.stemmers = pair
    return cast(tuple[_Stemmer, _Stemmer], pair)


@functools.lru_cache(maxsize=65_536)
def stems(word: str) -> tuple[str, ...]:
    """The distinct stems of a case-folded word, accent-folded: French on the word as
    written (its rules know ``-ées``), French and English on the accent-folded word (what
    a query typed without accents gives). ``installées`` → ``install``, ``installe``."""
    french, english = _stemmers()
    plain = fold(word)
    found: list[str] = []
    for stem in (fold(french.stemWord(word)), french.stemWord(plain), english.stemWord(plain)):
        if stem and stem not in found:
            found.append(stem)
    return tuple(found) or (plain,)


def fold(text: str) -> str:
    """Case- and accent-folded: ``Élève`` and ``eleve`` are the same; ``ß`` is ``ss``."""
    folded = unicodedata.normalize("NFKD", text.casefold().translate(_FOLD))
    return "".join(c for c in folded if not unicodedata.combining(c))


def _camel_boundary(text: str, i: int) -> bool:
    """True when a camelCase word starts at text[i] (fooBar, HTTPServer)."""
    before, here = text[i - 1], text[i]
    if before.islower() and here.isupper():
        return True
    after = text[i + 1] if i + 1 < len(text) else ""
    return before.isupper() and here.isupper() and after.islower()


def _is_code(raw: str) -> bool:
    if any(c in CONNECTORS for c in raw):
        return True
    if any(c.isdigit() for c in raw) and any(c.isalpha() for c in raw):
        return True
    return any(_camel_boundary(raw, i) for i in range(1, len(raw)))


def _valid(term: str) -> bool:
    return 0 < len(term) <= MAX_TERM_CHARS and all(c.isalnum() or c in CONNECTORS for c in term)


@functools.cache
def lexicon() -> dict[str, tuple[str, ...]]:
    """Stem → the stems of its translations and synonyms (lexicon_fr_en.txt)."""
    text = resources.files("ibot.services").joinpath(LEXICON_FILE).read_text("utf-8")
    related: dict[str, dict[str, None]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        french, sep, english = line.partition("=")
        words = french.split() + english.split()
        if not sep or not french.split() or not english.split():
            raise ValueError(f"{LEXICON_FILE}:{number}: expected 'french words = english words'")
        line_stems = list(dict.fromkeys(s for w in words for s in stems(w.casefold())))
        for stem in line_stems:
            others = related.setdefault(stem, {})
            others.update((s, None) for s in line_stems if s != stem)
    return {stem: tuple(others) for stem, others in related.items()}


@functools.lru_cache(maxsize=65_536)
def _with_translations(group: tuple[str, ...]) -> tuple[str, ...]:
    words = lexicon()
    extra = (s for stem in group for s in words.get(stem, ()))
    return tuple(dict.fromkeys((*group, *extra)))


def _word_group(raw: str) -> tuple[str, ...] | None:
    """A plain word's stems and its translations' (step 6), a number as itself, or None
    (stop word, single letter)."""
    word = fold(raw)
    if not _valid(word):
        return None
    if word.isdigit():
        return (word,)
    if len(word) < 2 or word in STOP_WORDS:
        return None
    return _with_translations(stems(raw.casefold()))


def _parts(piece: str) -> list[str]:
    """The words of one connector-free piece: camelCase humps, and letters apart from
    digits when there is one such boundary (python3, win11; not a hash like a1b2c3)."""
    digit_cuts = [i for i in range(1, len(piece)) if piece[i - 1].isdigit() != piece[i].isdigit()]
    cuts = {i for i in range(1, len(piece)) if _camel_boundary(piece, i)}
    if len(digit_cuts) == 1:
        cuts.update(digit_cuts)
    bounds = [0, *sorted(cuts), len(piece)]
    return [piece[a:b] for a, b in itertools.pairwise(bounds) if a < b]


def _code_groups(raw: str) -> Iterator[tuple[str, ...]]:
    """A code token: whole (unstemmed), its code-like pieces, then the words of its parts."""
    if _ABBREVIATION.fullmatch(raw):
        return
    if _HYPHENATED_WORDS.fullmatch(raw):
        for piece in raw.split("-"):
            if (group := _word_group(piece)) is not None:
                yield group
        return
    whole = fold(raw)
    if _valid(whole):
        yield (whole,)
    if _HEX.fullmatch(whole):
        return  # 0x0000007B is one thing
    pieces = [p for p in _SPLIT_CONNECTORS.split(raw) if p]
    for piece in pieces:
        if len(pieces) > 1 and _is_code(piece) and _valid(fold(piece)):
            yield (fold(piece),)  # python3 in python3.12, ConnectionError in a.b.ConnectionError
        for part in _parts(piece):
            group = _word_group(part)
            if group is not None and group != (whole,):
                yield group


def analyze(text: str) -> Iterator[tuple[str, ...]]:
    """The groups of alternative terms of `text`, in reading order (with repeats)."""
    text = unicodedata.normalize("NFKC", text).replace("\\", "/")
    for match in _TOKEN.finditer(text):
        raw = match.group()
        if _is_code(raw):
            yield from _code_groups(raw)
        elif (group := _word_group(raw)) is not None:
            yield group


def index_terms(text: str, *, limit: int = MAX_FIELD_TERMS) -> list[str]:
    """Every term of `text` in order, repeats included (term frequency), at most `limit`."""
    terms: list[str] = []
    for group in analyze(text):
        terms.extend(group)
        if len(terms) >= limit:
            return terms[:limit]
    return terms


@dataclass(frozen=True, slots=True)
class QueryTerms:
    """A query as its distinct groups; `truncated` when some were left out."""

    groups: tuple[tuple[str, ...], ...]
    truncated: bool = False

    def __bool__(self) -> bool:
        return bool(self.groups)

    @property
    def terms(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(term for group in self.groups for term in group))


def query_terms(text: str, *, limit: int = MAX_QUERY_GROUPS) -> QueryTerms:
    """The distinct groups of a query, in order, at most `limit` (the rest is dropped)."""
    seen: set[frozenset[str]] = set()
    groups: list[tuple[str, ...]] = []
    for group in analyze(text[:MAX_QUERY_CHARS]):
        key = frozenset(group)
        if key in seen:
            continue
        if len(groups) == limit:
            return QueryTerms(tuple(groups), truncated=True)
        seen.add(key)
        groups.append(group)
    return QueryTerms(tuple(groups), truncated=len(text) > MAX_QUERY_CHARS)
