"""The ledger keeps every call exactly: integer money, 64-bit ids, UTC times."""

from __future__ import annotations

import asyncio
from dataclasses import asdict, fields
from datetime import UTC, datetime, timedelta, timezone

import pytest

from ibot.db.engine import create_engine, make_sessionmaker
from ibot.db.ledger import NOTE_MAX, Ledger, LedgerEntry, LedgerRow, Totals, column_values
from ibot.db.migrate import upgrade
from ibot.db.models import LedgerRecord
from ibot.domain import Backend, CallStatus, ErrorKind, Feature, UsageSource

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
BIG = 2**63 - 1  # the largest BIGINT; real snowflakes are ~2^60, both beyond 2^53


@pytest.fixture
async def ledger(db_url: str):
    await upgrade(db_url)
    engine = create_engine(db_url)
    yield Ledger(make_sessionmaker(engine))
    await engine.dispose()


def entry(**overrides) -> LedgerEntry:
    fields_ = {
        "feature": Feature.ASK,
        "backend": Backend.OPENAI,
        "model_requested": "gpt-4o",
        "model": "gpt-4o-2024-08-06",
        "status": CallStatus.OK,
        "guild_id": 1,
        "channel_id": 2,
        "user_id": 3,
        "prompt_tokens": 1000,
        "completion_tokens": 100,
        "cost_micros": 3500,
        "latency_ms": 850,
        "created_at": T0,
    }
    return LedgerEntry(**{**fields_, **overrides})


def stored_fields(row: LedgerRow) -> dict:
    values = asdict(row)
    del values["id"]
    return values


async def test_recorded_entries_come_back_exactly(ledger):
    written = [
        entry(),
        entry(
            feature=Feature.SUMMARY,
            backend=Backend.LOCAL,
            model="qwen2.5-0.5b",
            model_requested="gpt-4o-mini",
            status=CallStatus.FALLBACK,
            thread_id=987654321987654321,
            request_id="req_abc123",
            prompt_tokens=2_000_001,
            cached_tokens=1_024,
            image_tokens=765,
            completion_tokens=7,
            cost_micros=12_345_678_901,  # above 2^31: needs the BIGINT
            usage_source=UsageSource.ESTIMATED,
            attempts=3,
            note="primary failed: server_error",
            created_at=T0 + timedelta(minutes=5),
        ),
        entry(
            status=CallStatus.ERROR,
            error_kind=ErrorKind.QUOTA,
            model=None,
            cost_micros=0,
            prompt_tokens=0,
            completion_tokens=0,
        ),
    ]

    ids = [await ledger.record(e) for e in written]
    rows = await ledger.rows()

    assert [row.id for row in rows] == ids == sorted(ids)
    for row, sent in zip(rows, written, strict=True):
        expected = {f.name: getattr(sent, f.name) for f in fields(LedgerEntry)}
        assert stored_fields(row) == expected
    assert rows[2].error_kind == "insufficient_quota"
    assert await ledger.totals() == Totals(
        calls=3,
        prompt_tokens=1000 + 2_000_001 + 0,
        cached_tokens=1_024,
        image_tokens=765,
        completion_tokens=100 + 7 + 0,
        cost_micros=3500 + 12_345_678_901 + 0,
        unknown_cost_calls=0,
    )


async def test_unknown_cost_is_counted_apart_not_as_zero(ledger):
    await ledger.record(entry(cost_micros=7250))
    await ledger.record(entry(cost_micros=None, model="brand-new-model"))
    await ledger.record(entry(cost_micros=None, model="brand-new-model"))

    totals = await ledger.totals()
    [known, unknown, _] = await ledger.rows()

    assert (totals.calls, totals.cost_micros, totals.unknown_cost_calls) == (3, 7250, 2)
    assert known.cost_micros == 7250 and unknown.cost_micros is None
    spent = await ledger.spent_micros(start=T0, end=T0 + timedelta(seconds=1))
    assert spent == 7250


