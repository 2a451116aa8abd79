"""Who may do what, decided from role ids and Discord permission bits only.

Kept free of nextcord so the whole permission matrix is tested directly; the cogs pass
`member.roles` ids and `member.guild_permissions` flags in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class Access(StrEnum):
    ASK = "ask"  # /ask-gpt and the chat channel
    SUMMARY = "summary"  # /summary
    ADMIN = "admin"  # /cost-report, /budget


@dataclass(frozen=True, slots=True)
class MemberFacts:
    role_ids: frozenset[int]
    administrator: bool = False
    manage_messages: bool = False
    is_owner: bool = False

    @classmethod
    def of(
        cls,
        role_ids: Iterable[int],
        *,
        administrator: bool = False,
        manage_messages: bool = False,
        is_owner: bool = False,
    ) -> MemberFacts:
        return cls(frozenset(role_ids), administrator, manage_messages, is_owner)


@dataclass(frozen=True, slots=True)
class RolePolicy:
    denied_ask: frozenset[int] = frozenset()
    moderators: frozenset[int] = frozenset()
    admins: frozenset[int] = frozenset()

    def is_admin(self, member: MemberFacts) -> bool:
        return member.is_owner or member.administrator or bool(member.role_ids & self.admins)

    def is_moderator(self, member: MemberFacts) -> bool:
        return (
            self.is_admin(member)
            or member.manage_messages
            or bool(member.role_ids & self.moderators)
        )

    def allows(self, access: Access, member: MemberFacts) -> bool:
        """Admins and moderators are never caught by a denied role; members are."""
        if access is Access.ADMIN:
            return self.is_admin(member)
        if access is Access.SUMMARY:
            return self.is_moderator(member)
        return self.is_moderator(member) or not (member.role_ids & self.denied_ask)
