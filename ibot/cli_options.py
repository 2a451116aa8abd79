"""Options shared by the command-line apps (`ibot …`, `ibot kb …`): one definition, so
every command spells `--config` the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="TOML settings file (default: $IBOT_CONFIG or config/ibot.toml).",
        show_default=False,
    ),
]
