"""Message components in FakeDiscord: buttons kept and limited as Discord does, clicks
dispatched as MESSAGE_COMPONENT interactions, and the answers (types 4, 6, 7) applied.

The fake-level tests speak HTTP to the fake directly (aiohttp, the bot token), as a bot
would; the others run a tiny nextcord bot (not iBot's cogs) with a persistent View, and
restart it against the same fake to show the View answers clicks on old messages.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import aiohttp
import nextcord
import pytest
from nextcord.ext import commands
from nextcord.http import Route

from ibot.testing import spec_violations
from ibot.testing.fake_discord import (
    FakeChannel,
    FakeDiscord,
    FakeGuild,
    FakeMember,
    StoredMessage,
)

TOKEN = "fake-token"
EPHEMERAL = 1 << 6


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(token=TOKEN) as server:
        yield server


class Place:
    def __init__(self, fake: FakeDiscord) -> None:
        self.guild: FakeGuild = fake.create_guild("iBot test")
        self.alice: FakeMember = fake.create_member(self.guild, "alice")
        self.bob: FakeMember = fake.create_member(self.guild, "bob")
        self.text: FakeChannel = fake.create_text_channel(self.guild, "général")


@pytest.fixture
def place(fake: FakeDiscord) -> Place:
    return Place(fake)


Rest = Callable[..., Awaitable[tuple[int, Any]]]


@pytest.fixture
async def rest(fake: FakeDiscord) -> AsyncIterator[Rest]:
    """`await rest(method, path, json)` → (status, JSON answer or None), as the bot."""
    async with aiohttp.ClientSession() as session:

        async def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
            headers = {"Authorization": f"Bot {TOKEN}"}
            async with session.request(
                method, fake.base_url + path, json=body, headers=headers
            ) as response:
                answer = await response.json() if response.status != 204 else None
                return response.status, answer

        yield call


def _button(custom_id: str | None, label: str = "Oui", **extra: Any) -> dict[str, Any]:
    button: dict[str, Any] = {"type": 2, "style": 1, "label": label, **extra}
    if custom_id is not None:
        button["custom_id"] = custom_id
    return button


def _row(*buttons: dict[str, Any]) -> dict[str, Any]:
    return {"type": 1, "components": list(buttons)}


FEEDBACK = [
    _row(
        _button("kb:up", "Utile", emoji={"name": "👍"}),
        _button("kb:down", "Pas utile", style=4),
        {"type": 2, "style": 5, "label": "Docs", "url": "https://docs.python.org/"},
    )
]


async def _post_with_buttons(rest: Rest, fake: FakeDiscord, channel: FakeChannel) -> StoredMessage:
    status, answer = await rest(
        "POST", f"/channels/{channel.id}/messages", {"content": "Réponse", "components": FEEDBACK}
    )
    assert status == 200, answer
    return fake.message(int(answer["id"]))


# 1. components kept, served back and limited ---------------------------------------------


async def test_buttons_are_kept_and_served_back_with_ids(
    fake: FakeDiscord, place: Place, rest: Rest
) -> None:
    status, answer = await rest(
        "POST", f"/channels/{place.text.id}/messages", {"content": "R", "components": FEEDBACK}
    )

    assert status == 200
    [row] = answer["components"]
    assert row["type"] == 1 and isinstance(row["id"], int)
    up, down, link = row["components"]
    assert (up["custom_id"], up["label"], up["emoji"], up["style"]) == (
        "kb:up",
        "Utile",
        {"name": "👍"},
        1,
    )
    assert down["style"] == 4 and "custom_id" not in link and link["url"].startswith("https://")
    assert len({c["id"] for c in [row, up, down, link]}) == 4  # each component its own id
    stored = fake.message(int(answer["id"]))
    assert stored.data["components"] == answer["components"]

    status, got = await rest("GET", f"/channels/{place.text.id}/messages/{stored.id}")
    assert got["components"] == answer["components"]

    edited = [_row(_button("kb:up", "Utile (1)", disabled=True))]
    status, after = await rest(
        "PATCH", f"/channels/{place.text.id}/messages/{stored.id}", {"components": edited}
    )
    assert status == 200 and after["content"] == "R"
    [[button]] = [r["components"] for r in after["components"]]
    assert button["label"] == "Utile (1)" and button["disabled"] is True

    status, cleared = await rest(
        "PATCH", f"/channels/{place.text.id}/messages/{stored.id}", {"components": []}
    )
    assert cleared["components"] == []


def _take_request_departures() -> None:
    """Drop the spec departures of the request bodies a test sent over Discord's limits
    on purpose (openapi.json encodes some: 5 buttons a row, custom_id 100, label 80);
    any departure of the fake's own answers still fails the test."""
    found = spec_violations.drain()
    assert all(v.where.endswith(" request") for v in found), [str(v) for v in found]


