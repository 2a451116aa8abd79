"""Training samples from character lines and solved forum threads (`ibot finetune prepare`).

Output: a directory with ``train.jsonl`` and ``validation.jsonl``, one sample a line::

    {"context": ["previous line", "…", "newest line"], "response": "the line to learn"}

(context oldest first), and ``stats.json``. Training joins the turns DialoGPT-style,
each followed by the end-of-text token, with the loss on the response.

Inputs:

- **CSV** (``--format csv``): one row per line, the speaker in ``--character-column``
  (default ``name``) and the text in ``--line-column`` (default ``line``), the layout of
  the tutorials' Kaggle scripts. Each line spoken by ``--character`` becomes a sample
  whose context is the ``--window`` (default 7) lines before it, whoever said them.
  With ``--conversation-column`` (an episode or scene column), the context never
  reaches back across a change of its value. A row with more fields than the header
  (a line with unquoted commas, as spreadsheets rarely write them) keeps its whole
  text when the line column is the last one: the extra fields are joined back with
  their commas (counted, with their line numbers); otherwise the row is skipped
  (``extra_columns``, with its line number), never silently cut.
- **Transcript** (``--format transcript``): ``Name: line`` text. Rules:

  * a blank line is skipped (reason ``blank``);
  * a line that is only a scene marker or stage direction, ``[…]`` or ``(…)``, is
    skipped (``scene_marker``) and starts a new scene: context never reaches across it,
    nor across files;
  * directions inside a line (``Rick: (burps) Morty``) are removed; a line left empty
    is skipped (``empty_line``);
  * a line without ``Name:`` directly after a spoken line continues it (wrapped
    dialogue) and is appended to it with a space (counted as a continuation, not
    skipped); anywhere else it is skipped (``no_speaker``);
  * a speaker's annotation is dropped: ``Rick (off-screen): …`` is Rick speaking.

- **Forum threads** (``--format threads``): the JSON export written by
  ``ibot finetune export-threads`` (schema in `ibot.finetune.export_threads`). Each
  solved thread is one sample: context ``[title + "\\n" + question]``, response the
  answer's text. Unsolved threads are skipped (``unsolved``); ``--answer-kinds`` keeps
  only some kinds of answer (accepted, moderator, bot); ``--feedback helpful|solved``
  keeps only the answers members marked helpful or solved, read from the bot's
  database (rules and reasons in `ibot.finetune.feedback_filter`; the threads it drops
  are skipped as ``feedback_<reason>``).

For character lines, a line of the target character with fewer than ``--min-context``
(default 1) lines before it is skipped (``no_context``): a reply to nothing teaches the
model to talk out of the blue. The target character is matched case-insensitively.

Every input is decoded the way the bot reads attachments (`ibot.text_decoding`): UTF-8,
UTF-16 with or without a BOM, Latin-1/cp1252; a binary file is refused naming it.

The split is deterministic: the sample indices are shuffled with ``--seed`` and the first
``round(n × --val-fraction)`` (at least one when there are two samples or more) go to
validation; both files keep the input order.
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ibot.finetune.runtime import progress
from ibot.text_decoding import NotText, decode_bytes

if TYPE_CHECKING:
    from ibot.finetune.feedback_filter import FeedbackFilter

TRAIN_FILE = "train.jsonl"
VALIDATION_FILE = "validation.jsonl"
STATS_FILE = "stats.json"

DEFAULT_WINDOW = 7
MAX_PLACES = 20  # "file:line" kept per kind of row worth looking at (stats.json stays small)
_EXTRA_FIELDS = "\x00extra"  # DictReader's key for the fields beyond the header

SKIP_REASONS: dict[str, str] = {
    "blank": "blank line",
    "scene_marker": "scene marker or stage direction on its own line ([…] or (…))",
    "no_speaker": "no 'Name:' and no spoken line just before to continue",
    "empty_line": "nothing left to say (empty, or only stage directions)",
    "no_context": "target character's line with too few lines before it (--min-context)",
    "extra_columns": "CSV row with more fields than the header and the line column not "
    "last: quote its text",
    "unsolved": "thread without an accepted or moderator answer",
    "answer_kind": "answer of a kind not selected (--answer-kinds)",
    "empty_thread": "thread with neither a title nor a question, or an empty answer",
    "feedback_not_marked": "the bot's answer, neither helpful nor solved (--feedback)",
    "feedback_unknown_answer": "the bot's answer, unknown to the bot's database (--feedback)",
    "feedback_no_buttons": "a reply that is not the bot's and not accepted (--feedback)",
}


class InputFormat(StrEnum):
    CSV = "csv"
    TRANSCRIPT = "transcript"
    THREADS = "threads"


class PrepareError(ValueError):
    """The input cannot be read as asked (missing column, bad export…); one clear line."""


@dataclass(frozen=True, slots=True)
class Sample:
    context: tuple[str, ...]
    response: str

    def to_json(self) -> dict[str, Any]:
        return {"context": list(self.context), "response": self.response}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Sample:
        context = data.get("context")
        response = data.get("response")
        if not isinstance(context, list) or not all(isinstance(t, str) for t in context):
            raise ValueError("'context' must be a list of strings")
        if not isinstance(response, str):
            raise ValueError("'response' must be a string")
        return cls(tuple(context), response)


@dataclass
class PrepareStats:
    """What `prepare` read, kept and skipped; printed and saved as stats.json."""

    source: str = ""
    records: int = 0  # lines (transcripts), rows (CSV) or threads read
    target_lines: int = 0  # lines spoken by the target character
    continuations: int = 0  # transcript lines appended to the line before
    joined_fields: int = 0  # CSV rows whose unquoted commas were joined back into the line
    directions_removed: int = 0  # inline stage directions taken out of lines
    samples: int = 0
    train: int = 0
    validation: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    size: dict[str, Any] = field(default_factory=dict)  # tokens, or characters and words
    feedback: list[str] = field(default_factory=list)  # the --feedback marks, if any
    feedback_kept: Counter[str] = field(default_factory=Counter)  # threads kept, by mark
    # "file:line" of the rows to look at, by skip reason or "joined_fields" (first few)
    places: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, reason: str, place: str | None = None) -> None:
        assert reason in SKIP_REASONS, reason
        self.skipped[reason] += 1
        if place is not None:
            self.note(reason, place)

    def note(self, kind: str, place: str) -> None:
        """Remember where a row worth a look is, so the summary can point at it."""
        kept = self.places.setdefault(kind, [])
        if len(kept) < MAX_PLACES:
            kept.append(place)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["skipped"] = dict(sorted(self.skipped.items()))
        data["feedback_kept"] = dict(sorted(self.feedback_kept.items()))
        return data


def read_text(path: Path) -> str:
    """A whole input file as text, whatever its encoding, or one line naming the file."""
    try:
        return decode_bytes(path.read_bytes())
    except NotText as err:
        raise PrepareError(
            f"{path}: {err}; give a CSV, a transcript or a JSON export saved as text"
        ) from None


# ---- character lines -------------------------------------------------------------------

_MARKER = re.compile(r"^\s*(\[[^\]]*\]|\([^)]*\))\s*$")
_DIRECTION = re.compile(r"\s*(\[[^\]]*\]|\([^)]*\))\s*")
_SPEAKER = re.compile(
    r"^\s*(?P<name>[^\W\d_][\w .'’-]{0,39}?)\s*(?:[(\[][^)\]]*[)\]])?\s*:\s*(?P<text>.*)$"
)


def _same_name(a: str, b: str) -> bool:
    return a.strip().casefold() == b.strip().casefold()


def _clean(text: str, stats: PrepareStats) -> str:
    """Remove inline stage directions and squeeze whitespace."""
    cleaned, removed = _DIRECTION.subn(" ", text)
    stats.directions_removed += removed
    return " ".join(cleaned.split())


def windowed_samples(
    conversation: Sequence[tuple[str, str]],
    character: str,
    *,
    window: int,
    min_context: int,
    stats: PrepareStats,
) -> list[Sample]:
    """One sample per line of `character`: the `window` lines before it as context."""
    samples = []
    for index, (speaker, text) in enumerate(conversation):
        if not _same_name(speaker, character):
            continue
        stats.target_lines += 1
        context = tuple(line for _, line in conversation[max(0, index - window) : index])
        if len(context) < min_context:
            stats.skip("no_context")
            continue
        samples.append(Sample(context, text))
    return samples


def parse_transcript(lines: Iterable[str], stats: PrepareStats) -> list[list[tuple[str, str]]]:
    """Split `Name: line` text into scenes of (speaker, text), following the module's rules."""
    scenes: list[list[tuple[str, str]]] = [[]]
    can_continue = False  # the previous line was a spoken line
    for raw in lines:
        stats.records += 1
        line = raw.strip()
        if not line:
            stats.skip("blank")
            can_continue = False
            continue
        if _MARKER.match(line):
            stats.skip("scene_marker")
            if scenes[-1]:
                scenes.append([])
            can_continue = False
            continue
        match = _SPEAKER.match(line)
        if match is None:
            text = _clean(line, stats)
            if can_continue and text:
                speaker, previous = scenes[-1][-1]
                scenes[-1][-1] = (speaker, f"{previous} {text}")
                stats.continuations += 1
            elif can_continue:
                stats.skip("empty_line")
            else:
                stats.skip("no_speaker")
            continue
        text = _clean(match["text"], stats)
        if not text:
            stats.skip("empty_line")
            can_continue = False
            continue
        scenes[-1].append((match["name"].strip(), text))
        can_continue = True
    return [scene for scene in scenes if scene]


