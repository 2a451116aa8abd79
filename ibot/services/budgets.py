"""Spending caps that concurrent calls can never overshoot: the gateway's budget hook.

Caps per guild, in integer micro-dollars, each optional (a `Cap`, named as stored):

- ``guild_daily`` and ``guild_monthly``: everything a guild spends, every feature;
- ``user_daily``: what one member spends in a guild through /ask-gpt and the chat channel
  (the features a member triggers at will; forum auto-replies and summaries are not
  theirs to ration);
- ``feature_daily:<feature>`` (``feature_daily:summary``…): what one feature spends in a
  guild a day, whoever triggers it, so that one costly feature cannot eat the budget of
  the others.

The cap in force for a guild is the newest `/budget set` stored in ``budget_changes``,
else the TOML value. Periods are UTC days and UTC calendar months. A cap that would be
passed makes the gateway degrade as for any cap: the feature's cheaper model, then the
local model, then a refusal naming the cap and its reset.

Before a call the gateway *reserves* its worst-case cost: spent (the ledger's real costs
of the period) + held by calls in flight + this worst case must fit under every cap that
applies, checked and held in one step that never awaits (so, on the event loop, no
other call runs in between), so 200 simultaneous calls cannot all see the same room.
After the call `settle` swaps the hold for the real cost. What was spent is read from
the ledger once per scope and period and then kept up to date in memory by `settle`, so
a burst of calls costs no SUM query each. Those reads (and the guild's caps) happen
before that step, under a lock per budget key (per guild for the caps), so a slow
database for one guild never holds back another guild's calls.

Reservations live in memory only: after a crash they are gone and only the ledger's real
costs count, which is what was actually spent.

A cap is *reached* when it first stops a call (spending plus the call's worst case would
pass it: from then on calls get the cheaper model or are refused) or when real spending
gets to it. Since reservations keep spending under a cap, the first stopped call is
nearly always how it shows. Alerts:

- a guild cap: one `Alert` per threshold (50 / 80 / 100 %, settings) and period when
  real spending crosses it, and the 100 % one as soon as the cap is reached, which also
  settles the lower thresholds not sent yet (an 80 % after "spent" would mislead);
- a member's own cap (`user_id` set) and a feature's cap (`feature` set): one `Alert`
  (threshold 100) per cap and day, when reached; 50 / 80 % of those would only be noise.

A call a cap stops only when its model has no price is refused at any spending: it
reaches no cap. A cap of 0 stops everything on purpose: it is never alerted. Alerts are
handed to an async `alert_sink` in a task of its own so an alert can neither delay nor
fail a model call. ``budget_alerts`` makes "once" survive restarts, keyed by the cap and
whose it is. The member hears of it in the refusal of their call, which names the cap
and its reset.

Calls outside any guild (the `ibot ask` command line) are not capped: caps are per guild.
Nothing here imports nextcord: the budget cog renders and posts.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import NamedTuple

import structlog

from ibot.config import BudgetsSettings
from ibot.db.budgets import BudgetChange, BudgetStore, alert_scope
from ibot.db.ledger import Ledger
from ibot.domain import CallContext, Feature
from ibot.llm.budget import BudgetExceeded, Reservation
from ibot.money import usd_to_micros
from ibot.periods import BudgetPeriod, period_of

log = structlog.get_logger("ibot.budgets")


class Scope(StrEnum):
    GUILD_DAILY = "guild_daily"
    GUILD_MONTHLY = "guild_monthly"
    USER_DAILY = "user_daily"
    FEATURE_DAILY = "feature_daily"  # one per feature: see Cap

    @property
    def monthly(self) -> bool:
        return self is Scope.GUILD_MONTHLY


@dataclass(frozen=True, slots=True)
class Cap:
    """One cap of a guild: its scope and, for a feature's daily cap, the feature."""

    scope: Scope
    feature: Feature | None = None

    def __post_init__(self) -> None:
        if (self.scope is Scope.FEATURE_DAILY) != (self.feature is not None):
            raise ValueError("a feature_daily cap names its feature, and only it does")

    @property
    def name(self) -> str:
        """As stored (`budget_changes.scope`, String(32)), typed in `/budget set` and
        named in refusals: "guild_daily", "feature_daily:summary"."""
        return (
            self.scope.value if self.feature is None else f"{self.scope.value}:{self.feature.value}"
        )

    @property
    def monthly(self) -> bool:
        return self.scope.monthly

    @classmethod
    def of(cls, value: Cap | Scope | str) -> Cap:
        """The cap a name stands for; ValueError for one that names none."""
        if isinstance(value, Cap):
            return value
        scope, _, feature = str(value).partition(":")
        return cls(Scope(scope), Feature(feature) if feature else None)


