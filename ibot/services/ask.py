"""Answer one question: the pipeline behind `/ask-gpt` and `ibot ask`.

Discord-free: the caller passes the question, the author's display name, where it was
asked, and attachments as `AttachmentSource`s. The result is a typed outcome that the
cog (or the CLI) turns into a message; no exception escapes for an expected failure.
"""

from __future__ import annotations

from collections.abc import Sequence

from ibot import tokens
from ibot.domain import CallContext, ChatMessage, Feature, LLMRequest
from ibot.llm.gateway import ModelGateway
from ibot.services.attachments import AttachmentLimits, AttachmentSource, process_attachments
from ibot.services.grounding import Grounding, sources_block
from ibot.services.knowledge import Hit
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
        context = context or CallContext(feature=Feature.ASK)
        processed = tuple(await process_attachments(attachments, self.attachment_limits))
        question_text = self.prompts.render("ask", author=author, question=question)
        files = attachments_block(processed)
        images = tuple(r.image for r in processed if r.image is not None)

        def messages_with(sources: str) -> tuple[ChatMessage, ...]:
            return (
                ChatMessage("system", self.prompts.persona),
                ChatMessage("user", question_text + sources + files, images=images),
            )

        model, limit = self.config.model, self.config.max_prompt_tokens
        messages = messages_with("")
        prompt_tokens = tokens.count_messages(messages, model)
        if prompt_tokens > limit:
            return TooLong(tokens=prompt_tokens, limit=limit)
        # The solved threads take what the question and files leave, up to their budget.
        hits: tuple[Hit, ...] = ()
        if self.grounding is not None:
            found = await self.grounding.find(question, guild_id=context.guild_id)
            room = min(self.grounding.max_source_tokens, limit - prompt_tokens)
            while found:
                block, hits = sources_block(self.prompts, found, room, model)
                grounded = messages_with(block)
                over = tokens.count_messages(grounded, model) - limit
                if over <= 0:
                    messages = grounded
                    break
                room -= over
                hits = ()
        request = LLMRequest(
            messages=messages,
            model=self.config.model,
            max_output_tokens=self.config.max_output_tokens,
            context=context,
            temperature=self.config.temperature,
        )
        return await call_for_outcome(self.gateway, request, processed, hits)
