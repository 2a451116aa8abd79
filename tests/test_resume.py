"""Deferred commands held across a crash: the sealed token store, and the start-up
service that answers the young ones again and drops the old or undeliverable ones."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Sequence
from datetime import timedelta

import pytest
import structlog
from sqlalchemy import text

from ibot.db.pending_interactions import (
    AttachmentRef,
    PendingInteraction,
    PendingInteractionStore,
    PendingRequest,
)
from ibot.domain import CallStatus, Feature, utcnow
from ibot.i18n import load_prompts
from ibot.logging import configure_logging
from ibot.sealing import Sealer, SealError
from ibot.services.ask import AskOutcome, AskService
from ibot.services.attachments import AttachmentSource
from ibot.services.outcomes import Answered
from ibot.services.prompts import FeatureConfig, PromptBuilder
from ibot.services.resume import ResumeService
from ibot.services.summary import HistoryMessage, Summarized, SummaryOutcome, SummaryService

TOKEN = "aW50ZXJhY3Rpb24" + "x7Yq-interaction-token-" * 6
BOT_TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GabcDe.bot-token-for-the-sealing-key-0123456789"


def pending(
    interaction_id: int = 1001,
    *,
    feature: Feature = Feature.ASK,
    age: timedelta = timedelta(minutes=1),
    token: str = TOKEN,
    **request: object,
) -> PendingInteraction:
    defaults: dict[str, object] = {"question": "Pourquoi ma boucle ne s'arrête pas ?"}
    return PendingInteraction(
        interaction_id=interaction_id,
        application_id=42,
        token=token,
        feature=feature,
        user_id=7,
        guild_id=3,
        channel_id=5,
        request=PendingRequest(author="alice", **{**defaults, **request}),  # type: ignore[arg-type]
        created_at=utcnow() - age,
    )


# -- sealing ---------------------------------------------------------------------------


def test_a_sealed_token_opens_only_with_its_key_and_its_row():
    sealer = Sealer(BOT_TOKEN)
    sealed = sealer.seal(TOKEN, associated=b"row:1")
    assert TOKEN not in sealed and sealer.seal(TOKEN, associated=b"row:1") != sealed  # nonce
    assert sealer.open(sealed, associated=b"row:1") == TOKEN
    with pytest.raises(SealError):
        Sealer(BOT_TOKEN + "rotated").open(sealed, associated=b"row:1")
    with pytest.raises(SealError):  # copied onto another row
        sealer.open(sealed, associated=b"row:2")
    flipped = sealed[:30] + ("A" if sealed[30] != "A" else "B") + sealed[31:]
    with pytest.raises(SealError):
        sealer.open(flipped, associated=b"row:1")
    with pytest.raises(SealError):
        sealer.open("not base64 at all!", associated=b"row:1")


# -- the store -------------------------------------------------------------------------


async def test_the_store_round_trips_and_never_writes_the_token_in_clear(sessionmaker):
    store = PendingInteractionStore(sessionmaker, Sealer(BOT_TOKEN))
    image = AttachmentRef(id=9, filename="erreur.png", size=1234, url="https://cdn/x.png")
    held = pending(private=True, image=image)
    await store.add(held)

    [back] = await store.pending()
    assert back == held and back.token == TOKEN
    assert TOKEN not in repr(back)
    async with sessionmaker() as session:
        raw = (await session.execute(text("SELECT * FROM pending_interactions"))).one()
    assert all(TOKEN not in str(value) for value in raw)  # not in any column, in clear
    assert "erreur.png" in str(raw)  # the options are plain JSON

    await store.note_ledger(held.interaction_id, 77)
    assert [p.ledger_id for p in await store.pending()] == [77]
    await store.remove(held.interaction_id)
    assert await store.pending() == []


async def test_a_row_sealed_with_another_bot_token_is_dropped(sessionmaker):
    await PendingInteractionStore(sessionmaker, Sealer("an-older-bot-token")).add(pending())
    store = PendingInteractionStore(sessionmaker, Sealer(BOT_TOKEN))
    with structlog.testing.capture_logs() as logs:
        assert await store.pending() == []
    assert [e["event"] for e in logs] == ["pending_interaction_unreadable"]
    assert await store.pending() == []  # and it is gone


# -- the resume service ----------------------------------------------------------------


class RecordingPort:
    """Discord as the resume service sees it: history to read, answers to deliver."""

    def __init__(self, *, refuse: Exception | None = None) -> None:
        self.refuse = refuse
        self.delivered: list[tuple[int, AskOutcome | SummaryOutcome]] = []

    def attachments(self, held: PendingInteraction) -> Sequence[AttachmentSource]:
        return []

    async def history(self, held: PendingInteraction) -> Sequence[HistoryMessage]:
        return [
            HistoryMessage("bob", "Le déploiement a échoué hier soir.", utcnow()),
            HistoryMessage("carol", "C'était le certificat expiré.", utcnow()),
        ]

    async def deliver_ask(self, held: PendingInteraction, outcome: AskOutcome) -> None:
        await self._deliver(held, outcome)

    async def deliver_summary(self, held: PendingInteraction, outcome: SummaryOutcome) -> None:
        await self._deliver(held, outcome)

    async def _deliver(self, held: PendingInteraction, outcome: AskOutcome | SummaryOutcome):
        if self.refuse is not None:
            raise self.refuse
        self.delivered.append((held.interaction_id, outcome))


@pytest.fixture
def resume(gateway, sessionmaker) -> ResumeService:
    prompts = PromptBuilder(load_prompts("fr"), extra={"bot_name": "iBot"})
    config = FeatureConfig("gpt-4o-mini", 200, 4000)
    return ResumeService(
        PendingInteractionStore(sessionmaker, Sealer(BOT_TOKEN)),
        AskService(gateway, prompts, config),
        SummaryService(gateway, prompts, config),
    )


async def test_young_commands_are_answered_again_and_old_ones_dropped(resume, gateway):
    store = resume.store
    await store.add(pending(1, age=timedelta(minutes=2)))
    await store.add(pending(2, feature=Feature.SUMMARY, question="", messages=50))
    await store.add(pending(3, age=timedelta(minutes=14, seconds=5)))
    port = RecordingPort()

    with structlog.testing.capture_logs() as logs:
        report = await resume.resume(port)

    assert (report.answered, report.expired, report.undeliverable) == (2, 1, 0)
    outcomes = dict(port.delivered)
    assert set(outcomes) == {1, 2}
    assert isinstance(outcomes[1], Answered) and outcomes[1].text
    assert isinstance(outcomes[2], Summarized) and outcomes[2].messages == 2
    # Through the gateway: each answer is a ledger row, booked to the member who asked.
    rows = await gateway.ledger.rows()
    assert {row.feature for row in rows} == {"ask", "summary"}
    assert all(r.status == CallStatus.OK and (r.user_id, r.guild_id) == (7, 3) for r in rows)
    assert len(gateway.fake.requests) == 2  # the expired one was not asked again
    [expired] = [e for e in logs if e["event"] == "pending_interaction_expired"]
    assert expired["interaction_id"] == 3 and expired["age_s"] >= 14 * 60
    assert await store.pending() == []


async def test_a_delivery_discord_refuses_is_logged_and_dropped(resume):
    await resume.store.add(pending(1))
    await resume.store.add(pending(2))
    expired_token = RuntimeError(f"401 Unauthorized: Invalid Webhook Token /webhooks/42/{TOKEN}")
    expired_token.status = 401  # type: ignore[attr-defined]
    expired_token.code = 50027  # type: ignore[attr-defined]

    with structlog.testing.capture_logs() as logs:
        report = await resume.resume(RecordingPort(refuse=expired_token))

    assert (report.answered, report.undeliverable) == (0, 2)
    refused = [e for e in logs if e["event"] == "pending_interaction_undeliverable"]
    assert [(e["status"], e["code"]) for e in refused] == [(401, 50027)] * 2
    assert await resume.store.pending() == []  # not tried again at the next start


@pytest.fixture
def log_stream():
    """The process's real log pipeline (redactor included) into a string; restored after."""
    root = logging.getLogger()
    handlers, level, config = list(root.handlers), root.level, structlog.get_config()
    stream = io.StringIO()
    configure_logging("json", "DEBUG", stream=stream)
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.configure(**config)


