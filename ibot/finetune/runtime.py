"""Small helpers shared by the fine-tuning commands: progress bars, device and dtype.

Progress bars use tqdm (installed with transformers); without it, the same code runs
without bars, so `prepare` works on a machine without the `local` extra.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

Precision = Literal["auto", "float32", "bfloat16", "float16"]


def progress[T](
    items: Iterable[T],
    *,
    desc: str,
    total: int | None = None,
    enabled: bool = True,
    unit: str = "it",
) -> Iterator[T]:
    """Iterate with a tqdm bar on stderr (a plain iteration when disabled or tqdm is absent)."""
    if enabled:
        try:
            from tqdm.auto import tqdm
        except ImportError:  # pragma: no cover - tqdm comes with transformers
            pass
        else:
            yield from tqdm(items, desc=desc, total=total, unit=unit, leave=False)
            return
    yield from items


def pick_device(requested: str = "auto") -> torch.device:
    """CUDA when available (or asked), else CPU; asking for CUDA without one is an error."""
    import torch

    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("CUDA was asked for but no GPU is available")
    return torch.device(requested)


def pick_dtype(device: torch.device, requested: str = "auto") -> torch.dtype:
    """fp32 on the CPU; on a GPU bf16 where supported, else fp16 (unless one is forced)."""
    import torch

    if requested != "auto":
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[
            requested
        ]
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def dtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")
