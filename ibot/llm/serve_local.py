"""`ibot serve-local`: the local backend behind an OpenAI-compatible HTTP endpoint.

Why: the GPU often lives on another machine than the bot. This serves the same
`LocalBackend` (same prompt format, batching, sampling settings) as
`POST /v1/chat/completions` and `GET /v1/models`, so the bot (or anything speaking the
OpenAI API) reaches it through `OPENAI_BASE_URL=http://gpu-host:8000/v1` with no code
change. For bigger models or many servers, use an existing engine such as vLLM instead;
the bot needs no change for that either.

Only text is served: image parts of a message are ignored (GPT-2-family models read none).
The answer is not streamed token by token: with `"stream": true` it comes as SSE chunks
holding the whole text, then the usage chunk when `stream_options.include_usage` is set.
Set an API key (`--api-key` or IBOT_SERVE_LOCAL_API_KEY) before listening on anything but
127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import signal
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import structlog
import typer
from aiohttp import web

from ibot.domain import (
    BackendError,
    BackendResponse,
    CallContext,
    ChatMessage,
    ErrorKind,
    Feature,
    LLMRequest,
    Role,
)
from ibot.llm.local import LocalBackend

log = structlog.get_logger("ibot.serve_local")

# The roles a request may use, as ours: OpenAI's newer "developer" is a system message.
_ROLES: dict[str, Role] = {
    "system": "system",
    "user": "user",
    "assistant": "assistant",
    "developer": "system",
}
# Backend failures as HTTP statuses the openai SDK (and our OpenAI backend) classify:
# 503/500 are retried as server errors, 400 is not.
_STATUS = {
    ErrorKind.NOT_CONFIGURED: 503,
    ErrorKind.BAD_REQUEST: 400,
    ErrorKind.CANCELLED: 499,
}


class _BadRequest(Exception):
    pass


@dataclass
class LocalServer:
    """A running server; `base_url` is what an OpenAI client is pointed at."""

    backend: LocalBackend
    host: str
    port: int
    runner: web.AppRunner
    owns_backend: bool = False
    served: list[BackendResponse] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    async def close(self) -> None:
        await self.runner.cleanup()
        if self.owns_backend:
            await self.backend.aclose()

    async def __aenter__(self) -> LocalServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def build_app(
    backend: LocalBackend, *, api_key: str | None = None, served: list[BackendResponse] | None
) -> web.Application:
    """The aiohttp application; `served` (if given) collects every answer, for tests."""
    handlers = _Handlers(backend, api_key, served)
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", handlers.chat)
    app.router.add_get("/v1/models", handlers.models)
    app.router.add_get("/health", handlers.health)
    return app


async def start_server(
    backend: LocalBackend,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    api_key: str | None = None,
    owns_backend: bool = False,
) -> LocalServer:
    """Start (and warm) the backend, then listen; port 0 picks a free port.

    `owns_backend`: `LocalServer.close()` also stops the backend.
    """
    await backend.start()
    served: list[BackendResponse] = []
    app = build_app(backend, api_key=api_key, served=served)
    # handler_cancellation: a client that hangs up cancels its request, which withdraws
    # it from the backend's queue instead of generating an answer nobody reads.
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    return LocalServer(backend, host, bound, runner, owns_backend=owns_backend, served=served)


class _Handlers:
    def __init__(
        self, backend: LocalBackend, api_key: str | None, served: list[BackendResponse] | None
    ) -> None:
        self.backend = backend
        self.api_key = api_key
        self.served = served
        self.created = int(time.time())

    def _authorized(self, request: web.Request) -> bool:
        if self.api_key is None:
            return True
        sent = request.headers.get("Authorization", "")
        return hmac.compare_digest(sent.encode(), f"Bearer {self.api_key}".encode())

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "model": self.backend.model_name})

    async def models(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _error(401, "Incorrect API key provided.", "invalid_api_key")
        model = {
            "id": self.backend.model_name,
            "object": "model",
            "created": self.created,
            "owned_by": "ibot",
        }
        return web.json_response({"object": "list", "data": [model]})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return _error(401, "Incorrect API key provided.", "invalid_api_key")
        try:
            body = await request.json()
            llm_request, stream, include_usage = _parse(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "The body is not valid JSON.", "invalid_json")
        except _BadRequest as err:
            return _error(400, str(err), "invalid_request")
        started = time.perf_counter()
        try:
            response = await self.backend.complete(llm_request)
        except BackendError as err:
            status = _STATUS.get(err.kind, 500)
            log.warning("local completion failed", kind=err.kind.value, error=err.message)
            return _error(status, err.message, err.kind.value, kind="server_error")
        if self.served is not None:
            self.served.append(response)
        log.info(
            "local completion",
            prompt_tokens=response.usage.prompt_tokens,
            completion_tokens=response.usage.completion_tokens,
            seconds=round(time.perf_counter() - started, 3),
        )
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        headers = {"x-request-id": completion_id}
        if stream:
            return await _stream(request, response, completion_id, include_usage, headers)
        return web.json_response(_completion(response, completion_id), headers=headers)


def _text(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            part.get("text", "")
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        ]
        return "\n".join(p for p in parts if isinstance(p, str))
    raise _BadRequest("message content must be a string or a list of parts")


def _parse(body: Any) -> tuple[LLMRequest, bool, bool]:
    if not isinstance(body, dict):
        raise _BadRequest("the body must be a JSON object")
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise _BadRequest("'messages' must be a non-empty list")
    messages: list[ChatMessage] = []
    for item in raw:
        if not isinstance(item, dict) or item.get("role") not in _ROLES:
            raise _BadRequest("each message needs a role: system, user or assistant")
        messages.append(ChatMessage(role=_ROLES[item["role"]], content=_text(item.get("content"))))
    limit = body.get("max_completion_tokens") or body.get("max_tokens") or 1_000_000
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise _BadRequest("'max_tokens' must be a positive integer")
    options = body.get("stream_options") or {}
    request = LLMRequest(
        messages=tuple(messages),
        model=str(body.get("model") or ""),
        max_output_tokens=limit,
        context=CallContext(feature=Feature.CHAT),
    )
    include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
    return request, bool(body.get("stream")), include_usage


def _usage(response: BackendResponse) -> dict[str, int]:
    usage = response.usage
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def _completion(response: BackendResponse, completion_id: str) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": response.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": response.text},
                "finish_reason": response.finish_reason or "stop",
                "logprobs": None,
            }
        ],
        "usage": _usage(response),
    }


async def _stream(
    request: web.Request,
    response: BackendResponse,
    completion_id: str,
    include_usage: bool,
    headers: dict[str, str],
) -> web.StreamResponse:
    out = web.StreamResponse(status=200, headers={**headers, "Content-Type": "text/event-stream"})
    await out.prepare(request)
    base = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": response.model,
    }
    chunks: list[dict[str, Any]] = [
        {
            **base,
            "choices": [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": response.text},
                    "finish_reason": None,
                }
            ],
        },
        {
            **base,
            "choices": [
                {"index": 0, "delta": {}, "finish_reason": response.finish_reason or "stop"}
            ],
        },
    ]
    if include_usage:
        chunks.append({**base, "choices": [], "usage": _usage(response)})
    for chunk in chunks:
        await out.write(f"data: {json.dumps(chunk)}\n\n".encode())
    await out.write(b"data: [DONE]\n\n")
    await out.write_eof()
    return out


def _error(
    status: int, message: str, code: str, *, kind: str = "invalid_request_error"
) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return web.json_response(body, status=status)


# ---- serving until stopped ----------------------------------------------------------------


async def serve_forever(backend: LocalBackend, host: str, port: int, api_key: str | None) -> None:
    """Serve until SIGINT or SIGTERM (`ibot serve-local`: ibot/llm/serve_local_cli.py)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Not available off the main thread or on Windows: Ctrl-C still ends asyncio.run.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    server = await start_server(backend, host=host, port=port, api_key=api_key, owns_backend=True)
    try:
        typer.echo(
            f"serving {backend.model_name} ({backend.device}) at {server.base_url}"
            f" — point the bot at it with OPENAI_BASE_URL={server.base_url}"
        )
        await stop.wait()
    finally:
        await server.close()