def _invalid(errors: dict[str, Any]) -> dict[str, Any]:
    return {"code": 50035, "message": "Invalid Form Body", "errors": errors}


def _leaf(code: str, message: str) -> dict[str, Any]:
    return {"_errors": [{"code": code, "message": message}]}


REQUIRED = _leaf("BASE_TYPE_REQUIRED", "This field is required")


@pytest.mark.parametrize(
    ("components", "errors"),
    [
        pytest.param(
            [_row(_button(f"b{i}")) for i in range(6)],
            {"components": _leaf("BASE_TYPE_MAX_LENGTH", "Must be 5 or fewer in length.")},
            id="six-rows",
        ),
        pytest.param(
            [_row(*[_button(f"b{i}") for i in range(6)])],
            {
                "components": {
                    "0": {
                        "components": _leaf(
                            "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5 in length."
                        )
                    }
                }
            },
            id="six-buttons-in-a-row",
        ),
        pytest.param(
            [_row(_button("a"), _button(None))],
            {"components": {"0": {"components": {"1": {"custom_id": REQUIRED}}}}},
            id="no-custom-id",
        ),
        pytest.param(
            [_row(_button("x" * 101))],
            {
                "components": {
                    "0": {
                        "components": {
                            "0": {
                                "custom_id": _leaf(
                                    "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length."
                                )
                            }
                        }
                    }
                }
            },
            id="custom-id-too-long",
        ),
        pytest.param(
            [_row(_button("same")), _row(_button("other"), _button("same"))],
            {
                "components": {
                    "1": {
                        "components": {
                            "1": {
                                "custom_id": _leaf(
                                    "COMPONENT_CUSTOM_ID_DUPLICATED",
                                    "Component custom id cannot be duplicated",
                                )
                            }
                        }
                    }
                }
            },
            id="duplicate-custom-id",
        ),
        pytest.param(
            [_row(_button("a", "L" * 81))],
            {
                "components": {
                    "0": {
                        "components": {
                            "0": {
                                "label": _leaf(
                                    "BASE_TYPE_MAX_LENGTH", "Must be 80 or fewer in length."
                                )
                            }
                        }
                    }
                }
            },
            id="label-too-long",
        ),
        pytest.param(
            [_row({"type": 2, "style": 5, "label": "Docs"})],
            {"components": {"0": {"components": {"0": {"url": REQUIRED}}}}},
            id="link-without-url",
        ),
    ],
)
async def test_component_limits_are_refused_like_discord(
    fake: FakeDiscord,
    place: Place,
    rest: Rest,
    components: list[dict[str, Any]],
    errors: dict[str, Any],
) -> None:
    status, answer = await rest(
        "POST", f"/channels/{place.text.id}/messages", {"content": "R", "components": components}
    )

    _take_request_departures()
    assert (status, answer) == (400, _invalid(errors))
    assert fake.history(place.text) == []