def samples_from_transcript(
    path: Path,
    *,
    character: str,
    window: int = DEFAULT_WINDOW,
    min_context: int = 1,
    stats: PrepareStats,
    show_progress: bool = True,
) -> list[Sample]:
    lines = read_text(path).splitlines()
    scenes = parse_transcript(
        progress(lines, desc=f"reading {path.name}", enabled=show_progress, unit="line"), stats
    )
    samples = []
    for scene in scenes:
        samples += windowed_samples(
            scene, character, window=window, min_context=min_context, stats=stats
        )
    return samples


def samples_from_csv(
    path: Path,
    *,
    character: str,
    window: int = DEFAULT_WINDOW,
    min_context: int = 1,
    character_column: str = "name",
    line_column: str = "line",
    conversation_column: str | None = None,
    stats: PrepareStats,
    show_progress: bool = True,
) -> list[Sample]:
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""), restkey=_EXTRA_FIELDS)
    columns = list(reader.fieldnames or [])
    wanted = [
        character_column,
        line_column,
        *([conversation_column] if conversation_column else []),
    ]
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise PrepareError(
            f"{path}: no column {', '.join(map(repr, missing))} "
            f"(columns: {', '.join(columns) or 'none'})"
        )
    # Fields beyond the header can only be the rest of the line when it is the last column.
    line_is_last = columns[-1] == line_column
    rows = [(reader.line_num, row) for row in reader]
    conversations: list[list[tuple[str, str]]] = [[]]
    current: str | None = None
    for number, row in progress(
        rows, desc=f"reading {path.name}", enabled=show_progress, unit="row"
    ):
        stats.records += 1
        extra = row.pop(_EXTRA_FIELDS, None)
        if isinstance(extra, list) and extra:
            place = f"{path.name}:{number}"
            if not line_is_last:
                stats.skip("extra_columns", place)
                continue
            row[line_column] = ",".join([row.get(line_column) or "", *extra])
            stats.joined_fields += 1
            stats.note("joined_fields", place)
        if conversation_column:
            key = (row.get(conversation_column) or "").strip()
            if key != current and conversations[-1]:
                conversations.append([])
            current = key
        text = _clean(row.get(line_column) or "", stats)
        if not text:
            stats.skip("empty_line")
            continue
        conversations[-1].append(((row.get(character_column) or "").strip(), text))
    samples = []
    for conversation in conversations:
        samples += windowed_samples(
            conversation, character, window=window, min_context=min_context, stats=stats
        )
    return samples


