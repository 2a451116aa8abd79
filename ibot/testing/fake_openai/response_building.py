"""Every body and header the fake sends: completions, stream chunks, embeddings, usage,
errors.

The `openai` client parses these into its types, so they must have the API's shape: the
`chat.completion` object, the `chat.completion.chunk` SSE stream ending in `[DONE]` (with a
last usage chunk under `stream_options.include_usage`), the `usage` object with its token
details, and error bodies `{"error": {message, type, param, code}}` with an
`x-request-id` and, for 429s, Retry-After (unless told to leave it out, as the API may),
and the `{"error": …}` event a stream can end with. Building them all here keeps the one
place to check them against OpenAI's OpenAPI spec; what goes in them is decided
elsewhere.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import web

from ibot.testing.fake_openai.rate_limits import Refusal
from ibot.testing.fake_openai.records import RecordedRequest
from ibot.testing.fake_openai.usage import CallUsage, Completion

STREAM_PIECE_CHARS = 24
SYSTEM_FINGERPRINT = "fp_fake"


def new_request_id() -> str:
    return f"req_{uuid.uuid4().hex}"


def new_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


# ----- errors ----------------------------------------------------------------------------


def json_response(
    payload: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=json.dumps(payload).encode(),
        status=status,
        headers=headers,
        content_type="application/json",
    )


def error_response(
    status: int,
    message: str,
    type_: str,
    code: str | None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return json_response(
        body, status=status, headers={"x-request-id": new_request_id(), **(headers or {})}
    )


def retry_headers(seconds: float) -> dict[str, str]:
    return {"retry-after": f"{max(seconds, 0.0):.3f}", "retry-after-ms": f"{seconds * 1000:.0f}"}


def invalid_api_key() -> web.Response:
    return error_response(
        401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
    )


def bad_request(message: str, code: str) -> web.Response:
    return error_response(400, message, "invalid_request_error", code)


def server_error(status: int) -> web.Response:
    return error_response(
        status, "The server had an error processing your request.", "server_error", None
    )


def rate_limited(retry_after_s: float | None) -> web.Response:
    """An injected 429 for requests, with Retry-After (None: without any)."""
    return error_response(
        429,
        "Rate limit reached for requests.",
        "requests",
        "rate_limit_exceeded",
        headers=retry_headers(retry_after_s) if retry_after_s is not None else None,
    )


def rate_limit_exceeded(refusal: Refusal, *, retry_after: bool = True) -> web.Response:
    """The 429 of a short bucket, with the x-ratelimit-* headers and (unless
    `retry_after` is False) Retry-After."""
    retry = retry_headers(refusal.wait_s) if retry_after else {}
    return error_response(
        429,
        f"Rate limit reached for {refusal.kind} per minute. "
        f"Please try again in {refusal.wait_s:.3f}s.",
        refusal.kind,
        "rate_limit_exceeded",
        headers={**retry, **refusal.headers},
    )


def insufficient_quota() -> web.Response:
    return error_response(
        429,
        "You exceeded your current quota, please check your plan and billing details.",
        "insufficient_quota",
        "insufficient_quota",
    )


# ----- answers ---------------------------------------------------------------------------


def model_list(model_ids: list[str]) -> web.Response:
    created = 1_715_367_049  # Model requires it: a Unix time (gpt-4o's, for every model)
    data = [{"id": m, "object": "model", "created": created, "owned_by": "fake"} for m in model_ids]
    return json_response({"object": "list", "data": data})


def model_not_found(model: str) -> web.Response:
    """The API's 404 for a model that does not exist (or that the key cannot use)."""
    return error_response(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        "invalid_request_error",
        "model_not_found",
    )


