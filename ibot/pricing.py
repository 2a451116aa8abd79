"""Exact cost of model calls, in integer micro-dollars, from a dated price table.

Prices live in config/prices.toml with the date they were read, never in code, because
they change. Every amount is a `Decimal` until the one final rounding, so that a ledger of
thousands of calls adds up to exactly what the per-call footers said.

A call is priced by the model that answered (`response.model`). A dated snapshot missing
from the table falls back to its family row (gpt-4o-2025-01-01 -> gpt-4o), but a model
with no row is left unpriced (None) rather than priced at some other model's rate: an
unknown price must show as "?" and a warning, not as a plausible wrong number.
"""

from __future__ import annotations

import datetime
import math
import re
import threading
import tomllib
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import structlog

from ibot.domain import Usage

# Size limits and tile edge of the tile method (OpenAI vision guide, "calculating costs").
_MAX_SIDE = 2048
_SHORT_SIDE = 768
_TILE = 512

# A snapshot suffix: -2024-11-20 (current style) or -0613 (gpt-4-0613 style).
_SNAPSHOT_SUFFIX = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{4})$")

_PRICE_FIELDS = ("input", "cached_input", "output")
_IMAGE_FIELDS = ("image_base_tokens", "image_tile_tokens")
_KNOWN_FIELDS = frozenset(_PRICE_FIELDS + _IMAGE_FIELDS)

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ModelPrice:
    """One row of the table; prices in USD per 1M tokens."""

    name: str
    input: Decimal
    cached_input: Decimal | None  # None: no caching discount, cached tokens billed as input
    output: Decimal | None  # None: an input-only model (embeddings), which bills no output
    image_base_tokens: int | None = None
    image_tile_tokens: int | None = None


class PriceTable:
    """The price rows of config/prices.toml, with the date they were read."""

    def __init__(self, read_on: datetime.date, source: str, models: dict[str, ModelPrice]) -> None:
        self.read_on = read_on
        self.source = source
        self.models = models
        self._warned: set[str] = set()
        self._warned_lock = threading.Lock()

    @classmethod
    def load(cls, path: str | Path) -> PriceTable:
        """Read and validate a prices file; a ValueError names the model and field at fault."""
        path = Path(path)
        try:
            with path.open("rb") as fh:
                # parse_float=Decimal keeps 0.075 exactly 0.075, as written in the file.
                data = tomllib.load(fh, parse_float=Decimal)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: not valid TOML: {exc}") from exc
        return cls._from_mapping(data, str(path))

    @classmethod
    def _from_mapping(cls, data: dict[str, Any], where: str) -> PriceTable:
        read_on = data.get("read_on")
        if not isinstance(read_on, datetime.date) or isinstance(read_on, datetime.datetime):
            raise ValueError(f"{where}: read_on must be a TOML date such as 2026-11-21")
        source = data.get("source")
        if not isinstance(source, str) or not source.strip():
            raise ValueError(f"{where}: source must be a non-empty string")
        rows = data.get("models")
        if not isinstance(rows, dict) or not rows:
            raise ValueError(f'{where}: no [models."<name>"] tables')
        models = {name: _parse_row(name, row, where) for name, row in rows.items()}
        return cls(read_on=read_on, source=source, models=models)

    def lookup(self, model: str) -> ModelPrice | None:
        """The row for `model`: its own, else its family's for a dated snapshot, else None.

        Only a snapshot suffix is stripped, once, so gpt-4o-mini-2099-01-01 can become
        gpt-4o-mini but never gpt-4o.
        """
        row = self.models.get(model)
        if row is not None:
            return row
        family = _SNAPSHOT_SUFFIX.sub("", model)
        if family != model:
            return self.models.get(family)
        return None

    def cost_micros(self, usage: Usage, model: str) -> int | None:
        """What `usage` costs at `model`'s prices, in micro-dollars; None if unpriced."""
        price = self.lookup(model)
        if price is None:
            self._warn_unknown(model)
            return None
        if price.output is None and usage.completion_tokens:
            # Output from an input-only model is nothing its row can price.
            self._warn_unknown(model)
            return None
        return cost_micros(usage, price)

    def image_tokens(self, model: str, width: int, height: int, detail: str) -> int:
        """Prompt tokens of one image for `model`; ValueError if the model cannot say."""
        price = self.lookup(model)
        if price is None:
            raise ValueError(f"no price row for model {model!r}: its image tokens are unknown")
        return image_tokens(width, height, detail, price)

    def _warn_unknown(self, model: str) -> None:
        with self._warned_lock:
            if model in self._warned:
                return
            self._warned.add(model)
        log.warning("price_unknown", model=model)


