"""An OpenAI-compatible Chat Completions and Embeddings server on 127.0.0.1, for tests and
the demo.

The real `openai` client talks to it unchanged (point `base_url` at `fake.base_url`).
It behaves like the real API where iBot depends on it:

- usage numbers computed the way OpenAI bills, independently of the bot's own counting
  (no ibot.tokens, no ibot.pricing): tiktoken chat counting by the cookbook's rule, the
  vision guide's image tile formula, and cached tokens when a prompt prefix of 1024+
  tokens repeats (in 128-token steps); `report_image_tokens = False` leaves the optional
  image_tokens out of the usage details, as the API's own examples do;
- the answering model is a dated snapshot of the alias asked for (gpt-4o →
  gpt-4o-2024-08-06), so pricing by `response.model` is exercised;
- `x-ratelimit-*` headers from token buckets refilled per minute (requests and tokens),
  and 429 with Retry-After once a bucket is empty (`send_retry_after = False`: without);
- streaming (SSE) with `stream_options.include_usage`;
- `/v1/embeddings` (embeddings.py): the spec's inputs, limits and encodings, usage
  counted with cl100k_base, deterministic unit vectors that carry some meaning (feature
  hashing of folded words, trigrams and a small bilingual concept table), `dimensions`
  honoured as text-embedding-3 does (a prefix of the full vector, normalised);
- faults on demand: 5xx, rate limits, insufficient_quota, slow answers, hangs (client
  timeouts), dropped connections, streams cut mid-way, streams ending in an error event,
  and random fault rates;
- every request is recorded with what was served, so a test can reconcile the ledger.

Example::

    async with FakeOpenAI() as fake:
        fake.script("Bonjour !")
        client = AsyncOpenAI(api_key="sk-test", base_url=fake.base_url)
        ...
        assert fake.served_usage().prompt_tokens == ...

Run standalone for the offline demo: `python -m ibot.testing.fake_openai --port 8765`.

One module per job, `FakeOpenAI` (server.py) putting them together:

- server.py: the aiohttp app, its routes and the order of a request's steps; the
  scripting and inspection API;
- request_parsing.py: the one place that reads request bodies (400 on bad ones);
- response_building.py: the one place that builds bodies, SSE chunks and error answers;
- usage.py: what a call costs in tokens (prompt, images, cache, completion);
- tokenizer.py: the fake's own tiktoken encodings (offline) and chat-format counting;
- rate_limits.py: per-minute token buckets, `x-ratelimit-*` headers, when to refuse;
- faults.py: injected and random misbehaviour;
- answers.py: scripted answers and the default echo;
- embeddings.py: the embeddings route's models, limits, parsing and vectors;
- records.py: what each request received and was served, and the totals.
"""

from ibot.testing.fake_openai.answers import Answer
from ibot.testing.fake_openai.faults import Fault
from ibot.testing.fake_openai.rate_limits import TokenBucket
from ibot.testing.fake_openai.records import RecordedRequest, UsageTotals
from ibot.testing.fake_openai.server import DEFAULT_SNAPSHOTS, FakeOpenAI, main
from ibot.testing.fake_openai.usage import CACHE_MIN_TOKENS, CACHE_STEP_TOKENS

__all__ = [
    "CACHE_MIN_TOKENS",
    "CACHE_STEP_TOKENS",
    "DEFAULT_SNAPSHOTS",
    "Answer",
    "FakeOpenAI",
    "Fault",
    "RecordedRequest",
    "TokenBucket",
    "UsageTotals",
    "main",
]
