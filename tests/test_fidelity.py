"""The fidelity report (ibot.testing.fidelity): the fakes' coverage of the specs.

The report runs both fakes once, in-process; these tests read it. Every route in the
fake Discord's table is a route the bot uses (a route it calls and the fake lacks
answers 404 and lands in `unknown_routes`), and so are the fake OpenAI's two: each must
match a spec operation and be toured, and each event the fake's code dispatches must
be seen on the wire. Every required field of what they answered is filled, which the
spec checks already guarantee at every level; the tour's own departures are read apart.
"""

from __future__ import annotations

import asyncio
import functools
import json

from ibot.testing.fidelity import Report, fidelity_report, main, markdown
from ibot.testing.fidelity.report import dispatched_in_source

SIDES = ("discord_rest", "discord_gateway", "openai")


@functools.cache
def report() -> Report:
    return asyncio.run(fidelity_report())


def test_every_route_and_event_the_fakes_serve_is_covered_and_toured():
    rest, gateway, openai = (report().side(key) for key in SIDES)
    assert rest.unmatched == [] and openai.unmatched == []  # each route has a spec operation
    assert len({row.name for row in rest.rows}) > 30
    for side in (rest, openai):
        assert side.rows and all(row.covered for row in side.rows)
        assert [row.name for row in side.rows if row.note == "not toured"] == []
    assert {"POST /chat/completions", "GET /models"} <= {row.name for row in openai.rows}
    dispatched = {row.name for row in gateway.rows if row.covered}
    assert dispatched_in_source() <= dispatched
    assert {"READY", "GUILD_CREATE", "MESSAGE_CREATE", "INTERACTION_CREATE"} <= dispatched
    assert [row.name for row in gateway.rows if row.note == "not toured"] == []


def test_every_required_field_is_filled():
    for side in report().sides:
        for row in side.rows:
            if row.covered and row.has_fields:
                assert row.required_missing == [], (side.key, row.name, row.schema)
                assert row.required_filled == row.required
        totals = side.totals()
        assert totals["required_filled"] == totals["required"] > 0
    streamed = [r for r in report().side("openai").rows if "Stream" in (r.schema or "")]
    assert streamed and streamed[0].instances > 2  # each chunk of the stream counted


def test_the_tour_departs_from_no_spec():
    assert report().violations == []
    for side in report().sides:
        assert side.totals()["nested_required_missing"] == 0, side.key


def test_the_command_prints_the_tables_or_one_line_of_json(capsys):
    text = markdown(report())
    for title in ("**Discord REST**", "**Discord gateway**", "**OpenAI**"):
        assert title in text
    header = "| route or event | covered | required filled / total | optional filled / total "
    assert text.count(header) == 3
    assert "| `GET /gateway/bot` → GatewayBotResponse | yes | 3/3 |" in text
    assert text.splitlines()[-1] == report().summary()

    assert main(["--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert set(data) == {"sides", "violations", "summary"}
    assert set(data["sides"]) == set(SIDES)
    for side in data["sides"].values():
        assert set(side) == {"title", "source", "rows", "not_served", "unmatched", "totals"}
        row = side["rows"][0]
        for key in ("name", "family", "covered", "schema", "required", "required_filled"):
            assert key in row
        assert {"optional", "optional_filled", "left_out", "nested_optional_left_out"} <= set(row)
        assert all(isinstance(v, list) for v in side["not_served"].values())
    rest = data["sides"]["discord_rest"]
    assert "POST /channels/{channel_id}/messages/bulk-delete" in rest["not_served"]["messages"]
    assert rest["totals"]["required_filled"] == rest["totals"]["required"]
