"""An OpenAI-compatible Chat Completions server on 127.0.0.1, for tests and the demo.

The real `openai` client talks to it unchanged (point `base_url` at `fake.base_url`).
It behaves like the real API where iBot depends on it:

- usage numbers computed the way OpenAI bills: tiktoken chat counting, the image tile
  formula from the price table, and cached tokens when a prompt prefix of 1024+ tokens
  repeats (in 128-token steps);
- the answering model is a dated snapshot of the alias asked for (gpt-4o →
  gpt-4o-2024-08-06), so pricing by `response.model` is exercised;
- `x-ratelimit-*` headers from token buckets refilled per minute (requests and tokens),
  and 429 with Retry-After once a bucket is empty;
- streaming (SSE) with `stream_options.include_usage`;
- faults on demand: 5xx, rate limits, insufficient_quota, slow answers, hangs (client
  timeouts), dropped connections, streams cut mid-way, and random fault rates;
- every request is recorded with what was served, so a test can reconcile the ledger.

Example::

    async with FakeOpenAI() as fake:
        fake.script("Bonjour !")
        client = AsyncOpenAI(api_key="sk-test", base_url=fake.base_url)
        ...
        assert fake.served_usage().prompt_tokens == ...

Run standalone for the offline demo: `python -m ibot.testing.fake_openai --port 8765`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import hashlib
import io
import json
import random
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ibot import tokens
from ibot.pricing import PriceTable, default_price_table

DEFAULT_SNAPSHOTS = {
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4.1": "gpt-4.1-2025-04-14",
}

CACHE_MIN_TOKENS = 1024
CACHE_STEP_TOKENS = 128

Answer = str | Callable[[dict[str, Any]], str]


@dataclass
class Fault:
    """One injected misbehaviour, used by the next matching request(s)."""

    kind: str  # "status", "rate_limit", "quota", "slow", "hang", "drop", "stream_cut"
    status: int = 500
    delay_s: float = 0.0
    retry_after_s: float | None = None
    cut_after_chunks: int = 2


@dataclass
class RecordedRequest:
    """What the server received and what it answered."""

    body: dict[str, Any]
    status: int
    model: str | None = None
    request_id: str | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0
    image_tokens: int = 0
    completion_tokens: int = 0
    fault: str | None = None
    had_authorization: bool = False
    client_request_id: str | None = None  # the X-Client-Request-Id header
    # Tokens counted and generation started: OpenAI bills this even when the client goes
    # away before the answer arrives (what `served` cannot see).
    billed: bool = False
    at: float = field(default_factory=time.time)

    @property
    def served(self) -> bool:
        """True when the answer was delivered and billed (status 200, usage sent)."""
        return self.status == 200 and self.fault is None


@dataclass(frozen=True)
class UsageTotals:
    requests: int
    prompt_tokens: int
    cached_tokens: int
    image_tokens: int
    completion_tokens: int


class TokenBucket:
    """A per-minute limit refilled continuously, as OpenAI's rate limits behave.

    `window_s` is the minute's length: tests shrink it so that a burst that would take
    minutes against real limits is paced the same way in seconds.
    """

    def __init__(self, per_minute: int, clock: Callable[[], float], window_s: float = 60.0) -> None:
        self.capacity = float(per_minute)
        self.level = float(per_minute)
        self.rate = per_minute / window_s
        self._clock = clock
        self._at = clock()

    def _refill(self) -> None:
        now = self._clock()
        self.level = min(self.capacity, self.level + (now - self._at) * self.rate)
        self._at = now

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` is available (0 if it is now)."""
        self._refill()
        if amount <= self.level:
            return 0.0
        if amount > self.capacity:
            return float("inf")
        return (amount - self.level) / self.rate

    def take(self, amount: float) -> None:
        self._refill()
        self.level -= amount

    def reset_s(self) -> float:
        self._refill()
        return (self.capacity - self.level) / self.rate