async def test_created_at_comes_back_aware_utc(ledger):
    paris_summer = timezone(timedelta(hours=2))
    local = datetime(2025, 7, 14, 1, 30, tzinfo=paris_summer)  # 23:30 UTC the day before

    await ledger.record(entry(created_at=local))
    await ledger.record(entry(created_at=datetime(2025, 7, 13, 23, 45)))  # naive: taken as UTC

    first, second = await ledger.rows()
    assert first.created_at == local
    assert first.created_at.utcoffset() == timedelta(0)
    assert (first.created_at.day, first.created_at.hour) == (13, 23)
    assert second.created_at == datetime(2025, 7, 13, 23, 45, tzinfo=UTC)
    # Period bounds in another zone select the same instants.
    rows = await ledger.rows(start=local, end=local + timedelta(minutes=1))
    assert [row.id for row in rows] == [first.id]


async def test_default_created_at_is_now_utc(ledger):
    before = datetime.now(UTC)
    entry_ = LedgerEntry(
        feature=Feature.CHAT, backend=Backend.OPENAI, model_requested="gpt-4o", status="ok"
    )
    await ledger.record(entry_)
    after = datetime.now(UTC)

    [row] = await ledger.rows()
    assert before <= row.created_at <= after
    assert row.created_at.tzinfo is not None


async def test_snowflakes_beyond_2_to_the_53_survive(ledger):
    snowflake = 1_234_567_890_123_456_789  # > 2^60
    await ledger.record(
        entry(guild_id=BIG, channel_id=snowflake, thread_id=snowflake + 1, user_id=BIG - 1)
    )

    [row] = await ledger.rows(guild_id=BIG)

    assert (row.guild_id, row.channel_id, row.thread_id, row.user_id) == (
        BIG,
        snowflake,
        snowflake + 1,
        BIG - 1,
    )
    assert (await ledger.totals(guild_id=BIG)).calls == 1
    assert (await ledger.totals(guild_id=BIG - 1)).calls == 0  # no float rounding merged them


async def test_rows_filters_and_limit(ledger):
    ids = {}
    ids["early"] = await ledger.record(entry(created_at=T0 - timedelta(hours=1)))
    ids["start"] = await ledger.record(entry(created_at=T0))
    ids["other_guild"] = await ledger.record(entry(created_at=T0, guild_id=99))
    ids["chat"] = await ledger.record(entry(created_at=T0, feature=Feature.CHAT))
    ids["other_user"] = await ledger.record(entry(created_at=T0, user_id=42))
    ids["end"] = await ledger.record(entry(created_at=T0 + timedelta(hours=1)))

    def idset(rows: list[LedgerRow]) -> set[int]:
        return {row.id for row in rows}

    window = await ledger.rows(start=T0, end=T0 + timedelta(hours=1))
    assert idset(window) == {ids[k] for k in ("start", "other_guild", "chat", "other_user")}
    assert idset(await ledger.rows(guild_id=99)) == {ids["other_guild"]}
    assert idset(await ledger.rows(feature=Feature.CHAT)) == {ids["chat"]}
    assert idset(await ledger.rows(feature="chat")) == {ids["chat"]}
    assert idset(await ledger.rows(user_id=42)) == {ids["other_user"]}
    assert [row.id for row in await ledger.rows(limit=2)] == [ids["early"], ids["start"]]
    totals = await ledger.totals(start=T0, end=T0 + timedelta(hours=1), guild_id=1)
    assert (totals.calls, totals.cost_micros) == (3, 3 * 3500)


async def test_spent_micros_by_scope(ledger):
    day = (T0, T0 + timedelta(days=1))
    await ledger.record(entry(feature=Feature.ASK, cost_micros=100))
    await ledger.record(entry(feature=Feature.CHAT, cost_micros=20, user_id=7))
    await ledger.record(entry(feature=Feature.AUTO_REPLY, cost_micros=3, guild_id=2))
    await ledger.record(entry(feature=Feature.ASK, cost_micros=None))
    await ledger.record(entry(feature=Feature.ASK, cost_micros=5000, created_at=day[1]))

    start, end = day
    assert await ledger.spent_micros(start=start, end=end) == 123
    assert await ledger.spent_micros(start=start, end=end, guild_id=1) == 120
    assert await ledger.spent_micros(start=start, end=end, user_id=7) == 20
    features = [Feature.ASK, Feature.AUTO_REPLY]
    assert await ledger.spent_micros(start=start, end=end, features=features) == 103
    assert await ledger.spent_micros(start=start, end=end, features=[]) == 0
    assert await ledger.spent_micros(start=end, end=end + timedelta(days=1)) == 5000