async def test_an_edit_with_bad_components_is_refused_and_changes_nothing(
    fake: FakeDiscord, place: Place, rest: Rest
) -> None:
    stored = await _post_with_buttons(rest, fake, place.text)
    before = [dict(r) for r in stored.data["components"]]

    status, answer = await rest(
        "PATCH",
        f"/channels/{place.text.id}/messages/{stored.id}",
        {"components": [_row(_button("a"), _button("a"))]},
    )

    assert status == 400 and answer["code"] == 50035
    assert stored.data["components"] == before


# 2. clicks and their answers (fake level) ------------------------------------------------


async def test_click_sends_a_component_interaction_with_the_message(
    fake: FakeDiscord, place: Place, rest: Rest
) -> None:
    stored = await _post_with_buttons(rest, fake, place.text)

    handle = await fake.click(place.alice, stored, "kb:up")

    payload = handle.payload
    assert payload["type"] == 3 and handle.is_component and handle.name == "kb:up"
    assert payload["data"] == {"custom_id": "kb:up", "component_type": 2}
    assert payload["message"]["id"] == str(stored.id)
    assert payload["message"]["components"] == stored.data["components"]
    assert payload["member"]["user"]["id"] == str(place.alice.id)
    assert payload["channel_id"] == str(place.text.id)
    assert payload["guild_id"] == str(place.guild.id)
    assert int(payload["app_permissions"]) > 0 and payload["token"] == handle.token
    assert handle.component_message is stored and fake.interactions == [handle]

    with pytest.raises(LookupError):
        await fake.click(place.alice, stored, "kb:nothing")
    with pytest.raises(ValueError, match="not a member"):
        await fake.click(fake.create_user("stranger"), stored, "kb:up")


async def test_update_message_callback_edits_the_clicked_message(
    fake: FakeDiscord, place: Place, rest: Rest
) -> None:
    stored = await _post_with_buttons(rest, fake, place.text)
    handle = await fake.click(place.alice, stored, "kb:up")
    callback = f"/interactions/{handle.id}/{handle.token}/callback"
    update = {
        "type": 7,
        "data": {
            "content": "Réponse (1 vote)",
            "components": [_row(_button("kb:up", "Utile (1)", disabled=True))],
        },
    }

    status, answer = await rest("POST", callback + "?with_response=true", update)

    assert status == 200
    assert answer["interaction"]["type"] == 3 and answer["resource"]["type"] == 7
    assert answer["resource"]["message"]["id"] == str(stored.id)
    assert stored.content == "Réponse (1 vote)"
    [[button]] = [r["components"] for r in stored.data["components"]]
    assert button["label"] == "Utile (1)" and button["disabled"] is True
    assert stored.data["edited_timestamp"] is not None
    assert handle.updates == [update["data"]] and handle.updates_message
    assert handle.original is None and handle.messages == []  # no new message

    again = await rest("POST", callback, {"type": 4, "data": {"content": "bis"}})
    assert again[0] == 400 and again[1]["code"] == 40060  # acknowledge once
    with pytest.raises(ValueError, match="cannot be clicked"):
        await fake.click(place.bob, stored, "kb:up")  # disabled now


async def test_deferred_update_then_original_edit_changes_the_clicked_message(
    fake: FakeDiscord, place: Place, rest: Rest
) -> None:
    stored = await _post_with_buttons(rest, fake, place.text)
    handle = await fake.click(place.alice, stored, "kb:down")
    hook = f"/webhooks/{fake.application_id}/{handle.token}"

    callback = f"/interactions/{handle.id}/{handle.token}/callback"
    status, answer = await rest("POST", callback + "?with_response=true", {"type": 6})
    assert status == 200 and answer == {"interaction": {"id": str(handle.id), "type": 3}}
    assert stored.content == "Réponse" and handle.updates == []

    status, got = await rest("GET", f"{hook}/messages/@original")
    assert status == 200 and got["id"] == str(stored.id)
    status, edited = await rest(
        "PATCH", f"{hook}/messages/@original", {"content": "Merci", "components": []}
    )

    assert status == 200 and edited["id"] == str(stored.id)
    assert stored.content == "Merci" and stored.data["components"] == []
    assert (await handle.wait_update()) is stored

    status, followup = await rest(
        "POST", f"{hook}?wait=true", {"content": "Dites-nous pourquoi", "flags": EPHEMERAL}
    )
    assert status == 200 and handle.followups[0].ephemeral
    assert followup["interaction_metadata"]["interacted_message_id"] == str(stored.id)
    assert followup["message_reference"]["message_id"] == str(stored.id)
    assert [m.id for m in fake.history(place.text)] == [stored.id]