# The features a member's own daily cap applies to (/ask-gpt and the chat channel).
USER_CAPPED_FEATURES = frozenset({Feature.ASK, Feature.CHAT})
# Guild caps are alerted at every threshold of the settings; a member's cap once reached.
GUILD_SCOPES = (Scope.GUILD_DAILY, Scope.GUILD_MONTHLY)
REACHED = 100  # percent: the threshold of a reached (or spent) cap
# Every cap a guild has, in the order `/budget show` lists them.
CAPS = (
    *(Cap(scope) for scope in (Scope.GUILD_DAILY, Scope.GUILD_MONTHLY, Scope.USER_DAILY)),
    *(Cap(Scope.FEATURE_DAILY, feature) for feature in Feature),
)
# Words that remove a cap in `/budget set`.
NO_CAP_WORDS = frozenset({"none", "no", "off", "aucun", "aucune", "non", "∞"})


def parse_cap(text: str) -> int | None:
    """A cap typed in `/budget set`: "5", "2.50", "2,50 $" -> micro-dollars; "none" -> None.

    Raises ValueError for anything else (negative, not a number); 0 is a valid cap that
    stops all spending.
    """
    cleaned = text.strip().lower()
    if cleaned in NO_CAP_WORDS:
        return None
    cleaned = cleaned.replace("usd", "").replace("$", "").replace(" ", "").replace(",", ".")
    if not cleaned:
        raise ValueError(f"not a USD amount: {text!r}")
    return usd_to_micros(cleaned)


@dataclass(frozen=True, slots=True)
class Alert:
    """Spending of a cap crossed `threshold` percent in `period_key`: a guild cap, or
    (`user_id` set) that member's own daily cap, or (`feature` set) that feature's daily
    cap, reached."""

    guild_id: int
    scope: Scope
    threshold: int  # percent
    period_key: str
    spent_micros: int
    cap_micros: int
    resets_at: datetime
    user_id: int | None = None  # the member, for their own cap (Scope.USER_DAILY)
    feature: Feature | None = None  # the feature, for its cap (Scope.FEATURE_DAILY)

    @property
    def budget(self) -> str:
        """The cap's name ("feature_daily:summary"), as refusals name it."""
        return Cap(self.scope, self.feature).name


