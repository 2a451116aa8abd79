"""Answer a new forum post once: the logic behind the forum auto-reply cog.

Discord-free. The cog gives a `ForumPost` (title, starter text, author, tags,
attachments); this service decides whether the bot should answer at all, claims the
thread so that it is answered exactly once, builds the prompt (date, persona, author,
title, tags, text, attachments) and calls the gateway. It also owns the thread's state
machine (claimed → answered / failed / skipped, in `ThreadStore`) and plans the catch-up
at start: which threads opened while the bot was down to answer, and which claims left
by a dead process to take over. The cog only reads Discord and posts.

The prompt never exceeds the feature's `max_prompt_tokens` (as `ibot.tokens.count_messages`
counts it, like the gateway's estimate). When everything does not fit, the attached text
files get their share first, cut fairly (see `share_budget`) and each keeping its
`--- name ---` header, and the post's own text gets what is left, but never less than
`MIN_CONTENT_TOKENS` (1 000 tokens, or the whole text when shorter): the member's
question is not thrown away for their logs.

With the knowledge base on, the guild's similar solved threads are quoted as numbered
sources (`ibot.services.grounding`) between the post and its files. They take their
budget (`knowledge.max_source_tokens` at most) *before* the files' share, once the post
text's floor is set aside: a few hundred tokens of a thread that solved the same problem
are worth more than the last lines of a long log, and the files still get everything
else. The whole request still fits `max_prompt_tokens`.

A post that is a near duplicate of one of those threads (`Grounding.duplicate_of`) gets a
short answer from the cheaper model that points to it (`ibot.services.duplicates`), its
prompt fitted the same way with that one thread in the `duplicate` template.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import assert_never

import structlog

from ibot import tokens
from ibot.db.threads import ThreadState, ThreadStore
from ibot.domain import CallContext, ChatMessage, Feature, LLMRequest
from ibot.llm.gateway import ModelGateway
from ibot.services.attachments import (
    AttachmentKind,
    AttachmentLimits,
    AttachmentResult,
    AttachmentSource,
    process_attachments,
)
from ibot.services.duplicates import answer_duplicate
from ibot.services.grounding import Grounding, grounded_user_message, sources_block
from ibot.services.knowledge import Hit, Source
from ibot.services.outcomes import Answered, Failed, call_for_outcome
from ibot.services.prompts import FeatureConfig, PromptBuilder, attachments_block

log = structlog.get_logger("ibot.forum")

# The post's own text (the member's question) is never cut below this many tokens, or
# below its whole length when shorter: the attached files share the rest of the budget.
# 1 000 tokens is about 4 000 characters of English, more than almost any forum post, and
# leaves the files most of the default 12 000-token forum budget.
MIN_CONTENT_TOKENS = 1000


@dataclass(frozen=True, slots=True)
class ForumPost:
    thread_id: int
    guild_id: int | None
    forum_id: int | None
    title: str
    content: str
    author_id: int
    author_name: str
    author_is_bot: bool = False
    tags: tuple[str, ...] = ()
    attachments: tuple[AttachmentSource, ...] = ()
    created_at: datetime | None = None


ForumOutcome = Answered | Failed


@dataclass(frozen=True, slots=True)
class CatchUp:
    """A thread the catch-up must see to."""

    thread_id: int
    # Its claim was left by a process that died: Discord may already show that process's
    # answer, so look before answering (`found_answered`) and take the claim over.
    take_over: bool


def share_budget(sizes: Sequence[int], budget: int) -> list[int]:
    """How many tokens each of the files of `sizes` tokens may keep, `budget` in all.

    A fair split: the budget is divided equally among the files, a file smaller than its
    equal part keeps everything and leaves the remainder to the larger ones, which share
    it equally. The shares never exceed the sizes, nor their sum the budget.
    """
    shares = [0] * len(sizes)
    left = max(0, budget)
    order = sorted(range(len(sizes)), key=lambda i: sizes[i])
    for done, index in enumerate(order):
        share = min(sizes[index], left // (len(order) - done))
        shares[index] = share
        left -= share
    return shares


def _with_bodies(
    processed: Sequence[AttachmentResult], shares: Sequence[int], model: str
) -> tuple[AttachmentResult, ...]:
    """`processed` with each text file's body cut to its share (in file order)."""
    shares_left = iter(shares)
    results = []
    for result in processed:
        if result.kind is AttachmentKind.TEXT and result.text is not None:
            body = tokens.truncate_text(result.text, next(shares_left), model)
            result = dataclasses.replace(result, text=body)
        results.append(result)
    return tuple(results)