def cost_micros(usage: Usage, price: ModelPrice) -> int:
    """Exact cost in micro-dollars, rounded once (half up).

    tokens x USD-per-1M-tokens is already micro-dollars, so no division is needed.
    `usage.prompt_tokens` includes the cached and image tokens, as the API reports it.
    An input-only model (no output price, as the embedding models) bills its input
    tokens only; a usage with output tokens is a ValueError for it.
    """
    for field, value in (
        ("prompt_tokens", usage.prompt_tokens),
        ("completion_tokens", usage.completion_tokens),
        ("cached_tokens", usage.cached_tokens),
    ):
        if value < 0:
            raise ValueError(f"usage.{field} is negative: {value}")
    if usage.cached_tokens > usage.prompt_tokens:
        raise ValueError(
            f"usage.cached_tokens ({usage.cached_tokens}) exceeds "
            f"prompt_tokens ({usage.prompt_tokens})"
        )
    if price.output is None and usage.completion_tokens:
        raise ValueError(
            f"model {price.name!r} bills input only, yet the usage has "
            f"{usage.completion_tokens} completion tokens"
        )
    cached_rate = price.input if price.cached_input is None else price.cached_input
    output_rate = price.output if price.output is not None else Decimal(0)
    total = (
        (usage.prompt_tokens - usage.cached_tokens) * price.input
        + usage.cached_tokens * cached_rate
        + usage.completion_tokens * output_rate
    )
    return int(total.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def fit_image(width: int, height: int, detail: str) -> tuple[int, int]:
    """The size the tile method counts for an image sent at `detail`.

    high: shrink to fit within 2048x2048, then shrink so the shortest side is 768; never
    enlarge; keep the aspect ratio, rounding the scaled side down (the documented examples
    are exact either way; flooring is what OpenAI's patch-method docs and common
    implementations do). low: the image is sent as is and counted as one base charge, so
    its size is returned unchanged.
    """
    _check_size(width, height)
    _check_detail(detail)
    if detail == "low":
        return width, height
    if max(width, height) > _MAX_SIDE:
        width, height = _scale_longest(width, height, _MAX_SIDE)
    if min(width, height) > _SHORT_SIDE:
        width, height = _scale_shortest(width, height, _SHORT_SIDE)
    return width, height


def image_tokens(width: int, height: int, detail: str, price: ModelPrice) -> int:
    """Prompt tokens of one image: base (low) or base + tile x 512 px tiles (high)."""
    base, tile = price.image_base_tokens, price.image_tile_tokens
    if base is None or tile is None:
        raise ValueError(
            f"image token parameters for model {price.name!r} are unknown "
            "(add image_base_tokens/image_tile_tokens to its row if it uses 512 px tiles)"
        )
    fitted_w, fitted_h = fit_image(width, height, detail)
    if detail == "low":
        return base
    return base + tile * math.ceil(fitted_w / _TILE) * math.ceil(fitted_h / _TILE)


def default_price_table() -> PriceTable:
    """The repository's own config/prices.toml."""
    return PriceTable.load(Path(__file__).resolve().parents[1] / "config" / "prices.toml")


def _parse_row(name: str, row: Any, where: str) -> ModelPrice:
    if not isinstance(row, dict):
        raise ValueError(f"{where}: model {name!r}: expected a table of prices")
    unknown = sorted(set(row) - _KNOWN_FIELDS)
    if unknown:
        raise ValueError(f"{where}: model {name!r}: unknown field(s) {', '.join(unknown)}")
    # `output` may be left out for an input-only model (embeddings): it bills no output.
    if "input" not in row:
        raise ValueError(f"{where}: model {name!r}: field 'input' is missing")
    prices = {
        field: _price(name, field, row[field], where) for field in _PRICE_FIELDS if field in row
    }
    images = {
        field: _tokens(name, field, row[field], where) for field in _IMAGE_FIELDS if field in row
    }
    if len(images) == 1:
        missing = next(f for f in _IMAGE_FIELDS if f not in images)
        raise ValueError(f"{where}: model {name!r}: field {missing!r} is missing")
    return ModelPrice(
        name=name,
        input=prices["input"],
        cached_input=prices.get("cached_input"),
        output=prices.get("output"),
        image_base_tokens=images.get("image_base_tokens"),
        image_tile_tokens=images.get("image_tile_tokens"),
    )


def _price(model: str, field: str, value: Any, where: str) -> Decimal:
    bad = ValueError(
        f"{where}: model {model!r}: field {field!r} must be a non-negative number, got {value!r}"
    )
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise bad
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise bad from None
    if not amount.is_finite() or amount < 0:
        raise bad
    return amount


def _tokens(model: str, field: str, value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(
            f"{where}: model {model!r}: field {field!r} must be a non-negative integer, "
            f"got {value!r}"
        )
    return value


def _check_size(width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")


def _check_detail(detail: str) -> None:
    if detail not in ("low", "high"):
        raise ValueError(
            f"image detail must be 'low' or 'high', got {detail!r} "
            "('auto' lets the server choose, so no estimate can be exact)"
        )


def _scale_longest(width: int, height: int, target: int) -> tuple[int, int]:
    if width >= height:
        return target, max(1, height * target // width)
    return max(1, width * target // height), target


def _scale_shortest(width: int, height: int, target: int) -> tuple[int, int]:
    if width <= height:
        return target, max(1, height * target // width)
    return max(1, width * target // height), target
