"""`ibot finetune prepare` on the files people really have: Windows' UTF-16, Latin-1 from
an old editor, a spreadsheet's CSV with unquoted commas, a binary file given by mistake.
Each goes through the command as a user runs it and checks what lands in the samples."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

from typer.testing import CliRunner

from ibot.finetune.cli import finetune_app
from ibot.finetune.prepare import read_jsonl

runner = CliRunner()

TRANSCRIPT = "Morty: Où est la clé ?\nRick: Dans le vaisseau, génie.\nMorty: Déjà ?\n"


def prepare(tmp_path: Path, *inputs: Path):
    """Run `ibot finetune prepare` (everything in train) and return (result, samples)."""
    out = tmp_path / "out"
    args = ["prepare", *map(str, inputs), "--out", str(out), "--no-progress"]
    args += ["--character", "Rick", "--val-fraction", "0"]
    result = runner.invoke(finetune_app, args)
    samples = read_jsonl(out / "train.jsonl") if (out / "train.jsonl").exists() else []
    return result, samples


def test_a_utf16_transcript_with_a_bom_is_read(tmp_path: Path) -> None:
    path = tmp_path / "episode.txt"
    path.write_bytes(TRANSCRIPT.replace("\n", "\r\n").encode("utf-16"))  # Notepad's "Unicode"

    result, samples = prepare(tmp_path, path)

    assert result.exit_code == 0, result.output
    [sample] = samples
    assert sample.context == ("Où est la clé ?",)
    assert sample.response == "Dans le vaisseau, génie."


def test_a_latin1_csv_keeps_its_accents(tmp_path: Path) -> None:
    path = tmp_path / "lines.csv"
    path.write_bytes("name,line\nMorty,Où est la clé ?\nRick,Dans le vaisseau\n".encode("latin-1"))

    result, samples = prepare(tmp_path, path)

    assert result.exit_code == 0, result.output
    assert [(s.context, s.response) for s in samples] == [
        (("Où est la clé ?",), "Dans le vaisseau")
    ]


def test_unquoted_commas_in_the_last_column_keep_every_word(tmp_path: Path) -> None:
    path = tmp_path / "rick.csv"
    path.write_text(
        'name,line\nMorty,"Rick, quoted, fine"\nRick,Listen, Morty, I know\nMorty,Ok\n',
        encoding="utf-8",
    )

    result, samples = prepare(tmp_path, path)

    assert result.exit_code == 0, result.output
    assert samples[0].response == "Listen, Morty, I know"
    assert "joined back into the line: 1 (rick.csv:3)" in result.output
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["places"] == {"joined_fields": ["rick.csv:3"]}


def test_unquoted_commas_before_the_last_column_are_skipped_with_their_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "scenes.csv"
    path.write_text(
        "name,line,episode\nMorty,Hi,1\nRick,Hey, you,1\nRick,Bye,1\n", encoding="utf-8"
    )

    result, samples = prepare(tmp_path, path)

    assert result.exit_code == 0, result.output
    assert [s.response for s in samples] == ["Bye"]  # "Hey" is not learned cut in half
    assert "skipped: 0" not in result.output
    assert re.search(r"1\s+extra_columns: .*\(scenes\.csv:3\)", result.output)


def test_a_binary_file_is_one_line_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "lines.txt"
    path.write_bytes(gzip.compress(TRANSCRIPT.encode()))

    result, _ = prepare(tmp_path, path)

    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert line.startswith("error: ") and str(path) in line and "binary" in line
    assert "codec" not in line