class ForumService:
    def __init__(
        self,
        gateway: ModelGateway,
        prompts: PromptBuilder,
        config: FeatureConfig,
        store: ThreadStore,
        *,
        no_bot_tags: Iterable[str] = (),
        attachment_limits: AttachmentLimits | None = None,
        catch_up_hours: float = 0,
        grounding: Grounding | None = None,
    ) -> None:
        self.gateway = gateway
        self.prompts = prompts
        self.config = config
        self.store = store
        self.no_bot_tags = {tag.casefold() for tag in no_bot_tags}
        self.attachment_limits = attachment_limits or AttachmentLimits()
        self.catch_up_hours = catch_up_hours
        self.grounding = grounding

    # ---- the thread's state: claimed once, then answered, failed or skipped -------------

    async def begin(
        self,
        thread_id: int,
        *,
        guild_id: int | None,
        forum_id: int | None,
        take_over: bool = False,
    ) -> bool:
        """Claim the thread's answer for this process; False: someone else has it (a
        replayed event, the catch-up racing a live event, another process)."""
        if take_over:
            return await self.store.take_over(thread_id)
        return await self.store.claim(thread_id, guild_id=guild_id, forum_id=forum_id)

    async def skip_if_unwanted(self, post: ForumPost) -> str | None:
        """Why the bot stays out of this thread (recorded as skipped), or None to answer."""
        reason = self._skip_reason(post)
        if reason is not None:
            await self.store.finish(post.thread_id, ThreadState.SKIPPED, reason=reason)
        return reason

    def _skip_reason(self, post: ForumPost) -> str | None:
        if post.author_is_bot:
            return "bot_author"
        if any(tag.casefold() in self.no_bot_tags for tag in post.tags):
            return "no_bot_tag"
        if not post.content.strip() and not post.attachments:
            # Nothing to answer: what a bot without the Message Content intent is shown
            # of every post (Discord empties content and attachments), or a bare title.
            return "empty_post"
        return None

    async def abandon(self, thread_id: int, reason: str) -> None:
        """The thread cannot be answered (its starter message never came, an internal
        error): failed, not retried automatically; the cog tells the member."""
        await self.store.finish(thread_id, ThreadState.FAILED, reason=reason)

    async def undelivered(
        self, thread_id: int, reason: str, outcome: ForumOutcome | None = None
    ) -> None:
        """Discord refused the thread's message (deleted, locked, no permission): failed,
        with the model call's ledger row kept on the record; nothing more is posted."""
        ledger_id = outcome.ledger_id if outcome is not None else None
        await self.store.finish(thread_id, ThreadState.FAILED, ledger_id=ledger_id, reason=reason)

    async def posted(
        self, thread_id: int, outcome: ForumOutcome, *, message_id: int | None = None
    ) -> None:
        """Record the outcome once its message is posted in the thread.

        If the database fails now, the member already has the message: the failure is
        logged and nothing more is posted (no error under an answer); the claim left
        behind is settled by the next start's catch-up, which finds the posted message.
        """
        match outcome:
            case Answered():
                state, reason = ThreadState.ANSWERED, None
            case Failed():
                state, reason = ThreadState.FAILED, outcome.kind.value
            case _:
                assert_never(outcome)
        try:
            await self.store.finish(
                thread_id, state, message_id=message_id, ledger_id=outcome.ledger_id, reason=reason
            )
        except Exception:
            log.exception("thread_state_write_failed", thread_id=thread_id, state=str(state))

    # ---- the catch-up at start ------------------------------------------------------------

    def catch_up_since(self, now: datetime) -> datetime | None:
        """Threads created after this are caught up at start; None: no catch-up."""
        if self.catch_up_hours <= 0:
            return None
        return now - timedelta(hours=self.catch_up_hours)

    async def plan_catch_up(self, thread_ids: Iterable[int]) -> list[CatchUp]:
        """Of the recent threads, those to answer now: never seen, or claimed by a
        process that died before answering. Answered, failed, skipped threads and this
        process's own claims (being answered) are left alone."""
        ids = list(thread_ids)
        states = await self.store.states(ids)
        plan = []
        for thread_id in ids:
            known = states.get(thread_id)
            if known is None:
                plan.append(CatchUp(thread_id, take_over=False))
            elif known[0] is ThreadState.CLAIMED and known[1] != self.store.owner:
                plan.append(CatchUp(thread_id, take_over=True))
        return plan

    async def found_answered(self, thread_id: int) -> None:
        """A dead process's claim whose answer is on Discord after all: take the claim
        over and record it answered, posting nothing."""
        await self.store.take_over(thread_id)
        await self.store.finish(thread_id, ThreadState.ANSWERED, reason="found_after_restart")

    # ---- the answer -------------------------------------------------------------------------

    async def answer(self, post: ForumPost) -> ForumOutcome:
        processed = tuple(await process_attachments(post.attachments, self.attachment_limits))
        persona = self.prompts.persona
        found: list[Source] = []
        if self.grounding is not None:
            query = f"{post.title}\n{post.content}"
            found = await self.grounding.find(query, guild_id=post.guild_id)
            duplicate = self.grounding.duplicate_of(found)
            if duplicate is not None:
                outcome = await self._short_answer(post, processed, persona, duplicate)
                if outcome is not None:
                    return outcome
        model = self.config.model
        fitted = self._fit(post, processed, persona, found, model=model)
        request = self._request(post, processed, persona, found, fitted, model=model)
        return await call_for_outcome(self.gateway, request, processed, fitted[3])

    async def _short_answer(
        self,
        post: ForumPost,
        processed: tuple[AttachmentResult, ...],
        persona: str,
        duplicate: Source,
    ) -> ForumOutcome | None:
        """The near duplicate's short answer (see `ibot.services.duplicates`); None: give
        the normal answer (the thread did not fit, or the cheaper model failed)."""
        assert self.grounding is not None
        model = self.grounding.duplicate_model
        fitted = self._fit(post, processed, persona, [duplicate], "duplicate", model=model)
        if not fitted[3]:
            return None
        request = self._request(post, processed, persona, [duplicate], fitted, model=model)
        request = dataclasses.replace(
            request,
            max_output_tokens=min(
                self.grounding.duplicate_max_output_tokens, self.config.max_output_tokens
            ),
        )
        return await answer_duplicate(self.gateway, request, duplicate.hit, processed)

    def _request(
        self,
        post: ForumPost,
        processed: Sequence[AttachmentResult],
        persona: str,
        found: Sequence[Source],
        fitted: tuple[str, str, str, tuple[Hit, ...]],
        *,
        model: str,
    ) -> LLMRequest:
        text, sources, files, hits = fitted
        user = grounded_user_message(
            self.prompts,
            text=text,
            sources_text=sources,
            files=files,
            images=tuple(r.image for r in processed if r.image is not None),
            sources=found,
            hits=hits,
        )
        return LLMRequest(
            messages=(ChatMessage("system", persona), user),
            model=model,
            max_output_tokens=self.config.max_output_tokens,
            context=CallContext(
                feature=Feature.AUTO_REPLY,
                guild_id=post.guild_id,
                channel_id=post.forum_id,
                thread_id=post.thread_id,
                user_id=post.author_id,
            ),
            temperature=self.config.temperature,
        )

    def _fit(
        self,
        post: ForumPost,
        processed: Sequence[AttachmentResult],
        persona: str,
        found: Sequence[Source] = (),
        template: str = "sources",
        *,
        model: str,
    ) -> tuple[str, str, str, tuple[Hit, ...]]:
        """The user message's text, its sources block (in `template`) and its files
        block, cut to fit `max_prompt_tokens` as `model` counts, and the hits quoted.

        The sources get at most `max_source_tokens` of what the fixed part (persona,
        template, title, tags, the files' headers and fences) and the post text's floor
        (`MIN_CONTENT_TOKENS`, or the whole text if shorter) leave. The files' budget is
        the limit less the fixed part, the sources and the text's floor; it is split
        among the files by `share_budget`. The post's text then gets all that is left.
        Token counts of joined pieces can differ by a token or so from the sum of their
        parts, so the result is re-counted and the files give back whatever the text's
        floor lacks.
        """
        limit = self.config.max_prompt_tokens

        def render(content: str) -> str:
            return self.prompts.render(
                "auto_reply",
                author=post.author_name,
                title=post.title,
                tags=", ".join(post.tags) or "-",
                content=content,
            )

        sources = ""

        def count(content: str, files: str) -> int:
            messages = (
                ChatMessage("system", persona),
                ChatMessage("user", render(content) + sources + files),
            )
            return tokens.count_messages(messages, model)

        def fit_content(files: str) -> str:
            room = limit - count("", files)
            content = tokens.truncate_text(post.content, room, model)
            while content and (over := count(content, files) - limit) > 0:
                room -= over
                content = tokens.truncate_text(post.content, room, model)
            return content

        texts = [r.text for r in processed if r.kind is AttachmentKind.TEXT and r.text is not None]
        sizes = [tokens.count_text(text, model) for text in texts]
        headers = attachments_block(_with_bodies(processed, [0] * len(texts), model))
        floor = min(tokens.count_text(post.content, model), MIN_CONTENT_TOKENS)
        hits: tuple[Hit, ...] = ()
        if found and self.grounding is not None:
            room = min(self.grounding.max_source_tokens, limit - count("", headers) - floor)
            sources, hits = sources_block(
                self.prompts, found, max(0, room), model, template=template
            )
        budget = max(0, limit - count("", headers) - floor)
        while True:
            files = attachments_block(_with_bodies(processed, share_budget(sizes, budget), model))
            content = fit_content(files)
            lacking = floor - tokens.count_text(content, model)
            if lacking <= 0 or budget == 0:
                break
            budget = max(0, budget - lacking)
        if count(content, files) > limit:
            # Not even the files' headers fit beside the title and persona: drop them.
            files = ""
            content = fit_content(files)
        if count(content, files) > limit and sources:
            sources, hits = "", ()
            content = fit_content(files)
        return render(content), sources, files, hits