async def test_bad_components_in_an_update_are_refused_and_not_acknowledged(
    fake: FakeDiscord, place: Place, rest: Rest
) -> None:
    stored = await _post_with_buttons(rest, fake, place.text)
    handle = await fake.click(place.alice, stored, "kb:up")
    callback = f"/interactions/{handle.id}/{handle.token}/callback"

    status, answer = await rest(
        "POST", callback, {"type": 7, "data": {"components": [_row(_button("y" * 101))]}}
    )

    _take_request_departures()
    assert status == 400 and answer["code"] == 50035
    assert not handle.acknowledged and stored.content == "Réponse"


async def test_late_acknowledgement_of_a_click_is_refused(
    fake: FakeDiscord, place: Place, rest: Rest
) -> None:
    stored = await _post_with_buttons(rest, fake, place.text)
    handle = await fake.click(place.alice, stored, "kb:up")
    fake.ack_window_s = 0.0

    status, answer = await rest(
        "POST", f"/interactions/{handle.id}/{handle.token}/callback", {"type": 6}
    )

    assert (status, answer["code"]) == (404, 10062)
    assert handle.rejected == [("callback", 10062)]


# 3. a tiny nextcord bot with a persistent View -------------------------------------------


type Click = nextcord.Interaction[Any]
type Press = nextcord.ui.Button[Feedback]


class Feedback(nextcord.ui.View):
    """A persistent view (no timeout, fixed custom_ids): the votes are read from the
    message's own labels, so a restarted bot carries on counting."""

    def __init__(self, ran: list[str], name: str) -> None:
        super().__init__(timeout=None)
        self.ran = ran
        self.name = name

    @nextcord.ui.button(label="Utile (0)", custom_id="kb:up", style=nextcord.ButtonStyle.success)
    async def up(self, button: Press, interaction: Click) -> None:
        self.ran.append(self.name)
        assert interaction.message is not None
        count = _votes(interaction.message) + 1
        button.label = f"Utile ({count})"
        await interaction.response.edit_message(content=f"{count} vote(s)", view=self)

    @nextcord.ui.button(label="Signaler", custom_id="kb:report")
    async def report(self, button: Press, interaction: Click) -> None:
        self.ran.append(self.name)
        await interaction.response.send_message("Merci, c'est noté.", ephemeral=True)

    @nextcord.ui.button(label="Plus tard", custom_id="kb:later")
    async def later(self, button: Press, interaction: Click) -> None:
        self.ran.append(self.name)
        await interaction.response.defer()  # a component's defer: type 6
        await interaction.edit_original_message(content="Vu", view=None)


def _votes(message: nextcord.Message) -> int:
    label = message.components[0].children[0].label or "(0)"  # type: ignore[attr-defined]
    return int(label.rsplit("(", 1)[1].rstrip(")"))


class Client:
    def __init__(self, bot: commands.Bot, task: asyncio.Task[None]) -> None:
        self.bot = bot
        self.task = task

    async def stop(self) -> None:
        await self.bot.close()
        await self.task


Start = Callable[[str], Awaitable[Client]]


