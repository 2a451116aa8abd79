"""Discord's REST limits, kept by the fake Discord as Discord keeps them, and what the
real bot does against them: rate-limit buckets and their headers, the global and the
shared-resource 429s, the 15-minute life of an interaction token, the message and
command limits answered with Discord's form errors, permissions computed per channel
with its overwrites, and registered commands reshaped as Discord stores them.

Fake-level tests speak raw HTTP to the fake (aiohttp, the bot's token); the others run
the real bot (ibot.testing.harness). Waits are on conditions; time that Discord counts
in minutes is moved on with the fake's injectable clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from ibot.db.threads import ThreadAnswer, ThreadState
from ibot.i18n import t
from ibot.testing import spec_violations
from ibot.testing.fake_discord import (
    ADMINISTRATOR,
    ALL_PERMISSIONS,
    MANAGE_MESSAGES,
    SEND_MESSAGES,
    VIEW_CHANNEL,
    FakeChannel,
    FakeDiscord,
    FakeGuild,
)
from ibot.testing.fake_discord.constants import SEND_MESSAGES_IN_THREADS
from ibot.testing.fake_discord.ratelimits import Limit
from ibot.testing.harness import Harness

TOKEN = "fake-limits-token"
COMMANDS_ROUTE = "/applications/{application_id}/guilds/{guild_id}/commands"
pytestmark = pytest.mark.slow


# -- helpers ------------------------------------------------------------------------


class Clock:
    """The fake's clock, moved on by hand: Discord's minutes without waiting them."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Rest:
    """Raw REST calls to the fake, as a client would make them (bot token)."""

    def __init__(self, fake: FakeDiscord, session: aiohttp.ClientSession) -> None:
        self.fake, self.session = fake, session

    async def call(
        self, method: str, path: str, body: Any = None, *, auth: bool = True
    ) -> tuple[int, Any, dict[str, str]]:
        headers = {"Authorization": f"Bot {TOKEN}"} if auth else {}
        async with self.session.request(
            method, self.fake.base_url + path, json=body, headers=headers
        ) as response:
            data = await response.json() if response.content_length else None
            return response.status, data, dict(response.headers)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(token=TOKEN) as server:
        yield server


@pytest.fixture
async def rest(fake: FakeDiscord) -> AsyncIterator[Rest]:
    async with aiohttp.ClientSession() as session:
        yield Rest(fake, session)


@pytest.fixture
def guild(fake: FakeDiscord) -> FakeGuild:
    return fake.create_guild("Limites")


def take_request_departures(*routes: str) -> list[str]:
    """The spec departures recorded so far, all of which must be the request bodies this
    test sent over Discord's limits on purpose (the OpenAPI file encodes some of them:
    10 embeds, 4096 characters, 25 options or choices): never a departure of the fake's
    answers, which the suite's check still fails the test for."""
    found = spec_violations.drain()
    wanted = {f"{route} request" for route in routes}
    assert all(v.where in wanted for v in found), [str(v) for v in found]
    return [v.field for v in found]


def bot_role(guild: FakeGuild):
    return next(r for r in guild.roles.values() if r.bot_id is not None)


def over_limit(code: str, message: str) -> dict[str, Any]:
    return {"_errors": [{"code": code, "message": message}]}


async def thread_row(harness: Harness, thread: FakeChannel) -> ThreadAnswer | None:
    assert harness.services is not None
    async with harness.services.sessionmaker() as session:
        return await session.get(ThreadAnswer, thread.id)


async def settled(harness: Harness, within_s: float = 10.0) -> set[asyncio.Task[object]]:
    """Wait until the bot's tracked work (answers in progress) is done, or `within_s`;
    returns what is still running."""
    assert harness.services is not None
    running = harness.services.in_flight.running()
    if not running:
        return set()
    _, still = await asyncio.wait(running, timeout=within_s)
    return still


