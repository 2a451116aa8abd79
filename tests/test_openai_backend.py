"""Pure parts of the OpenAI backend: header parsing and error classification."""

from __future__ import annotations

import httpx2
import openai
import pytest

from ibot.domain import ErrorKind
from ibot.llm.openai_backend import classify, parse_duration, parse_rate_limits, parse_retry_after


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("20ms", 0.02), ("1s", 1.0), ("6m0s", 360.0), ("1h2m3.5s", 3723.5), ("0.5", 0.5)],
)
def test_reset_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


def test_bad_duration_is_none():
    assert parse_duration("soon") is None


def test_rate_limit_headers():
    info = parse_rate_limits(
        {
            "x-ratelimit-limit-requests": "500",
            "x-ratelimit-remaining-requests": "499",
            "x-ratelimit-reset-requests": "120ms",
            "x-ratelimit-limit-tokens": "30000",
            "x-ratelimit-remaining-tokens": "29000",
            "x-ratelimit-reset-tokens": "2s",
        }
    )
    assert (info.remaining_requests, info.remaining_tokens) == (499, 29000)
    assert info.reset_tokens_s == 2.0 and info.reset_requests_s == pytest.approx(0.12)
    assert parse_rate_limits({}) is None


def test_retry_after_prefers_milliseconds():
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "2"}) == 1.5
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after(None) is None


def _status_error(status: int, body: dict) -> openai.APIStatusError:
    request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
    response = httpx2.Response(status, request=request, json={"error": body})
    client = openai.AsyncOpenAI(api_key="sk-x", base_url="http://127.0.0.1/v1")
    return client._make_status_error_from_response(response)


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (429, "insufficient_quota", ErrorKind.QUOTA),
        (429, "rate_limit_exceeded", ErrorKind.RATE_LIMIT),
        (401, "invalid_api_key", ErrorKind.AUTH),
        (400, "context_length_exceeded", ErrorKind.BAD_REQUEST),
        (503, None, ErrorKind.SERVER),
        (408, None, ErrorKind.TIMEOUT),
    ],
)
def test_classification(status, code, kind):
    err = _status_error(status, {"message": "x", "type": "t", "code": code})
    assert classify(err)[0] is kind
    assert kind.transient == (kind in {ErrorKind.RATE_LIMIT, ErrorKind.SERVER, ErrorKind.TIMEOUT})
