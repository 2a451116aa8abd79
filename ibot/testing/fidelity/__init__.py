"""How faithful the fakes are: which spec routes and gateway events the fake Discord
and the fake OpenAI cover, which of their fields the fakes' payloads fill, and what
they leave out.

`python -m ibot.testing.fidelity` runs both fakes once, in-process (tour.py: every
route the bot uses, every event the fake dispatches), compares the key sets of what
they answered and sent with the specs' schemas and the docs' field tables (fields.py),
and prints a markdown table per side (report.py): Discord REST, Discord gateway,
OpenAI, then a summary line; `--format json` prints the same data as one JSON line.
The specs are those the suite's checks read (openapi_check.py, event_fields.py), from
../shared/specs/.
"""

from __future__ import annotations

import asyncio

from ibot.testing.fidelity.report import Report, Row, Side, build, markdown
from ibot.testing.fidelity.tour import Tour, run_tour

__all__ = ["Report", "Row", "Side", "Tour", "build", "fidelity_report", "markdown", "run_tour"]


async def fidelity_report() -> Report:
    """Run the tour and build the report from it."""
    return build(await run_tour())


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    parser = argparse.ArgumentParser(
        prog="python -m ibot.testing.fidelity", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--format", choices=("markdown", "json"), default="markdown")
    args = parser.parse_args(argv)
    report = asyncio.run(fidelity_report())
    if args.format == "json":
        print(json.dumps(report.to_json(), ensure_ascii=False))
    else:
        print(markdown(report))
    return 0
