"""The aiohttp server and `FakeOpenAI`, the facade a test or the demo drives.

`FakeOpenAI` owns the app on 127.0.0.1 and its routes, and runs each chat request
through the steps the real API takes: API key, injected fault, parsing, usage, rate
limits, answer, response; an embeddings request takes the same steps (embeddings.py).
Each step's rules live in their own module (faults, request_parsing, usage,
rate_limits, answers, response_building, embeddings); this one only orders them,
records what happened (records.py) and offers the scripting and inspection API.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ibot.testing import spec_violations
from ibot.testing.fake_openai import response_building as build
from ibot.testing.fake_openai.answers import Answer, AnswerScript
from ibot.testing.fake_openai.embeddings import UnknownModel, parse_embedding_request
from ibot.testing.fake_openai.embeddings import embeddings as embedding_vectors
from ibot.testing.fake_openai.faults import Fault, FaultInjector, answer_fault
from ibot.testing.fake_openai.rate_limits import RateLimits
from ibot.testing.fake_openai.records import RecordedRequest, UsageTotals, served_totals
from ibot.testing.fake_openai.request_parsing import (
    BadRequest,
    parse_chat_request,
    read_json_body,
)
from ibot.testing.fake_openai.usage import CallUsage, UsageMeter

# The dated snapshot that answers for each alias: pricing by `response.model` is exercised.
DEFAULT_SNAPSHOTS = {
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4.1": "gpt-4.1-2025-04-14",
}

MAX_BODY_BYTES = 64 * 1024 * 1024  # images arrive inline, as base64 data URLs


class FakeOpenAI:
    """An OpenAI-compatible server on loopback (see the package docstring)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        snapshots: dict[str, str] | None = None,
        seed: int = 0,
        clock: Callable[[], float] = time.monotonic,
        window_s: float = 60.0,
    ) -> None:
        self.host = host
        self.port = port
        self.api_key = api_key
        self.snapshots = dict(DEFAULT_SNAPSHOTS if snapshots is None else snapshots)
        self.requests: list[RecordedRequest] = []
        self.hang_s = 3600.0
        self.latency_s = 0.0  # every answer takes this long (the model "generating")
        # False: 429s (injected or from the buckets) come without Retry-After and
        # retry-after-ms, as the API's rate_limit_exceeded answers can.
        self.send_retry_after = True
        # False: usage.prompt_tokens_details leaves out image_tokens and text_tokens (the
        # spec makes them optional; its examples, with an image too, have neither).
        self.report_image_tokens = True
        self._usage = UsageMeter(lambda requested: self.answering_model(requested))
        self._answers = AnswerScript()
        self._faults = FaultInjector(seed)
        self._limits = RateLimits(rpm, tpm, clock, window_s)
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self._changed = asyncio.Condition()
        # id(request) → its SSE event check, while the suite's spec checks are on
        self._stream_checks: dict[int, Callable[[dict[str, Any]], None]] = {}

    # ----- lifecycle -------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    async def start(self) -> FakeOpenAI:
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[self._spec_check])
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
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

    @property
    def fault_rates(self) -> dict[str, float]:
        """Random faults: kind ("5xx", "hang", "drop", …) → share of requests."""
        return self._faults.rates

    @fault_rates.setter
    def fault_rates(self, rates: dict[str, float]) -> None:
        self._faults.rates = rates

    def script(self, *answers: Answer) -> None:
        """Queue answers for the next requests (text, or a function of the request body)."""
        self._answers.queue(*answers)

    def set_default_answer(self, answer: Answer) -> None:
        self._answers.default = answer

    def inject(self, fault: Fault, times: int = 1) -> None:
        """Make the next `times` requests misbehave as `fault` says."""
        self._faults.inject(fault, times)

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

    def stream_error(self, after_chunks: int = 2, times: int = 1) -> None:
        """The next streamed answer(s) end in an `{"error": …}` event (a server_error)
        after `after_chunks` content chunks, with no usage chunk and no [DONE]."""
        self.inject(Fault("stream_error", error_after_chunks=after_chunks), times)

    # ----- inspection ------------------------------------------------------------------

    def served_usage(self) -> UsageTotals:
        return served_totals(self.requests)

    async def wait_for_requests(self, count: int, within_s: float = 10.0) -> None:
        """Wait until `count` requests have been recorded (no polling sleeps)."""
        async with asyncio.timeout(within_s), self._changed:
            await self._changed.wait_for(lambda: len(self.requests) >= count)

    # ----- usage (see usage.py) --------------------------------------------------------

    def answering_model(self, requested: str) -> str:
        return self.snapshots.get(requested, requested)

    def count_prompt(self, body: dict[str, Any]) -> tuple[int, int, list[int]]:
        """(prompt tokens incl. images, image tokens, the prompt's text token ids)."""
        return self._usage.count_prompt(body.get("messages", []), body.get("model", "gpt-4o"))

    def cached_tokens(self, ids: list[int], prompt_tokens: int) -> int:
        """Tokens of the longest previously seen prefix, from 1024 in steps of 128."""
        return self._usage.cached_tokens(ids, prompt_tokens)

    # ----- HTTP ------------------------------------------------------------------------

    @web.middleware
    async def _spec_check(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """With the suite's spec checks on, every request and answer of every route is
        checked against OpenAI's OpenAPI file (openapi_check.py), a streamed answer event
        by event as it is written. An answer the client never gets (a dropped
        connection, a hang ended by the server stopping) is not checked."""
        if not spec_violations.enabled():
            return await handler(request)
        from ibot.testing.openapi_check import OpenAIExchange

        raw = await request.read()  # kept by aiohttp: the handler reads it again
        exchange = OpenAIExchange(request.method, request.path, request.content_type, raw)
        self._stream_checks[id(request)] = exchange.stream_event
        try:
            response = await handler(request)
        finally:
            del self._stream_checks[id(request)]
        transport = request.transport
        if not self._closing.is_set() and transport is not None and not transport.is_closing():
            exchange.response(response)
        return response

    async def _models(self, request: web.Request) -> web.Response:
        return build.model_list(list(self.snapshots))

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body, record = await self._received(request, "chat.completions")
        return await self._answer_chat(request, body, record)

    async def _received(
        self, request: web.Request, endpoint: str
    ) -> tuple[dict[str, Any], RecordedRequest]:
        """The request's body and its record, kept on arrival (a hanging request counts
        too) and completed as it is answered."""
        body = await read_json_body(request)
        record = RecordedRequest(
            body=body,
            status=0,
            endpoint=endpoint,
            had_authorization="Authorization" in request.headers,
            client_request_id=request.headers.get("X-Client-Request-Id"),
        )
        self.requests.append(record)
        async with self._changed:
            self._changed.notify_all()
        return body, record

    async def _refused_or_faulted(
        self, request: web.Request, record: RecordedRequest
    ) -> tuple[web.StreamResponse | None, Fault | None]:
        """The steps every route takes first: the API key, then an injected fault. An
        answer to send at once, or None and the fault that lets the request go on."""
        if self.api_key is not None:
            sent = request.headers.get("Authorization", "")
            if sent != f"Bearer {self.api_key}":
                record.status = 401
                return build.invalid_api_key(), None
        fault = self._faults.next()
        if fault is not None:
            response = await answer_fault(
                request,
                fault,
                record,
                pause=self._pause,
                hang_s=self.hang_s,
                retry_after=self.send_retry_after,
            )
            if response is not None:
                return response, None
        return None, fault

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        """An embeddings request (embeddings.py says what is accepted and billed): the
        key, a fault, the body, the rate limits, then the vectors."""
        body, record = await self._received(request, "embeddings")
        answer, fault = await self._refused_or_faulted(request, record)
        if answer is not None:
            return answer
        try:
            call = parse_embedding_request(body)
        except BadRequest as exc:
            record.status = 400
            return build.bad_request(exc.message, exc.code)
        except UnknownModel as exc:
            record.status = 404
            return build.model_not_found(exc.model)
        refusal = self._limits.admit(call.prompt_tokens)
        if refusal is not None:
            record.status = 429
            record.fault = "rate_limit"
            return build.rate_limit_exceeded(refusal, retry_after=self.send_retry_after)
        request_id = build.new_request_id()
        record.model = call.model.name
        record.request_id = request_id
        record.prompt_tokens = call.prompt_tokens
        record.billed = True
        headers = {**self._limits.headers(), "x-request-id": request_id}
        vectors = embedding_vectors(call)
        delay = self.latency_s + (
            fault.delay_s if fault is not None and fault.kind == "slow" else 0
        )
        if delay:
            await self._pause(delay)
        record.status = 200
        return build.embedding_list(call.model.name, vectors, call.prompt_tokens, headers)

    async def _answer_chat(
        self, request: web.Request, body: dict[str, Any], record: RecordedRequest
    ) -> web.StreamResponse:
        answer, fault = await self._refused_or_faulted(request, record)
        if answer is not None:
            return answer
        try:
            chat = parse_chat_request(body)
            prompt, image_tokens, ids = self._usage.count_prompt(chat.messages, chat.model)
        except BadRequest as exc:
            record.status = 400
            return build.bad_request(exc.message, exc.code)
        max_tokens = chat.max_tokens
        refusal = self._limits.admit(prompt + max_tokens)
        if refusal is not None:
            record.status = 429
            record.fault = "rate_limit"
            return build.rate_limit_exceeded(refusal, retry_after=self.send_retry_after)
        rate_headers = self._limits.headers()

        completion = self._usage.complete(self._answers.next(body), chat.model, max_tokens)
        usage = CallUsage(
            prompt_tokens=prompt,
            cached_tokens=self._usage.cached_tokens(ids, prompt),
            image_tokens=image_tokens,
            completion_tokens=completion.tokens,
            reports_image_tokens=self.report_image_tokens,
        )
        model = self.answering_model(chat.model)
        request_id = build.new_request_id()
        record.model = model
        record.request_id = request_id
        record.prompt_tokens = usage.prompt_tokens
        record.cached_tokens = usage.cached_tokens
        record.image_tokens = usage.image_tokens
        record.completion_tokens = usage.completion_tokens
        record.billed = True
        headers = {**rate_headers, "x-request-id": request_id}
        completion_id = build.new_completion_id()
        delay = self.latency_s + (
            fault.delay_s if fault is not None and fault.kind == "slow" else 0
        )
        if delay:
            await self._pause(delay)
        if chat.stream:
            cut = (
                fault.cut_after_chunks if fault is not None and fault.kind == "stream_cut" else None
            )
            error_after = (
                fault.error_after_chunks
                if fault is not None and fault.kind == "stream_error"
                else None
            )
            return await build.stream_chat_completion(
                request,
                record,
                headers,
                completion_id,
                model,
                completion,
                usage,
                include_usage=chat.include_usage,
                cut_after=cut,
                error_after=error_after,
                on_event=self._stream_checks.get(id(request)),
            )
        record.status = 200
        return build.chat_completion(completion_id, model, completion, usage, headers)

    async def _pause(self, seconds: float) -> None:
        """Wait, but end at once when the server stops (so tests never hang)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)


def main() -> None:
    """`python -m ibot.testing.fake_openai`: serve on loopback until interrupted."""
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