async def open_thread(harness: Harness, title: str) -> FakeChannel:
    world = harness.world
    assert world is not None
    return await harness.discord.create_forum_thread(
        world.forum, author=world.member, title=title, content="Mon code plante, pourquoi ?"
    )


def posts_to(discord: FakeDiscord, channel: FakeChannel) -> list:
    return discord.requests_to("POST", f"/channels/{channel.id}/messages")


# -- 1. rate limits: per-route buckets, their headers, the three 429s ---------------


async def test_each_answer_carries_its_bucket_and_a_spent_bucket_refuses_that_channel_only(
    fake: FakeDiscord, rest: Rest, guild: FakeGuild
) -> None:
    clock = Clock()
    fake.clock = clock
    a = fake.create_text_channel(guild, "a")
    b = fake.create_text_channel(guild, "b")

    answers = [
        await rest.call("POST", f"/channels/{a.id}/messages", {"content": "x"}) for _ in range(6)
    ]

    assert [status for status, _, _ in answers] == [200] * 5 + [429]
    headers = [h for _, _, h in answers]
    assert [h["X-RateLimit-Remaining"] for h in headers[:5]] == ["4", "3", "2", "1", "0"]
    assert {h["X-RateLimit-Limit"] for h in headers} == {"5"}
    assert headers[0]["X-RateLimit-Reset-After"] == "5.000"
    assert len({h["X-RateLimit-Bucket"] for h in headers}) == 1
    _, refusal, refused = answers[5]
    assert refusal == {
        "message": "You are being rate limited.",
        "retry_after": 5.0,
        "global": False,
        "code": 0,
    }
    assert refused["X-RateLimit-Scope"] == "user" and refused["Retry-After"] == "5"
    assert refused["Via"]  # without it nextcord takes a 429 for a Cloudflare ban
    assert len(fake.messages_in(a)) == 5  # the refused request did not run

    # The top-level resource is part of the limit, not of the bucket's name.
    status, _, other = await rest.call("POST", f"/channels/{b.id}/messages", {"content": "y"})
    assert status == 200 and other["X-RateLimit-Remaining"] == "4"
    assert other["X-RateLimit-Bucket"] == headers[0]["X-RateLimit-Bucket"]

    clock.advance(5.0)  # the window is over
    status, _, again = await rest.call("POST", f"/channels/{a.id}/messages", {"content": "z"})
    assert status == 200 and again["X-RateLimit-Remaining"] == "4"


async def test_global_and_shared_429s_answer_as_the_docs_show(
    fake: FakeDiscord, rest: Rest, guild: FakeGuild
) -> None:
    clock = Clock()
    fake.clock = clock
    channel = fake.create_text_channel(guild, "général")

    fake.faults.global_rate_limit(retry_after=64.57)
    status, body, headers = await rest.call("GET", f"/channels/{channel.id}")
    assert status == 429
    assert body == {
        "message": "You are being rate limited.",
        "retry_after": 64.57,
        "global": True,
        "code": 0,
    }
    assert headers["X-RateLimit-Global"] == "true" and headers["X-RateLimit-Scope"] == "global"
    assert headers["Retry-After"] == "65" and "X-RateLimit-Bucket" not in headers

    fake.faults.shared_rate_limit(f"/channels/{channel.id}/messages", method="POST")
    for _ in range(2):  # the resource stays limited, whatever the bucket says
        status, body, headers = await rest.call(
            "POST", f"/channels/{channel.id}/messages", {"content": "x"}
        )
        assert status == 429
        assert body == {
            "message": "The resource is being rate limited.",
            "retry_after": 1336.57,
            "global": False,
            "code": 0,
        }
        assert headers["X-RateLimit-Scope"] == "shared" and headers["Retry-After"] == "1337"
        # the route bucket's own headers: not spent (the docs' example: 9 of 10 left)
        assert headers["X-RateLimit-Limit"] == "5" and headers["X-RateLimit-Remaining"] == "5"
        assert headers["X-RateLimit-Bucket"]
    assert fake.messages_in(channel) == []

    clock.advance(1336.57)
    status, _, _ = await rest.call("POST", f"/channels/{channel.id}/messages", {"content": "x"})
    assert status == 200


