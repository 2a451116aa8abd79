"""The fake OpenAI's `/v1/embeddings`, through the real openai client.

Every exchange is checked against OpenAI's OpenAPI file by the suite's spec checks
(tests/conftest.py); a request the spec refuses is reported, and the tests that send one
on purpose say so. Usage is what OpenAI bills for embeddings: the inputs' tokens,
counted with cl100k_base.
"""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import AsyncIterator

import aiohttp
import openai
import pytest

from ibot.llm.embeddings import count_inputs
from ibot.testing import spec_violations
from ibot.testing.fake_openai import FakeOpenAI
from ibot.testing.fidelity import fidelity_report

MODEL = "text-embedding-3-small"


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


@pytest.fixture
async def client(fake: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        api_key="sk-test", base_url=fake.base_url, max_retries=0
    ) as client:
        yield client


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def norm(values: list[float]) -> float:
    return math.sqrt(sum(v * v for v in values))


async def test_a_batch_gets_one_unit_vector_per_input_and_the_billed_tokens(fake, client):
    texts = ["pip install ne marche pas", "No module named 'cv2'", "écran noir au démarrage"]

    answer = await client.embeddings.create(
        model=MODEL, input=texts, dimensions=256, encoding_format="float"
    )

    assert [item.index for item in answer.data] == [0, 1, 2]
    assert all(len(item.embedding) == 256 for item in answer.data)
    assert all(abs(norm(item.embedding) - 1) < 1e-6 for item in answer.data)
    assert answer.model == MODEL
    assert answer.usage.prompt_tokens == answer.usage.total_tokens == count_inputs(texts)
    [record] = fake.requests
    assert record.endpoint == "embeddings" and record.served
    assert record.prompt_tokens == count_inputs(texts) and record.completion_tokens == 0


async def test_the_same_text_gets_the_same_vector_and_related_texts_are_closer(client):
    texts = [
        "pip install ne marche pas dans mon venv",
        "l'installation avec pip ne marche pas",
        "recette de tarte aux pommes",
        "pip install ne marche pas dans mon venv",
    ]
    answer = await client.embeddings.create(model=MODEL, input=texts, encoding_format="float")
    a, b, unrelated, again = (item.embedding for item in answer.data)

    assert a == again
    assert cosine(a, b) > 0.4
    assert abs(cosine(a, unrelated)) < 0.15


async def test_shortened_vectors_are_the_full_vectors_prefix_normalised(client):
    text = "Docker: permission denied while trying to connect to the daemon socket"
    full = await client.embeddings.create(model=MODEL, input=text, encoding_format="float")
    short = await client.embeddings.create(
        model=MODEL, input=text, dimensions=64, encoding_format="float"
    )

    whole = full.data[0].embedding
    assert len(whole) == 1536 and len(short.data[0].embedding) == 64
    prefix = whole[:64]
    expected = [v / norm(prefix) for v in prefix]
    assert max(abs(x - y) for x, y in zip(expected, short.data[0].embedding, strict=True)) < 1e-6
    large = await client.embeddings.create(
        model="text-embedding-3-large", input=text, encoding_format="float"
    )
    assert len(large.data[0].embedding) == 3072