class FakeOpenAI:
    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        prices: PriceTable | None = None,
        snapshots: dict[str, str] | None = None,
        seed: int = 0,
        clock: Callable[[], float] = time.monotonic,
        window_s: float = 60.0,
    ) -> None:
        self.host = host
        self.port = port
        self.api_key = api_key
        self.prices = prices or default_price_table()
        self.snapshots = dict(DEFAULT_SNAPSHOTS if snapshots is None else snapshots)
        self.requests: list[RecordedRequest] = []
        self.fault_rates: dict[str, float] = {}
        self.hang_s = 3600.0
        self.latency_s = 0.0  # every answer takes this long (the model "generating")
        self._clock = clock
        self._random = random.Random(seed)
        self._answers: deque[Answer] = deque()
        self._default_answer: Answer = _echo_answer
        self._faults: deque[Fault] = deque()
        self._cache: set[bytes] = set()
        self._rpm = TokenBucket(rpm, clock, window_s) if rpm else None
        self._tpm = TokenBucket(tpm, clock, window_s) if tpm else None
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self._changed = asyncio.Condition()

    # ----- lifecycle -------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    async def start(self) -> FakeOpenAI:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeOpenAI:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ----- scripting -------------------------------------------------------------------

    def script(self, *answers: Answer) -> None:
        """Queue answers for the next requests (text, or a function of the request body)."""
        self._answers.extend(answers)

    def set_default_answer(self, answer: Answer) -> None:
        self._default_answer = answer

    def inject(self, fault: Fault, times: int = 1) -> None:
        """Make the next `times` requests misbehave as `fault` says."""
        self._faults.extend([fault] * times)

    def fail_with_status(self, status: int = 500, times: int = 1) -> None:
        self.inject(Fault("status", status=status), times)

    def rate_limit(self, times: int = 1, retry_after_s: float = 0.01) -> None:
        self.inject(Fault("rate_limit", status=429, retry_after_s=retry_after_s), times)

    def insufficient_quota(self, times: int = 1) -> None:
        self.inject(Fault("quota", status=429), times)

    def hang(self, times: int = 1) -> None:
        """The next request(s) never answer: the client's timeout fires."""
        self.inject(Fault("hang"), times)

    def slow(self, delay_s: float, times: int = 1) -> None:
        self.inject(Fault("slow", delay_s=delay_s), times)

    def drop_connection(self, times: int = 1) -> None:
        self.inject(Fault("drop"), times)

    def cut_stream(self, after_chunks: int = 2, times: int = 1) -> None:
        self.inject(Fault("stream_cut", cut_after_chunks=after_chunks), times)

    # ----- inspection ------------------------------------------------------------------

    def served_usage(self) -> UsageTotals:
        served = [r for r in self.requests if r.served]
        return UsageTotals(
            requests=len(served),
            prompt_tokens=sum(r.prompt_tokens for r in served),
            cached_tokens=sum(r.cached_tokens for r in served),
            image_tokens=sum(r.image_tokens for r in served),
            completion_tokens=sum(r.completion_tokens for r in served),
        )

    async def wait_for_requests(self, count: int, within_s: float = 10.0) -> None:
        """Wait until `count` requests have been recorded (no polling sleeps)."""
        async with asyncio.timeout(within_s), self._changed:
            await self._changed.wait_for(lambda: len(self.requests) >= count)

    # ----- usage -----------------------------------------------------------------------

    def answering_model(self, requested: str) -> str:
        return self.snapshots.get(requested, requested)

    def count_prompt(self, body: dict[str, Any]) -> tuple[int, int, list[int]]:
        """(prompt tokens incl. images, image tokens, the prompt's text token ids)."""
        messages = body.get("messages", [])
        model = body.get("model", "gpt-4o")
        text_tokens = tokens.count_messages(messages, model)
        image_tokens = 0
        for message in messages:
            content = message.get("content")
            if not isinstance(content, list):
                continue
            for part in content:
                if part.get("type") == "image_url":
                    image_tokens += self._image_part_tokens(model, part.get("image_url", {}))
        ids = _prompt_token_ids(messages, model)
        return text_tokens + image_tokens, image_tokens, ids

    def _image_part_tokens(self, model: str, image_url: dict[str, Any]) -> int:
        from PIL import Image

        url = image_url.get("url", "")
        detail = image_url.get("detail", "auto")
        if detail == "auto":
            detail = "high"
        if not url.startswith("data:"):
            raise _BadRequest("image_url must be a base64 data URL in this fake", "invalid_image")
        try:
            data = base64.b64decode(url.split(",", 1)[1], validate=True)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
        except (binascii.Error, IndexError, OSError) as exc:
            raise _BadRequest(f"invalid image data: {exc}", "invalid_image") from None
        try:
            return self.prices.image_tokens(self.answering_model(model), width, height, detail)
        except ValueError:
            return self.prices.image_tokens("gpt-4o", width, height, detail)

    def cached_tokens(self, ids: list[int], prompt_tokens: int) -> int:
        """Tokens of the longest previously seen prefix, from 1024 in steps of 128."""
        cached = 0
        length = CACHE_MIN_TOKENS
        while length <= len(ids):
            key = hashlib.sha1(repr(ids[:length]).encode()).digest()
            if key not in self._cache:
                break
            cached = length
            length += CACHE_STEP_TOKENS
        length = CACHE_MIN_TOKENS
        while length <= len(ids):
            self._cache.add(hashlib.sha1(repr(ids[:length]).encode()).digest())
            length += CACHE_STEP_TOKENS
        return min(cached, prompt_tokens)

    # ----- HTTP ------------------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.Response:
        data = [{"id": m, "object": "model", "owned_by": "fake"} for m in self.snapshots]
        return _json({"object": "list", "data": data})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            body = {}
        record = RecordedRequest(
            body=body,
            status=0,
            had_authorization="Authorization" in request.headers,
            client_request_id=request.headers.get("X-Client-Request-Id"),
        )
        # Recorded on arrival (a hanging request counts too), completed as it is answered.
        self.requests.append(record)
        async with self._changed:
            self._changed.notify_all()
        return await self._answer(request, body, record)

    async def _answer(
        self, request: web.Request, body: dict[str, Any], record: RecordedRequest
    ) -> web.StreamResponse:
        if self.api_key is not None:
            sent = request.headers.get("Authorization", "")
            if sent != f"Bearer {self.api_key}":
                record.status = 401
                return _error(
                    401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
                )
        fault = self._next_fault()
        if fault is not None:
            response = await self._apply_fault(request, fault, record)
            if response is not None:
                return response
        try:
            if not isinstance(body.get("messages"), list) or not body.get("model"):
                raise _BadRequest("'model' and 'messages' are required", "missing_required")
            prompt, image_tokens, ids = self.count_prompt(body)
        except _BadRequest as exc:
            record.status = 400
            return _error(400, exc.message, "invalid_request_error", exc.code)
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or 4096
        limited = self._check_rate_limits(prompt + int(max_tokens))
        if limited is not None:
            record.status = 429
            record.fault = "rate_limit"
            return limited
        rate_headers = self._rate_headers()

        text = self._next_answer(body)
        completion_ids = tokens.encoding_for_model(body["model"]).encode(text)
        if len(completion_ids) > int(max_tokens):
            completion_ids = completion_ids[: int(max_tokens)]
            text = tokens.encoding_for_model(body["model"]).decode(completion_ids)
            finish = "length"
        else:
            finish = "stop"
        cached = self.cached_tokens(ids, prompt)
        model = self.answering_model(body["model"])
        request_id = f"req_{uuid.uuid4().hex}"
        record.model = model
        record.request_id = request_id
        record.prompt_tokens = prompt
        record.cached_tokens = cached
        record.image_tokens = image_tokens
        record.completion_tokens = len(completion_ids)
        record.billed = True
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": len(completion_ids),
            "total_tokens": prompt + len(completion_ids),
            "prompt_tokens_details": {
                "cached_tokens": cached,
                "image_tokens": image_tokens,
                "text_tokens": prompt - image_tokens,
                "audio_tokens": 0,
            },
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        }
        headers = {**rate_headers, "x-request-id": request_id}
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        delay = self.latency_s + (
            fault.delay_s if fault is not None and fault.kind == "slow" else 0
        )
        if delay:
            await self._pause(delay)
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            cut = (
                fault.cut_after_chunks if fault is not None and fault.kind == "stream_cut" else None
            )
            return await self._stream(
                request,
                record,
                headers,
                completion_id,
                model,
                text,
                finish,
                usage,
                include_usage,
                cut,
            )
        record.status = 200
        return _json(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text, "refusal": None},
                        "finish_reason": finish,
                        "logprobs": None,
                    }
                ],
                "usage": usage,
                "system_fingerprint": "fp_fake",
            },
            headers=headers,
        )

    async def _stream(
        self,
        request: web.Request,
        record: RecordedRequest,
        headers: dict[str, str],
        completion_id: str,
        model: str,
        text: str,
        finish: str,
        usage: dict[str, Any],
        include_usage: bool,
        cut_after: int | None,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            status=200, headers={**headers, "Content-Type": "text/event-stream"}
        )
        await response.prepare(request)
        record.status = 200
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish_reason: str | None, with_usage: Any) -> bytes:
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
                payload["usage"] = with_usage
            return f"data: {json.dumps(payload)}\n\n".encode()

        pieces = _split_for_stream(text)
        await response.write(chunk({"role": "assistant", "content": ""}, None, None))
        for index, piece in enumerate(pieces):
            if cut_after is not None and index >= cut_after:
                record.fault = "stream_cut"
                request.transport.abort()  # type: ignore[union-attr]
                return response
            await response.write(chunk({"content": piece}, None, None))
        await response.write(chunk({}, finish, None))
        if include_usage:
            final = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": usage,
            }
            await response.write(f"data: {json.dumps(final)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    def _next_answer(self, body: dict[str, Any]) -> str:
        answer = self._answers.popleft() if self._answers else self._default_answer
        return answer(body) if callable(answer) else answer

    def _next_fault(self) -> Fault | None:
        if self._faults:
            return self._faults.popleft()
        roll = self._random.random()
        for kind, rate in self.fault_rates.items():
            if roll < rate:
                if kind == "5xx":
                    return Fault("status", status=self._random.choice([500, 502, 503]))
                return Fault(kind)
            roll -= rate
        return None

    async def _apply_fault(
        self, request: web.Request, fault: Fault, record: RecordedRequest
    ) -> web.StreamResponse | None:
        """Answer the fault, or return None when the request goes on (slow, stream_cut)."""
        record.fault = fault.kind
        if fault.kind == "status":
            record.status = fault.status
            return _error(
                fault.status,
                "The server had an error processing your request.",
                "server_error",
                None,
            )
        if fault.kind == "rate_limit":
            record.status = 429
            retry = fault.retry_after_s if fault.retry_after_s is not None else 1.0
            return _error(
                429,
                "Rate limit reached for requests.",
                "requests",
                "rate_limit_exceeded",
                headers=_retry_headers(retry),
            )
        if fault.kind == "quota":
            record.status = 429
            return _error(
                429,
                "You exceeded your current quota, please check your plan and billing details.",
                "insufficient_quota",
                "insufficient_quota",
            )
        if fault.kind == "hang":
            record.status = 0
            await self._pause(self.hang_s)
            return web.Response(status=504)
        if fault.kind == "drop":
            record.status = 0
            request.transport.abort()  # type: ignore[union-attr]
            return web.Response(status=500)
        record.fault = None  # slow answers and cut streams are marked when they happen
        return None

    async def _pause(self, seconds: float) -> None:
        """Wait, but end at once when the server stops (so tests never hang)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    def _check_rate_limits(self, estimated_tokens: int) -> web.Response | None:
        waits = []
        if self._rpm is not None:
            waits.append(("requests", self._rpm.wait_for(1)))
        if self._tpm is not None:
            waits.append(("tokens", self._tpm.wait_for(estimated_tokens)))
        blocked = [(kind, wait) for kind, wait in waits if wait > 0]
        if blocked:
            kind, wait = max(blocked, key=lambda item: item[1])
            wait = min(wait, 60.0)
            return _error(
                429,
                f"Rate limit reached for {kind} per minute. Please try again in {wait:.3f}s.",
                kind,
                "rate_limit_exceeded",
                headers={**_retry_headers(wait), **self._rate_headers()},
            )
        if self._rpm is not None:
            self._rpm.take(1)
        if self._tpm is not None:
            self._tpm.take(estimated_tokens)
        return None

    def _rate_headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        for kind, bucket in (("requests", self._rpm), ("tokens", self._tpm)):
            if bucket is None:
                continue
            headers[f"x-ratelimit-limit-{kind}"] = str(int(bucket.capacity))
            headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, int(bucket.level)))
            headers[f"x-ratelimit-reset-{kind}"] = f"{bucket.reset_s() * 1000:.0f}ms"
        return headers


class _BadRequest(Exception):
    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def _json(
    payload: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=json.dumps(payload).encode(),
        status=status,
        headers=headers,
        content_type="application/json",
    )


def _error(
    status: int,
    message: str,
    type_: str,
    code: str | None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return _json(
        body, status=status, headers={"x-request-id": f"req_{uuid.uuid4().hex}", **(headers or {})}
    )


def _retry_headers(seconds: float) -> dict[str, str]:
    return {"retry-after": f"{max(seconds, 0.0):.3f}", "retry-after-ms": f"{seconds * 1000:.0f}"}


def _prompt_token_ids(messages: list[dict[str, Any]], model: str) -> list[int]:
    """The prompt as one token sequence, for prefix caching (roles and text in order)."""
    encoding = tokens.encoding_for_model(model)
    ids: list[int] = []
    for message in messages:
        ids.extend(encoding.encode(str(message.get("role", "")), disallowed_special=()))
        content = message.get("content")
        if isinstance(content, list):
            for part in content:
                if part.get("type") == "text":
                    ids.extend(encoding.encode(part.get("text", ""), disallowed_special=()))
                else:  # an image breaks text continuity: hash its bytes in as one marker
                    url = part.get("image_url", {}).get("url", "")
                    ids.append(-int.from_bytes(hashlib.sha1(url.encode()).digest()[:4], "big"))
        elif isinstance(content, str):
            ids.extend(encoding.encode(content, disallowed_special=()))
    return ids


def _split_for_stream(text: str, size: int = 24) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _echo_answer(body: dict[str, Any]) -> str:
    """A deterministic default answer that shows what the model was asked."""
    last = ""
    for message in reversed(body.get("messages", [])):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                content = " ".join(p.get("text", "") for p in content if p.get("type") == "text")
            last = str(content)
            break
    snippet = " ".join(last.split())[:160]
    return f"**Réponse de test** : j'ai bien lu ta question ({snippet})."


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the fake OpenAI server on loopback.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--rpm", type=int, default=None)
    parser.add_argument("--tpm", type=int, default=None)
    args = parser.parse_args()

    async def serve() -> None:
        fake = FakeOpenAI(host=args.host, port=args.port, rpm=args.rpm, tpm=args.tpm)
        await fake.start()
        print(f"fake OpenAI listening on {fake.base_url}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