async def test_the_bot_paces_itself_on_the_bucket_headers(tmp_path: Path) -> None:
    async with Harness(tmp_path) as harness:
        world, discord = harness.world, harness.discord
        assert world is not None
        # A tight bucket so that pacing shows within a second: 2 messages per 0.5 s.
        discord.rate_limits.limits[("POST", "/channels/{cid}/messages")] = Limit(2, 0.5)
        for i in range(5):
            await discord.post_message(world.chat, world.member, f"Question {i} ?")

        answers = await discord.wait_for(
            lambda: len(found := discord.messages_in(world.chat)) >= 5 and found, timeout=20
        )

        assert len(answers) == 5 and all(a.embeds for a in answers)
        assert discord.rate_limits.refused == []  # nextcord waited ahead: never a 429


async def test_a_global_429_is_waited_out_and_the_answer_lands_once(tmp_path: Path) -> None:
    async with Harness(tmp_path) as harness:
        discord = harness.discord
        discord.faults.global_rate_limit(times=1, retry_after=0.2)
        thread = await open_thread(harness, "Global")

        [answer] = await discord.wait_for(lambda: discord.messages_in(thread), timeout=10)

        refused = [r for r in discord.requests if r.fault == "global_rate_limit"]
        assert len(refused) == 1 and refused[0].status == 429
        assert answer.embeds and len(posts_to(discord, thread)) == 1


async def test_a_shared_resource_limit_on_one_post_holds_back_nothing_and_not_the_stop(
    tmp_path: Path,
) -> None:
    settings = {"discord": {"shutdown_grace_s": 30}}
    with capture_logs() as logs:
        async with Harness(tmp_path, settings=settings) as harness:
            world, discord, openai = harness.world, harness.discord, harness.openai
            assert world is not None and harness.services is not None and harness.bot
            openai.slow(0.3)  # thread A's model call: time to limit the channel it posts in
            held = await open_thread(harness, "A")
            discord.faults.shared_rate_limit(f"/channels/{held.id}/messages", method="POST")
            await discord.wait_for(
                lambda: any(r.status == 429 for r in posts_to(discord, held)), timeout=10
            )

            other = await open_thread(harness, "B")
            ask = await discord.invoke_slash(
                world.guild, world.member, world.text, "ask-gpt", {"question": "Bonjour ?"}
            )
            [other_answer] = await discord.wait_for(lambda: discord.messages_in(other), timeout=10)
            ask_answer = await ask.wait_answer(timeout=10)
            # A's answer, given up on: its work ends without waiting out the 1336 s.
            still = await settled(harness)
            failed = await thread_row(harness, held)

            async with asyncio.timeout(10):  # the grace is 30 s: nothing may make it wait
                await harness.bot.close()

    assert other_answer.embeds and ask_answer.embeds and not still
    assert discord.messages_in(held) == []
    tries = posts_to(discord, held)
    assert 1 <= len(tries) <= 5 and all(r.status == 429 for r in tries)  # nextcord's own
    assert failed is not None and failed.state == ThreadState.FAILED
    assert failed.reason == "rate_limited"
    [undelivered] = [e for e in logs if e["event"] == "forum_answer_undeliverable"]
    assert undelivered["thread_id"] == held.id and undelivered["status"] == 429
    assert not [e for e in logs if e["event"] in ("forum_answer_failed", "shutdown_cut_short")]