async def test_long_note_is_shortened_rather_than_losing_the_row(ledger):
    await ledger.record(entry(note="x" * 1000))

    [row] = await ledger.rows()

    assert row.note is not None and len(row.note) == 255 and row.note.startswith("xxx")


def test_a_float_cost_is_refused():
    with pytest.raises(TypeError, match="cost_micros"):
        entry(cost_micros=7.25)


async def test_many_concurrent_records_on_a_sqlite_file_all_land(tmp_path):
    """The gateway writes from many tasks at once; none may hit 'database is locked'."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'busy.db'}"
    await upgrade(url)
    engine = create_engine(url)
    try:
        ledger = Ledger(make_sessionmaker(engine))

        ids = await asyncio.gather(
            *(ledger.record(entry(user_id=n, cost_micros=n)) for n in range(200))
        )

        assert len(set(ids)) == 200
        rows = await ledger.rows()
        assert sorted(row.user_id for row in rows) == list(range(200))
        assert {row.id for row in rows} == set(ids)
        assert (await ledger.totals()).cost_micros == sum(range(200))
    finally:
        await engine.dispose()


async def test_many_concurrent_records_on_any_database(ledger):
    ids = await asyncio.gather(*(ledger.record(entry(user_id=n)) for n in range(100)))

    assert len(set(ids)) == 100
    assert (await ledger.totals()).calls == 100


async def test_a_pending_row_is_completed_in_place_or_closed_as_interrupted(ledger):
    sent = await ledger.record(
        entry(status=CallStatus.PENDING, cost_micros=0, call_id="c1", usage_source="estimated")
    )
    lost = await ledger.record(
        entry(status=CallStatus.PENDING, cost_micros=0, call_id="c2", usage_source="estimated")
    )
    assert [row.id for row in await ledger.pending()] == [sent, lost]

    assert await ledger.complete(sent, entry(call_id="c1", created_at=T0 + timedelta(seconds=9)))
    assert await ledger.close_interrupted(lost, cost_micros=4200, note="process died")
    assert not await ledger.complete(lost, entry(call_id="c2"))  # closed rows stay closed

    done, interrupted = await ledger.rows()
    assert (done.id, done.status, done.cost_micros, done.call_id) == (sent, "ok", 3500, "c1")
    assert done.created_at == T0  # when the call was sent
    assert (interrupted.status, interrupted.error_kind) == ("error", ErrorKind.INTERRUPTED)
    assert (interrupted.cost_micros, interrupted.usage_source) == (4200, UsageSource.ESTIMATED)
    assert await ledger.pending() == []


def test_the_entry_spells_the_table_row_and_the_row_is_the_entry_with_its_id():
    # The row is spelled out twice only: LedgerRecord (the table) and LedgerEntry; what
    # else names the columns (stored values, LedgerRow, log line, metrics) derives them.
    columns = set(LedgerRecord.__table__.columns.keys())
    assert {f.name for f in fields(LedgerEntry)} | {"id"} == columns
    assert {f.name for f in fields(LedgerRow)} == columns
    assert LedgerRecord.__table__.columns["note"].type.length == NOTE_MAX


def test_column_values_store_enums_as_strings_and_fit_the_note():
    values = column_values(entry(error_kind=ErrorKind.QUOTA, note="y" * 300))

    assert set(values) == {f.name for f in fields(LedgerEntry)}
    assert values["feature"] == "ask" and type(values["feature"]) is str
    assert type(values["backend"]) is str and type(values["status"]) is str
    assert type(values["error_kind"]) is str and type(values["usage_source"]) is str
    assert values["note"] == "y" * 254 + "…"
    assert column_values(entry())["error_kind"] is None


def test_model_label_is_the_answering_model_else_the_requested_one():
    assert entry().model_label == "gpt-4o-2024-08-06"
    assert entry(model=None).model_label == "gpt-4o"