def embedding_list(
    model: str, vectors: list[list[float] | str], prompt_tokens: int, headers: dict[str, str]
) -> web.Response:
    """A `CreateEmbeddingResponse`: one `embedding` object per input, in input order
    (floats, or base64 strings when the request asked for base64), and the usage."""
    data = [
        {"object": "embedding", "index": index, "embedding": values}
        for index, values in enumerate(vectors)
    ]
    usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    return json_response(
        {"object": "list", "data": data, "model": model, "usage": usage}, headers=headers
    )


def usage_object(usage: CallUsage) -> dict[str, Any]:
    """The `usage` object of a completion (and of the stream's last chunk).

    Without `usage.reports_image_tokens`, prompt_tokens_details has only cached_tokens
    and audio_tokens, as in the spec's own examples (its image-input example included):
    image_tokens and text_tokens are optional in CompletionUsage, and prompt_tokens
    still counts the images.
    """
    prompt_details: dict[str, int] = {"cached_tokens": usage.cached_tokens}
    if usage.reports_image_tokens:
        prompt_details["image_tokens"] = usage.image_tokens
        prompt_details["text_tokens"] = usage.prompt_tokens - usage.image_tokens
    prompt_details["audio_tokens"] = 0
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }


def stream_error_event() -> dict[str, Any]:
    """The event that ends a stream the server failed mid-way: an error object where a
    chunk would be (the openai client raises `openai.APIError` on it)."""
    return {
        "error": {
            "message": "The server had an error while processing your request. Sorry about that!",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }


def chat_completion(
    completion_id: str,
    model: str,
    completion: Completion,
    usage: CallUsage,
    headers: dict[str, str],
) -> web.Response:
    """A whole `chat.completion` answer."""
    return json_response(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": completion.text, "refusal": None},
                    "finish_reason": completion.finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": usage_object(usage),
            "system_fingerprint": SYSTEM_FINGERPRINT,
        },
        headers=headers,
    )


async def stream_chat_completion(
    request: web.Request,
    record: RecordedRequest,
    headers: dict[str, str],
    completion_id: str,
    model: str,
    completion: Completion,
    usage: CallUsage,
    *,
    include_usage: bool,
    cut_after: int | None,
    error_after: int | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> web.StreamResponse:
    """Send the answer as `chat.completion.chunk` events, then `[DONE]`.

    `record` is marked 200 once the headers are sent; with `cut_after`, the connection
    is aborted after that many content chunks and `record` marked "stream_cut"; with
    `error_after`, an error event follows that many content chunks (all of them, for a
    shorter answer) and ends the stream (no usage, no [DONE]), and `record` is marked
    "stream_error".
    """
    response = web.StreamResponse(
        status=200, headers={**headers, "Content-Type": "text/event-stream"}
    )
    await response.prepare(request)
    record.status = 200
    created = int(time.time())

    def event(payload: dict[str, Any]) -> bytes:
        if on_event is not None:  # the suite's spec check (fake_openai/server.py)
            on_event(payload)
        return f"data: {json.dumps(payload)}\n\n".encode()

    def chunk(delta: dict[str, Any], finish_reason: str | None) -> bytes:
        payload: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [
                {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
            ],
        }
        if include_usage:
            payload["usage"] = None  # only the last chunk carries it
        return event(payload)

    await response.write(chunk({"role": "assistant", "content": ""}, None))
    for index, piece in enumerate(split_for_stream(completion.text)):
        if cut_after is not None and index >= cut_after:
            record.fault = "stream_cut"
            request.transport.abort()  # type: ignore[union-attr]
            return response
        if error_after is not None and index >= error_after:
            break
        await response.write(chunk({"content": piece}, None))
    if error_after is not None:
        record.fault = "stream_error"
        await response.write(event(stream_error_event()))
        await response.write_eof()
        return response
    await response.write(chunk({}, completion.finish_reason))
    if include_usage:
        final = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "usage": usage_object(usage),
        }
        await response.write(event(final))
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


def split_for_stream(text: str, size: int = STREAM_PIECE_CHARS) -> list[str]:
    """The content deltas of a streamed answer ([""] for an empty one)."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]
