"""Exact prices and image tokens: what the "Cost: X USD" footers and the ledger rely on."""

from __future__ import annotations

import datetime
from decimal import Decimal
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from ibot.domain import Usage
from ibot.money import format_usd, usd_to_micros
from ibot.pricing import ModelPrice, PriceTable, default_price_table, fit_image, image_tokens


@pytest.fixture(scope="module")
def prices() -> PriceTable:
    return default_price_table()


# --- the shipped table ------------------------------------------------------------------


def test_shipped_table_loads_with_its_date(prices: PriceTable) -> None:
    assert isinstance(prices.read_on, datetime.date)
    assert prices.read_on == datetime.date(2026, 11, 21)
    assert prices.source
    expected = {
        "gpt-4o-2024-05-13": ("5.00", None, "15.00"),
        "gpt-4o": ("2.50", "1.25", "10.00"),
        "gpt-4o-2024-08-06": ("2.50", "1.25", "10.00"),
        "gpt-4o-2024-11-20": ("2.50", "1.25", "10.00"),
        "gpt-4o-mini": ("0.15", "0.075", "0.60"),
        "gpt-4o-mini-2024-07-18": ("0.15", "0.075", "0.60"),
        "gpt-4.1": ("2.00", "0.50", "8.00"),
        "gpt-4.1-2025-04-14": ("2.00", "0.50", "8.00"),
        "gpt-4.1-mini": ("0.40", "0.10", "1.60"),
        "gpt-4.1-nano": ("0.10", "0.025", "0.40"),
        "text-embedding-3-small": ("0.02", None, None),  # input only
        "text-embedding-3-large": ("0.13", None, None),
    }
    assert set(prices.models) == set(expected)
    for name, (inp, cached, out) in expected.items():
        row = prices.models[name]
        assert row.input == Decimal(inp), name
        assert row.cached_input == (None if cached is None else Decimal(cached)), name
        assert row.output == (None if out is None else Decimal(out)), name


# --- cost ----------------------------------------------------------------------------------


def test_cost_is_exact_micro_dollars(prices: PriceTable) -> None:
    usage = Usage(prompt_tokens=1000, completion_tokens=500, cached_tokens=200)
    # 800 x 2.50 + 200 x 1.25 + 500 x 10.00 micro-dollars
    assert prices.cost_micros(usage, "gpt-4o") == 7250


def test_launch_snapshot_bills_cached_tokens_at_full_input(prices: PriceTable) -> None:
    usage = Usage(prompt_tokens=1000, completion_tokens=500, cached_tokens=200)
    # no caching discount: 1000 x 5.00 + 500 x 15.00
    assert prices.cost_micros(usage, "gpt-4o-2024-05-13") == 12_500


def test_cost_rounds_once_half_up(prices: PriceTable) -> None:
    # 1 x 0.075 + 1 x 0.15 = 0.225 µ$ -> 0; 2 x 0.075 + 2 x 0.15 + 1 x 0.60 = 1.05 -> 1.
    assert prices.cost_micros(Usage(prompt_tokens=2, cached_tokens=1), "gpt-4o-mini") == 0
    usage = Usage(prompt_tokens=4, cached_tokens=2, completion_tokens=1)
    assert prices.cost_micros(usage, "gpt-4o-mini") == 1
    # 10 cached x 0.025 = 0.25, + 5 x 0.10 = 0.5 -> 0.75 -> 1: summed before rounding.
    usage = Usage(prompt_tokens=15, cached_tokens=10)
    assert prices.cost_micros(usage, "gpt-4.1-nano") == 1
    # exactly half a micro-dollar rounds up: 5 x 0.10 = 0.5
    assert prices.cost_micros(Usage(prompt_tokens=5), "gpt-4.1-nano") == 1


def test_cost_refuses_impossible_usage(prices: PriceTable) -> None:
    with pytest.raises(ValueError, match="cached_tokens"):
        prices.cost_micros(Usage(prompt_tokens=10, cached_tokens=11), "gpt-4o")


@pytest.mark.parametrize(
    ("model", "row"),
    [
        ("gpt-4o-2024-11-20", "gpt-4o-2024-11-20"),
        ("gpt-4o-2025-01-01", "gpt-4o"),
        ("gpt-4o-mini-2099-01-01", "gpt-4o-mini"),
        ("gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"),
        ("gpt-4.1-2030-12-31", "gpt-4.1"),
    ],
)
def test_snapshot_falls_back_to_its_own_family(prices: PriceTable, model: str, row: str) -> None:
    price = prices.lookup(model)
    assert price is not None
    assert price.name == row


def test_mini_snapshot_is_never_priced_as_gpt_4o() -> None:
    gpt_4o = ModelPrice("gpt-4o", Decimal("2.50"), Decimal("1.25"), Decimal("10.00"))
    table = PriceTable(datetime.date(2026, 11, 21), "test", {"gpt-4o": gpt_4o})
    assert table.lookup("gpt-4o-mini-2024-07-18") is None
    assert table.lookup("gpt-4o-mini") is None
    assert table.cost_micros(Usage(prompt_tokens=1000), "gpt-4o-mini-2099-01-01") is None


