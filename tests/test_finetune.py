"""The fine-tuning pipeline: prepare, export-threads, train, chat.

Data tests are pure Python. Training, round trips and chat use a tiny GPT-2 built from
scratch (`build_tiny_model`: no model can be downloaded here) through the real loading,
training and generation code. export-threads talks to the fake Discord with a real
nextcord client.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ibot.finetune.chat import chat_loop
from ibot.finetune.cli import finetune_app
from ibot.finetune.dialogpt import IGNORE_INDEX, build_example
from ibot.finetune.export_threads import (
    AnswerKind,
    MessageRecord,
    ThreadRecord,
    build_export,
    choose_answer,
    write_export,
)
from ibot.finetune.prepare import (
    PrepareError,
    PrepareStats,
    Sample,
    collect_samples,
    read_jsonl,
    split_samples,
)

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def samples_of(path: Path, **options: Any) -> tuple[list[Sample], PrepareStats]:
    return collect_samples([path], show_progress=False, **options)


def s(*turns: str) -> Sample:
    """A sample: context turns then the response."""
    return Sample(tuple(turns[:-1]), turns[-1])


# ---- prepare: transcripts ------------------------------------------------------------------

TRANSCRIPT = """\
[Rick's garage]
Morty: Rick, what are you doing?
Rick: (burps) Building a portal gun, Morty.
Morty: Again?
Summer: Mom says dinner is ready.
Rick: Tell her I'm busy,
with science.

Rick: Come on, Morty.

just some text nobody says
Rick:   [sighs]
(They leave through the portal)
Rick: Wubba lubba dub dub!
Jerry: Where is everyone?
RICK (off-screen): Gone.
"""


def test_transcript_gives_exactly_the_expected_samples(tmp_path: Path) -> None:
    path = tmp_path / "episode.txt"
    path.write_text(TRANSCRIPT, encoding="utf-8")

    samples, stats = samples_of(path, character="Rick", window=2)

    assert samples == [
        s("Rick, what are you doing?", "Building a portal gun, Morty."),
        s("Again?", "Mom says dinner is ready.", "Tell her I'm busy, with science."),
        s("Mom says dinner is ready.", "Tell her I'm busy, with science.", "Come on, Morty."),
        # "(They leave…)" starts a new scene: "Wubba…" has nothing before it to answer.
        s("Wubba lubba dub dub!", "Where is everyone?", "Gone."),
    ]
    assert stats.target_lines == 5
    assert stats.continuations == 1  # "with science." continues Rick's line
    assert dict(stats.skipped) == {
        "scene_marker": 2,
        "blank": 2,
        "no_speaker": 1,  # "just some text…" after a blank line: nothing to continue
        "empty_line": 1,  # "Rick: [sighs]" says nothing
        "no_context": 1,  # "Wubba lubba dub dub!" opens its scene
    }


def test_window_limits_the_context_and_files_are_separate_conversations(tmp_path: Path) -> None:
    first, second = tmp_path / "1.txt", tmp_path / "2.txt"
    first.write_text("A: one\nB: two\nA: three\nB: four\n", encoding="utf-8")
    second.write_text("B: five\nA: six\n", encoding="utf-8")

    samples, stats = collect_samples([first, second], character="b", window=2, show_progress=False)

    # B's "two" gets A's "one"; "four" gets the 2 lines before it; "five" opens file 2.
    assert samples == [s("one", "two"), s("two", "three", "four")]
    assert stats.skipped["no_context"] == 1  # "B: five" opens the second file


# ---- prepare: CSV --------------------------------------------------------------------------


def test_csv_with_configured_columns_and_episode_boundaries(tmp_path: Path) -> None:
    path = tmp_path / "lines.csv"
    path.write_text(
        "episode,speaker,text\n"
        "1,Morty,Hi Rick\n"
        "1,Rick,Hey Morty\n"
        "1,Morty,\n"
        "1,Morty,What now?\n"
        "1,rick,Adventure\n"
        "2,Rick,New episode\n"
        "2,Summer,Ugh\n"
        "2,Rick,Yes Summer\n",
        encoding="utf-8",
    )

    samples, stats = samples_of(
        path,
        character="Rick",
        window=7,
        character_column="speaker",
        line_column="text",
        conversation_column="episode",
    )

    assert samples == [
        s("Hi Rick", "Hey Morty"),
        s("Hi Rick", "Hey Morty", "What now?", "Adventure"),
        s("New episode", "Ugh", "Yes Summer"),
    ]
    assert dict(stats.skipped) == {"empty_line": 1, "no_context": 1}
    assert stats.records == 8


def test_csv_default_columns_are_the_tutorials(tmp_path: Path) -> None:
    path = tmp_path / "rick.csv"
    path.write_text("name,line\nMorty,Hi\nRick,Hey\n", encoding="utf-8")

    samples, _ = samples_of(path, character="Rick")

    assert samples == [s("Hi", "Hey")]


def test_csv_missing_column_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "rick.csv"
    path.write_text("who,line\nRick,Hey\n", encoding="utf-8")

    result = runner.invoke(
        finetune_app, ["prepare", str(path), "--out", str(tmp_path / "o"), "--character", "Rick"]
    )

    assert result.exit_code == 2
    assert "no column 'name'" in result.output and "columns: who, line" in result.output
    assert not (tmp_path / "o").exists()


# ---- prepare: forum threads, split, CLI ----------------------------------------------------


def message(mid: int, author: int, text: str, **flags: Any) -> MessageRecord:
    return MessageRecord(id=mid, author_id=author, author_name=f"user{author}", text=text, **flags)


def thread(tid: int, author: int, title: str, *messages: MessageRecord) -> ThreadRecord:
    return ThreadRecord(
        id=tid,
        guild_id=1,
        forum_id=2,
        forum_name="aide",
        title=title,
        author_id=author,
        messages=messages,
    )


ALICE, BOB, MODO, CAROL, BOT, OTHER_BOT = 10, 11, 12, 13, 99, 98


def test_forum_export_becomes_question_answer_samples(tmp_path: Path) -> None:
    threads = [
        thread(
            100,
            ALICE,
            "pip ne marche pas",
            message(100, ALICE, "pip: command not found"),
            message(101, BOB, "Utilise python -m pip", author_reactions=frozenset({"✅"})),
        ),
        thread(200, ALICE, "Question sans réponse", message(200, ALICE, "Hello?")),
        thread(
            300,
            CAROL,
            "Erreur 404",
            message(300, CAROL, "L'API répond 404"),
            message(301, BOT, "Vérifie l'URL.", is_us=True),
        ),
    ]
    path = tmp_path / "threads.json"
    write_export(path, build_export(threads, exported_at=datetime(2025, 1, 31, tzinfo=UTC)))

    samples, stats = samples_of(path)
    human_only, filtered = samples_of(path, answer_kinds=["accepted", "moderator"])

    assert samples == [
        s("pip ne marche pas\npip: command not found", "Utilise python -m pip"),
        s("Erreur 404\nL'API répond 404", "Vérifie l'URL."),
    ]
    assert dict(stats.skipped) == {"unsolved": 1}
    assert human_only == samples[:1]
    assert dict(filtered.skipped) == {"unsolved": 1, "answer_kind": 1}


def test_a_file_that_is_not_an_export_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.json"
    path.write_text('{"threads": []}', encoding="utf-8")

    with pytest.raises(PrepareError, match="not an `ibot finetune export-threads` file"):
        samples_of(path)


def test_split_is_deterministic_disjoint_and_complete() -> None:
    samples = [s(f"q{i}", f"a{i}") for i in range(50)]

    train, val = split_samples(samples, val_fraction=0.2, seed=7)
    again = split_samples(samples, val_fraction=0.2, seed=7)
    other = split_samples(samples, val_fraction=0.2, seed=8)

    assert (train, val) == again
    assert len(val) == 10 and len(train) == 40
    assert sorted(train + val, key=samples.index) == samples
    assert train == [x for x in samples if x in train]  # input order kept
    assert other[1] != val
    # Tiny sets still get one validation sample, and keep one for training.
    assert [len(part) for part in split_samples(samples[:2], val_fraction=0.1, seed=0)] == [1, 1]


def test_prepare_command_writes_the_split_and_prints_statistics(tmp_path: Path) -> None:
    transcript = tmp_path / "episode.txt"
    transcript.write_text(TRANSCRIPT, encoding="utf-8")
    out = tmp_path / "data"
    args = ["prepare", str(transcript), "--out", str(out), "--character", "rick", "--window", "2"]

    result = runner.invoke(finetune_app, [*args, "--val-fraction", "0.25", "--no-progress"])
    first = (out / "train.jsonl").read_text(), (out / "validation.jsonl").read_text()
    runner.invoke(finetune_app, [*args, "--val-fraction", "0.25", "--no-progress"])

    assert result.exit_code == 0, result.output
    assert "samples: 4 (train 3, validation 1)" in result.output
    assert re.search(r"2\s+scene_marker", result.output)
    assert re.search(r"1\s+no_context: target character's line", result.output)
    assert "text: " in result.output and "words" in result.output
    assert first == ((out / "train.jsonl").read_text(), (out / "validation.jsonl").read_text())
    assert len(read_jsonl(out / "train.jsonl")) == 3
    assert json.loads((out / "stats.json").read_text())["skipped"]["blank"] == 2
    assert json.loads(first[1].splitlines()[0]).keys() == {"context", "response"}


def test_prepare_without_the_character_fails_clearly(tmp_path: Path) -> None:
    transcript = tmp_path / "episode.txt"
    transcript.write_text(TRANSCRIPT, encoding="utf-8")

    result = runner.invoke(finetune_app, ["prepare", str(transcript), "--out", str(tmp_path)])

    assert result.exit_code == 2
    assert "--character is required for transcript input" in result.output


# ---- export-threads: choosing the answer (no Discord) --------------------------------------


def test_the_authors_accept_mark_beats_a_moderator_reply() -> None:
    t = thread(
        1,
        ALICE,
        "T",
        message(1, ALICE, "question"),
        message(2, MODO, "modo answer", is_moderator=True),
        message(3, BOB, "bob answer", author_reactions=frozenset({"✔️"})),
    )

    answer = choose_answer(t)

    assert answer is not None and answer.kind is AnswerKind.ACCEPTED
    assert answer.text == "bob answer"


def test_a_moderator_answer_continues_over_their_following_messages() -> None:
    t = thread(
        1,
        ALICE,
        "T",
        message(1, ALICE, "question"),
        message(2, ALICE, "more details"),
        message(3, MODO, "first part", is_moderator=True),
        message(4, MODO, "second part", is_moderator=True),
        message(5, ALICE, "thanks"),
        message(6, MODO, "you're welcome", is_moderator=True),
    )

    answer = choose_answer(t)

    assert answer is not None and answer.kind is AnswerKind.MODERATOR
    assert answer.text == "first part\n\nsecond part"


def test_the_bot_answers_only_when_no_other_human_replied() -> None:
    alone = thread(
        1,
        ALICE,
        "T",
        message(1, ALICE, "question"),
        message(2, OTHER_BOT, "Welcome to the forum!", is_other_bot=True),
        message(3, BOT, "bot answer", is_us=True),
        message(4, ALICE, "ok thanks"),
    )
    discussed = thread(
        2,
        ALICE,
        "T",
        message(1, ALICE, "question"),
        message(3, BOT, "bot answer", is_us=True),
        message(4, BOB, "I think it is something else"),
    )

    answer = choose_answer(alone)

    assert answer is not None and (answer.kind, answer.text) == (AnswerKind.BOT, "bot answer")
    assert choose_answer(discussed) is None


def test_marks_that_do_not_count() -> None:
    t = thread(
        1,
        ALICE,
        "T",
        message(1, ALICE, "question", author_reactions=frozenset({"✅"})),
        message(2, ALICE, "my own fix", author_reactions=frozenset({"✅"})),
        message(3, BOB, "an answer", author_reactions=frozenset({"👍"})),
        message(4, CAROL, "", author_reactions=frozenset({"✅"})),  # an image alone
    )

    assert choose_answer(t) is None
    export = build_export([t], exported_at=datetime(2025, 1, 1, tzinfo=UTC))
    assert export["threads"][0]["answer"] is None
    assert export["threads"][0]["question"] == "question"


# ---- DialoGPT encoding ---------------------------------------------------------------------

EOS = 0


def test_sequences_lose_their_oldest_turns_first_and_learn_only_the_response() -> None:
    context = [[1, 2, 3], [4, 5], [6]]
    response = [7, 8]

    whole = build_example(context, response, EOS, max_length=20)
    cut = build_example(context, response, EOS, max_length=8)
    everything = build_example(context, response, EOS, max_length=20, loss_on="all")

    assert whole.input_ids == [1, 2, 3, 0, 4, 5, 0, 6, 0, 7, 8, 0]
    assert whole.labels == [IGNORE_INDEX] * 9 + [7, 8, 0]
    assert not whole.truncated
    assert cut.input_ids == [4, 5, 0, 6, 0, 7, 8, 0] and cut.truncated
    assert everything.labels == everything.input_ids


def test_an_over_long_single_turn_keeps_its_end_and_the_response_its_start() -> None:
    question = build_example([list(range(1, 11))], [20], EOS, max_length=6)
    answer = build_example([[1]], list(range(20, 30)), EOS, max_length=4)

    assert question.input_ids == [8, 9, 10, 0, 20, 0]
    assert answer.input_ids == [20, 21, 22, 0] and answer.labels == [20, 21, 22, 0]


def test_padding_is_per_batch_and_never_learned() -> None:
    pytest.importorskip("torch")
    from ibot.finetune.train import DynamicPaddingCollator

    features = [
        {"input_ids": [5, 0, 6, 0], "labels": [IGNORE_INDEX, IGNORE_INDEX, 6, 0]},
        {"input_ids": [7, 0], "labels": [7, 0]},
    ]

    batch = DynamicPaddingCollator(pad_token_id=0)(features)

    assert batch["input_ids"].shape == (2, 4)  # the longest in the batch, not a fixed block
    assert batch["labels"].tolist() == [[-100, -100, 6, 0], [7, 0, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]


# ---- chat loop (injected input and output) -------------------------------------------------


def test_chat_loop_answers_keeps_history_resets_and_quits() -> None:
    seen: list[list[str]] = []

    def reply(history: list[str]) -> str:
        seen.append(history)
        return f"answer {len(history)}"

    inputs = iter(["hello", "  ", "how are you?", "/reset", "again", "/quit", "never read"])
    output: list[str] = []

    history = chat_loop(reply, read=lambda prompt: next(inputs), write=output.append)

    assert seen == [["hello"], ["hello", "answer 1", "how are you?"], ["again"]]
    assert [line for line in output if line.startswith("Bot:")] == [
        "Bot: answer 1",
        "Bot: answer 3",
        "Bot: answer 1",
    ]
    assert "(conversation forgotten)" in output
    assert history == ["again", "answer 1"]


def test_chat_loop_ends_on_end_of_input() -> None:
    def read(prompt: str) -> str:
        raise EOFError

    assert chat_loop(lambda h: "x", read=read, write=lambda line: None) == []


# ---- CLI surface ---------------------------------------------------------------------------


def test_every_command_has_help_and_none_imports_torch() -> None:
    result = runner.invoke(finetune_app, ["--help"])
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, ibot.finetune.cli, ibot.finetune.prepare, ibot.finetune.export_threads;"
            "print(sorted({'torch', 'transformers'} & set(sys.modules)))",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )

    assert result.exit_code == 0
    for command in ("prepare", "export-threads", "train", "chat"):
        assert command in result.output
        assert runner.invoke(finetune_app, [command, "--help"]).exit_code == 0
    assert probe.stdout.strip() == "[]"


# ---- training, round trip, resume, chat with a real tiny model -----------------------------

RICK_LINES = [
    "Morty, pass me the wrench.",
    "We are going on an adventure, Morty.",
    "Science is about wanting to know stuff.",
    "Get in the car, Morty.",
]
MORTY_LINES = ["Rick, what are you doing?", "Oh geez, Rick.", "Where are we going?", "Okay."]


def rick_transcript(lines: int = 80, seed: int = 0) -> str:
    rng = random.Random(seed)
    text = []
    for _ in range(lines // 2):
        text.append(f"Morty: {rng.choice(MORTY_LINES)}")
        text.append(f"Rick: {rng.choice(RICK_LINES)}")
    return "\n".join(text) + "\n"


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from ibot.testing.tiny_model import DEFAULT_CORPUS, build_tiny_model

    corpus = [*DEFAULT_CORPUS, *RICK_LINES, *MORTY_LINES]
    return build_tiny_model(tmp_path_factory.mktemp("models") / "base", corpus=corpus)


@pytest.fixture(scope="module")
def rick_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rick")
    (root / "rick.txt").write_text(rick_transcript(), encoding="utf-8")
    collect = root / "data"
    result = runner.invoke(
        finetune_app,
        [
            "prepare",
            str(root / "rick.txt"),
            "--out",
            str(collect),
            "--character",
            "Rick",
            "--window",
            "2",
            "--val-fraction",
            "0.2",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    return collect


@pytest.fixture(scope="module")
def trained(tiny_base: Path, rick_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`ibot finetune train` on the Rick lines, through the command line."""
    out = tmp_path_factory.mktemp("trained") / "rick"
    result = runner.invoke(
        finetune_app,
        [
            "train",
            "--base",
            str(tiny_base),
            "--data",
            str(rick_data),
            "--out",
            str(out),
            "--epochs",
            "3",
            "--batch-size",
            "8",
            "--lr",
            "3e-3",
            "--save-steps",
            "4",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "validation perplexity:" in result.output
    return out


@pytest.mark.slow
def test_fine_tuning_lowers_the_validation_loss(trained: Path) -> None:
    metrics = json.loads((trained / "metrics.json").read_text())

    assert metrics["validation_samples"] == 8 and metrics["train_samples"] == 32
    assert metrics["after"]["loss"] < metrics["before"]["loss"] - 0.5
    assert metrics["after"]["perplexity"] < metrics["before"]["perplexity"]
    assert metrics["device"] == "cpu" and metrics["precision"] == "float32"
    assert metrics["completed"] and metrics["global_step"] == 12  # 3 epochs × 4 batches
    assert metrics["truncated_samples"] == 0
    assert (trained / "checkpoints" / "checkpoint-12").is_dir()


@pytest.mark.slow
async def test_the_saved_directory_loads_offline_and_generates(trained: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(trained, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(trained, local_files_only=True)
    prompt = tokenizer("Oh geez, Rick." + tokenizer.eos_token, return_tensors="pt")
    with torch.no_grad():
        output = model.generate(
            **prompt,
            max_new_tokens=6,
            min_new_tokens=6,
            do_sample=False,
            pad_token_id=tokenizer.eos_token_id,
        )
    assert output.shape[1] == prompt["input_ids"].shape[1] + 6

    from ibot.config import LocalModelSettings
    from ibot.domain import Backend, CallContext, ChatMessage, Feature, LLMRequest
    from ibot.llm.local import LocalBackend

    request = LLMRequest(
        messages=(ChatMessage("user", "Oh geez, Rick."),),
        model="gpt-4o",
        max_output_tokens=8,
        context=CallContext(feature=Feature.CHAT),
    )
    async with LocalBackend(LocalModelSettings(path=trained, do_sample=False)) as backend:
        response = await backend.complete(request)
    assert backend.name == Backend.LOCAL
    assert 1 <= response.usage.completion_tokens <= 8


class StopAt:
    """A TrainerCallback that saves and stops at a step: an interrupted run."""

    def __init__(self, step: int) -> None:
        self.step = step

    def __getattr__(self, name: str) -> Any:
        if name.startswith("on_"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step >= self.step:
            control.should_save = True
            control.should_training_stop = True


@pytest.mark.slow
def test_training_resumes_from_its_last_checkpoint(
    tiny_base: Path, rick_data: Path, tmp_path: Path
) -> None:
    from ibot.finetune.train import TrainConfig, TrainError, train

    config = TrainConfig(
        base=tiny_base,
        data=rick_data,
        out=tmp_path / "out",
        epochs=2,
        batch_size=8,
        learning_rate=3e-3,
        save_steps=100,
        show_progress=False,
    )
    with pytest.raises(TrainError, match="no checkpoint"):
        train(TrainConfig(**{**vars(config), "resume": True}))

    interrupted = train(config, callbacks=[StopAt(3)])
    resumed = train(TrainConfig(**{**vars(config), "resume": True}))

    assert (interrupted["global_step"], interrupted["completed"]) == (3, False)
    assert resumed["resumed_from"] == "checkpoint-3"
    assert resumed["steps_run"] == 5 and resumed["global_step"] == 8 and resumed["completed"]
    assert resumed["after"]["loss"] < resumed["before"]["loss"]


@pytest.mark.slow
def test_chat_with_the_trained_model_keeps_the_conversation(trained: Path) -> None:
    from ibot.finetune.chat import DialoGPTChat, Sampling
    from ibot.finetune.dialogpt import encode_prompt

    bot = DialoGPTChat.load(trained, sampling=Sampling(do_sample=False, max_new_tokens=8))
    prompts: list[list[int]] = []
    original = bot.model.generate

    def spy(input_ids: Any, **kwargs: Any) -> Any:
        prompts.append(input_ids[0].tolist())
        return original(input_ids, **kwargs)

    bot.model.generate = spy
    inputs = iter(["Oh geez, Rick.", "Where are we going?", "/quit"])
    output: list[str] = []

    history = chat_loop(bot.reply, read=lambda prompt: next(inputs), write=output.append)

    answers = [line.removeprefix("Bot: ") for line in output if line.startswith("Bot: ")]
    assert len(answers) == 2 and all(answers)
    assert history == ["Oh geez, Rick.", answers[0], "Where are we going?", answers[1]]
    assert prompts[1] == encode_prompt(bot.tokenizer, history[:3], max_length=120)


@pytest.mark.slow
def test_chat_command_talks_on_the_terminal(trained: Path) -> None:
    result = runner.invoke(
        finetune_app,
        ["chat", "--model", str(trained), "--greedy", "--max-new-tokens", "5", "--name", "Rick"],
        input="Oh geez, Rick.\n/quit\n",
    )

    assert result.exit_code == 0, result.output
    assert "You: " in result.output and re.search(r"Rick: \S", result.output)


def test_export_threads_without_a_token_says_so(tmp_path: Path) -> None:
    config = tmp_path / "ibot.toml"
    config.write_text("", encoding="utf-8")

    result = runner.invoke(finetune_app, ["export-threads", "--config", str(config)])

    assert result.exit_code == 2
    assert "no Discord token configured (BOT_TOKEN)" in result.output


# ---- export-threads against the fake Discord -----------------------------------------------

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


def serve_reaction_users(fake: Any, reactors: dict[tuple[int, str], list[Any]]) -> None:
    """Add GET …/reactions/{emoji} (who reacted) to the fake, which lacks it."""
    from urllib.parse import unquote

    from aiohttp import web

    from ibot.testing.fake_discord.faults import json_response

    async def users(call: Any, cid: str, mid: str, emoji: str) -> web.Response:
        who = reactors.get((int(mid), unquote(emoji)), [])
        return json_response([member.user.payload() for member in who])

    pattern = re.compile(r"/channels/(?P<cid>\d+)/messages/(?P<mid>\d+)/reactions/(?P<emoji>[^/]+)")
    fake._rest.routes.insert(0, ("GET", pattern, users, True))


async def test_export_threads_reads_the_forum_and_writes_the_export(
    fake: Any, tmp_path: Path
) -> None:
    from ibot.config import load_settings
    from ibot.finetune.export_threads import export_threads

    guild = fake.create_guild("Entraide")
    mod_role = fake.create_role(guild, "Modo")
    alice = fake.create_member(guild, "alice")
    bob = fake.create_member(guild, "bob")
    carol = fake.create_member(guild, "carol")
    modo = fake.create_member(guild, "modo", roles=[mod_role])
    forum = fake.create_forum(guild, "aide-python", tags=["python"])
    reactors: dict[tuple[int, str], list[Any]] = {}
    serve_reaction_users(fake, reactors)

    accepted = await fake.create_forum_thread(
        forum,
        author=alice,
        title="pip introuvable",
        content="pip: command not found",
        tags=["python"],
    )
    await fake.post_message(accepted, carol, "Réinstalle tout ?")
    fix = await fake.post_message(accepted, bob, "Utilise python -m pip")
    fix.data["reactions"] = [
        {
            "emoji": {"id": None, "name": "✅"},
            "count": 1,
            "count_details": {"burst": 0, "normal": 1},
            "me": False,
            "me_burst": False,
            "burst_colors": [],
        }
    ]
    reactors[(fix.id, "✅")] = [alice]

    moderated = await fake.create_forum_thread(
        forum, author=carol, title="Boucle infinie", content="Mon while ne s'arrête pas"
    )
    await fake.post_message(moderated, modo, "La condition ne change jamais.")
    await fake.post_message(moderated, modo, "Incrémente i dans la boucle.")
    await fake.post_message(moderated, carol, "Merci !")
    await fake.archive_thread(moderated)

    by_bot = await fake.create_forum_thread(forum, author=bob, title="Erreur 404", content="404")
    answer = await fake.post_message(by_bot, fake.bot_user, "")
    answer.data["embeds"] = [
        {
            "type": "rich",
            "title": "Réponse de iBot",
            "description": "Vérifie l'URL.",
            "footer": {"text": "312 tokens · $0.0012"},
        }
    ]

    unsolved = await fake.create_forum_thread(forum, author=bob, title="Au secours", content="?")
    await fake.post_message(unsolved, carol, "Moi aussi")

    settings = load_settings(
        None,
        discord_token=TOKEN,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'ibot.db'}",
        discord={"guild_ids": [guild.id], "forum_channel_ids": [forum.id]},
        roles={"moderators": [mod_role.id]},
    )
    out = tmp_path / "export" / "threads.json"

    export, stats = await export_threads(
        settings, out, show_progress=False, client_options={"guild_ready_timeout": 0.05}
    )

    written = json.loads(out.read_text(encoding="utf-8"))
    assert written == export
    entries = {entry["title"]: entry for entry in written["threads"]}
    assert list(entries) == ["pip introuvable", "Boucle infinie", "Erreur 404", "Au secours"]
    first = entries["pip introuvable"]
    assert first["question"] == "pip: command not found" and first["tags"] == ["python"]
    assert first["answer"] == {
        "kind": "accepted",
        "message_id": str(fix.id),
        "author_id": str(bob.id),
        "author_name": "bob",
        "text": "Utilise python -m pip",
    }
    assert entries["Boucle infinie"]["archived"] is True
    assert entries["Boucle infinie"]["answer"]["kind"] == "moderator"
    assert entries["Boucle infinie"]["answer"]["text"] == (
        "La condition ne change jamais.\n\nIncrémente i dans la boucle."
    )
    assert entries["Erreur 404"]["answer"]["kind"] == "bot"
    assert entries["Erreur 404"]["answer"]["text"] == "Vérifie l'URL."
    assert entries["Au secours"]["answer"] is None
    assert stats.threads == 4 and stats.reaction_lookups_failed == 0
    # Reading never touched the bot's slash commands.
    assert not [r for r in fake.requests if "/commands" in r.path and r.method != "GET"]
    # And `prepare` reads the export as it is.
    samples, prep = samples_of(out)
    assert len(samples) == 3 and prep.skipped["unsolved"] == 1
