"""A tiny GPT-2 and its byte-level BPE tokenizer, built from scratch on local text.

No model can be downloaded where the tests run, yet the local backend and the fine-tuning
pipeline must be exercised through their real loading code (`from_pretrained` on a
directory). This builds a randomly initialised GPT-2 small enough for two CPU cores, plus a
byte-level BPE tokenizer trained on `corpus`, both saved with `save_pretrained` so the
directory looks exactly like `microsoft/DialoGPT-small` put on disk (end-of-text token
`<|endoftext|>` as bos, eos, unk and pad; no chat template).

Example::

    from ibot.testing.tiny_model import build_tiny_model

    model_dir = build_tiny_model(tmp_path / "tiny")
    backend = LocalBackend(LocalModelSettings(path=model_dir))

torch, tokenizers and transformers are imported inside the function, so importing this
module costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

EOS = "<|endoftext|>"

# Enough varied text for a few hundred BPE merges; French and English, forum-help flavoured.
DEFAULT_CORPUS: tuple[str, ...] = (
    "Bonjour, mon programme plante quand je lance la commande.",
    "As-tu regardé le message d'erreur complet ? Copie-le ici.",
    "Hello, my bot does not answer in the forum channel.",
    "Check that the bot has the permission to read and send messages.",
    "Merci beaucoup, ça marche maintenant !",
    "Thanks, that fixed it. The token was wrong.",
    "Comment installer Python sur Windows ?",
    "Télécharge l'installateur sur python.org et coche Add to PATH.",
    "Why does pip say that the module is not found?",
    "You are probably using another Python than the one you installed it into.",
    "Quelle est la différence entre une liste et un tuple ?",
    "Une liste se modifie, un tuple non : il est immuable.",
    "How do I read a CSV file with pandas?",
    "Use pandas.read_csv with the path of the file, then print the head.",
    "Le serveur répond 404 quand j'appelle l'API.",
    "Vérifie l'URL et la méthode HTTP, puis regarde les journaux du serveur.",
    "hey, how are you doing today?",
    "I am fine, thank you. And you?",
    "What is the weather like in Paris?",
    "It is raining again, as usual in autumn.",
    "0123456789 + - * / = ( ) [ ] { } < > : ; , . ! ? ' \" @ # $ % & _",
)


def _train_tokenizer(corpus: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        corpus, vocab_size=vocab_size, min_frequency=1, special_tokens=[EOS], show_progress=False
    )
    # transformers leaves this __init__ (*args, **kwargs) unannotated.
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=bpe._tokenizer,
        bos_token=EOS,
        eos_token=EOS,
        unk_token=EOS,
        pad_token=EOS,
        model_max_length=1_000_000,
    )
    return tokenizer


def build_tiny_model(
    directory: Path,
    *,
    corpus: Iterable[str] | None = None,
    n_layer: int = 2,
    n_embd: int = 64,
    n_positions: int = 128,
    vocab_size: int = 512,
    n_head: int = 2,
    seed: int = 0,
    model_vocab_size: int | None = None,
) -> Path:
    """Write a random tiny GPT-2 LM and a BPE tokenizer trained on `corpus` to `directory`.

    The tokenizer's vocabulary may end up smaller than `vocab_size` on a small corpus; the
    model's embedding matches the tokenizer actually trained, unless `model_vocab_size`
    asks for a bigger one (50257 makes a GPT-2-small-sized model for benchmarks; ids the
    tokenizer lacks decode to nothing). The weights are random but reproducible (`seed`),
    without touching the caller's global RNG. Returns `directory`.
    """
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    lines = [line for line in (corpus if corpus is not None else DEFAULT_CORPUS) if line]
    if not lines:
        raise ValueError("the corpus is empty")
    tokenizer = _train_tokenizer(lines, vocab_size)
    # One token in, one id out (transformers types it for a list of tokens as well).
    eos_id = cast(int, tokenizer.convert_tokens_to_ids(EOS))
    config = GPT2Config(
        vocab_size=max(len(tokenizer), model_vocab_size or 0),
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
    model.generation_config.pad_token_id = eos_id
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
