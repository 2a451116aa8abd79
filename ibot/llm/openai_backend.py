"""The OpenAI backend: `AsyncOpenAI` only, with our own classified retries.

Why our own retry loop instead of the SDK's `max_retries`: the SDK retries every 429,
including `insufficient_quota`, which no retry can fix (it only burns minutes while a
user waits), and it hides how many attempts were made. So the client is built with
`max_retries=0` and this module decides: transient errors (429 rate limit, 5xx, 408,
409, timeouts, dropped connections) are retried with the server's Retry-After when it
gives one, else exponential back-off with jitter (0.5 s, 1 s, 2 s… each up to a quarter
shorter, never over `retry_max_wait_s`); everything else fails at once. A 429 without
Retry-After (the API does send some) tells the rate-limit listener, the gateway's pacer,
to hold everyone for that back-off too, as a Retry-After would have.

An error event in a stream (`data: {"error": …}`, which the client raises as a bare
`openai.APIError`) is classified by its error type, a server_error as SERVER.

The synchronous client is never used: it would block the Discord gateway heartbeat.
Works with any OpenAI-compatible server through `base_url` (vLLM, Ollama, our fakes).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

import httpx2
import openai
from openai import AsyncOpenAI

from ibot.domain import (
    Backend,
    BackendError,
    BackendResponse,
    ChatMessage,
    ErrorKind,
    LLMRequest,
    RateLimitInfo,
    Usage,
    UsageSource,
)
from ibot.llm.embeddings import EmbeddingRequest, EmbeddingResponse

OnDelta = Callable[[str], Awaitable[None] | None]
Sleep = Callable[[float], Awaitable[None]]
# Told of every answer's rate-limit headers, and of a 429's Retry-After, as they arrive.
RateLimitListener = Callable[[RateLimitInfo | None, float | None], None]

_BACKOFF_BASE_S = 0.5
_RETRY_AFTER_JITTER_S = 0.05  # the least spread added to a Retry-After wait


def to_openai_messages(messages: tuple[ChatMessage, ...]) -> list[dict[str, Any]]:
    """Convert our messages to the Chat Completions wire format.

    Images go in the same user message as their text, as base64 data URLs with an
    explicit detail (Discord CDN links expire; "auto" would make our estimate inexact).
    """
    out: list[dict[str, Any]] = []
    for message in messages:
        item: dict[str, Any] = {"role": message.role}
        if message.images:
            parts: list[dict[str, Any]] = [{"type": "text", "text": message.content}]
            parts.extend(
                {
                    "type": "image_url",
                    "image_url": {"url": image.data_url(), "detail": image.detail},
                }
                for image in message.images
            )
            item["content"] = parts
        else:
            item["content"] = message.content
        if message.name:
            item["name"] = message.name
        out.append(item)
    return out


def parse_rate_limits(headers: Mapping[str, str]) -> RateLimitInfo | None:
    """Read the x-ratelimit-* headers; durations like "1s", "6m0s", "120ms" become seconds."""

    def _int(name: str) -> int | None:
        value = headers.get(name)
        try:
            return int(value) if value is not None else None
        except ValueError:
            return None

    def _duration(name: str) -> float | None:
        value = headers.get(name)
        return parse_duration(value) if value is not None else None

    info = RateLimitInfo(
        limit_requests=_int("x-ratelimit-limit-requests"),
        remaining_requests=_int("x-ratelimit-remaining-requests"),
        reset_requests_s=_duration("x-ratelimit-reset-requests"),
        limit_tokens=_int("x-ratelimit-limit-tokens"),
        remaining_tokens=_int("x-ratelimit-remaining-tokens"),
        reset_tokens_s=_duration("x-ratelimit-reset-tokens"),
    )
    return None if info == RateLimitInfo() else info


def parse_duration(value: str) -> float | None:
    """Parse OpenAI's reset durations ("20ms", "1.5s", "6m0s", "1h2m3s") into seconds."""
    value = value.strip()
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    total, number = 0.0, ""
    i = 0
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    while i < len(value):
        ch = value[i]
        if ch.isdigit() or ch == ".":
            number += ch
            i += 1
            continue
        unit = "ms" if value.startswith("ms", i) else ch
        if unit not in units or not number:
            return None
        total += float(number) * units[unit]
        number = ""
        i += len(unit)
    return None if number else total


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Retry-After in seconds, preferring the non-standard, more precise retry-after-ms."""
    if not headers:
        return None
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) / divisor)
        except ValueError:
            continue
    return None


def classify(exc: BaseException) -> tuple[ErrorKind, str]:
    """Map an openai exception to our ErrorKind and a short message with no secret in it."""
    if isinstance(exc, openai.APITimeoutError):
        return ErrorKind.TIMEOUT, "request timed out"
    if isinstance(exc, openai.APIConnectionError):
        return ErrorKind.CONNECTION, "connection failed"
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        code = exc.code or ""
        detail = f"HTTP {status}" + (f" ({code})" if code else "")
        server_text = (exc.message or "")[:300]
        message = f"{detail}: {server_text}" if server_text else detail
        if status == 429:
            if code == "insufficient_quota" or "insufficient_quota" in (exc.type or ""):
                return ErrorKind.QUOTA, message
            return ErrorKind.RATE_LIMIT, message
        if status in (401, 403):
            return ErrorKind.AUTH, message
        if status == 408:
            return ErrorKind.TIMEOUT, message
        if status == 409 or status >= 500:
            return ErrorKind.SERVER, message
        if status in (400, 404, 413, 422):
            return ErrorKind.BAD_REQUEST, message
        return ErrorKind.OTHER, message
    if isinstance(exc, openai.APIError):
        # An error event inside a 200 stream: no status, only the error object.
        code = exc.code or exc.type or ""
        detail = "stream error" + (f" ({code})" if code else "")
        server_text = (exc.message or "")[:300]
        message = f"{detail}: {server_text}" if server_text else detail
        if code == "insufficient_quota":
            return ErrorKind.QUOTA, message
        if code in ("rate_limit_exceeded", "requests", "tokens"):
            return ErrorKind.RATE_LIMIT, message
        if code == "server_error":
            return ErrorKind.SERVER, message
        return ErrorKind.OTHER, message
    return ErrorKind.OTHER, type(exc).__name__


CLIENT_REQUEST_ID_HEADER = "X-Client-Request-Id"


class OpenAIBackend:
    """Chat Completions and Embeddings through one shared `AsyncOpenAI` client."""

    name = Backend.OPENAI

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        timeout_s: float = 60.0,
        connect_timeout_s: float = 5.0,
        max_retries: int = 3,
        retry_max_wait_s: float = 60.0,
        sleep: Sleep = asyncio.sleep,
        client: AsyncOpenAI | None = None,
    ) -> None:
        self._client = client or AsyncOpenAI(
            api_key=api_key,
            base_url=base_url or None,
            timeout=httpx2.Timeout(timeout_s, connect=connect_timeout_s),
            max_retries=0,  # retries are ours: see the module docstring
        )
        self.max_retries = max_retries
        self.retry_max_wait_s = retry_max_wait_s
        self._sleep = sleep
        self.last_rate_limits: RateLimitInfo | None = None
        self.rate_limit_listener: RateLimitListener | None = None

    def _saw_headers(
        self, headers: Mapping[str, str] | None, rate_limited_for: float | None = None
    ) -> RateLimitInfo | None:
        info = parse_rate_limits(headers) if headers is not None else None
        self.last_rate_limits = info or self.last_rate_limits
        if self.rate_limit_listener is not None and (info or rate_limited_for is not None):
            self.rate_limit_listener(info, rate_limited_for)
        return info

    async def aclose(self) -> None:
        await self._client.close()

    async def complete(
        self,
        request: LLMRequest,
        *,
        prompt_estimate: int = 0,
        on_delta: OnDelta | None = None,
        estimate_completion: Callable[[str], int] | None = None,
    ) -> BackendResponse:
        """Send one chat completion, retrying transient failures.

        `prompt_estimate` and `estimate_completion` are used only when a stream ends
        without its usage chunk: the ledger then records an estimate, marked as such.
        """

        async def once() -> BackendResponse:
            if request.stream:
                return await self._stream_once(
                    request, prompt_estimate, on_delta, estimate_completion
                )
            return await self._create_once(request, prompt_estimate, estimate_completion)

        response, attempts = await self._retrying(once, request.model)
        return BackendResponse(
            text=response.text,
            usage=response.usage,
            model=response.model,
            request_id=response.request_id,
            finish_reason=response.finish_reason,
            rate_limits=response.rate_limits,
            attempts=attempts,
        )

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        """Embed `request.texts` in one call (`/v1/embeddings`), retrying transient
        failures like a chat completion.

        The vectors are asked for as floats (`encoding_format` "float", what the spec's
        `Embedding` schema describes) and come back in the texts' order. Their rate-limit
        headers are kept out of the pacer: the embedding models have limits of their
        own, and a 429 on them must not hold the chat calls back.
        """

        async def once() -> EmbeddingResponse:
            return await self._embed_once(request)

        response, attempts = await self._retrying(once, request.model, pace=False)
        return replace(response, attempts=attempts)

    async def _retrying[T](
        self, once: Callable[[], Awaitable[T]], model: str, *, pace: bool = True
    ) -> tuple[T, int]:
        """`once()`'s result and the attempts it took: transient failures are retried
        (module docstring), the others raised at once as a classified BackendError.
        `pace`: tell the rate-limit listener what the answers' headers say."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return await once(), attempt
            except BackendError as err:  # a stream cut mid-way: billed, never retried
                err.attempts = attempt
                raise
            except (openai.APIError, httpx2.HTTPError) as exc:
                kind, message = classify(exc)
                headers = getattr(getattr(exc, "response", None), "headers", None)
                retry_after = parse_retry_after(headers)
                request_id = getattr(exc, "request_id", None)
                wait = self._retry_wait(kind, attempt, retry_after)
                # How long the rate limit holds: the server's word, else our own back-off.
                held_for = retry_after if retry_after is not None else wait
                if pace:
                    self._saw_headers(headers, held_for if kind is ErrorKind.RATE_LIMIT else None)
                if wait is None:
                    raise BackendError(
                        kind,
                        message,
                        request_id=request_id,
                        retry_after_s=retry_after,
                        attempts=attempt,
                        model=model,
                    ) from None
                await self._sleep(wait)

    def _retry_wait(self, kind: ErrorKind, attempt: int, retry_after: float | None) -> float | None:
        """Seconds to wait before the next attempt, or None to give up now."""
        if not kind.transient or attempt > self.max_retries:
            return None
        if retry_after is not None:
            # A server asking for longer than we are willing to hold a user is a failure.
            if retry_after > self.retry_max_wait_s:
                return None
            # Never earlier than asked, but spread: callers told the same short wait
            # would otherwise all come back at the same instant and be refused again.
            return retry_after + random.uniform(0, max(_RETRY_AFTER_JITTER_S, 0.1 * retry_after))
        backoff: float = _BACKOFF_BASE_S * (2 ** (attempt - 1))
        return min(self.retry_max_wait_s, backoff * (1 - 0.25 * random.random()))

    def _params(self, request: LLMRequest) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": request.model,
            "messages": to_openai_messages(request.messages),
            "max_completion_tokens": request.max_output_tokens,
        }
        if request.temperature is not None:
            params["temperature"] = request.temperature
        if request.call_id is not None:
            # OpenAI keeps the client's own id with the request: a call whose answer never
            # arrived (the bot was killed) can be found in its logs by the ledger's id.
            params["extra_headers"] = {CLIENT_REQUEST_ID_HEADER: request.call_id}
        return params

    async def _create_once(
        self,
        request: LLMRequest,
        prompt_estimate: int,
        estimate_completion: Callable[[str], int] | None,
    ) -> BackendResponse:
        raw = await self._client.chat.completions.with_raw_response.create(**self._params(request))
        completion = raw.parse()
        rate_limits = self._saw_headers(raw.headers)
        choice = completion.choices[0] if completion.choices else None
        text = (choice.message.content or "") if choice else ""
        usage = (
            usage_from_api(completion.usage)
            if completion.usage is not None
            else estimated_usage(prompt_estimate, text, estimate_completion)
        )
        return BackendResponse(
            text=text,
            usage=usage,
            model=completion.model or request.model,
            request_id=raw.headers.get("x-request-id") or completion.id,
            finish_reason=choice.finish_reason if choice else None,
            rate_limits=rate_limits,
        )

    async def _embed_once(self, request: EmbeddingRequest) -> EmbeddingResponse:
        params: dict[str, Any] = {
            "model": request.model,
            "input": list(request.texts),
            "encoding_format": "float",
        }
        if request.dimensions is not None:
            params["dimensions"] = request.dimensions
        if request.call_id is not None:
            params["extra_headers"] = {CLIENT_REQUEST_ID_HEADER: request.call_id}
        raw = await self._client.embeddings.with_raw_response.create(**params)
        answer = raw.parse()
        data = sorted(answer.data, key=lambda item: item.index)
        if len(data) != len(request.texts):
            raise BackendError(
                ErrorKind.OTHER,
                f"{len(data)} embeddings for {len(request.texts)} inputs",
                request_id=raw.headers.get("x-request-id"),
                model=request.model,
            )
        return EmbeddingResponse(
            vectors=tuple(tuple(float(v) for v in item.embedding) for item in data),
            usage=Usage(prompt_tokens=answer.usage.prompt_tokens or 0),
            model=answer.model or request.model,
            request_id=raw.headers.get("x-request-id"),
        )

    async def _stream_once(
        self,
        request: LLMRequest,
        prompt_estimate: int,
        on_delta: OnDelta | None,
        estimate_completion: Callable[[str], int] | None,
    ) -> BackendResponse:
        raw = await self._client.chat.completions.with_raw_response.create(
            **self._params(request), stream=True, stream_options={"include_usage": True}
        )
        rate_limits = self._saw_headers(raw.headers)
        request_id = raw.headers.get("x-request-id")
        stream = raw.parse()
        pieces: list[str] = []
        usage = None
        model = request.model
        finish_reason = None

        def estimated() -> Usage:
            return estimated_usage(prompt_estimate, "".join(pieces), estimate_completion)

        try:
            async for chunk in stream:
                model = chunk.model or model
                request_id = request_id or chunk.id
                if chunk.usage is not None:
                    usage = usage_from_api(chunk.usage)
                for choice in chunk.choices:
                    if choice.finish_reason:
                        finish_reason = choice.finish_reason
                    delta = choice.delta.content if choice.delta else None
                    if delta:
                        pieces.append(delta)
                        if on_delta is not None:
                            result = on_delta(delta)
                            if asyncio.iscoroutine(result):
                                await result
        except (openai.APIError, httpx2.HTTPError) as exc:
            if not pieces:
                raise  # nothing streamed yet: an ordinary failure, retried as such
            kind, message = classify(exc)
            raise BackendError(
                kind,
                f"stream interrupted: {message}",
                request_id=request_id,
                model=model,
                usage=estimated(),
            ) from None
        return BackendResponse(
            text="".join(pieces),
            usage=usage if usage is not None else estimated(),
            model=model,
            request_id=request_id,
            finish_reason=finish_reason,
            rate_limits=rate_limits,
        )


def estimated_usage(
    prompt_estimate: int, text: str, estimate_completion: Callable[[str], int] | None
) -> Usage:
    """Usage counted by us when the server gave none; the ledger marks it estimated."""
    completion = estimate_completion(text) if estimate_completion else 0
    return Usage(
        prompt_tokens=prompt_estimate, completion_tokens=completion, source=UsageSource.ESTIMATED
    )


def usage_from_api(usage: Any) -> Usage:
    """Our Usage from the SDK's CompletionUsage (absent detail fields count as zero).

    image_tokens is optional in the API's usage and often absent: the gateway then puts
    its own estimate in the ledger (`ModelGateway._with_image_estimate`).
    """
    details = getattr(usage, "prompt_tokens_details", None)
    return Usage(
        prompt_tokens=usage.prompt_tokens or 0,
        completion_tokens=usage.completion_tokens or 0,
        cached_tokens=(getattr(details, "cached_tokens", None) or 0) if details else 0,
        image_tokens=(getattr(details, "image_tokens", None) or 0) if details else 0,
        source=UsageSource.MEASURED,
    )
