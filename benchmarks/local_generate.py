"""How much does batching buy the local model? Plain generate loop vs our batched worker.

    python benchmarks/local_generate.py               # GPT-2-small-sized, CPU (a few minutes)
    python benchmarks/local_generate.py --device cuda
    python benchmarks/local_generate.py --tiny        # a 2-layer toy, seconds: a smoke test

The model is GPT-2-small-sized (GPT2Config() defaults: 12 layers, 768 wide, 12 heads,
1024 positions, 50257-token embedding) with RANDOM weights, built locally with a
byte-level BPE tokenizer trained on a few lines: nothing is downloaded, and the speed of
a forward pass does not depend on what the weights learned.

Eight requests arrive together (eight users asking while OpenAI is down):
(a) baseline: a plain `model.generate` loop answers them one after another, as the
    tutorials' bots do;
(b) ours: `LocalBackend`, whose worker thread batches the requests waiting together.

Fair by construction: the same model object, the same prompt ids (built once by the
backend's prompt builder), the same generation settings (greedy, the configured
no-repeat-trigram and repetition penalty), and min_new_tokens = max_new_tokens so that
both produce exactly the same number of tokens. Both are warmed up first; each is timed
`--runs` times and the best run counts (shared machines are noisy).

The last line printed is one JSON object: {"sequential_tokens_per_s",
"batched_tokens_per_s", "ratio", ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO))

from ibot.config import LocalModelSettings  # noqa: E402
from ibot.domain import CallContext, ChatMessage, Feature, LLMRequest  # noqa: E402
from ibot.llm.local import LocalBackend  # noqa: E402
from ibot.logging import configure_logging  # noqa: E402
from ibot.testing.tiny_model import build_tiny_model  # noqa: E402

QUESTIONS = (
    "Bonjour, mon bot Discord ne répond plus dans le forum depuis ce matin, une idée ?",
    "How do I read a CSV file with pandas and keep only two columns?",
    "Pourquoi pip dit que le module est introuvable alors que je viens de l'installer ?",
    "My Python script crashes with a KeyError when the JSON has no 'name' field.",
    "Quelle est la différence entre une liste et un tuple en Python ?",
    "The server answers 404 when I call the API from my bot, what should I check?",
    "Comment installer Python sur Windows et l'ajouter au PATH ?",
    "hey, how are you doing today?",
)


def request(question: str, max_new_tokens: int) -> LLMRequest:
    return LLMRequest(
        messages=(ChatMessage("user", question),),
        model="local",
        max_output_tokens=max_new_tokens,
        context=CallContext(feature=Feature.CHAT),
    )


def build_model(directory: Path, tiny: bool) -> Path:
    if tiny:
        return build_tiny_model(directory, n_layer=2, n_embd=64, n_head=2, n_positions=256)
    return build_tiny_model(
        directory,
        n_layer=12,
        n_embd=768,
        n_head=12,
        n_positions=1024,
        vocab_size=2000,
        model_vocab_size=50257,
    )


def sequential(backend: LocalBackend, prompts: list[list[int]], new_tokens: int) -> float:
    """(a) One plain `generate` per request, one after another; returns seconds."""
    import torch

    model = backend.model
    settings = backend.settings
    eos = backend.tokenizer.eos_token_id
    started = time.perf_counter()
    for ids in prompts:
        input_ids = torch.tensor([ids], device=model.device)
        with torch.inference_mode():
            output = model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                no_repeat_ngram_size=settings.no_repeat_ngram_size,
                repetition_penalty=settings.repetition_penalty,
                pad_token_id=eos,
                eos_token_id=eos,
            )
        assert output.shape[1] - len(ids) == new_tokens
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


async def batched(backend: LocalBackend, new_tokens: int) -> tuple[float, int]:
    """(b) The same requests sent together to the backend; returns seconds and tokens."""
    started = time.perf_counter()
    responses = await asyncio.gather(*(backend.complete(request(q, new_tokens)) for q in QUESTIONS))
    elapsed = time.perf_counter() - started
    return elapsed, sum(r.usage.completion_tokens for r in responses)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        print("building a random GPT-2-%s model…" % ("toy" if args.tiny else "small-sized"))
        model_dir = build_model(Path(tmp) / "gpt2-random", args.tiny)
        settings = LocalModelSettings(
            path=model_dir,
            device=args.device,
            max_new_tokens=args.new_tokens,
            min_new_tokens=args.new_tokens,
            do_sample=False,
            max_batch_size=len(QUESTIONS),
        )
        async with LocalBackend(settings, model_name=model_dir.name) as backend:
            params = sum(p.numel() for p in backend.model.parameters())
            print(f"model: {params / 1e6:.1f} M parameters on {backend.device}")
            prompts = [backend.build_prompt(request(q, 1).messages) for q in QUESTIONS]
            shortest, longest = min(map(len, prompts)), max(map(len, prompts))
            print(
                f"prompts: {len(prompts)} of {shortest}..{longest} tokens, "
                f"{args.new_tokens} new tokens each"
            )

            sequential(backend, prompts[:1], 2)  # warm-up (the backend warmed itself)
            await batched(backend, 2)

            expected = len(QUESTIONS) * args.new_tokens
            seq_best = bat_best = float("inf")
            for run in range(1, args.runs + 1):
                seq_s = sequential(backend, prompts, args.new_tokens)
                before = backend.stats.generate_calls
                bat_s, tokens = await batched(backend, args.new_tokens)
                calls = backend.stats.generate_calls - before
                assert tokens == expected, (tokens, expected)
                print(
                    f"run {run}: sequential {seq_s:.2f} s ({expected / seq_s:.1f} tok/s), "
                    f"batched {bat_s:.2f} s ({expected / bat_s:.1f} tok/s) "
                    f"in {calls} generate call(s)"
                )
                seq_best, bat_best = min(seq_best, seq_s), min(bat_best, bat_s)
            device = backend.device

    sequential_tps = expected / seq_best
    batched_tps = expected / bat_best
    print(f"sequential generate loop: {sequential_tps:.1f} tokens/s")
    print(f"batched worker:           {batched_tps:.1f} tokens/s")
    print(f"ratio:                    {batched_tps / sequential_tps:.2f}x")
    return {
        "model": "gpt2-toy-random" if args.tiny else "gpt2-small-random",
        "parameters": params,
        "device": device,
        "requests": len(QUESTIONS),
        "new_tokens": args.new_tokens,
        "runs": args.runs,
        "sequential_tokens_per_s": round(sequential_tps, 2),
        "batched_tokens_per_s": round(batched_tps, 2),
        "ratio": round(batched_tps / sequential_tps, 2),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer toy model (smoke test)")
    parser.add_argument("--new-tokens", type=int, default=32, help="tokens per answer")
    parser.add_argument("--runs", type=int, default=3, help="timed runs; the best counts")
    return parser.parse_args(argv)


if __name__ == "__main__":
    configure_logging("console", "WARNING")
    result = asyncio.run(main(parse_args()))
    print(json.dumps(result))