AlertSink = Callable[[Alert], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ScopeStatus:
    """One cap as `/budget show` presents it."""

    scope: Scope
    cap_micros: int | None  # None: no cap
    change: BudgetChange | None  # the /budget change in force; None: the TOML value
    spent_micros: int  # real costs of the current period
    reserved_micros: int  # held by calls in flight
    resets_at: datetime
    period_key: str
    feature: Feature | None = None  # the feature, for its own cap (Scope.FEATURE_DAILY)

    @property
    def budget(self) -> str:
        """The cap's name ("guild_daily", "feature_daily:summary")."""
        return Cap(self.scope, self.feature).name


class _Key(NamedTuple):
    """What one running total counts: a cap of a guild in one period (and member)."""

    cap: Cap
    guild_id: int
    user_id: int | None  # the member for user_daily, else None
    period_key: str


class BudgetManager:
    """The budget hook with real caps (see the module docstring)."""

    def __init__(
        self,
        *,
        ledger: Ledger,
        store: BudgetStore,
        settings: BudgetsSettings,
        alert_sink: AlertSink | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.ledger = ledger
        self.store = store
        self.alert_sink = alert_sink
        self._clock = clock
        features = settings.feature_daily_micros
        self._config_caps: dict[Cap, int | None] = {
            Cap(Scope.GUILD_DAILY): settings.guild_daily_micros,
            Cap(Scope.GUILD_MONTHLY): settings.guild_monthly_micros,
            Cap(Scope.USER_DAILY): settings.user_daily_micros,
            **{Cap(Scope.FEATURE_DAILY, f): features.get(f) for f in Feature},
        }
        # Whole percents, compared as spent * 100 >= percent * cap: no float rounding.
        percents = {
            int((Decimal(repr(t)) * 100).to_integral_value()) for t in settings.alert_thresholds
        }
        self.thresholds: tuple[int, ...] = tuple(sorted(percents))
        # Database reads happen under these, one per key (caps: one per guild), never
        # under a lock that every call shares.
        self._key_locks: defaultdict[_Key, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._guild_locks: defaultdict[int, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._changes: dict[int, dict[Cap, BudgetChange]] = {}
        self._spent: dict[_Key, int] = {}
        self._reserved: defaultdict[_Key, int] = defaultdict(int)
        self._holds: dict[int, tuple[tuple[_Key, ...], int]] = {}
        self._tokens = itertools.count(1)
        self._alerted: set[tuple[_Key, int]] = set()
        self._alert_tasks: set[asyncio.Task[None]] = set()
        self._current_day = ""

    # ---- the BudgetHook protocol ---------------------------------------------------------

    async def reserve(
        self, context: CallContext, model: str, worst_case_micros: int | None
    ) -> Reservation:
        """Hold `worst_case_micros` against every cap that applies, or raise BudgetExceeded.

        A call whose model has no price (`worst_case_micros` None) is refused as soon as
        any cap applies: nothing proves it fits. With no cap it runs and nothing is held.
        A call that costs nothing (0: the local model) always fits, even once a lowered
        cap is below what was already spent: it cannot add to the spending.
        When several caps would be passed, the one that frees up last is named: that is
        when the call could run again.
        """
        applying = self._caps_of(context)
        if not applying:
            return Reservation(context=context, model=model, micros=worst_case_micros or 0)
        guild_id = _guild_of(context)
        while True:
            now = self._clock()
            self._forget_old_periods(now)
            periods = {cap: period_of(cap, now) for cap in applying}
            keys = [self._key(cap, context, periods[cap]) for cap in applying]
            caps = await self._caps(guild_id)
            for key in keys:
                await self._load(key, periods[key.cap])
            # From here to the return nothing awaits: the check and the hold are one step.
            if all(key in self._spent for key in keys):
                break  # else a new day began while reading and dropped a key: read again
        exceeded: list[_Key] = []
        for key in keys:
            cap = caps[key.cap]
            if cap is None:
                continue
            if worst_case_micros is None or (
                worst_case_micros > 0
                and self._spent[key] + self._reserved[key] + worst_case_micros > cap
            ):
                exceeded.append(key)
                # An unpriced call is refused at any spending: it reaches no cap.
                if worst_case_micros is not None:
                    self._reached(key, cap)
        if exceeded:
            first = max(exceeded, key=lambda key: periods[key.cap].end)
            raise BudgetExceeded(first.cap.name, periods[first.cap].end)
        held = worst_case_micros or 0
        for key in keys:
            self._reserved[key] += held
        token = next(self._tokens)
        self._holds[token] = (tuple(keys), held)
        return Reservation(context=context, model=model, micros=held, token=token)

    async def settle(self, reservation: Reservation, actual_micros: int | None) -> None:
        """Replace the hold by the real cost (an unknown cost counts 0, as in the ledger),
        then start the alerts this spending crossed. Nothing here awaits."""
        hold = self._holds.pop(reservation.token, None)
        if hold is None:
            return  # AllowAll-style reservation (no guild), or settled twice
        keys, held = hold
        actual = actual_micros or 0
        for key in keys:
            self._reserved[key] -= held
            if key in self._spent:
                self._spent[key] += actual
        if self.alert_sink is None:
            return
        for key, thresholds, spent, cap in self._crossed(keys):
            self._spawn(self._send_alert(key, thresholds, spent, cap))

    # ---- run-time changes and status -----------------------------------------------------

    async def set_cap(
        self,
        guild_id: int,
        scope: Cap | Scope | str,
        cap_micros: int | None,
        *,
        changed_by: int,
    ) -> BudgetChange:
        """Store a new cap for the guild (None: no cap), with who changed it and when.
        `scope` names the cap: a Scope, or "feature_daily:summary" for a feature's."""
        cap = Cap.of(scope)
        if cap_micros is not None and cap_micros < 0:
            raise ValueError("a cap cannot be negative")
        async with self._guild_locks[guild_id]:
            caps = await self._caps_locked(guild_id)
            change = await self.store.add_change(
                guild_id=guild_id,
                scope=cap.name,
                cap_micros=cap_micros,
                changed_by=changed_by,
                previous_micros=caps[cap],
                changed_at=self._clock(),
            )
            self._changes[guild_id][cap] = change
        log.info(
            "budget_changed",
            guild_id=guild_id,
            scope=cap.name,
            cap_micros=cap_micros,
            previous_micros=change.previous_micros,
            changed_by=changed_by,
        )
        return change

    async def cap(self, guild_id: int, scope: Cap | Scope | str) -> int | None:
        """The cap in force (micro-dollars), None when there is none."""
        return (await self._caps(guild_id))[Cap.of(scope)]

    async def status(self, guild_id: int, user_id: int | None = None) -> list[ScopeStatus]:
        """The guild's caps with what is spent and held now: the guild's and the
        members' always, a feature's only when it has a cap or a `/budget` change (five
        "no cap" lines would hide the ones that matter). The user_daily line shows
        `user_id`'s own spending (0 without one)."""
        now = self._clock()
        statuses = []
        caps = await self._caps(guild_id)
        for cap in CAPS:
            change = self._changes[guild_id].get(cap)
            if cap.feature is not None and caps[cap] is None and change is None:
                continue
            period = period_of(cap, now)
            spent = reserved = 0
            if cap.scope is not Scope.USER_DAILY or user_id is not None:
                key = _Key(
                    cap, guild_id, user_id if cap.scope is Scope.USER_DAILY else None, period.key
                )
                await self._load(key, period)
                spent, reserved = self._spent.get(key, 0), self._reserved.get(key, 0)
            statuses.append(
                ScopeStatus(
                    scope=cap.scope,
                    cap_micros=caps[cap],
                    change=change,
                    spent_micros=spent,
                    reserved_micros=reserved,
                    resets_at=period.end,
                    period_key=period.key,
                    feature=cap.feature,
                )
            )
        return statuses

    async def drain(self, timeout_s: float | None = None) -> None:
        """Wait for the alerts being sent (tests, and a clean shutdown), at most
        `timeout_s`; alerts still pending then are cancelled."""
        try:
            async with asyncio.timeout(timeout_s):
                while self._alert_tasks:
                    await asyncio.gather(*list(self._alert_tasks), return_exceptions=True)
        except TimeoutError:
            for task in list(self._alert_tasks):
                task.cancel()
            log.warning("budget_alerts_dropped", count=len(self._alert_tasks))

    # ---- internals -----------------------------------------------------------------------

    @staticmethod
    def _caps_of(context: CallContext) -> list[Cap]:
        """The caps a call counts against, capped or not (see `_load`); the guild's
        first, so that of caps freeing up at the same time a refusal names the widest."""
        if context.guild_id is None:
            return []
        caps = [Cap(Scope.GUILD_DAILY), Cap(Scope.GUILD_MONTHLY)]
        if context.user_id is not None and context.feature in USER_CAPPED_FEATURES:
            caps.append(Cap(Scope.USER_DAILY))
        caps.append(Cap(Scope.FEATURE_DAILY, Feature(context.feature)))
        return caps

    @staticmethod
    def _key(cap: Cap, context: CallContext, period: BudgetPeriod) -> _Key:
        user = context.user_id if cap.scope is Scope.USER_DAILY else None
        return _Key(cap, _guild_of(context), user, period.key)

    async def _caps(self, guild_id: int) -> dict[Cap, int | None]:
        """Caps in force for the guild: its newest changes, else the TOML. The first
        call for a guild reads them under the guild's own lock; then they are in memory."""
        if guild_id not in self._changes:
            async with self._guild_locks[guild_id]:
                return await self._caps_locked(guild_id)
        return self._caps_in_force(guild_id)

    async def _caps_locked(self, guild_id: int) -> dict[Cap, int | None]:
        """`_caps` with the guild's lock held."""
        if guild_id not in self._changes:
            latest = await self.store.latest_changes(guild_id)
            self._changes[guild_id] = {
                cap: change
                for name, change in latest.items()
                if (cap := _cap_named(name)) is not None
            }
        return self._caps_in_force(guild_id)

    def _caps_in_force(self, guild_id: int) -> dict[Cap, int | None]:
        return {cap: self._cap_in_force(guild_id, cap) for cap in CAPS}

    async def _load(self, key: _Key, period: BudgetPeriod) -> None:
        """Read the period's spending from the ledger, once, under the key's own lock.

        Every call of a guild reserves against all its scopes, capped or not, and only
        after they are loaded, so once a key is loaded every later cost reaches it
        through `settle`; while a key is being loaded no call in flight holds it, so no
        `settle` can be missed by the read.
        """
        if key in self._spent:
            return
        async with self._key_locks[key]:
            if key in self._spent:
                return
            features: frozenset[Feature] | None = None
            if key.cap.scope is Scope.USER_DAILY:
                features = USER_CAPPED_FEATURES
            elif key.cap.feature is not None:
                features = frozenset({key.cap.feature})
            self._spent[key] = await self.ledger.spent_micros(
                start=period.start,
                end=period.end,
                guild_id=key.guild_id,
                user_id=key.user_id,
                features=features,
            )

    def _forget_old_periods(self, now: datetime) -> None:
        """Drop the figures of past days and months once nothing in flight holds them."""
        day = period_of(Scope.GUILD_DAILY, now).key
        if day == self._current_day:
            return
        self._current_day = day
        current = {day, period_of(Scope.GUILD_MONTHLY, now).key}
        for key in [k for k in self._spent if k.period_key not in current]:
            if not self._reserved.get(key):
                del self._spent[key]
                self._reserved.pop(key, None)
        for key in [k for k in self._key_locks if k.period_key not in current]:
            if not self._key_locks[key].locked():
                del self._key_locks[key]
        self._alerted = {item for item in self._alerted if item[0].period_key in current}

    def _crossed(self, keys: Iterable[_Key]) -> list[tuple[_Key, list[int], int, int]]:
        """Thresholds newly passed by real spending, per cap (see `_thresholds`)."""
        found = []
        for key in keys:
            if key not in self._spent:
                continue
            cap = self._cap_in_force(key.guild_id, key.cap)
            if not cap:  # no cap, or 0: nothing is spent, nothing to warn about
                continue
            spent = self._spent[key]
            new = [
                pct
                for pct in self._thresholds(key.cap)
                if spent * 100 >= pct * cap and (key, pct) not in self._alerted
            ]
            if new:
                self._alerted.update((key, pct) for pct in new)
                found.append((key, new, spent, cap))
        return found

    def _reached(self, key: _Key, cap: int) -> None:
        """A cap stopped a call: its 100 % alert, once, with the lower thresholds not
        sent yet (see the module docstring). Never awaits: it runs inside `reserve`'s
        check."""
        if self.alert_sink is None or not cap:
            return  # no sink (the CLI, tests); a cap of 0 is no one's surprise
        thresholds = self._thresholds(key.cap)
        if REACHED not in thresholds:
            return  # the settings leave "spent" out of a guild cap's alerts
        new = [pct for pct in thresholds if (key, pct) not in self._alerted]
        if (key, REACHED) in self._alerted or not new:
            return
        self._alerted.update((key, pct) for pct in new)
        self._spawn(self._send_alert(key, new, self._spent.get(key, 0), cap))

    def _thresholds(self, cap: Cap) -> tuple[int, ...]:
        """Every threshold of the settings for a guild cap, 100 % only for the others."""
        return self.thresholds if cap.scope in GUILD_SCOPES else (REACHED,)

    def _cap_in_force(self, guild_id: int, cap: Cap) -> int | None:
        change = self._changes.get(guild_id, {}).get(cap)
        return change.cap_micros if change is not None else self._config_caps[cap]

    async def _send_alert(self, key: _Key, thresholds: list[int], spent: int, cap: int) -> None:
        """Claim each threshold in budget_alerts; post one alert for the highest claimed.

        A spending jump past 50 and 80 % at once gives one message (80 %), not two.
        """
        claimed = [
            pct
            for pct in thresholds
            if await self.store.claim_alert(
                guild_id=key.guild_id,
                scope=alert_scope(key.cap.name, key.user_id),
                period_key=key.period_key,
                threshold=pct,
            )
        ]
        sink = self.alert_sink
        if not claimed or sink is None:
            return
        if max(claimed) >= REACHED:
            log.info(
                "budget_cap_reached",
                guild_id=key.guild_id,
                user_id=key.user_id,
                scope=key.cap.scope.value,
                feature=key.cap.feature,
                cap_micros=cap,
                spent_micros=spent,
                period=key.period_key,
            )
        start = datetime.fromisoformat(_period_start(key.period_key))
        await sink(
            Alert(
                guild_id=key.guild_id,
                scope=key.cap.scope,
                threshold=max(claimed),
                period_key=key.period_key,
                spent_micros=spent,
                cap_micros=cap,
                resets_at=period_of(key.cap, start).end,
                user_id=key.user_id,
                feature=key.cap.feature,
            )
        )

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(_logged(coroutine))
        self._alert_tasks.add(task)
        task.add_done_callback(self._alert_tasks.discard)


def _guild_of(context: CallContext) -> int:
    """The guild of a capped call (only calls in a guild have budget scopes)."""
    if context.guild_id is None:
        raise ValueError("budget scopes apply to calls in a guild only")
    return context.guild_id


def _cap_named(name: str) -> Cap | None:
    """The cap a stored `budget_changes.scope` names; None for one this version does not
    know (a feature since removed): its rows stay as history and cap nothing."""
    try:
        return Cap.of(name)
    except ValueError:
        return None


def _period_start(period_key: str) -> str:
    """ "2026-11" -> "2026-11-01T00:00:00+00:00"; "2026-11-21" -> that day at midnight UTC."""
    day = period_key if len(period_key) == 10 else f"{period_key}-01"
    return f"{day}T00:00:00+00:00"


async def _logged(coroutine: Awaitable[None]) -> None:
    try:
        await coroutine
    except Exception:
        log.exception("budget_alert_failed")