# ---- forum threads ---------------------------------------------------------------------


def samples_from_threads(
    path: Path,
    *,
    answer_kinds: Iterable[str] = ("accepted", "moderator", "bot"),
    feedback: FeedbackFilter | None = None,
    stats: PrepareStats,
    show_progress: bool = True,
) -> list[Sample]:
    from ibot.finetune.export_threads import EXPORT_FORMAT, EXPORT_VERSION
    from ibot.finetune.feedback_filter import answer_ids, judge

    try:
        export = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise PrepareError(f"{path}: not JSON ({err})") from None
    if not isinstance(export, dict) or export.get("format") != EXPORT_FORMAT:
        raise PrepareError(f"{path}: not an `ibot finetune export-threads` file")
    if export.get("version") != EXPORT_VERSION:
        raise PrepareError(f"{path}: export version {export.get('version')!r} is not supported")
    kinds = set(answer_kinds)
    samples = []
    threads = export.get("threads", [])
    marks = feedback.lookup(answer_ids(threads)) if feedback is not None else {}
    for thread in progress(threads, desc=f"reading {path.name}", enabled=show_progress):
        stats.records += 1
        answer = thread.get("answer")
        if not answer:
            stats.skip("unsolved")
            continue
        if answer.get("kind") not in kinds:
            stats.skip("answer_kind")
            continue
        if feedback is not None:
            keep, reason = judge(thread, marks, feedback.marks)
            if not keep:
                stats.skip(f"feedback_{reason}")
                continue
            stats.feedback_kept[reason] += 1
        question = "\n".join(
            part
            for part in (
                (thread.get("title") or "").strip(),
                (thread.get("question") or "").strip(),
            )
            if part
        )
        response = (answer.get("text") or "").strip()
        if not question or not response:
            stats.skip("empty_thread")
            continue
        samples.append(Sample((question,), response))
    return samples