def test_unknown_model_is_unpriced_and_warned_once(prices: PriceTable) -> None:
    table = default_price_table()  # fresh: its warn-once memory is empty
    usage = Usage(prompt_tokens=1000, completion_tokens=10)
    with capture_logs() as logs:
        assert table.cost_micros(usage, "gpt-9-turbo") is None
        assert table.cost_micros(usage, "gpt-9-turbo") is None
        assert table.cost_micros(usage, "ft:gpt-4o:acme::x1") is None
        assert table.cost_micros(usage, "gpt-4o") == prices.cost_micros(usage, "gpt-4o")
    warnings = [e for e in logs if e["event"] == "price_unknown"]
    assert [e["model"] for e in warnings] == ["gpt-9-turbo", "ft:gpt-4o:acme::x1"]
    assert all(e["log_level"] == "warning" for e in warnings)


# --- images --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "width", "height", "detail", "tokens"),
    [
        ("gpt-4o", 1024, 1024, "high", 765),  # OpenAI vision guide
        ("gpt-4o", 2048, 4096, "high", 1105),  # OpenAI vision guide
        ("gpt-4o", 4096, 8192, "low", 85),  # OpenAI vision guide
        ("gpt-4o", 4096, 8192, "high", 1105),  # same as 2048x4096 once fitted
        ("gpt-4o", 300, 200, "high", 85 + 170),  # never enlarged: one tile
        ("gpt-4o", 513, 500, "high", 85 + 2 * 170),
        ("gpt-4o-mini", 1024, 1024, "high", 25_501),  # OpenAI vision guide
        ("gpt-4o-mini", 1024, 1024, "low", 2833),
        ("gpt-4o-2024-11-20", 1024, 1024, "high", 765),
        ("gpt-4.1", 1024, 1024, "high", 765),
    ],
)
def test_image_tokens_match_openai_examples(
    prices: PriceTable, model: str, width: int, height: int, detail: str, tokens: int
) -> None:
    assert prices.image_tokens(model, width, height, detail) == tokens


@pytest.mark.parametrize(
    ("size", "fitted"),
    [
        ((1024, 1024), (768, 768)),
        ((2048, 4096), (768, 1536)),
        ((4096, 8192), (768, 1536)),
        ((4096, 2048), (1536, 768)),
        ((300, 200), (300, 200)),
        ((700, 5000), (286, 2048)),  # fit to 2048 first; 286 < 768 so no second shrink
        ((1920, 1080), (1365, 768)),
    ],
)
def test_fit_image_high(size: tuple[int, int], fitted: tuple[int, int]) -> None:
    assert fit_image(*size, "high") == fitted


def test_image_tokens_refuse_unknown_parameters(prices: PriceTable) -> None:
    with pytest.raises(ValueError, match=r"gpt-4\.1-mini"):
        prices.image_tokens("gpt-4.1-mini", 1024, 1024, "high")
    with pytest.raises(ValueError, match="gpt-9"):
        prices.image_tokens("gpt-9", 1024, 1024, "high")
    with pytest.raises(ValueError, match="auto"):
        image_tokens(1024, 1024, "auto", prices.models["gpt-4o"])


# --- bad price files -------------------------------------------------------------------------


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "prices.toml"
    path.write_text('read_on = 2026-11-21\nsource = "test"\n' + body, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ("input = -1.0\noutput = 1.0", "input"),
        ('input = 1.0\noutput = "lots"', "output"),
        ("input = 1.0\noutput = 1.0\ncached_input = true", "cached_input"),
        ("output = 1.0", "input"),
        ("input = 1.0\noutput = 1.0\ncache_input = 0.5", "cache_input"),
        ("input = 1.0\noutput = 1.0\nimage_base_tokens = 85", "image_tile_tokens"),
        ("input = 1.0\noutput = 1.0\nimage_base_tokens = 85\nimage_tile_tokens = 1.5", "tile"),
    ],
)
def test_bad_price_file_names_model_and_field(tmp_path: Path, row: str, field: str) -> None:
    path = _write(tmp_path, f'[models."gpt-broken"]\n{row}\n')
    with pytest.raises(ValueError, match="gpt-broken") as info:
        PriceTable.load(path)
    assert field in str(info.value)


def test_read_on_must_be_a_date(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(
        'read_on = "last week"\nsource = "x"\n[models.m]\ninput = 1\noutput = 2\n', "utf-8"
    )
    with pytest.raises(ValueError, match="read_on"):
        PriceTable.load(path)


def test_prices_written_as_strings_are_exact(tmp_path: Path) -> None:
    path = _write(tmp_path, '[models.m]\ninput = "0.075"\noutput = 3\n')
    row = PriceTable.load(path).models["m"]
    assert row.input == Decimal("0.075")
    assert row.output == Decimal(3)
    assert row.cached_input is None


# --- money formatting ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("micros", "kwargs", "text"),
    [
        (12345, {}, "0.0123"),
        (None, {}, "?"),
        (0, {}, "0.0000"),
        (7250, {}, "0.0073"),  # half up
        (1_500_000, {"digits": 2}, "1.50"),
        (12345, {"digits": 6}, "0.012345"),
    ],
)
def test_format_usd(micros: int | None, kwargs: dict[str, int], text: str) -> None:
    assert format_usd(micros, **kwargs) == text


@pytest.mark.parametrize(
    ("value", "micros"),
    [("5.00", 5_000_000), (0.1, 100_000), (Decimal("0.000001"), 1), (2, 2_000_000)],
)
def test_usd_to_micros_is_exact(value: str | float | Decimal, micros: int) -> None:
    assert usd_to_micros(value) == micros


@pytest.mark.parametrize("value", ["-1", "abc", "nan", float("inf")])
def test_usd_to_micros_refuses_nonsense(value: str | float) -> None:
    with pytest.raises(ValueError):
        usd_to_micros(value)
