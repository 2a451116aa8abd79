"""Build iBot's services once, at start, and close them at the end.

The Discord bot and the CLI both start here, so a question asked with `ibot ask`
takes exactly the path an `/ask-gpt` takes: same gateway, same ledger, same prices.
Nothing here imports nextcord, torch or transformers.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from ibot.config import Settings
from ibot.db.budgets import BudgetStore
from ibot.db.engine import create_engine, make_sessionmaker
from ibot.db.feedback import FeedbackStore
from ibot.db.knowledge_sync import SyncStateStore
from ibot.db.ledger import Ledger
from ibot.db.migrate import upgrade
from ibot.db.pending_interactions import PendingInteractionStore
from ibot.db.threads import ThreadStore
from ibot.domain import Feature
from ibot.i18n import load_prompts
from ibot.inflight import InFlight
from ibot.llm.gateway import ModelGateway
from ibot.llm.local import LocalBackend, local_backend_from_settings
from ibot.llm.openai_backend import OpenAIBackend
from ibot.llm.pacing import Pacer
from ibot.metrics import Metrics
from ibot.pricing import PriceTable
from ibot.sealing import Sealer
from ibot.services.ask import AskService
from ibot.services.attachments import AttachmentLimits
from ibot.services.budgets import BudgetManager
from ibot.services.chat import ChatService
from ibot.services.feedback import FeedbackService
from ibot.services.forum import ForumService
from ibot.services.grounding import DEFAULT_DUPLICATE_MODEL, Grounding
from ibot.services.knowledge import KnowledgeBase
from ibot.services.knowledge_sync import KnowledgeSync
from ibot.services.permissions import RolePolicy
from ibot.services.prompts import FeatureConfig, PromptBuilder
from ibot.services.resume import ResumeService
from ibot.services.retriever import Retriever
from ibot.services.semantic import HybridKnowledgeBase, build_retriever, embedding_config
from ibot.services.similar import SimilarService
from ibot.services.solved import SolvedService
from ibot.services.summary import SummaryService


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    ledger: Ledger
    prices: PriceTable
    gateway: ModelGateway
    openai: OpenAIBackend | None
    prompts: PromptBuilder
    budgets: BudgetManager
    metrics: Metrics
    pacer: Pacer
    local: LocalBackend | None = None
    # The solved threads' knowledge base, when settings knowledge.enabled; else None.
    # Lexical, or hybrid with knowledge.embeddings on and an OpenAI key (retriever.py).
    knowledge: Retriever | None = None
    # Answers being produced: a graceful stop waits for them (see ibot/inflight.py).
    in_flight: InFlight = field(default_factory=InFlight)
    # Identifies this process in forum claims: a claim by another run id is a dead process's.
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    _feedback: FeedbackService | None = field(default=None, repr=False)
    _resume: ResumeService | None = field(default=None, repr=False)

    def feature_config(self, feature: Feature) -> FeatureConfig:
        fs = self.settings.feature(feature)
        return FeatureConfig(
            model=fs.model,
            max_output_tokens=fs.max_output_tokens,
            max_prompt_tokens=fs.max_prompt_tokens,
            temperature=fs.temperature,
        )

    def attachment_limits(self, feature: Feature) -> AttachmentLimits:
        fs = self.settings.feature(feature)
        att = self.settings.attachments
        return AttachmentLimits(
            max_download_bytes=att.max_download_bytes,
            max_text_chars=att.max_text_file_chars,
            max_images=fs.max_images,
            max_tiles=fs.max_image_tiles,
            detail=fs.image_detail,
            text_extensions=frozenset(ext.lower() for ext in att.text_extensions),
        )

    def grounding(self, feature: Feature) -> Grounding | None:
        """How answers quote similar solved threads, and answer near duplicates of one
        (with knowledge.duplicate_model, else the feature's cheaper model); None when the
        knowledge base is off."""
        if self.knowledge is None:
            return None
        kb = self.settings.knowledge
        cheaper = self.settings.feature(feature).cheaper_model
        return Grounding(
            self.knowledge,
            k=kb.k,
            max_source_tokens=kb.max_source_tokens,
            duplicate_threshold=kb.duplicate_threshold,
            duplicate_model=kb.duplicate_model or cheaper or DEFAULT_DUPLICATE_MODEL,
            duplicate_max_output_tokens=kb.duplicate_max_output_tokens,
        )

    def ask_service(self) -> AskService:
        return AskService(
            self.gateway,
            self.prompts,
            self.feature_config(Feature.ASK),
            self.attachment_limits(Feature.ASK),
            grounding=self.grounding(Feature.ASK),
        )

    def similar_service(self) -> SimilarService:
        return SimilarService(self.knowledge, k=self.settings.knowledge.k)

    def forum_service(self) -> ForumService:
        return ForumService(
            self.gateway,
            self.prompts,
            self.feature_config(Feature.AUTO_REPLY),
            ThreadStore(self.sessionmaker, self.run_id),
            no_bot_tags=self.settings.discord.no_bot_tags,
            attachment_limits=self.attachment_limits(Feature.AUTO_REPLY),
            catch_up_hours=self.settings.discord.catch_up_hours,
            grounding=self.grounding(Feature.AUTO_REPLY),
        )

    def chat_service(self) -> ChatService:
        return ChatService(self.gateway, self.prompts, self.feature_config(Feature.CHAT))

    def summary_service(self) -> SummaryService:
        return SummaryService(self.gateway, self.prompts, self.feature_config(Feature.SUMMARY))

    def pending_interactions(self) -> PendingInteractionStore:
        """Deferred commands held until answered, their tokens sealed with a key derived
        from the bot token (without one, nothing is resumed: a key for this process)."""
        token = self.settings.discord_token
        secret = token.get_secret_value() if token is not None else uuid.uuid4().hex
        return PendingInteractionStore(self.sessionmaker, Sealer(secret))

    def resume_service(self) -> ResumeService:
        """The one ResumeService of the process: the start-up resume skips the commands
        the cogs hold live."""
        if self._resume is None:
            self._resume = ResumeService(
                self.pending_interactions(), self.ask_service(), self.summary_service()
            )
        return self._resume

    def feedback_service(self) -> FeedbackService:
        """The one FeedbackService of the process (a click waits on its records)."""
        if self._feedback is None:
            self._feedback = FeedbackService(FeedbackStore(self.sessionmaker))
        return self._feedback

    def solved_service(self) -> SolvedService:
        return SolvedService(self.feedback_service(), self.knowledge, self.role_policy())

    def knowledge_sync(self) -> KnowledgeSync | None:
        """The forums' backfill into the knowledge base; None when it is off."""
        if self.knowledge is None:
            return None
        return KnowledgeSync(
            self.knowledge,
            SyncStateStore(self.sessionmaker),
            self.solved_service(),
            self.sessionmaker,
            solved_tags=self.settings.knowledge.solved_tags,
        )

    def role_policy(self) -> RolePolicy:
        roles = self.settings.roles
        return RolePolicy(
            denied_ask=frozenset(roles.denied_ask),
            moderators=frozenset(roles.moderators),
            admins=frozenset(roles.admins),
        )

    async def aclose(self) -> None:
        await self.budgets.drain(timeout_s=5)
        await self.pacer.aclose()
        if isinstance(self.knowledge, HybridKnowledgeBase):
            await self.knowledge.drain(timeout_s=5)  # embeddings still being made
        if self.local is not None:
            await self.local.aclose()
        if self.openai is not None:
            await self.openai.aclose()
        await self.engine.dispose()


def build_openai(settings: Settings) -> OpenAIBackend | None:
    """The OpenAI backend, or None when no key is configured (the gateway then refuses)."""
    if settings.openai_api_key is None:
        return None
    return OpenAIBackend(
        api_key=settings.openai_api_key.get_secret_value(),
        base_url=settings.openai_base_url,
        timeout_s=settings.openai.timeout_s,
        connect_timeout_s=settings.openai.connect_timeout_s,
        max_retries=settings.openai.max_retries,
        retry_max_wait_s=settings.openai.retry_max_wait_s,
    )


def degrade_models(settings: Settings) -> dict[Feature, list[str]]:
    """Per feature, the cheaper model a budget falls back to (features.X.cheaper_model)."""
    degrade: dict[Feature, list[str]] = {}
    for feature in Feature:
        if feature is Feature.KB_EMBED:  # embeddings: no chat model, no [features] section
            continue
        section = settings.feature(feature)
        if section.cheaper_model and section.cheaper_model != section.model:
            degrade[feature] = [section.cheaper_model]
    return degrade


async def build_services(settings: Settings, *, migrate: bool = True) -> Services:
    """Create the engine (upgrading the schema first), the ledger, prices and gateway."""
    if migrate:
        await upgrade(settings.database_url)
    engine = create_engine(settings.database_url)
    sessionmaker = make_sessionmaker(engine)
    ledger = Ledger(sessionmaker)
    prices = PriceTable.load(Path(settings.prices_file))
    openai_backend = build_openai(settings)
    budgets = BudgetManager(
        ledger=ledger, store=BudgetStore(sessionmaker), settings=settings.budgets
    )
    # The local model (only when configured: torch is imported then, not before) is
    # loaded and warmed up now, so its first answer is not slow.
    local = local_backend_from_settings(settings.local_model)
    if local is not None:
        await local.start()
    metrics = Metrics()
    # Rate limits are learned from the first answers' headers; concurrency is bounded.
    pacer = Pacer(max_concurrency=settings.openai.max_concurrent_calls)
    metrics.watch_queue(pacer.stats)
    gateway = ModelGateway(
        ledger=ledger,
        prices=prices,
        openai=openai_backend,
        budget=budgets,
        degrade=degrade_models(settings),
        pacer=pacer,
        metrics=metrics,
        local=local,
    )
    templates = load_prompts(settings.prompts.language)
    if settings.prompts.persona:
        templates = {**templates, "persona": settings.prompts.persona}
    prompts = PromptBuilder(templates, extra={"bot_name": settings.prompts.bot_name})
    return Services(
        settings=settings,
        engine=engine,
        sessionmaker=sessionmaker,
        ledger=ledger,
        prices=prices,
        gateway=gateway,
        openai=openai_backend,
        prompts=prompts,
        budgets=budgets,
        metrics=metrics,
        pacer=pacer,
        local=local,
        knowledge=(
            build_retriever(
                KnowledgeBase(sessionmaker, min_score=settings.knowledge.min_score),
                sessionmaker,
                gateway,
                embedding_config(settings.knowledge.embeddings),
            )
            if settings.knowledge.enabled
            else None
        ),
    )
