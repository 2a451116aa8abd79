"""The `ibot serve-local` command: its options, then the server (ibot/llm/serve_local.py).

Apart from the server so that `ibot --help`, which reads every command's options,
imports neither aiohttp nor the local backend: they are imported when the command runs.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from ibot.domain import BackendError

API_KEY_VARIABLE = "IBOT_SERVE_LOCAL_API_KEY"


def serve_local_command(
    model: Annotated[
        Path,
        typer.Option(
            "--model",
            "-m",
            help="Directory of a transformers causal LM (save_pretrained / ibot finetune).",
            show_default=False,
        ),
    ],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 8000,
    device: Annotated[
        str | None, typer.Option(help="auto, cpu or cuda (default: local_model.device).")
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Model name in answers (default: the directory's).")
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            help=f"Require this bearer key (default: ${API_KEY_VARIABLE}, else none).",
            show_default=False,
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="TOML settings whose [local_model] gives the generation settings.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve a local model as an OpenAI-compatible /v1/chat/completions endpoint."""
    from pydantic import ValidationError

    from ibot.config import ConfigError, LocalModelSettings, fail_on_config_error, load_settings
    from ibot.llm.local import LocalBackend
    from ibot.llm.serve_local import serve_forever
    from ibot.logging import configure_logging

    overrides: dict[str, Any] = {"path": str(model)}
    if device is not None:
        overrides["device"] = device
    try:
        loaded = load_settings(config)
        base = loaded.local_model.model_dump(exclude={"path"})
        settings = LocalModelSettings(**{**base, **overrides})
    except ConfigError as err:
        fail_on_config_error(err)
    except ValidationError as err:  # the --model or --device value
        fail_on_config_error(ConfigError.from_validation_error(err))
    key = api_key or os.environ.get(API_KEY_VARIABLE) or None
    secrets = [*loaded.secret_values(), key]
    configure_logging(loaded.logging.format, loaded.logging.level, secrets=secrets)
    try:
        backend = LocalBackend(settings, model_name=name)
        asyncio.run(serve_forever(backend, host, port, key))
    except BackendError as err:
        typer.echo(f"error: {err.message}", err=True)
        raise typer.Exit(1) from None