async def test_the_token_never_reaches_a_log_line(resume, log_stream):
    """Even an error that quotes the webhook URL (nextcord's debug lines do) is masked."""
    token = "aW50ZXJhY3Rpb24" + "never-logged-token-" * 8
    await resume.store.add(pending(1, token=token))
    await resume.store.add(pending(2, token=token + "-old", age=timedelta(minutes=20)))
    failure = RuntimeError(f"cannot PATCH /webhooks/42/{token}/messages/@original")

    await resume.resume(RecordingPort(refuse=failure))
    logging.getLogger("nextcord.webhook.async_").debug("PATCH /webhooks/42/%s", token)

    lines = log_stream.getvalue()
    assert "pending_interaction_undeliverable" in lines and "pending_interaction_expired" in lines
    assert "cannot PATCH" in lines  # the traceback is there, the token is not
    assert token not in lines and "never-logged-token" not in lines


async def test_a_command_held_live_is_not_resumed_and_a_cancelled_one_stays(resume):
    port = RecordingPort()
    async with resume.held(pending(1)):  # a command that came before the resume ran
        assert [p.interaction_id for p in await resume.store.pending()] == [1]
        assert (await resume.resume(port)).answered == 0
    assert port.delivered == [] and await resume.store.pending() == []

    with pytest.raises(RuntimeError):  # answered with an error: the handler tells the user
        async with resume.held(pending(2)):
            raise RuntimeError("boom")
    assert await resume.store.pending() == []

    async def cut_short() -> None:
        async with resume.held(pending(3)):
            raise asyncio.CancelledError  # a stop past its grace time

    with pytest.raises(asyncio.CancelledError):
        await cut_short()
    assert [p.interaction_id for p in await resume.store.pending()] == [3]  # the next start's