async def test_a_long_per_route_wait_does_not_hold_a_graceful_stop_past_its_grace(
    tmp_path: Path,
) -> None:
    settings = {"discord": {"shutdown_grace_s": 0.5}}
    with capture_logs() as logs:
        async with Harness(tmp_path, settings=settings) as harness:
            world, discord, openai = harness.world, harness.discord, harness.openai
            assert world is not None and harness.services is not None and harness.bot
            openai.slow(0.3)
            held = await open_thread(harness, "A")
            # The docs' user-limit example: Remaining 0, 64.57 s to wait. nextcord waits it.
            discord.faults.rate_limit(
                f"/channels/{held.id}/messages", method="POST", retry_after=64.57
            )
            await discord.wait_for(
                lambda: any(r.status == 429 for r in posts_to(discord, held)), timeout=10
            )
            other = await open_thread(harness, "B")
            ask = await discord.invoke_slash(
                world.guild, world.member, world.text, "ask-gpt", {"question": "Bonjour ?"}
            )
            await discord.wait_for(lambda: discord.messages_in(other), timeout=10)
            await ask.wait_answer(timeout=10)

            async with asyncio.timeout(10):  # not the 64 s the post waits for
                await harness.bot.close()
            waiting = harness.services.in_flight.running()  # what the grace cut short
            for task in waiting:  # A's post in the old client: it would wait out its 64 s
                task.cancel()
            await asyncio.gather(*waiting, return_exceptions=True)

            # Not lost: its claim is the dead process's, which the next start takes over.
            await harness.restart_bot()
            [late] = await discord.wait_for(lambda: discord.messages_in(held), timeout=10)

    assert len(waiting) == 1 and discord.messages_in(other) and late.embeds
    [cut] = [e for e in logs if e["event"] == "shutdown_cut_short"]
    assert cut["answers"] == 1


# -- 2. the interaction token lives 15 minutes ----------------------------------------


async def test_an_answer_after_the_token_expired_is_logged_once_and_the_bot_serves_on(
    tmp_path: Path,
) -> None:
    with capture_logs() as logs:
        async with Harness(tmp_path) as harness:
            world, discord, openai = harness.world, harness.discord, harness.openai
            assert world is not None
            clock = Clock(discord.clock())
            discord.clock = clock
            openai.slow(0.3)
            late = await discord.invoke_slash(
                world.guild, world.member, world.text, "ask-gpt", {"question": "Lent ?"}
            )
            await late.wait_acknowledged()  # deferred in time
            await openai.wait_for_requests(1)
            clock.advance(16 * 60)  # the model takes 16 minutes: the token is dead
            await discord.wait_for(lambda: late.rejected, timeout=10)

            later = await discord.invoke_slash(
                world.guild, world.member, world.text, "ask-gpt", {"question": "Et là ?"}
            )
            answer = await later.wait_answer(timeout=10)
            await discord.flush()
            assert harness.services is not None
            rows = await harness.services.ledger.rows()

    assert late.deferred and late.rejected == [("webhook", 50027)]  # one try, no more
    assert [m for m in late.messages if not m.loading] == []
    assert answer.embeds and not later.rejected
    [expired] = [e for e in logs if e["event"] == "interaction_expired"]
    assert expired["command"] == "ask-gpt" and expired["log_level"] == "warning"
    assert not [e for e in logs if e["event"] in ("command_failed", "command_error_reply_failed")]
    assert len(rows) == 2  # the late answer's model call is on the ledger all the same


async def test_the_token_opens_the_webhook_for_fifteen_minutes(
    fake: FakeDiscord, rest: Rest, guild: FakeGuild
) -> None:
    clock = Clock()
    fake.clock = clock
    channel = fake.create_text_channel(guild, "général")
    member = fake.create_member(guild, "alice")
    command = {"name": "ping", "description": "Pong", "type": 1}
    status, _, _ = await rest.call(
        "POST", f"/applications/{fake.application_id}/guilds/{guild.id}/commands", command
    )
    assert status == 201
    handle = await fake.invoke_slash(guild, member, channel, "ping")
    hook = f"/webhooks/{fake.application_id}/{handle.token}"
    callback = f"/interactions/{handle.id}/{handle.token}/callback"

    assert (await rest.call("POST", callback, {"type": 5}, auth=False))[0] == 204
    clock.advance(14 * 60)
    status, _, _ = await rest.call("POST", hook + "?wait=true", {"content": "à temps"}, auth=False)
    assert status == 200
    clock.advance(2 * 60)
    status, body, _ = await rest.call("POST", hook, {"content": "trop tard"}, auth=False)
    edit = await rest.call("PATCH", hook + "/messages/@original", {"content": "x"}, auth=False)

    assert status == 401 and body == {"message": "Invalid Webhook Token", "code": 50027}
    assert edit[0] == 401
    assert [m.content for m in handle.messages] == ["à temps"]