# ---- output ----------------------------------------------------------------------------


def split_samples(
    samples: Sequence[Sample], *, val_fraction: float, seed: int
) -> tuple[list[Sample], list[Sample]]:
    """Deterministic split: the same samples, fraction and seed give the same files."""
    if not 0 <= val_fraction < 1:
        raise ValueError("val_fraction must be in [0, 1)")
    n = len(samples)
    n_val = round(n * val_fraction)
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    chosen = set(order[:n_val])
    train = [s for i, s in enumerate(samples) if i not in chosen]
    validation = [s for i, s in enumerate(samples) if i in chosen]
    return train, validation


def write_jsonl(path: Path, samples: Iterable[Sample]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for sample in samples:
            handle.write(json.dumps(sample.to_json(), ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[Sample]:
    """Samples from a JSONL file; a bad line is an error naming the file and line."""
    samples = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                samples.append(Sample.from_json(json.loads(line)))
            except (ValueError, AttributeError) as err:
                raise PrepareError(f"{path}:{number}: {err}") from None
    return samples


def measure(samples: Sequence[Sample], tokenizer_dir: Path | None = None) -> dict[str, Any]:
    """Size of the samples: tokens in the DialoGPT format with a tokenizer, else text."""
    if tokenizer_dir is None:
        texts = [t for s in samples for t in (*s.context, s.response)]
        return {
            "characters": sum(len(t) for t in texts),
            "words": sum(len(t.split()) for t in texts),
            "response_words": sum(len(s.response.split()) for s in samples),
        }
    from transformers import AutoConfig, AutoTokenizer

    from ibot.finetune.dialogpt import encode_samples, model_max_length

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    encoded = encode_samples(
        tokenizer, [(s.context, s.response) for s in samples], max_length=10**9, loss_on="all"
    )
    lengths = [len(e.input_ids) for e in encoded]
    size: dict[str, Any] = {
        "tokens": sum(lengths),
        "mean_tokens": round(sum(lengths) / len(lengths), 1) if lengths else 0,
        "max_tokens": max(lengths, default=0),
    }
    if (tokenizer_dir / "config.json").is_file():
        limit = model_max_length(AutoConfig.from_pretrained(tokenizer_dir, local_files_only=True))
        size["positions"] = limit
        size["longer_than_positions"] = sum(1 for n in lengths if n > limit)
    return size


def guess_format(path: Path) -> InputFormat:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return InputFormat.CSV
    if suffix == ".json":
        return InputFormat.THREADS
    return InputFormat.TRANSCRIPT


def collect_samples(
    inputs: Sequence[Path],
    *,
    input_format: InputFormat | None = None,
    character: str | None = None,
    window: int = DEFAULT_WINDOW,
    min_context: int = 1,
    character_column: str = "name",
    line_column: str = "line",
    conversation_column: str | None = None,
    answer_kinds: Iterable[str] = ("accepted", "moderator", "bot"),
    feedback: FeedbackFilter | None = None,
    stats: PrepareStats | None = None,
    show_progress: bool = True,
) -> tuple[list[Sample], PrepareStats]:
    """Read every input (each file is its own conversation) into samples; `feedback`
    filters the forum threads (and is refused when no input is an export)."""
    stats = stats or PrepareStats()
    if window < 1:
        raise PrepareError("the window must be at least 1 line")
    if feedback is not None:
        if not any((input_format or guess_format(path)) is InputFormat.THREADS for path in inputs):
            raise PrepareError("--feedback filters forum threads: give an export-threads JSON")
        stats.feedback = sorted(feedback.marks)
    samples: list[Sample] = []
    formats = set()
    for path in inputs:
        if not path.is_file():
            raise PrepareError(f"no such file: {path}")
        kind = input_format or guess_format(path)
        formats.add(kind.value)
        if kind is InputFormat.THREADS:
            samples += samples_from_threads(
                path,
                answer_kinds=answer_kinds,
                feedback=feedback,
                stats=stats,
                show_progress=show_progress,
            )
            continue
        if not character:
            raise PrepareError(f"{path}: --character is required for {kind.value} input")
        if kind is InputFormat.CSV:
            samples += samples_from_csv(
                path,
                character=character,
                window=window,
                min_context=min_context,
                character_column=character_column,
                line_column=line_column,
                conversation_column=conversation_column,
                stats=stats,
                show_progress=show_progress,
            )
        else:
            samples += samples_from_transcript(
                path,
                character=character,
                window=window,
                min_context=min_context,
                stats=stats,
                show_progress=show_progress,
            )
    stats.source = "+".join(sorted(formats))
    stats.samples = len(samples)
    return samples, stats


def prepare(
    inputs: Sequence[Path],
    out_dir: Path,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    tokenizer_dir: Path | None = None,
    show_progress: bool = True,
    **options: Any,
) -> PrepareStats:
    """Read the inputs, split, write train/validation JSONL and stats.json; return stats.

    `options` are those of `collect_samples` (format, character, window…).
    """
    samples, stats = collect_samples(inputs, show_progress=show_progress, **options)
    train, validation = split_samples(samples, val_fraction=val_fraction, seed=seed)
    stats.train, stats.validation = len(train), len(validation)
    stats.size = measure(samples, tokenizer_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(out_dir / TRAIN_FILE, train)
    write_jsonl(out_dir / VALIDATION_FILE, validation)
    (out_dir / STATS_FILE).write_text(
        json.dumps(stats.to_json(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return stats


def format_stats(stats: PrepareStats) -> str:
    """The human summary `prepare` prints."""
    lines = [
        f"samples: {stats.samples} (train {stats.train}, validation {stats.validation}) "
        f"from {stats.records} {stats.source or 'input'} records",
    ]
    if stats.target_lines:
        lines.append(f"target character's lines: {stats.target_lines}")
    if stats.continuations:
        lines.append(f"continuation lines appended to the line before: {stats.continuations}")
    if stats.joined_fields:
        lines.append(
            f"CSV rows with unquoted commas, joined back into the line: {stats.joined_fields}"
            f" ({_places(stats, 'joined_fields')})"
        )
    if stats.directions_removed:
        lines.append(f"inline stage directions removed: {stats.directions_removed}")
    size = stats.size
    if "tokens" in size:
        text = (
            f"tokens: {size['tokens']} (mean {size['mean_tokens']}, max {size['max_tokens']} "
            "per sample)"
        )
        if "positions" in size:
            text += f"; {size['longer_than_positions']} longer than {size['positions']} positions"
        lines.append(text)
    elif size:
        lines.append(f"text: {size['characters']} characters, {size['words']} words")
    if stats.feedback:
        kept = sum(stats.feedback_kept.values())
        dropped = sum(n for reason, n in stats.skipped.items() if reason.startswith("feedback_"))
        by_mark = ", ".join(f"{n} {mark}" for mark, n in sorted(stats.feedback_kept.items()))
        lines.append(
            f"feedback filter ({','.join(stats.feedback)}): kept {kept} thread(s)"
            + (f" ({by_mark})" if by_mark else "")
            + f", dropped {dropped} (reasons below, feedback_*)"
        )
    total = sum(stats.skipped.values())
    lines.append(f"skipped: {total}")
    for reason, count in sorted(stats.skipped.items(), key=lambda item: (-item[1], item[0])):
        where = f" ({_places(stats, reason)})" if reason in stats.places else ""
        lines.append(f"  {count:>6}  {reason}: {SKIP_REASONS[reason]}{where}")
    return "\n".join(lines)


def _places(stats: PrepareStats, kind: str, shown: int = 5) -> str:
    """`rick.csv:3, rick.csv:9, …`: where to look, without flooding the terminal."""
    places = stats.places.get(kind, [])
    text = ", ".join(places[:shown])
    return f"{text}, …" if len(places) > shown else text