class Seen:
    """What the bots saw on the gateway: the components of each MESSAGE_CREATE
    (`created`) and MESSAGE_UPDATE (`updated`); `wait` wakes on each one (no polling)."""

    def __init__(self) -> None:
        self.created: list[list[Any]] = []
        self.updated: list[list[Any]] = []
        self._changed = asyncio.Event()

    def add(self, into: list[list[Any]], components: list[Any]) -> None:
        into.append(components)
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            while not predicate():
                await self._changed.wait()


@pytest.fixture
async def start(fake: FakeDiscord) -> AsyncIterator[tuple[Start, list[str], Seen]]:
    """`await start(name)`: a bot with the Feedback view registered at start, connected
    to the fake (READY seen); `ran` lists which bot ran each button callback, `seen`
    the components the bots got in MESSAGE_CREATE ("created") and MESSAGE_UPDATE."""
    original_base = Route.BASE
    Route.BASE = fake.base_url
    ran: list[str] = []
    seen = Seen()
    clients: list[Client] = []

    async def on_message(message: nextcord.Message) -> None:
        seen.add(seen.created, [c.to_dict() for c in message.components])

    async def on_raw_message_edit(payload: nextcord.RawMessageUpdateEvent) -> None:
        components = payload.data.get("components")
        seen.add(seen.updated, components if isinstance(components, list) else [])

    async def launch(name: str) -> Client:
        intents = nextcord.Intents(guilds=True, guild_messages=True)
        bot = commands.Bot(intents=intents, guild_ready_timeout=0.05)
        ready = asyncio.Event()
        bot.add_listener(_set(ready), "on_ready")
        bot.add_listener(on_message, "on_message")
        bot.add_listener(on_raw_message_edit, "on_raw_message_edit")
        bot.add_view(Feedback(ran, name))  # persistent: before any message is known
        client = Client(bot, asyncio.create_task(bot.start(TOKEN)))
        clients.append(client)
        async with asyncio.timeout(5):
            await ready.wait()
        return client

    try:
        yield launch, ran, seen
    finally:
        for client in clients:
            if not client.bot.is_closed():
                await client.stop()
            elif not client.task.done():
                await client.task
        Route.BASE = original_base


def _set(event: asyncio.Event) -> Callable[[], Coroutine[Any, Any, None]]:
    async def listener() -> None:
        event.set()

    return listener


async def test_persistent_view_answers_a_click_on_a_message_sent_before_a_restart(
    fake: FakeDiscord, place: Place, start: tuple[Start, list[str], Seen]
) -> None:
    launch, ran, seen = start
    first = await launch("first")
    channel = first.bot.get_channel(place.text.id)
    assert isinstance(channel, nextcord.TextChannel)
    sent = await channel.send("0 vote(s)", view=Feedback(ran, "first"))
    stored = fake.message(sent.id)
    labels = [b["label"] for b in stored.data["components"][0]["components"]]
    assert labels == ["Utile (0)", "Signaler", "Plus tard"]

    click = await fake.click(place.alice, stored, "kb:up")
    await click.wait_update()
    assert ran == ["first"] and stored.content == "1 vote(s)"
    await seen.wait(lambda: len(seen.updated) == 1)  # its MESSAGE_UPDATE reached the bot

    await first.stop()  # the bot process ends…
    second = await launch("second")  # …and a new one starts, the view registered again

    click = await fake.click(place.bob, stored, "kb:up")
    updated = await click.wait_update()

    assert ran == ["first", "second"]
    assert click.callbacks[0]["type"] == 7
    assert updated.content == "2 vote(s)"
    assert updated.data["components"][0]["components"][0]["label"] == "Utile (2)"
    assert [m.id for m in fake.messages_in(place.text)] == [stored.id]  # edited, not reposted
    assert not second.bot.is_closed()
    # The gateway carried the buttons: MESSAGE_CREATE, then a MESSAGE_UPDATE per vote.
    await seen.wait(lambda: len(seen.updated) >= 2)
    [created] = seen.created
    assert [b["custom_id"] for b in created[0]["components"]] == ["kb:up", "kb:report", "kb:later"]
    assert [u[0]["components"][0]["label"] for u in seen.updated] == ["Utile (1)", "Utile (2)"]


