"""Fine-tuning throughput: our batching vs the tutorials' fixed 128-token blocks.

    python benchmarks/finetune.py                      # small model, CPU (a few minutes)
    python benchmarks/finetune.py --device cuda        # GPT-2-small-sized on the GPU
    python benchmarks/finetune.py --size tiny --steps 5 --rounds 1   # smoke test, seconds
    python benchmarks/finetune.py --data data/rick --model models/DialoGPT-small

What is compared, on the same samples and the same model (same initial weights, same
optimizer, same precision: fp32 on the CPU, bf16 autocast on a GPU that has it):

(a) ``fixed_128``: the tutorials' recipe, every conversation cut and padded to a 128-token
    block, batches in random order;
(b) ``ours``: what ``ibot finetune train`` does, each sequence as long as it is (cut at
    128 here too, so that both see the same text), batches of similar lengths
    (transformers' ``LengthGroupedSampler``, which the Trainer uses) padded to their own
    longest sequence (``DynamicPaddingCollator``).

Each does ``--warmup`` untimed steps, then one timed epoch over the samples (or its first
``--steps`` steps) in batches of ``--batch-size``; the figure is REAL tokens per second:
tokens that are not padding (padding is computed too, which is exactly the waste (b)
removes). Over a whole epoch both see exactly the same tokens. The two alternate for
``--rounds`` rounds and the best of each counts (shared machines are noisy).

The data, unless ``--data`` names a directory written by ``ibot finetune prepare``, is a
synthetic script in the tutorials' shape: scenes of a few dozen ``Name: line`` lines
whose lengths follow a long-tailed distribution (most lines a few words, some long
speeches), one sample per line of the target character with its 7 previous lines
(``prepare``'s own code builds them). The model, unless ``--model`` is given, has random
weights (speed does not depend on what the weights learned): ``--size tiny`` (2 layers,
64 wide), ``small`` (4 layers, 256 wide; the CPU default) or ``gpt2`` (12 layers, 768
wide, 50 257-token embedding, GPT-2 small's shape; the GPU default).

The last line printed is one JSON object: {"ours_tokens_per_s", "fixed_128_tokens_per_s",
"ratio", ...}.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO))

from ibot.finetune.dialogpt import encode_samples  # noqa: E402
from ibot.finetune.prepare import (  # noqa: E402
    TRAIN_FILE,
    PrepareStats,
    Sample,
    parse_transcript,
    read_jsonl,
    windowed_samples,
)
from ibot.finetune.train import DynamicPaddingCollator  # noqa: E402

BLOCK = 128  # the tutorials' block size
SIZES = {
    "tiny": {"n_layer": 2, "n_embd": 64, "n_head": 2},
    "small": {"n_layer": 4, "n_embd": 256, "n_head": 4},
    "gpt2": {"n_layer": 12, "n_embd": 768, "n_head": 12},
}
GPT2_VOCAB = 50257
SPEAKERS = ("Rick", "Morty", "Summer", "Beth", "Jerry")
_WORD_TEXT = (
    "the a to and of you I it is that in what we do no my this just get go your me oh geez "
    "Morty Rick come on listen portal gun science dimension family dinner school car garage "
    "wait why how okay look yeah well maybe never always going know think want need right "
    "now here there really something nothing everything again back home time universe space "
    "ship plan adventure crazy stupid smart dad mom grandpa seriously please stop help"
)
WORDS = tuple(_WORD_TEXT.split())


def synthetic_script(lines: int, seed: int) -> list[str]:
    """`Name: line` lines in scenes; line lengths long-tailed like real scripts."""
    rng = random.Random(seed)
    script: list[str] = []
    while len(script) < lines:
        script.append(f"[Scene {len(script)}]")
        for _ in range(rng.randint(8, 60)):
            words = max(1, min(80, int(rng.lognormvariate(2.0, 0.8))))
            text = " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."
            speaker = "Rick" if rng.random() < 0.4 else rng.choice(SPEAKERS[1:])
            script.append(f"{speaker}: {text}")
    return script


def load_samples(args: argparse.Namespace) -> tuple[list[Sample], list[str]]:
    if args.data is not None:
        samples = read_jsonl(args.data / TRAIN_FILE)
        return samples, [t for s in samples for t in (*s.context, s.response)]
    script = synthetic_script(args.lines, args.seed)
    stats = PrepareStats()
    samples = []
    for scene in parse_transcript(script, stats):
        samples += windowed_samples(scene, "Rick", window=7, min_context=1, stats=stats)
    return samples, [line.split(": ", 1)[-1] for line in script]


def load_model(args: argparse.Namespace, corpus: list[str], workdir: Path) -> tuple[Any, Any]:
    from ibot.finetune.train import load_causal_lm, load_tokenizer

    if args.model is not None:
        import torch

        return load_causal_lm(args.model, torch.float32), load_tokenizer(args.model)
    from ibot.testing.tiny_model import build_tiny_model

    path = build_tiny_model(
        workdir / "model", corpus=corpus, n_positions=1024, vocab_size=4096, **SIZES[args.size]
    )
    import torch

    model, tokenizer = load_causal_lm(path, torch.float32), load_tokenizer(path)
    if args.size == "gpt2":
        model.resize_token_embeddings(GPT2_VOCAB)  # GPT-2's output layer costs its share
    return model, tokenizer


def fixed_batches(
    features: list[dict[str, list[int]]], batch_size: int, pad: int, seed: int
) -> Iterator[dict[str, Any]]:
    """The tutorials: one epoch in random order, every sequence padded to a 128-token block."""
    import torch

    order = list(range(len(features)))
    random.Random(seed).shuffle(order)
    for start in range(0, len(order) - batch_size + 1, batch_size):
        rows = [features[i]["input_ids"][:BLOCK] for i in order[start : start + batch_size]]
        input_ids = torch.full((len(rows), BLOCK), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), BLOCK), dtype=torch.long)
        for r, ids in enumerate(rows):
            input_ids[r, : len(ids)] = torch.tensor(ids)
            mask[r, : len(ids)] = 1
        yield {"input_ids": input_ids, "attention_mask": mask, "labels": input_ids.clone()}


def our_batches(
    features: list[dict[str, list[int]]], batch_size: int, pad: int, seed: int, cuda: bool
) -> Iterator[dict[str, Any]]:
    """ibot finetune train: one epoch of length-grouped batches padded to their longest."""
    import torch
    from transformers.trainer_pt_utils import LengthGroupedSampler

    collator = DynamicPaddingCollator(pad, pad_to_multiple_of=8 if cuda else None, max_length=BLOCK)
    lengths = [len(f["input_ids"]) for f in features]
    generator = torch.Generator().manual_seed(seed)
    order = list(LengthGroupedSampler(batch_size, lengths=lengths, generator=generator))
    for start in range(0, len(order) - batch_size + 1, batch_size):
        yield collator([features[i] for i in order[start : start + batch_size]])


def run(
    model: Any,
    make_batches: Callable[[int], Iterator[dict[str, Any]]],
    args: argparse.Namespace,
    device: Any,
    autocast: Any,
) -> dict[str, Any]:
    """`--warmup` untimed steps, then one timed epoch (or `--steps` steps of it)."""
    import torch

    model = copy.deepcopy(model).to(device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)

    def step(batch: dict[str, Any]) -> dict[str, Any]:
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return batch

    for _, batch in zip(range(args.warmup), make_batches(args.seed + 1), strict=False):
        step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    real = positions = steps = 0
    started = time.perf_counter()
    for batch in make_batches(args.seed):
        if args.steps and steps == args.steps:
            break
        batch = step(batch)
        steps += 1
        real += int(batch["attention_mask"].sum())
        positions += batch["input_ids"].numel()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return {
        "tokens_per_s": round(real / seconds, 1),
        "real_tokens": real,
        "padding_fraction": round(1 - real / positions, 3),
        "steps": steps,
        "seconds": round(seconds, 3),
    }


def main(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from ibot.finetune.runtime import dtype_name, pick_device, pick_dtype

    device = pick_device(args.device)
    if args.size is None:
        args.size = "gpt2" if device.type == "cuda" else "small"
    torch.manual_seed(args.seed)
    samples, corpus = load_samples(args)
    with tempfile.TemporaryDirectory() as workdir:
        model, tokenizer = load_model(args, corpus, Path(workdir))
    pad = tokenizer.pad_token_id
    features = [
        {"input_ids": e.input_ids, "labels": e.labels}
        for e in encode_samples(
            tokenizer, [(s.context, s.response) for s in samples], max_length=BLOCK
        )
    ]
    lengths = sorted(len(f["input_ids"]) for f in features)
    dtype = pick_dtype(device, "auto")
    autocast = dtype if dtype != torch.float32 else None
    params = sum(p.numel() for p in model.parameters())
    print(
        f"{len(features)} samples, {lengths[len(lengths) // 2]} tokens median, "
        f"{sum(n >= BLOCK for n in lengths)} at the {BLOCK}-token cut; model "
        f"{args.model or args.size} ({params / 1e6:.1f}M parameters) on {device.type}, "
        f"{dtype_name(dtype)}; batch {args.batch_size}, "
        f"{args.steps or 'one epoch of'} timed steps"
    )
    size = args.batch_size
    cuda = device.type == "cuda"
    modes = {
        "fixed_128": lambda seed: fixed_batches(features, size, pad, seed),
        "ours": lambda seed: our_batches(features, size, pad, seed, cuda),
    }
    labels = {"fixed_128": f"fixed {BLOCK}-token blocks", "ours": "ours (dynamic padding)"}
    best: dict[str, dict[str, Any]] = {}
    for round_number in range(1, args.rounds + 1):  # interleaved: noise hits both alike
        for name, make_batches in modes.items():
            result = run(model, make_batches, args, device, autocast)
            print(
                f"round {round_number}, {labels[name]:<24} {result['tokens_per_s']:>10.1f} "
                f"real tokens/s ({result['padding_fraction']:.0%} padding, "
                f"{result['steps']} steps in {result['seconds']:.1f} s)"
            )
            if name not in best or result["tokens_per_s"] > best[name]["tokens_per_s"]:
                best[name] = result
    ours, fixed = best["ours"], best["fixed_128"]
    ratio = round(ours["tokens_per_s"] / fixed["tokens_per_s"], 2)
    print(
        f"best of {args.rounds} rounds: ours {ours['tokens_per_s']}, "
        f"fixed {fixed['tokens_per_s']} real tokens/s: {ratio}x"
    )
    return {
        "ours_tokens_per_s": ours["tokens_per_s"],
        "fixed_128_tokens_per_s": fixed["tokens_per_s"],
        "ratio": ratio,
        "device": device.type,
        "precision": dtype_name(dtype),
        "model": str(args.model) if args.model else args.size,
        "parameters": params,
        "samples": len(features),
        "batch_size": args.batch_size,
        "steps": fixed["steps"],
        "ours": ours,
        "fixed_128": fixed,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")
    parser.add_argument("--size", choices=tuple(SIZES), default=None, help="random model size")
    parser.add_argument("--model", type=Path, default=None, help="a model directory instead")
    parser.add_argument("--data", type=Path, default=None, help="a `prepare` output directory")
    parser.add_argument(
        "--steps", type=int, default=0, help="timed optimizer steps (default 0: one epoch)"
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lines", type=int, default=2000, help="synthetic script lines")
    parser.add_argument("--rounds", type=int, default=2, help="timed runs; the best counts")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    result = main(parse_args())
    print(json.dumps(result))
