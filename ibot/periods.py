"""Periods of time, in UTC: what a report covers and what a budget cap counts.

Why a module of its own: the reports, /cost-report, the command line and the budgets
all turn "now" or what someone typed into half-open intervals start <= t < end of UTC
instants, and they must agree on where a day or a month begins. Two types, because the
two uses differ in what names an interval:

- `Period`: what a report covers, with a `label` for people ("last 7 days");
- `BudgetPeriod`: the UTC day or month a spending cap counts, with a `key` ("2026-11-21",
  "2026-11") that is stored with the alerts and must never change.

Nothing here touches the database or Discord.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Protocol

PERIOD_FORMS = "today, month, Nd (e.g. 7d), Nh (e.g. 24h), YYYY-MM-DD or YYYY-MM-DD..YYYY-MM-DD"
PERIOD_CHOICES = ("today", "7d", "30d", "month", "custom")  # what /cost-report offers
MAX_CUSTOM_DAYS = 366  # one bar a day: beyond a year the chart is unreadable
_MAX_DAYS = 100 * 366  # beyond this, datetime arithmetic overflows and nobody means it


@dataclass(frozen=True, slots=True)
class Period:
    """The half-open interval start <= created_at < end, in UTC, that a report covers."""

    start: datetime
    end: datetime
    label: str


@dataclass(frozen=True, slots=True)
class BudgetPeriod:
    """The UTC day or calendar month a budget cap counts."""

    start: datetime  # inclusive, UTC
    end: datetime  # exclusive: when the cap frees up
    key: str  # "2026-11-21" or "2026-11"


class PeriodError(ValueError):
    """A period an admin cannot have meant; `code` names the reason for translation:
    needs_from, bad_dates, too_long or unknown."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Cadence(Protocol):
    """What `period_of` needs of a budget scope: whether it counts a month or a day."""

    @property
    def monthly(self) -> bool: ...


# --- budget periods ------------------------------------------------------------------


def period_of(scope: Cadence, now: datetime) -> BudgetPeriod:
    """The UTC day (or month, for a monthly scope) that contains `now`."""
    day = _midnight(now.astimezone(UTC))
    if not scope.monthly:
        return BudgetPeriod(day, day + timedelta(days=1), day.strftime("%Y-%m-%d"))
    start, end = _month_of(day)
    return BudgetPeriod(start, end, start.strftime("%Y-%m"))


# --- report periods ------------------------------------------------------------------

_RELATIVE = re.compile(r"(\d{1,6})([dh])")
_DATE = r"\d{4}-\d{2}-\d{2}"
_RANGE = re.compile(rf"({_DATE})(?:\.\.({_DATE}))?")


def parse_period(spec: str, *, now: datetime | None = None) -> Period:
    """Turn what a user types (`7d`, `today`, `2025-01-01..2025-01-31`…) into a Period.

    Every form is in UTC, like the ledger. Ranges of dates are inclusive of both days.
    """
    now = _aware_utc(now or datetime.now(UTC))
    text = spec.strip().lower()
    midnight = _midnight(now)
    if text == "today":
        return Period(midnight, midnight + timedelta(days=1), f"today ({midnight:%Y-%m-%d} UTC)")
    if text == "month":
        start, end = _month_of(midnight)
        return Period(start, end, f"month {start:%Y-%m} (UTC)")
    if match := _RELATIVE.fullmatch(text):
        return _relative(int(match[1]), match[2], now, spec)
    if match := _RANGE.fullmatch(text):
        return _date_range(match[1], match[2] or match[1], spec)
    raise ValueError(f"unknown period {spec!r}: use {PERIOD_FORMS}")


def choose_period(
    choice: str = "7d",
    first: str | None = None,
    last: str | None = None,
    *,
    now: datetime | None = None,
) -> Period:
    """The period an admin picked: one of PERIOD_CHOICES, or from/to dates (YYYY-MM-DD,
    both days included, UTC). Dates win over the choice; `to` alone is refused, `from`
    alone runs to today. Raises PeriodError."""
    now = now or datetime.now(UTC)
    first = first.strip() if first and first.strip() else None
    last = last.strip() if last and last.strip() else None
    if first is None and last is None:
        if choice == "custom":
            raise PeriodError("needs_from", "a custom period needs a from date (YYYY-MM-DD)")
        if choice not in PERIOD_CHOICES:
            raise PeriodError("unknown", f"unknown period {choice!r}: use {PERIOD_CHOICES}")
        return parse_period(choice, now=now)
    if first is None:
        raise PeriodError("needs_from", "a custom period needs a from date (YYYY-MM-DD)")
    last = last or now.astimezone(UTC).date().isoformat()
    try:
        period = parse_period(f"{first}..{last}", now=now)
    except ValueError as err:
        raise PeriodError("bad_dates", str(err)) from None
    if period.end - period.start > timedelta(days=MAX_CUSTOM_DAYS):
        raise PeriodError("too_long", f"a custom period covers at most {MAX_CUSTOM_DAYS} days")
    return period


def previous_period(period: Period, *, now: datetime | None = None) -> Period:
    """The period of the same length just before `period`.

    A period that is not over yet (today, this month) is compared by its elapsed part:
    today until 14:00 against yesterday 00:00 to today 00:00 would always look like a
    drop, so it is compared with the 14 hours before it instead.
    """
    now = now or datetime.now(UTC)
    elapsed_end = min(period.end, max(now, period.start))
    length = elapsed_end - period.start
    if length <= timedelta(0):
        length = period.end - period.start
    start = period.start - length
    label = f"{start:%Y-%m-%d %H:%M}..{period.start:%Y-%m-%d %H:%M} UTC"
    return Period(start, period.start, label)


def period_days(period: Period) -> list[date]:
    """Every UTC day the period touches, in order (a 30-day period touches 31)."""
    first = period.start.astimezone(UTC).date()
    last = (period.end - timedelta(microseconds=1)).astimezone(UTC).date()
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def _relative(count: int, unit: str, now: datetime, spec: str) -> Period:
    if count <= 0:
        raise ValueError(f"period {spec!r} must cover at least 1 {unit}: use {PERIOD_FORMS}")
    delta = timedelta(days=count) if unit == "d" else timedelta(hours=count)
    if delta > timedelta(days=_MAX_DAYS):
        raise ValueError(f"period {spec!r} is too long (at most {_MAX_DAYS} days)")
    word = "day" if unit == "d" else "hour"
    plural = "" if count == 1 else "s"
    return Period(now - delta, now, f"last {count} {word}{plural}")


def _date_range(first_text: str, last_text: str, spec: str) -> Period:
    try:
        first = date.fromisoformat(first_text)
        last = date.fromisoformat(last_text)
    except ValueError:
        raise ValueError(f"period {spec!r} has an impossible date: use {PERIOD_FORMS}") from None
    if last < first:
        raise ValueError(f"period {spec!r} ends before it starts")
    start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    try:
        end = datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1)
    except OverflowError:
        raise ValueError(f"period {spec!r} ends too late") from None
    label = f"{first.isoformat()}" if first == last else f"{first}..{last}"
    return Period(start, end, f"{label} (UTC)")


# --- shared arithmetic ---------------------------------------------------------------


def _aware_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _midnight(moment: datetime) -> datetime:
    """The start of `moment`'s day, in `moment`'s own zone (UTC here)."""
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def _month_of(midnight: datetime) -> tuple[datetime, datetime]:
    """The calendar month containing the day that starts at `midnight`: [first, next first)."""
    start = midnight.replace(day=1)
    return start, (start + timedelta(days=32)).replace(day=1)
