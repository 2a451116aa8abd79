"""A user message that quotes sources, and says which part of it they are.

Why it exists: /ask-gpt and the forum auto-reply quote the server's solved threads
inside the user message (`content`, what OpenAI gets: the question, the sources block
with its instructions, the files). A backend with a small window, the local GPT-2
fallback (1 024 positions), cannot take all that; cut from its start, it would lose the
question first. So the message also carries the same text without the sources (`bare`)
and each source as a short note (`notes`: title, link, answer), and the local prompt
(`ibot.llm.local_prompt`) puts the notes in front of the question only when they fit
beside it and the answer's room, truncating notes, never the question.

It is a `ChatMessage` like any other for everything else (token counts, the OpenAI
request, the ledger): they read `content` and never see the extra fields.
"""

from __future__ import annotations

from dataclasses import dataclass

from ibot.domain import ChatMessage


@dataclass(frozen=True, slots=True)
class GroundedMessage(ChatMessage):
    """`content` with the sources; `bare` without them; `notes` the sources, one each,
    best first, for a backend that must choose; `heading` introduces the notes."""

    bare: str = ""
    notes: tuple[str, ...] = ()
    heading: str = ""
