"""Money: integer micro-dollars, the conversions into and out of them, and USD strings.

Why a module of its own: every amount iBot stores or adds up (prices, the ledger,
budget caps, reports) is an `int` of micro-dollars, and the settings, the price table,
the budgets, the footers and the reports all convert to and from that unit. Doing it in
one place keeps one scale, one rounding rule (half up, once) and one way of writing an
amount, so that a footer, a budget message and a report never disagree about a cent.

Nothing here imports anything but the standard library: the settings import it too.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

MICROS_PER_USD = 1_000_000
# A micro-dollar is 10**-6 USD: six decimals show an amount exactly, with no rounding.
EXACT_DIGITS = 6


def decimal_to_micros(amount: Decimal) -> int:
    """A USD amount as integer micro-dollars, sub-micro digits rounded half up."""
    return int((amount * MICROS_PER_USD).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def usd_to_micros(value: str | float | Decimal) -> int:
    """A USD amount from config (e.g. a budget "5.00") as micro-dollars, exactly.

    Going through str() keeps 0.1 as 0.1 rather than its binary approximation. Sub-micro
    digits are rounded half up; negative and non-finite amounts are refused.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a USD amount: {value!r}")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"not a USD amount: {value!r}") from None
    if not amount.is_finite():
        raise ValueError(f"not a finite USD amount: {value!r}")
    if amount < 0:
        raise ValueError(f"USD amount must not be negative: {value!r}")
    return decimal_to_micros(amount)


def micros_to_usd(micros: int) -> Decimal:
    """Micro-dollars as an exact `Decimal` of USD: 7250 -> Decimal('0.00725')."""
    return Decimal(micros) / MICROS_PER_USD


def format_usd(micros: int | None, *, digits: int = 4, unknown: str = "?") -> str:
    """Micro-dollars as a USD amount with `digits` decimals, rounded half up (away from
    zero on a tie), by integer arithmetic only.

    The default is what footers and the Discord messages show: 12345 -> "0.0123", and
    `unknown` ("?") for a cost nobody can name (None). `digits=EXACT_DIGITS` never
    rounds (see `exact_usd`).
    """
    if micros is None:
        return unknown
    if digits < 0:
        raise ValueError(f"digits must not be negative, got {digits}")
    sign = "-" if micros < 0 else ""
    magnitude = abs(micros)
    if digits >= EXACT_DIGITS:
        units = magnitude * 10 ** (digits - EXACT_DIGITS)
    else:
        step = 10 ** (EXACT_DIGITS - digits)
        units, rest = divmod(magnitude, step)
        if 2 * rest >= step:
            units += 1
    whole, fraction = divmod(units, 10**digits)
    return f"{sign}{whole}.{fraction:0{digits}d}" if digits else f"{sign}{whole}"


def exact_usd(micros: int | None) -> str:
    """Every micro-dollar shown, for reports and exports: 7250 -> "0.007250", and an
    unknown cost (None) is an empty cell rather than "?"."""
    return format_usd(micros, digits=EXACT_DIGITS, unknown="")