# -- 3. Discord's limits, refused with Discord's form errors -------------------------


@pytest.mark.parametrize(
    ("case", "body", "errors"),
    [
        (
            "content",
            {"content": "x" * 2001},
            {"content": over_limit("BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length.")},
        ),
        (
            "description",
            {"embeds": [{"description": "x" * 4097}]},
            {
                "embeds": {
                    "0": {
                        "description": over_limit(
                            "BASE_TYPE_MAX_LENGTH", "Must be 4096 or fewer in length."
                        )
                    }
                }
            },
        ),
        (
            "total",
            {"embeds": [{"description": "x" * 3000}, {"description": "y" * 3001}]},
            {
                "embeds": over_limit(
                    "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000"
                )
            },
        ),
        (
            "embeds",
            {"embeds": [{"description": "x"}] * 11},
            {"embeds": over_limit("BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")},
        ),
        (
            "fields",
            {"embeds": [{"title": "t", "fields": [{"name": "n", "value": "v" * 1025}]}]},
            {
                "embeds": {
                    "0": {
                        "fields": {
                            "0": {
                                "value": over_limit(
                                    "BASE_TYPE_MAX_LENGTH", "Must be 1024 or fewer in length."
                                )
                            }
                        }
                    }
                }
            },
        ),
    ],
)
async def test_message_limits_are_refused_with_discords_form_error(
    fake: FakeDiscord, rest: Rest, guild: FakeGuild, case: str, body: dict, errors: dict
) -> None:
    channel = fake.create_text_channel(guild, "général")

    status, answer, _ = await rest.call("POST", f"/channels/{channel.id}/messages", body)

    assert status == 400
    assert answer == {"message": "Invalid Form Body", "code": 50035, "errors": errors}
    assert fake.messages_in(channel) == []
    take_request_departures("POST /channels/{channel_id}/messages")
    # Just within every limit, the same message goes through.
    ok = {"content": "x" * 2000} if case == "content" else {"embeds": [{"description": "x" * 4096}]}
    assert (await rest.call("POST", f"/channels/{channel.id}/messages", ok))[0] == 200


