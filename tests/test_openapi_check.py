"""The fakes' traffic checked against Discord's and OpenAI's OpenAPI files (openapi_check).

Each test drives a fake over 127.0.0.1 as a client would and reads what the checker
recorded: a departure names its route, its field and the spec's pointer; a route with
no spec entry is itself a departure; and every route the fakes serve answers within
the spec. A test that expects departures drains them itself, so the suite's autouse
fixture (conftest.py) only sees the ones nobody expected.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest

from ibot.testing import openapi_check, spec_violations
from ibot.testing.fake_discord import FakeDiscord
from ibot.testing.fake_discord.application_routes import ApplicationRoutes
from ibot.testing.fake_openai import FakeOpenAI, response_building
from ibot.testing.fidelity.tour import run_tour
from ibot.testing.harness import Harness
from ibot.testing.spec_violations import Violation

TOKEN = "fake-token"
DISCORD = "discord-api-spec/openapi.json"
OPENAI = "openai-openapi/openapi.yaml"


@pytest.fixture
async def discord() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(token=TOKEN) as fake:
        yield fake


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bot {TOKEN}"}) as session:
        yield session


async def call(
    http: aiohttp.ClientSession, fake: FakeDiscord, method: str, path: str, **kwargs: Any
) -> tuple[int, Any]:
    async with http.request(method, fake.base_url + path, **kwargs) as response:
        body = await response.read()
        return response.status, json.loads(body) if body else None


def only(found: list[Violation], where: str) -> list[Violation]:
    return [v for v in found if v.where == where]


# -- a departure is caught, and named ---------------------------------------------------


async def test_a_response_missing_a_required_field_names_route_field_and_spec(http, monkeypatch):
    real = ApplicationRoutes.get_gateway_bot

    async def without_shards(self, call_):  # a fake that forgot a field
        response = await real(self, call_)
        body = json.loads(response.body)
        del body["shards"]
        response.body = json.dumps(body).encode()
        return response

    monkeypatch.setattr(ApplicationRoutes, "get_gateway_bot", without_shards)
    async with FakeDiscord(token=TOKEN) as discord:  # its route table takes the patched one
        status, _ = await call(http, discord, "GET", "/gateway/bot")
    assert status == 200
    assert spec_violations.drain() == [
        Violation(
            "GET /gateway/bot 200 response",
            "shards",
            "'shards' is a required property",
            f"{DISCORD} #/components/schemas/GatewayBotResponse/required",
        )
    ]


async def test_a_request_with_a_wrong_type_names_route_field_and_spec(discord, http):
    guild = discord.create_guild("g")
    channel = discord.create_text_channel(guild, "general")
    status, _ = await call(
        http, discord, "POST", f"/channels/{channel.id}/messages", json={"content": "hi", "tts": 1}
    )
    assert status == 200  # the fake still answers; the check is the suite's
    found = spec_violations.drain()
    assert found == [
        Violation(
            "POST /channels/{channel_id}/messages request",
            "tts",
            "1 is not of type 'boolean', 'null'",
            f"{DISCORD} #/components/schemas/MessageCreateRequest/properties/tts/type",
        )
    ]
    assert "POST /channels/{channel_id}/messages request: tts: 1 is not" in str(found[0])


async def test_a_route_the_spec_lacks_is_itself_reported(discord, http):
    guild = discord.create_guild("g")
    channel = discord.create_text_channel(guild, "general")
    status, _ = await call(http, discord, "GET", f"/channels/{channel.id}/no-such-route")
    assert status == 404
    (found,) = spec_violations.drain()
    assert found.where == f"GET /channels/{channel.id}/no-such-route"
    assert found.field == "(route)"
    assert found.problem.startswith("unknown route")
    assert found.spec == f"{DISCORD} #/paths"


async def test_a_method_the_spec_lacks_on_a_known_path_is_reported(discord, http):
    status, _ = await call(http, discord, "DELETE", "/gateway/bot")
    assert status == 404
    (found,) = spec_violations.drain()
    assert (found.where, found.field) == ("DELETE /gateway/bot", "(route)")


def test_every_route_the_fake_discord_serves_has_a_spec_entry():
    """A route added to the fake's table without a spec operation fails here, before any
    test would have to call it."""
    spec = openapi_check.discord_spec()
    routes = FakeDiscord()._rest.routes
    missing = []
    for method, pattern, _handler, _auth in routes:
        sample = re.sub(r"\(\?P<\w+>[^)]*\)", "1", pattern.pattern)  # each id or token: 1
        if spec.operation(method, sample) is None:
            missing.append(f"{method} {pattern.pattern}")
    assert len(routes) > 30
    assert missing == []


async def test_a_spec_that_cannot_be_read_is_reported_not_skipped(
    discord, http, tmp_path, monkeypatch
):
    monkeypatch.setattr(openapi_check, "SPECS_DIR", tmp_path)  # no shared/specs there
    openapi_check.discord_spec.cache_clear()
    try:
        status, _ = await call(http, discord, "GET", "/gateway")
    finally:
        openapi_check.discord_spec.cache_clear()  # the next test reads the real one
    assert status == 200
    (found,) = spec_violations.drain()
    assert (found.where, found.field, found.spec) == ("GET /gateway", "(spec)", DISCORD)
    assert found.problem.startswith("cannot read the spec")


async def test_with_the_checks_off_nothing_is_checked(discord, http):
    spec_violations.enable(False)
    try:
        status, _ = await call(http, discord, "GET", "/channels/1/no-such-route")
    finally:
        spec_violations.enable()
    assert status == 404
    assert spec_violations.drain() == []


# -- every route the bot uses answers within the spec ----------------------------------------


async def test_every_discord_route_the_bot_uses_answers_within_the_spec():
    """Messages, channels and threads, members, reactions, commands, interactions and
    webhooks, gateway/bot: the fidelity report's tour (ibot/testing/fidelity/tour.py)
    drives each route the bot uses once, every exchange checked, none departing."""
    tour = await run_tour()  # raises TourError when a step is not answered as expected

    served = {(e.method, e.path) for e in tour.exchanges if e.side == "discord"}
    assert len(served) > 40
    assert {"PUT", "PATCH", "DELETE"} <= {method for method, _ in served}
    assert tour.violations == []


async def test_discords_error_answers_and_429s_are_within_the_spec(discord, http):
    """A 404, two form errors (a too-long content, a reply to a message elsewhere) and
    a rate limit answer with Discord's JSON error bodies."""
    owner = discord.create_user("owner")
    guild = discord.create_guild("g", owner=owner)
    alice = discord.create_member(guild, "alice")
    text = discord.create_text_channel(guild, "general", topic="t")
    forum = discord.create_forum(guild, "aide", tags=["python"])
    thread = await discord.create_forum_thread(
        forum, author=alice, title="Question", content="Ça plante"
    )
    cid, tid = text.id, thread.id

    async def expect(status: int, method: str, path: str, **kwargs: Any) -> Any:
        got, body = await call(http, discord, method, path, **kwargs)
        assert got == status, (method, path, body)
        return body

    sent = await expect(200, "POST", f"/channels/{cid}/messages", json={"content": "x"})
    await expect(204, "DELETE", f"/channels/{cid}/messages/{sent['id']}")
    await expect(404, "GET", f"/channels/{cid}/messages/{sent['id']}")
    await expect(400, "POST", f"/channels/{cid}/messages", json={"content": "x" * 2001})
    stray = {"content": "?", "message_reference": {"message_id": str(tid)}}
    await expect(400, "POST", f"/channels/{cid}/messages", json=stray)
    discord.faults.rate_limit(f"/channels/{cid}/messages", method="GET")
    await expect(429, "GET", f"/channels/{cid}/messages")

    assert discord.unknown_routes == []
    assert spec_violations.drain() == []


