"""Answer one question: the pipeline behind `/ask-gpt` and `ibot ask`.

Discord-free: the caller passes the question, the author's display name, where it was
asked, and attachments as `AttachmentSource`s. The result is a typed outcome that the
cog (or the CLI) turns into a message; no exception escapes for an expected failure.

With the knowledge base on, the guild's similar solved threads are quoted as sources in
what the question and its files leave of the prompt budget; a near duplicate of one of
them gets a short answer from the cheaper model instead (`ibot.services.duplicates`).
"""

from __future__ import annotations

from collections.abc import Sequence

from ibot import tokens
from ibot.domain import CallContext, ChatMessage, ErrorKind, Feature, ImageInput, LLMRequest
from ibot.llm.gateway import ModelGateway
from ibot.services.attachments import (
    AttachmentLimits,
    AttachmentResult,
    AttachmentSource,
    process_attachments,
)
from ibot.services.duplicates import AlreadySolved, answer_duplicate
from ibot.services.grounding import Grounding, grounded_user_message, sources_block
from ibot.services.knowledge import Hit, Source
from ibot.services.outcomes import Answered, Failed, TooLong, call_for_outcome
from ibot.services.prompts import FeatureConfig, PromptBuilder, attachments_block

AskOutcome = Answered | Failed | TooLong


class AskService:
    def __init__(
        self,
        gateway: ModelGateway,
        prompts: PromptBuilder,
        config: FeatureConfig,
        attachment_limits: AttachmentLimits | None = None,
        *,
        grounding: Grounding | None = None,
    ) -> None:
        self.gateway = gateway
        self.prompts = prompts
        self.config = config
        self.attachment_limits = attachment_limits or AttachmentLimits()
        self.grounding = grounding

    async def ask(
        self,
        question: str,
        *,
        author: str,
        context: CallContext | None = None,
        attachments: Sequence[AttachmentSource] = (),
    ) -> AskOutcome:
        if not question.strip():
            # Nothing to answer: a call would bill the persona for a guess. Refused here, so
            # /ask-gpt and `ibot ask` say it the same way (a failure with its own message).
            return Failed(kind=ErrorKind.EMPTY_QUESTION)
        context = context or CallContext(feature=Feature.ASK)
        processed = tuple(await process_attachments(attachments, self.attachment_limits))
        question_text = self.prompts.render("ask", author=author, question=question)
        prompt = _Prompt(
            self.prompts,
            question_text,
            attachments_block(processed),
            tuple(r.image for r in processed if r.image is not None),
        )
        limit = self.config.max_prompt_tokens
        prompt_tokens = tokens.count_messages(prompt.messages(), self.config.model)
        if prompt_tokens > limit:
            return TooLong(tokens=prompt_tokens, limit=limit)
        found: list[Source] = []
        if self.grounding is not None:
            found = await self.grounding.find(question, guild_id=context.guild_id)
            duplicate = self.grounding.duplicate_of(found)
            if duplicate is not None:
                outcome = await self._short_answer(prompt, duplicate, context, processed)
                if outcome is not None:
                    return outcome
        messages, hits = self._fit(prompt, found, "sources", self.config.model)
        request = LLMRequest(
            messages=messages,
            model=self.config.model,
            max_output_tokens=self.config.max_output_tokens,
            context=context,
            temperature=self.config.temperature,
        )
        return await call_for_outcome(self.gateway, request, processed, hits)

    async def _short_answer(
        self,
        prompt: _Prompt,
        duplicate: Source,
        context: CallContext,
        processed: tuple[AttachmentResult, ...],
    ) -> AlreadySolved | Failed | None:
        """The near duplicate's short answer (see `ibot.services.duplicates`); None: give
        the normal answer (the thread did not fit, or the cheaper model failed)."""
        assert self.grounding is not None
        model = self.grounding.duplicate_model
        messages, hits = self._fit(prompt, [duplicate], "duplicate", model)
        if not hits:
            return None
        request = LLMRequest(
            messages=messages,
            model=model,
            max_output_tokens=min(
                self.grounding.duplicate_max_output_tokens, self.config.max_output_tokens
            ),
            context=context,
            temperature=self.config.temperature,
        )
        return await answer_duplicate(self.gateway, request, duplicate.hit, processed)

    def _fit(
        self, prompt: _Prompt, found: Sequence[Source], template: str, model: str
    ) -> tuple[tuple[ChatMessage, ...], tuple[Hit, ...]]:
        """The messages with as much of `found` (in `template`) as the question and files
        leave of the budget, up to `max_source_tokens`, and the hits quoted."""
        plain = prompt.messages()
        if self.grounding is None or not found:
            return plain, ()
        limit = self.config.max_prompt_tokens
        room = min(self.grounding.max_source_tokens, limit - tokens.count_messages(plain, model))
        while room > 0:
            block, hits = sources_block(self.prompts, found, room, model, template=template)
            if not hits:
                break
            grounded = prompt.messages(block, found, hits)
            over = tokens.count_messages(grounded, model) - limit
            if over <= 0:
                return grounded, hits
            room -= over
        return plain, ()


class _Prompt:
    """The question's messages, with or without a sources block."""

    def __init__(
        self,
        prompts: PromptBuilder,
        question_text: str,
        files: str,
        images: tuple[ImageInput, ...],
    ) -> None:
        self.prompts = prompts
        self.question_text = question_text
        self.files = files
        self.images = images

    def messages(
        self, block: str = "", found: Sequence[Source] = (), hits: Sequence[Hit] = ()
    ) -> tuple[ChatMessage, ...]:
        user = grounded_user_message(
            self.prompts,
            text=self.question_text,
            sources_text=block,
            files=self.files,
            images=self.images,
            sources=found,
            hits=hits,
        )
        return (ChatMessage("system", self.prompts.persona), user)