async def test_more_than_25_choices_or_options_are_refused(
    fake: FakeDiscord, rest: Rest, guild: FakeGuild
) -> None:
    commands = f"/applications/{fake.application_id}/guilds/{guild.id}/commands"
    choices = [{"name": f"c{i}", "value": f"c{i}"} for i in range(26)]
    too_many = over_limit("BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
    option = {"type": 3, "name": "o", "description": "d", "choices": choices}
    command = {"name": "pick", "description": "Pick", "type": 1, "options": [option]}

    one = await rest.call("POST", commands, command)
    bulk = await rest.call(
        "PUT", commands, [{**command, "options": [{**option, "choices": choices[:25]}]}, command]
    )
    wide = await rest.call(
        "POST",
        commands,
        {
            **command,
            "options": [{"type": 3, "name": f"o{i}", "description": "d"} for i in range(26)],
        },
    )
    assert one[0] == bulk[0] == wide[0] == 400
    assert one[1]["errors"] == {"options": {"0": {"choices": too_many}}}
    assert bulk[1]["errors"] == {"1": {"options": {"0": {"choices": too_many}}}}
    assert wide[1]["errors"] == {"options": too_many}
    assert fake.registered_commands(guild) == []
    departures = take_request_departures(f"POST {COMMANDS_ROUTE}", f"PUT {COMMANDS_ROUTE}")
    assert len(departures) == 3  # one per refused body: the spec caps them too

    # An autocomplete result: at most 25 choices.
    command["options"] = [{**option, "choices": choices[:25]}]
    assert (await rest.call("POST", commands, command))[0] == 201
    member = fake.create_member(guild, "alice")
    handle = await fake.invoke_slash(guild, member, fake.create_text_channel(guild, "g"), "pick")
    callback = f"/interactions/{handle.id}/{handle.token}/callback"
    refused = await rest.call(
        "POST", callback, {"type": 8, "data": {"choices": choices}}, auth=False
    )
    assert refused[0] == 400 and refused[1]["errors"] == {"data": {"choices": too_many}}
    assert take_request_departures(
        "POST /interactions/{interaction_id}/{interaction_token}/callback"
    )
    accepted = await rest.call(
        "POST", callback, {"type": 8, "data": {"choices": choices[:25]}}, auth=False
    )
    assert accepted[0] == 204


async def test_a_ten_thousand_character_ask_answer_is_split_within_every_limit(
    tmp_path: Path,
) -> None:
    settings = {"features": {"ask": {"max_output_tokens": 4000}}}
    async with Harness(tmp_path, settings=settings) as harness:
        world, discord, openai = harness.world, harness.discord, harness.openai
        assert world is not None
        long_answer = "\n\n".join(f"Point {i} : " + "détail " * 60 for i in range(30))[:10_000]
        openai.script(long_answer)
        handle = await discord.invoke_slash(
            world.guild, world.member, world.text, "ask-gpt", {"question": "Tout ?"}
        )
        messages = await discord.wait_for(
            lambda: (
                (found := [m for m in handle.messages if not m.loading])
                and any("footer" in e for m in found for e in m.embeds)
                and found
            ),
            timeout=15,
        )
        refused = [r for r in discord.requests if r.status == 400]

    text = "".join(e["description"] for m in messages for e in m.embeds)
    assert " ".join(text.split()) == " ".join(long_answer.split())
    assert refused == []
    for message in messages:
        assert len(message.content) <= 2000 and len(message.embeds) <= 10
        assert all(len(e["description"]) <= 4096 for e in message.embeds)
        assert sum(len(e["description"]) + len(e.get("title", "")) for e in message.embeds) <= 6000


# -- 4. permissions computed per channel, with its overwrites -------------------------


async def test_interactions_and_rest_follow_the_channel_overwrites(
    fake: FakeDiscord, rest: Rest, guild: FakeGuild
) -> None:
    helper = fake.create_role(guild, "Helper", permissions=MANAGE_MESSAGES)
    admin = fake.create_role(guild, "Admin", permissions=ADMINISTRATOR)
    helen = fake.create_member(guild, "helen", roles=[helper])
    root = fake.create_member(guild, "root", roles=[admin])
    strict = fake.create_text_channel(guild, "strict")
    free = fake.create_text_channel(guild, "libre")
    fake.world.set_permission_overwrite(strict, helper, deny=MANAGE_MESSAGES)
    fake.world.set_permission_overwrite(strict, root, deny=VIEW_CHANNEL)
    fake.world.set_permission_overwrite(strict, guild, deny=SEND_MESSAGES)  # @everyone
    commands = f"/applications/{fake.application_id}/guilds/{guild.id}/commands"
    await rest.call("POST", commands, {"name": "ping", "description": "Pong", "type": 1})

    def perms(handle) -> tuple[int, int]:
        payload = handle.payload
        return int(payload["member"]["permissions"]), int(payload["app_permissions"])

    in_strict = perms(await fake.invoke_slash(guild, helen, strict, "ping"))
    in_free = perms(await fake.invoke_slash(guild, helen, free, "ping"))
    admin_in_strict = perms(await fake.invoke_slash(guild, root, strict, "ping"))

    assert not in_strict[0] & MANAGE_MESSAGES and in_free[0] & MANAGE_MESSAGES
    # the @everyone deny beats the bot role's guild-level SEND_MESSAGES
    assert not in_strict[1] & SEND_MESSAGES and in_free[1] & SEND_MESSAGES
    assert admin_in_strict[0] == ALL_PERMISSIONS  # ADMINISTRATOR bypasses overwrites

    status, body, _ = await rest.call("POST", f"/channels/{strict.id}/messages", {"content": "x"})
    assert (status, body) == (403, {"message": "Missing Permissions", "code": 50013})
    fake.world.set_permission_overwrite(free, bot_role(guild), deny=VIEW_CHANNEL)
    status, body, _ = await rest.call("GET", f"/channels/{free.id}")
    assert (status, body) == (403, {"message": "Missing Access", "code": 50001})

    # In a thread SEND_MESSAGES does not count; SEND_MESSAGES_IN_THREADS does.
    forum = fake.create_forum(guild, "aide")
    fake.world.set_permission_overwrite(
        forum, bot_role(guild), allow=SEND_MESSAGES, deny=SEND_MESSAGES_IN_THREADS
    )
    thread = await fake.create_forum_thread(forum, author=helen, title="Fil", content="?")
    status, body, _ = await rest.call("POST", f"/channels/{thread.id}/messages", {"content": "x"})
    assert (status, body["code"]) == (403, 50013) and fake.messages_in(thread) == []


async def test_summary_is_refused_where_the_members_manage_messages_is_denied(
    tmp_path: Path,
) -> None:
    async with Harness(tmp_path) as harness:
        world, discord = harness.world, harness.discord
        assert world is not None
        helper = next(r for r in world.guild.roles.values() if r.name == "Helper")
        helen = discord.create_member(world.guild, "helen", roles=[helper])
        discord.world.set_permission_overwrite(world.text, helper, deny=MANAGE_MESSAGES)
        await discord.flush()
        for channel in (world.text, world.chat):
            await discord.post_message(channel, world.member, "Un message à résumer.")

        here = await discord.invoke_slash(world.guild, helen, world.text, "summary", {})
        elsewhere = await discord.invoke_slash(world.guild, helen, world.chat, "summary", {})
        refused = await here.wait_answer(timeout=10)
        summary = await elsewhere.wait_answer(timeout=10)

    assert refused.ephemeral and refused.content == t("summary.refused", "fr")
    assert not refused.embeds and summary.embeds


async def test_a_forum_denying_the_bot_thread_messages_fails_the_thread_once(
    tmp_path: Path,
) -> None:
    with capture_logs() as logs:
        async with Harness(tmp_path) as harness:
            world, discord, openai = harness.world, harness.discord, harness.openai
            assert world is not None
            role = bot_role(world.guild)
            discord.world.set_permission_overwrite(world.forum, role, deny=SEND_MESSAGES_IN_THREADS)
            await discord.flush()
            blocked = await open_thread(harness, "Bloqué")
            await discord.wait_for(
                lambda: [r for r in discord.requests if r.status == 403], timeout=10
            )
            assert harness.services is not None
            await settled(harness)
            failed = await thread_row(harness, blocked)

            discord.world.set_permission_overwrite(world.forum, role)  # removed
            later = await open_thread(harness, "Ensuite")
            [answer] = await discord.wait_for(lambda: discord.messages_in(later), timeout=10)
            refused = [r for r in discord.requests if r.status == 403]

    assert failed is not None and failed.state == ThreadState.FAILED
    assert failed.reason == "missing_permissions"
    assert len(refused) == 1 and f"/channels/{blocked.id}/" in refused[0].path  # no retries
    assert discord.messages_in(blocked) == [] and answer.embeds
    assert len(openai.requests) == 1  # no model call paid for an answer it cannot post
    [logged] = [e for e in logs if e["event"] == "forum_answer_undeliverable"]
    assert logged["thread_id"] == blocked.id and logged["code"] == 50013


@pytest.mark.parametrize("who", ["admin", "granted"])
async def test_cost_report_admin_check_with_channel_overwrites(tmp_path: Path, who: str) -> None:
    async with Harness(tmp_path) as harness:
        world, discord = harness.world, harness.discord
        assert world is not None
        if who == "admin":
            # A guild ADMINISTRATOR outside the configured admin roles, every bit denied here:
            # overwrites do not apply to an administrator.
            boss = discord.create_role(world.guild, "Direction", permissions=ADMINISTRATOR)
            member = discord.create_member(world.guild, "dora", roles=[boss])
            discord.world.set_permission_overwrite(world.text, member, deny=ALL_PERMISSIONS)
        else:
            # An overwrite cannot grant ADMINISTRATOR: a plain member stays a plain member.
            member = world.member
            discord.world.set_permission_overwrite(world.text, member, allow=ADMINISTRATOR)
        await discord.flush()

        handle = await discord.invoke_slash(world.guild, member, world.text, "cost-report", {})
        answer = await handle.wait_answer(timeout=15)

    assert answer.ephemeral
    if who == "admin":
        assert answer.embeds and answer.files
    else:
        assert answer.content == t("cost_report.refused", "fr") and not answer.embeds


# -- 5. commands are stored reshaped; a second start registers nothing -----------------


async def test_a_second_start_registers_no_command(tmp_path: Path) -> None:
    async with Harness(tmp_path) as harness:
        world, discord = harness.world, harness.discord
        assert world is not None
        first = {c["name"]: c for c in discord.registered_commands(world.guild)}
        before = len(discord.requests)

        await harness.restart_bot()
        await discord.flush()
        second = discord.requests[before:]

    writes = [r for r in second if "/commands" in r.path and r.method != "GET"]
    assert writes == []
    assert [r for r in second if "/commands" in r.path]  # it did compare: it fetched them
    ask = first["ask-gpt"]
    assert ask["version"] and ask["nsfw"] is False and ask["integration_types"] == [0]
    assert ask["contexts"] == [0] and ask["default_member_permissions"] is None
    assert ask["description_localizations"] == {"fr": "Pose une question à l'assistant."}
    image = next(o for o in ask["options"] if o["name"] == "image")
    assert "required" not in image and image["name_localizations"] is None


async def test_registered_commands_are_reshaped_as_discord_stores_them(
    fake: FakeDiscord, rest: Rest, guild: FakeGuild
) -> None:
    commands = f"/applications/{fake.application_id}/guilds/{guild.id}/commands"
    body = {
        "name": "ping",
        "description": "Pong",
        "description_localizations": {"fr": "Pong", "de": "Tischtennis"},
        "default_member_permissions": 8192,
        "options": [
            {"type": 3, "name": "why", "description": "Why", "required": False},
            {"type": 7, "name": "where", "description": "Where", "channel_types": [15, 0]},
        ],
    }
    status, stored, _ = await rest.call("POST", commands, body)
    _, again, _ = await rest.call("POST", commands, body)
    _, listed, _ = await rest.call("GET", commands)

    assert status == 201 and again["id"] == stored["id"]
    assert again["version"] == stored["version"]  # nothing changed: same version
    assert stored["type"] == 1 and stored["guild_id"] == str(guild.id)
    assert stored["default_member_permissions"] == "8192" and stored["nsfw"] is False
    assert stored["contexts"] is None and stored["integration_types"] == [0]
    assert "dm_permission" not in stored  # a guild command's is not answered
    # a localization identical to the default is ignored
    assert stored["description_localizations"] == {"de": "Tischtennis"}
    why, where = stored["options"]
    assert "required" not in why and why["name_localizations"] is None
    assert where["channel_types"] == [0, 15]
    # a list read without with_localizations carries the requester's localization only
    assert "description_localizations" not in listed[0] and listed[0]["name"] == "ping"

    body["description"] = "Pong !"
    _, changed, _ = await rest.call("POST", commands, body)
    assert changed["version"] != stored["version"]