async def test_base64_vectors_and_token_array_inputs_are_the_same_vectors(fake, client):
    text = "git push rejected non-fast-forward"
    floats = (await client.embeddings.create(model=MODEL, input=text, dimensions=32)).data[0]
    # The openai client asks for base64 when no encoding_format is given, and decodes it.
    assert fake.requests[-1].body["encoding_format"] == "base64"

    async with aiohttp.ClientSession() as http:
        body = {"model": MODEL, "input": text, "dimensions": 32, "encoding_format": "base64"}
        async with http.post(f"{fake.base_url}/embeddings", json=body) as response:
            raw = (await response.json())["data"][0]["embedding"]
    decoded = struct.unpack("<32f", base64.b64decode(raw))
    assert max(abs(x - y) for x, y in zip(decoded, floats.embedding, strict=True)) < 1e-6

    from ibot.testing.fake_openai.tokenizer import encode

    ids = encode(text, MODEL)
    by_tokens = await client.embeddings.create(
        model=MODEL, input=[ids, ids], dimensions=32, encoding_format="float"
    )
    assert by_tokens.usage.prompt_tokens == 2 * len(ids)
    assert (
        max(abs(x - y) for x, y in zip(by_tokens.data[1].embedding, floats.embedding, strict=True))
        < 1e-6
    )


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"input": ""}, "empty string"),
        ({"input": ["ok", ""]}, "input 1 is an empty string"),
        ({"input": "mot " * 8200}, "maximum context length is 8192 tokens"),
        ({"input": "x", "dimensions": 1537}, "maximum dimensions is 1536"),
        ({"input": "x", "model": "text-embedding-ada-002", "dimensions": 256}, "dimensions"),
    ],
)
async def test_what_the_spec_says_the_api_refuses_is_a_400(client, params, message):
    request = {"model": MODEL, "encoding_format": "float", **params}
    with pytest.raises(openai.BadRequestError) as refused:
        await client.embeddings.create(**request)
    assert message in str(refused.value)


async def test_a_request_outside_the_schema_is_refused_and_reported(client):
    with pytest.raises(openai.BadRequestError):
        await client.embeddings.create(model=MODEL, input=["x"] * 2049, encoding_format="float")
    with pytest.raises(openai.BadRequestError):
        await client.embeddings.create(model=MODEL, input=[], encoding_format="float")

    found = spec_violations.drain()
    assert {v.where for v in found} == {"POST /embeddings request"}
    assert any("maxItems" in v.spec or "2048" in v.problem for v in found)


async def test_too_many_tokens_in_one_request_is_a_400(client):
    # 40 inputs of ~8000 tokens: each within its limit, 320 000 together.
    chunk = "mot " * 7990
    with pytest.raises(openai.BadRequestError) as refused:
        await client.embeddings.create(model=MODEL, input=[chunk] * 40, encoding_format="float")
    assert "max 300000 tokens per request" in str(refused.value)


async def test_an_unknown_model_is_a_404(client):
    with pytest.raises(openai.NotFoundError) as missing:
        await client.embeddings.create(model="text-embedding-9", input="x")
    assert missing.value.code == "model_not_found"


async def test_faults_apply_to_embeddings_as_to_chat(fake, client):
    fake.fail_with_status(503)
    with pytest.raises(openai.InternalServerError):
        await client.embeddings.create(model=MODEL, input="x", encoding_format="float")
    fake.rate_limit(retry_after_s=0.5)
    with pytest.raises(openai.RateLimitError) as limited:
        await client.embeddings.create(model=MODEL, input="x", encoding_format="float")
    assert limited.value.response.headers["retry-after-ms"] == "500"
    fake.insufficient_quota()
    with pytest.raises(openai.RateLimitError) as quota:
        await client.embeddings.create(model=MODEL, input="x", encoding_format="float")
    assert quota.value.code == "insufficient_quota"

    served = await client.embeddings.create(model=MODEL, input="x", encoding_format="float")
    assert served.usage.prompt_tokens == 1
    assert [r.served for r in fake.requests] == [False, False, False, True]
    assert fake.served_usage().prompt_tokens == 1  # the invoice: failures cost nothing


async def test_a_wrong_api_key_is_refused():
    async with (
        FakeOpenAI(api_key="sk-right") as strict,
        openai.AsyncOpenAI(api_key="sk-wrong", base_url=strict.base_url, max_retries=0) as wrong,
    ):
        with pytest.raises(openai.AuthenticationError):
            await wrong.embeddings.create(model=MODEL, input="x")


async def test_the_fidelity_report_tours_and_covers_the_route():
    report = await fidelity_report()
    [row] = [r for r in report.side("openai").rows if r.name == "POST /embeddings"]
    assert row.covered and row.family == "embeddings"
    assert row.schema == "CreateEmbeddingResponse"
    assert row.required_filled == row.required > 0
    assert report.violations == []