# -- the fake OpenAI -------------------------------------------------------------------------


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
async def client(fake_openai: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        api_key="sk-test", base_url=fake_openai.base_url, max_retries=0
    ) as real_client:
        yield real_client


MESSAGES = [{"role": "user", "content": "Bonjour"}]


async def test_chat_completions_plain_streamed_and_errors_answer_within_the_spec(
    fake_openai, client
):
    fake_openai.set_default_answer("Bonjour, que puis-je faire pour toi aujourd'hui ?")
    await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=50)
    stream = await client.chat.completions.create(
        model="gpt-4o",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    fake_openai.fail_with_status(500)
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    fake_openai.rate_limit()
    with pytest.raises(openai.RateLimitError):
        await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    await client.models.list()
    assert spec_violations.drain() == []


async def test_each_streamed_chunk_is_checked_the_final_usage_chunk_too(
    fake_openai, client, monkeypatch
):
    real = response_building.usage_object

    def without_total(usage):  # a fake that forgot a field of `usage`
        found = real(usage)
        del found["total_tokens"]
        return found

    monkeypatch.setattr(response_building, "usage_object", without_total)
    stream = await client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    async for _chunk in stream:
        pass
    chunk_where = "POST /chat/completions 200 text/event-stream chunk"
    assert only(spec_violations.drain(), chunk_where) == [
        Violation(
            chunk_where,
            "usage.total_tokens",
            "'total_tokens' is a required property",
            f"{OPENAI} #/components/schemas/CompletionUsage/required",
        )
    ]


async def test_a_chat_request_with_a_wrong_type_is_reported(fake_openai):
    async with aiohttp.ClientSession() as http:
        body = {"model": "gpt-4o", "messages": MESSAGES, "max_completion_tokens": "50"}
        async with http.post(f"{fake_openai.base_url}/chat/completions", json=body) as r:
            assert r.status == 200
    found = only(spec_violations.drain(), "POST /chat/completions request")
    assert [(v.field, v.problem) for v in found] == [
        ("max_completion_tokens", "'50' is not of type 'integer', 'null'")
    ]
    assert found[0].spec.startswith(f"{OPENAI} #/components/schemas/CreateChatCompletionRequest")


async def test_an_error_body_missing_a_field_is_reported(fake_openai, monkeypatch):
    real = response_building.error_response

    def without_param(*args, **kwargs):
        response = real(*args, **kwargs)
        body = json.loads(response.body)
        del body["error"]["param"]
        response.body = json.dumps(body).encode()
        return response

    monkeypatch.setattr(response_building, "error_response", without_param)
    fake_openai.fail_with_status(503)
    async with aiohttp.ClientSession() as http:
        body = {"model": "gpt-4o", "messages": MESSAGES}
        async with http.post(f"{fake_openai.base_url}/chat/completions", json=body) as r:
            assert r.status == 503
    assert spec_violations.drain() == [
        Violation(
            "POST /chat/completions 503 response",
            "error.param",
            "'param' is a required property",
            f"{OPENAI} #/components/schemas/Error/required",
        )
    ]


def test_openapi_30_nullable_becomes_a_type_union():
    schema = {
        "type": "object",
        "properties": {
            "finish_reason": {"type": "string", "enum": ["stop"], "nullable": True},
            "logprobs": {"$ref": "#/components/schemas/L", "nullable": True},
            "temperature": {"type": "number", "minimum": 0, "exclusiveMinimum": True},
            "nullable": {"type": "boolean"},  # a property that happens to be named so
        },
        "example": {"nullable": True},
    }
    assert openapi_check.translate_openapi30(schema) == {
        "type": "object",
        "properties": {
            "finish_reason": {"type": ["string", "null"], "enum": ["stop", None]},
            "logprobs": {"anyOf": [{"$ref": "#/components/schemas/L"}, {"type": "null"}]},
            "temperature": {"type": "number", "exclusiveMinimum": 0},
            "nullable": {"type": "boolean"},
        },
        "example": {"nullable": True},
    }


def test_a_null_that_openais_file_marks_nullable_is_accepted():
    spec = openapi_check.openai_spec()
    chunk = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": None}],
    }
    pointer = "#/components/schemas/CreateChatCompletionStreamResponse"
    assert spec.validate(pointer, chunk) == []
    chunk["choices"][0]["finish_reason"] = "done"
    assert [field for field, _, _ in spec.validate(pointer, chunk)] == ["choices[0].finish_reason"]


# -- the bot's own requests ------------------------------------------------------------------


async def test_the_bots_reply_references_the_members_message_with_string_ids(tmp_path):
    """nextcord sends a reply's message_reference ids as integers; the spec's
    MessageReferenceRequest wants snowflake strings, which the bot now sends."""
    async with Harness(tmp_path) as harness:
        world, discord = harness.world, harness.discord
        harness.openai.script("Bonjour Alice !")
        asked = await discord.post_message(world.chat, world.member, "Salut le bot")
        (answer,) = await discord.wait_for(lambda: discord.messages_in(world.chat))
        assert answer.data["referenced_message"]["id"] == str(asked.id)
        (sent,) = [r for r in discord.requests_to("POST", f"/channels/{world.chat.id}/messages")]
        reference = sent.json["message_reference"]
        assert reference["message_id"] == str(asked.id)
        assert reference["channel_id"] == str(world.chat.id)
        assert reference["guild_id"] == str(world.chat.guild_id)
