"""The local backend and `serve-local`, exercised on a tiny GPT-2 built from scratch.

No model can be downloaded here: `build_tiny_model` trains a byte-level BPE tokenizer on a
few lines and saves a random GPT-2 with `save_pretrained`; everything below loads that
directory through the real loading code.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from openai import AsyncOpenAI, AuthenticationError

from ibot.config import LocalModelSettings
from ibot.domain import (
    Backend,
    BackendError,
    CallContext,
    ChatMessage,
    ErrorKind,
    Feature,
    LLMRequest,
    UsageSource,
)
from ibot.llm.local import LocalBackend
from ibot.llm.openai_backend import OpenAIBackend
from ibot.llm.serve_local import start_server
from ibot.testing.tiny_model import EOS, build_tiny_model

REPO = Path(__file__).resolve().parents[1]
POSITIONS = 128


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny", n_positions=POSITIONS)


@pytest.fixture(scope="module")
def tokenizer(tiny_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_dir, local_files_only=True)


def settings(path: Path, **overrides: Any) -> LocalModelSettings:
    """CPU and float32 even where a GPU exists: answers are compared token for token."""
    return LocalModelSettings(path=path, **{"device": "cpu", **overrides})


def request(*turns: str, system: str | None = None, max_output_tokens: int = 1000) -> LLMRequest:
    messages = [ChatMessage("system", system)] if system else []
    roles = ["user", "assistant"]
    messages += [ChatMessage(roles[i % 2], text) for i, text in enumerate(turns)]  # type: ignore[arg-type]
    return LLMRequest(
        messages=tuple(messages),
        model="gpt-4o",
        max_output_tokens=max_output_tokens,
        context=CallContext(feature=Feature.CHAT),
    )


def ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


async def until(condition: Callable[[], bool]) -> None:
    """Let other tasks run until `condition` holds (they only need a few turns)."""
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never became true")


async def in_one_batch(backend: LocalBackend, requests: list[LLMRequest]) -> list[Any]:
    """Answer `requests[0]` alone while the others queue up, then the others as one batch.

    Deterministic batching: the first request holds the worker until all the others wait.
    """
    spy = GenerateSpy(backend.model, hold_first=True)
    first = asyncio.create_task(backend.complete(requests[0]))
    assert await asyncio.to_thread(spy.entered.wait, 30)
    rest = [asyncio.create_task(backend.complete(r)) for r in requests[1:]]
    await until(lambda: backend.queued == len(rest))
    spy.release.set()
    answers = await asyncio.gather(first, *rest)
    assert spy.batch_sizes == [1, len(rest)]
    backend.model.generate = spy.original
    return answers


class GenerateSpy:
    """Wraps `model.generate`: counts calls and their batch sizes; can hold a call."""

    def __init__(self, model: Any, *, hold_first: bool = False) -> None:
        self.original = model.generate
        self.batch_sizes: list[int] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.hold_first = hold_first
        model.generate = self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.batch_sizes.append(int(kwargs["input_ids"].shape[0]))
        if self.hold_first and len(self.batch_sizes) == 1:
            self.entered.set()
            assert self.release.wait(30), "the test never released the held generate"
        return self.original(*args, **kwargs)


# ---- loading and answering -----------------------------------------------------------------


async def test_saved_tiny_model_answers_with_usage_counted_by_its_tokenizer(tiny_dir, tokenizer):
    from transformers import AutoModelForCausalLM

    config = settings(tiny_dir, max_new_tokens=12, min_new_tokens=12, do_sample=False)
    async with LocalBackend(config) as backend:
        response = await backend.complete(request("Bonjour, mon bot ne répond pas."))

    prompt = [*ids(tokenizer, "Bonjour, mon bot ne répond pas."), tokenizer.eos_token_id]
    assert backend.name == Backend.LOCAL
    assert backend.device == "cpu" and backend.prompt_format == "dialogpt"
    assert response.model == "tiny"
    assert response.usage.prompt_tokens == len(prompt)
    assert response.usage.completion_tokens == 12
    assert response.usage.source == UsageSource.MEASURED
    assert response.finish_reason == "length"
    assert response.cost_micros == 0  # no GPU price configured

    # The same greedy generation done by hand on the same directory gives the same text.
    import torch

    model = AutoModelForCausalLM.from_pretrained(tiny_dir, local_files_only=True)
    with torch.inference_mode():
        out = model.generate(
            torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            max_new_tokens=12,
            min_new_tokens=12,
            do_sample=False,
            no_repeat_ngram_size=3,
            repetition_penalty=1.3,
            pad_token_id=tokenizer.eos_token_id,
        )
    expected = tokenizer.decode(out[0, len(prompt) :], skip_special_tokens=True).strip()
    assert response.text == expected


async def test_answer_stops_at_end_of_text_and_counts_it(tiny_dir, tokenizer):
    async with LocalBackend(settings(tiny_dir, max_new_tokens=40, do_sample=False)) as backend:
        spy = GenerateSpy(backend.model)
        # Make the end-of-text token the only possible choice after the first token.
        original = spy.original

        def end_after_one(*args: Any, **kwargs: Any) -> Any:
            from transformers import LogitsProcessor, LogitsProcessorList

            class ForceEos(LogitsProcessor):
                def __call__(self, input_ids: Any, scores: Any) -> Any:
                    if input_ids.shape[1] > kwargs["input_ids"].shape[1]:
                        scores[:, :] = -float("inf")
                        scores[:, tokenizer.eos_token_id] = 0
                    return scores

            return original(*args, logits_processor=LogitsProcessorList([ForceEos()]), **kwargs)

        spy.original = end_after_one
        response = await backend.complete(request("Bonjour"))

    assert response.finish_reason == "stop"
    assert response.usage.completion_tokens == 2  # one token of text, then end-of-text
    assert EOS not in response.text and response.text


async def test_gpu_hour_price_is_charged_for_each_requests_share_of_the_batch(tiny_dir):
    clock_values = iter([10.0, 10.5, 20.0, 20.5])  # each batch takes 0.5 s
    config = settings(
        tiny_dir, gpu_hour_usd=Decimal("3.6"), max_new_tokens=4, max_batch_size=2
    )  # 3.6 USD per hour = 1000 micro-dollars per second
    async with LocalBackend(config, clock=lambda: next(clock_values)) as backend:
        alone, *pair = await in_one_batch(
            backend, [request("Bonjour"), request("Salut"), request("hey")]
        )

    assert alone.cost_micros == 500
    assert [r.cost_micros for r in pair] == [250, 250]


async def test_batched_answers_equal_the_same_requests_answered_alone(tiny_dir):
    questions = ["Bonjour", "How do I read a CSV file with pandas? I tried everything.", "hey"]
    config = settings(tiny_dir, max_new_tokens=16, min_new_tokens=16, do_sample=False)
    async with LocalBackend(config) as backend:
        alone = [await backend.complete(request(q)) for q in questions]
        _, *together = await in_one_batch(backend, [request("x"), *map(request, questions)])

    # One batch of three prompts of different lengths: left padding and the attention mask
    # make each answer what it would have been alone.
    assert [r.text for r in together] == [r.text for r in alone]
    assert [r.usage for r in together] == [r.usage for r in alone]


# ---- prompt format and truncation ----------------------------------------------------------


async def test_dialogpt_prompt_separates_turns_with_end_of_text_and_drops_system(
    tiny_dir, tokenizer
):
    async with LocalBackend(settings(tiny_dir)) as backend:
        prompt = backend.build_prompt(
            request(
                "Bonjour", "Salut, que se passe-t-il ?", "Ça plante", system="Tu es iBot."
            ).messages
        )

    eos = tokenizer.eos_token_id
    assert prompt == [
        *ids(tokenizer, "Bonjour"),
        eos,
        *ids(tokenizer, "Salut, que se passe-t-il ?"),
        eos,
        *ids(tokenizer, "Ça plante"),
        eos,
    ]
    assert tokenizer.decode(prompt) == f"Bonjour{EOS}Salut, que se passe-t-il ?{EOS}Ça plante{EOS}"


async def test_truncation_drops_the_oldest_turns_and_leaves_room_for_the_answer(
    tiny_dir, tokenizer
):
    turns = [f"message {i}: the bot does not answer in the forum channel" for i in range(12)]
    config = settings(tiny_dir, max_new_tokens=48, max_context_turns=50, do_sample=False)
    async with LocalBackend(config) as backend:
        prompt = backend.build_prompt(request(*turns).messages)
        response = await backend.complete(request(*turns))

    budget = POSITIONS - 48
    encoded = [[*ids(tokenizer, t), tokenizer.eos_token_id] for t in turns]
    kept = next(k for k in range(len(turns), 0, -1) if sum(map(len, encoded[-k:])) <= budget)
    assert kept < len(turns)  # the conversation really was too long
    assert prompt == [token for turn in encoded[-kept:] for token in turn]  # newest kept, whole
    assert len(prompt) <= budget
    assert response.usage.prompt_tokens == len(prompt)
    assert response.usage.prompt_tokens + response.usage.completion_tokens <= POSITIONS


async def test_a_single_turn_longer_than_the_window_keeps_its_end(tiny_dir, tokenizer):
    huge = " ".join(f"word{i}" for i in range(400))
    async with LocalBackend(settings(tiny_dir, max_new_tokens=32)) as backend:
        prompt = backend.build_prompt(request("earlier question", "earlier answer", huge).messages)

    assert len(prompt) == POSITIONS - 32
    assert prompt == [*ids(tokenizer, huge), tokenizer.eos_token_id][-(POSITIONS - 32) :]


async def test_only_the_configured_number_of_previous_turns_is_kept(tiny_dir, tokenizer):
    turns = [f"t{i}" for i in range(10)]
    async with LocalBackend(settings(tiny_dir, max_context_turns=3)) as backend:
        prompt = backend.build_prompt(request(*turns).messages)

    assert tokenizer.decode(prompt) == f"t7{EOS}t8{EOS}t9{EOS}"


async def test_a_tokenizer_with_a_chat_template_is_prompted_with_it(tiny_dir, tmp_path):
    from transformers import AutoTokenizer

    chat_dir = tmp_path / "chat"
    build_tiny_model(chat_dir, n_positions=POSITIONS)
    chat_tokenizer = AutoTokenizer.from_pretrained(chat_dir, local_files_only=True)
    chat_tokenizer.chat_template = (
        "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}"
        "{% if add_generation_prompt %}[assistant] {% endif %}"
    )
    chat_tokenizer.save_pretrained(chat_dir)

    async with LocalBackend(settings(chat_dir, max_new_tokens=8)) as backend:
        prompt = backend.build_prompt(request("Bonjour", system="Tu es iBot.").messages)
        response = await backend.complete(request("Bonjour", system="Tu es iBot."))

    assert backend.prompt_format == "chat_template"
    assert chat_tokenizer.decode(prompt) == "[system] Tu es iBot.\n[user] Bonjour\n[assistant] "
    assert response.usage.prompt_tokens == len(prompt)


# ---- never blocking the event loop ---------------------------------------------------------


@pytest.mark.slow
async def test_event_loop_keeps_ticking_while_the_model_generates(tmp_path):
    model_dir = build_tiny_model(tmp_path / "ticker", n_embd=128, n_positions=512)
    config = settings(model_dir, max_new_tokens=250, min_new_tokens=250, do_sample=False)
    async with LocalBackend(config) as backend:
        period = 0.01
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(period)
                ticks += 1

        task = asyncio.create_task(ticker())
        started = time.perf_counter()
        responses = await asyncio.gather(*(backend.complete(request("Bonjour")) for _ in range(2)))
        elapsed = time.perf_counter() - started
        task.cancel()

    assert all(r.usage.completion_tokens == 250 for r in responses)
    assert elapsed >= 0.15, "the generation was too short to tell anything"
    assert ticks >= 0.8 * elapsed / period, (ticks, elapsed)


# ---- batching and cancellation -------------------------------------------------------------


async def test_concurrent_requests_share_generate_calls(tiny_dir, tokenizer):
    config = settings(tiny_dir, max_new_tokens=8, max_batch_size=8)
    async with LocalBackend(config) as backend:
        spy = GenerateSpy(backend.model)
        questions = [f"question {i} about python" for i in range(8)]
        responses = await asyncio.gather(*(backend.complete(request(q)) for q in questions))
        stats = backend.stats

    assert len(spy.batch_sizes) < len(questions)
    assert sum(spy.batch_sizes) == len(questions)
    assert stats.generate_calls == len(spy.batch_sizes) and stats.requests == len(questions)
    for question, response in zip(questions, responses, strict=True):
        assert response.usage.prompt_tokens == len(ids(tokenizer, question)) + 1
        assert 1 <= response.usage.completion_tokens <= 8


async def test_cancelled_requests_never_resolve_and_do_not_break_the_others(tiny_dir):
    config = settings(tiny_dir, max_new_tokens=8, max_batch_size=8)
    async with LocalBackend(config, batch_window_s=0) as backend:
        spy = GenerateSpy(backend.model, hold_first=True)
        running = asyncio.create_task(backend.complete(request("first")))
        assert await asyncio.to_thread(spy.entered.wait, 30)  # "first" is inside generate

        queued = asyncio.create_task(backend.complete(request("second")))
        kept = asyncio.create_task(backend.complete(request("third")))
        await until(lambda: backend.queued == 2)

        queued.cancel()  # waiting in the queue: withdrawn
        running.cancel()  # already generating: its answer will be dropped
        with pytest.raises(asyncio.CancelledError):
            await queued
        assert backend.queued == 1
        spy.release.set()
        answer = await kept
        with pytest.raises(asyncio.CancelledError):
            await running
        stats = backend.stats

    assert answer.text is not None and answer.usage.completion_tokens >= 1
    assert spy.batch_sizes == [1, 1]  # "second" never reached the model
    assert running.cancelled() and queued.cancelled()
    assert stats.cancelled == 2


async def test_requests_waiting_when_the_backend_stops_fail_clearly(tiny_dir):
    backend = LocalBackend(settings(tiny_dir, max_new_tokens=4), batch_window_s=0)
    await backend.start()
    spy = GenerateSpy(backend.model, hold_first=True)
    running = asyncio.create_task(backend.complete(request("first")))
    assert await asyncio.to_thread(spy.entered.wait, 30)
    waiting = asyncio.create_task(backend.complete(request("second")))
    await until(lambda: backend.queued == 1)

    closing = asyncio.create_task(backend.aclose())
    with pytest.raises(BackendError, match="stopped"):
        await waiting
    spy.release.set()
    await closing
    with pytest.raises(BackendError, match="stopped"):
        await running
    with pytest.raises(BackendError, match="stopped"):
        await backend.complete(request("too late"))


# ---- configuration errors ------------------------------------------------------------------


def test_no_configured_path_is_not_configured():
    with pytest.raises(BackendError) as caught:
        LocalBackend(LocalModelSettings())
    assert caught.value.kind == ErrorKind.NOT_CONFIGURED
    assert "local_model.path" in caught.value.message


def test_a_missing_directory_is_named(tmp_path):
    directory = tmp_path / "gone"
    directory.mkdir()
    config = settings(directory)
    directory.rmdir()

    with pytest.raises(BackendError) as caught:
        LocalBackend(config)
    assert caught.value.kind == ErrorKind.NOT_CONFIGURED
    assert str(directory) in caught.value.message


async def test_a_directory_without_a_model_is_refused_at_start(tmp_path):
    with pytest.raises(BackendError) as caught:
        await LocalBackend(settings(tmp_path)).start()
    assert caught.value.kind == ErrorKind.NOT_CONFIGURED
    assert "no config.json" in caught.value.message


async def test_a_model_that_is_not_a_causal_lm_is_refused_at_start(tmp_path):
    from transformers import DistilBertConfig

    DistilBertConfig(n_layers=1, dim=32, hidden_dim=64, n_heads=2).save_pretrained(tmp_path)
    backend = LocalBackend(settings(tmp_path))
    with pytest.raises(BackendError) as caught:
        await backend.complete(request("Bonjour"))
    assert caught.value.kind == ErrorKind.NOT_CONFIGURED
    assert "not a causal language model" in caught.value.message
    await backend.aclose()


# ---- serve-local ---------------------------------------------------------------------------


async def test_serve_local_answers_the_openai_sdk(tiny_dir, tokenizer):
    backend = LocalBackend(settings(tiny_dir, max_new_tokens=10, do_sample=False))
    async with await start_server(backend, owns_backend=True) as server:
        client = AsyncOpenAI(api_key="unused", base_url=server.base_url, max_retries=0)
        completion = await client.chat.completions.create(
            model="gpt-4o",
            messages=[
                {"role": "system", "content": "Tu es iBot."},
                {"role": "user", "content": "Bonjour, ça marche ?"},
            ],
            max_tokens=6,
        )
        models = await client.models.list()
        served = server.served[-1]

        stream = await client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "Bonjour, ça marche ?"}],
            max_tokens=6,
            stream=True,
            stream_options={"include_usage": True},
        )
        pieces, usage = [], None
        async for chunk in stream:
            usage = chunk.usage or usage
            pieces.extend(c.delta.content or "" for c in chunk.choices if c.delta)
        await client.close()

    assert completion.choices[0].message.content == served.text
    assert completion.model == "tiny"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == len(ids(tokenizer, "Bonjour, ça marche ?")) + 1
    assert 1 <= completion.usage.completion_tokens <= 6
    assert [m.id for m in models.data] == ["tiny"]
    assert "".join(pieces) == completion.choices[0].message.content  # greedy: same answer
    assert usage is not None and usage.prompt_tokens == completion.usage.prompt_tokens


async def test_the_bots_openai_backend_reaches_serve_local_through_base_url(tiny_dir):
    backend = LocalBackend(settings(tiny_dir, max_new_tokens=6))
    async with await start_server(backend, owns_backend=True, api_key="sk-local") as server:
        bot_side = OpenAIBackend(api_key="sk-local", base_url=server.base_url, max_retries=0)
        response = await bot_side.complete(request("Bonjour"))
        wrong_key = AsyncOpenAI(api_key="sk-wrong", base_url=server.base_url, max_retries=0)
        with pytest.raises(AuthenticationError):
            await wrong_key.chat.completions.create(
                model="x", messages=[{"role": "user", "content": "Bonjour"}]
            )
        await wrong_key.close()

    assert response.model == "tiny"
    assert response.usage.completion_tokens >= 1
    assert response.text == server.served[-1].text


async def test_serve_local_rejects_a_request_without_messages(tiny_dir):
    import aiohttp

    backend = LocalBackend(settings(tiny_dir, max_new_tokens=4))
    async with (
        await start_server(backend, owns_backend=True) as server,
        aiohttp.ClientSession() as http,
        http.post(f"{server.base_url}/chat/completions", json={"model": "x"}) as answer,
    ):
        body = await answer.json()
    assert answer.status == 400
    assert "messages" in body["error"]["message"]


# ---- optional dependency ---------------------------------------------------------------------


@pytest.mark.slow
def test_torch_is_imported_only_when_a_backend_starts(tiny_dir):
    script = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from ibot.config import LocalModelSettings\n"
        "import ibot.llm.local, ibot.llm.serve_local, ibot.testing.tiny_model\n"
        "def heavy():\n"
        "    return sorted(m for m in ('torch', 'transformers') if m in sys.modules)\n"
        "seen = [heavy()]\n"
        "backend = ibot.llm.local.LocalBackend(LocalModelSettings(path=Path(sys.argv[1])))\n"
        "seen.append(heavy())\n"
        "async def main():\n"
        "    await backend.start()\n"
        "    seen.append(heavy())\n"
        "    await backend.aclose()\n"
        "asyncio.run(main())\n"
        "print(seen)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tiny_dir)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=True,
    )
    seen = json.loads(result.stdout.strip().splitlines()[-1].replace("'", '"'))
    assert seen == [[], [], ["torch", "transformers"]]


def test_serve_local_command_registers_in_typer_and_names_a_bad_model_directory(tmp_path):
    import typer
    from typer.testing import CliRunner

    from ibot.llm.serve_local_cli import serve_local_command

    app = typer.Typer()
    app.command("serve-local")(serve_local_command)
    app.command("other")(lambda: None)  # two commands: "serve-local" must be named
    missing = tmp_path / "no-such-model"

    result = CliRunner().invoke(app, ["serve-local", "--model", str(missing)])

    assert result.exit_code == 2
    assert "config error" in result.output and "not an existing directory" in result.output
    help_text = CliRunner().invoke(app, ["serve-local", "--help"]).output
    assert "--model" in help_text and "--port" in help_text and "--api-key" in help_text