async def test_ephemeral_confirmation_is_seen_only_by_the_clicker(
    fake: FakeDiscord, place: Place, start: tuple[Start, list[str], Seen]
) -> None:
    launch, ran, _ = start
    client = await launch("only")
    channel = client.bot.get_channel(place.text.id)
    assert isinstance(channel, nextcord.TextChannel)
    sent = await channel.send("Réponse", view=Feedback(ran, "only"))
    stored = fake.message(sent.id)

    click = await fake.click(place.alice, stored, "kb:report")
    answer = await click.wait_answer()

    assert click.callbacks[0]["type"] == 4
    assert answer.ephemeral and answer.data["flags"] & EPHEMERAL
    assert answer.content == "Merci, c'est noté."
    assert answer.data["interaction_metadata"]["user"]["id"] == str(place.alice.id)
    assert [m.id for m in fake.history(place.text)] == [stored.id]  # not in the channel
    assert stored.content == "Réponse"  # the clicked message is left alone


async def test_deferred_component_update_edits_the_message_through_the_original(
    fake: FakeDiscord, place: Place, start: tuple[Start, list[str], Seen]
) -> None:
    launch, ran, _ = start
    client = await launch("only")
    channel = client.bot.get_channel(place.text.id)
    assert isinstance(channel, nextcord.TextChannel)
    sent = await channel.send("Réponse", view=Feedback(ran, "only"))
    stored = fake.message(sent.id)

    click = await fake.click(place.alice, stored, "kb:later")
    await click.wait_update()

    assert click.callbacks[0]["type"] == 6
    assert stored.content == "Vu" and stored.data["components"] == []
    assert click.messages == []


async def test_interaction_responses_keep_buttons_and_ephemeral_ones_answer_their_user(
    fake: FakeDiscord, place: Place, rest: Rest
) -> None:
    commands_path = f"/applications/{fake.application_id}/guilds/{place.guild.id}/commands"
    status, _ = await rest("PUT", commands_path, [{"name": "kb", "description": "Base", "type": 1}])
    assert status == 200
    slash = await fake.invoke_slash(place.guild, place.alice, place.text, "kb")
    callback = f"/interactions/{slash.id}/{slash.token}/callback"

    refused = await rest("POST", callback, {"type": 7, "data": {"content": "x"}})
    assert refused[0] == 400 and refused[1]["code"] == 50035  # only for components
    assert not slash.acknowledged

    body = {"type": 4, "data": {"content": "Réponse", "components": FEEDBACK, "flags": EPHEMERAL}}
    status, _ = await rest("POST", callback, body)
    assert status == 204
    original = await slash.wait_answer()
    assert original.ephemeral
    assert [b["custom_id"] for b in original.data["components"][0]["components"][:2]] == [
        "kb:up",
        "kb:down",
    ]

    status, followup = await rest(
        "POST",
        f"/webhooks/{fake.application_id}/{slash.token}?wait=true",
        {"content": "Et aussi", "components": [_row(_button("kb:more", "Plus"))]},
    )
    assert status == 200 and followup["components"][0]["components"][0]["custom_id"] == "kb:more"

    with pytest.raises(ValueError, match="ephemeral"):
        await fake.click(place.bob, original, "kb:up")  # bob never saw alice's message
    click = await fake.click(place.alice, original, "kb:up")
    status, _ = await rest(
        "POST",
        f"/interactions/{click.id}/{click.token}/callback",
        {"type": 7, "data": {"content": "Merci !", "components": []}},
    )
    assert status == 204 and original.content == "Merci !" and original.ephemeral
    assert original.data["components"] == []
