"""The fakes' REST traffic checked against Discord's and OpenAI's published OpenAPI files.

Every request body the bot sends and every response body a fake returns is validated
against the schema the spec gives for that route, method and status (and, for a
streamed chat completion, each SSE chunk against the chunk schema); each departure is
recorded in `spec_violations`, which fails the test that caused it. A request to a path
or method that the spec does not have is itself a departure ("unknown route"), so a
route added to a fake cannot escape the check. The two hooks are `RestApi.handle`
(fake_discord/rest.py) and the middleware and stream writer of fake_openai/server.py;
both run only while `spec_violations.enabled()`.

Why `jsonschema` + `referencing` rather than `openapi-core`: OpenAPI 3.1's Schema
Object *is* JSON Schema Draft 2020-12, so `Draft202012Validator` with a `referencing`
registry holding the whole document (its `#/components/...` refs resolve in place) is
the validator the spec calls for, and it is what openapi-core itself runs underneath.
openapi-core adds request/response adapters we would have to fake (the fakes already
hold the parsed body, the status and the media type), validates the whole 1-3 MB
document up front, and applies the version the file declares: OpenAI's file says
3.1.0 yet carries 111 `nullable: true` (a 3.0 keyword that 3.1 ignores), so it would
still need the translation done here. Keeping the route matching here also lets an
unknown route be reported rather than raise.

The specs are read once per process (`discord_spec()`, `openai_spec()`) and a
validator is compiled the first time a (route, method, status, media type) is seen.
`format` is an annotation, as in 2020-12 (snowflakes are still checked: their schema
has a pattern). What no schema exists for is not invented: Discord's file documents no
5xx body, so a 5xx from the fake Discord is not checked; OpenAI's operations list only
200 and 429, and its error bodies are checked against the `ErrorResponse` schema that
its 429 uses, the one error shape the file defines. Where Discord's file is narrower than
Discord's own documentation of a field, the field's schema is replaced by the documented
one (`DISCORD_ERRATA`, each with its source), never skipped. A spec file that cannot be
read is itself reported, so the checks cannot silently stop.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import json
import os
import re
import struct
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from ibot.testing.spec_violations import Violation, record

SPECS_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "specs"
DISCORD_SPEC = "discord-api-spec/openapi.json"
OPENAI_SPEC = "openai-openapi/openapi.yaml"
MAX_REPORTED = 5  # departures reported per body (the first ones, each at its best match)
MAX_VERDICTS = 4096  # verdicts kept per spec, by (schema, body)
JSON = "application/json"
SSE = "text/event-stream"

Json = Any


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation of the spec: its path template, method and JSON pointer."""

    template: str  # "/channels/{channel_id}/messages"
    method: str  # "POST"
    pointer: str  # "#/paths/~1channels~1{channel_id}~1messages/post"
    node: dict[str, Json]


def _escape(segment: str) -> str:
    return segment.replace("~", "~0").replace("/", "~1")


def _unescape(segment: str) -> str:
    return segment.replace("~1", "/").replace("~0", "~")


class OpenApiSpec:
    """One OpenAPI document: its routes, and validators compiled on first use."""

    def __init__(self, name: str, document: dict[str, Json], *, base_path: str = "") -> None:
        self.name = name  # "discord-api-spec/openapi.json", as violations name it
        self.document = document
        self.base_path = base_path  # what the server's URL puts before the spec's paths
        self._uri = f"urn:ibot-spec:{name}"
        resource: Resource[Json] = DRAFT202012.create_resource(document)
        self._registry: Registry[Json] = Registry().with_resource(self._uri, resource)
        self._validators: dict[str, Draft202012Validator] = {}
        self._verdicts: dict[tuple[str, bytes], tuple[tuple[str, str, str], ...]] = {}
        # By segment count: (regex, template, literal segments); literal paths win.
        self._routes: dict[int, list[tuple[re.Pattern[str], str, int]]] = {}
        for template in document.get("paths", {}):
            segments = template.strip("/").split("/")
            literal = sum(1 for s in segments if not s.startswith("{"))
            pattern = re.compile(
                "/".join(
                    "[^/]+" if s.startswith("{") and s.endswith("}") else re.escape(s)
                    for s in segments
                )
            )
            self._routes.setdefault(len(segments), []).append((pattern, template, literal))
        for candidates in self._routes.values():
            candidates.sort(key=lambda route: -route[2])

    # -- looking things up ---------------------------------------------------------

    def spec_path(self, pointer: str) -> str:
        """How a violation names a place in this spec: "file #/json/pointer"."""
        return f"{self.name} {pointer}"

    def resolve(self, pointer: str) -> Json:
        """The node at a "#/a/b" pointer of the document."""
        return self.resolve_in(self.document, pointer)

    @staticmethod
    def resolve_in(document: Json, pointer: str) -> Json:
        node: Json = document
        for segment in pointer.removeprefix("#").strip("/").split("/"):
            if not segment:
                continue
            key = _unescape(segment)
            node = node[int(key)] if isinstance(node, list) else node[key]
        return node

    def deref(self, node: Json, pointer: str) -> tuple[Json, str]:
        """`node` (found at `pointer`), or what its `$ref` points to, and where that is."""
        while isinstance(node, dict) and isinstance(node.get("$ref"), str):
            pointer = "#" + node["$ref"].split("#", 1)[1]
            node = self.resolve(pointer)
        return node, pointer

    def operation(self, method: str, path: str) -> Operation | None:
        """The operation serving `path` (a concrete URL path), or None if the spec has none."""
        if self.base_path and path.startswith(self.base_path + "/"):
            path = path[len(self.base_path) :]
        segments = path.strip("/").split("/")
        for pattern, template, _literal in self._routes.get(len(segments), []):
            if pattern.fullmatch("/".join(segments)):
                node = self.document["paths"][template].get(method.lower())
                if node is None:
                    return None  # the path exists, not with this method
                pointer = f"#/paths/{_escape(template)}/{method.lower()}"
                return Operation(template, method.upper(), pointer, node)
        return None

    # -- validating ----------------------------------------------------------------

    def validate(self, pointer: str, instance: Json) -> list[tuple[str, str, str]]:
        """(field, problem, spec path) of each departure of `instance` from the schema at
        `pointer`; the validator is compiled on first use and kept, and so is the verdict
        on a body already seen (the bot registers the same commands in every test)."""
        body = json.dumps(instance, sort_keys=True, default=repr).encode()
        key = (pointer, hashlib.blake2b(body, digest_size=16).digest())
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = self._verdicts[key] = tuple(self._validate(pointer, instance))
            if len(self._verdicts) > MAX_VERDICTS:
                del self._verdicts[next(iter(self._verdicts))]  # the oldest
        return list(verdict)

    def _validate(self, pointer: str, instance: Json) -> list[tuple[str, str, str]]:
        validator = self._validators.get(pointer)
        if validator is None:
            validator = Draft202012Validator(
                {"$ref": f"{self._uri}{pointer}"}, registry=self._registry
            )
            self._validators[pointer] = validator
        found = []
        for error in validator.iter_errors(instance):
            for leaf, problem in _leaves(error):
                spec = self.spec_path(self._schema_at(pointer, leaf))
                found.append((_field(leaf), problem, spec))
            if len(found) >= MAX_REPORTED:
                return found[:MAX_REPORTED]
        return found

    def _schema_at(self, root: str, error: ValidationError) -> str:
        """The pointer, in the document, of the keyword that failed.

        jsonschema leaves `$ref` out of an error's schema path, so the path is walked
        from the schema at `root`, a `$ref` followed wherever the next step is not a
        keyword of the schema at hand.
        """
        pointer, node = root, self.resolve(root)
        for segment in error.absolute_schema_path:
            key = str(segment)
            while isinstance(node, dict) and key not in node and isinstance(node.get("$ref"), str):
                pointer = "#" + node["$ref"].split("#", 1)[1]
                node = self.resolve(pointer)
            pointer += "/" + _escape(key)
            if isinstance(node, dict):
                node = node.get(key)
            elif isinstance(node, list) and isinstance(segment, int) and segment < len(node):
                node = node[segment]
            else:
                node = None
        return pointer


def _leaves(error: ValidationError) -> list[tuple[ValidationError, str]]:
    """The departures to report for `error`, each with its problem in words.

    A `oneOf`/`anyOf` that no branch matches is reported as the errors of the branch the
    payload was nearest: among the branches whose own `type` accepts the value (a
    nullable object refused for a missing field is not "not null"), the one with the
    fewest errors, looked into again. When no branch accepts the value's type, that is
    the departure, with the types the branches allow.
    """
    if error.validator not in ("oneOf", "anyOf") or not error.context:
        return [(error, _problem(error.message))]
    branches: dict[object, list[ValidationError]] = {}
    for sub in error.context:
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)
    fitting = [
        errors
        for errors in branches.values()
        if not any(e.validator == "type" and not e.relative_path for e in errors)
    ]
    if not fitting:
        allowed = sorted({str(e.validator_value) for e in error.context if e.validator == "type"})
        value = _problem(repr(error.instance), 60)
        return [(error, f"{value} is of none of the types allowed here ({', '.join(allowed)})")]
    return [leaf for sub in min(fitting, key=len) for leaf in _leaves(sub)]


def _field(error: ValidationError) -> str:
    """The JSON path of what failed, e.g. "embeds[0].title"; a missing required property
    is named itself."""
    parts: list[str | int] = list(error.absolute_path)
    if error.validator == "required":
        missing = re.match(r"^'(.+)' is a required property$", error.message)
        if missing:
            parts.append(missing.group(1))
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(root)"


def _problem(message: object, limit: int = 200) -> str:
    text = str(message)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- loading the two specs once per process ------------------------------------------------


@functools.cache
def discord_spec() -> OpenApiSpec:
    """Discord's OpenAPI 3.1 file (../shared/specs/discord-api-spec/openapi.json), with
    its `DISCORD_ERRATA` applied."""
    document = json.loads((SPECS_DIR / DISCORD_SPEC).read_text())
    for pointer, schema, _source in DISCORD_ERRATA:
        parent, _, key = pointer.rpartition("/")
        OpenApiSpec.resolve_in(document, parent)[_unescape(key)] = schema
    return OpenApiSpec(DISCORD_SPEC, document)


#: Where Discord's OpenAPI file is narrower than Discord's own documentation of the same
#: field: (pointer, the schema the docs give, the docs that say so). Each is one field,
#: replaced, never skipped; a violation there names the replaced schema's pointer.
DISCORD_ERRATA: tuple[tuple[str, Json, str], ...] = (
    (
        "#/components/schemas/MessageAttachmentRequest/properties/id",
        {"anyOf": [{"$ref": "#/components/schemas/SnowflakeType"}, {"type": "integer"}]},
        "discord-api-docs/message.mdx, Attachment Request Structure: id is 'snowflake or "
        "number', for a new attachment the n of files[n] (nextcord sends that number)",
    ),
    (
        "#/components/schemas/InnerErrors/properties/_errors/items",
        {
            "type": "object",
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            "required": ["code", "message"],
        },
        "the docs' Error Messages (linked from opcodes-and-status-codes.mdx, JSON Error "
        "Codes): a field's _errors carry string codes such as BASE_TYPE_REQUIRED; the "
        "file reuses Error, whose code is the integer of the top-level error",
    ),
)


@functools.cache
def openai_spec() -> OpenApiSpec:
    """OpenAI's OpenAPI file, its 3.0-isms translated to 3.1 (see `translate_openapi30`)."""
    document = translate_openapi30(_read_yaml(SPECS_DIR / OPENAI_SPEC))
    return OpenApiSpec(OPENAI_SPEC, document, base_path="/v1")


def _read_yaml(path: Path) -> Json:
    """The YAML file's data. Parsing 3 MB takes libyaml 0.7 s, JSON 0.04 s, and each test
    file run alone is a process of its own: the parse is kept as JSON in the temporary
    directory, named by the file's digest, so a changed spec is parsed again."""
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()[:20]
    cached = Path(tempfile.gettempdir()) / f"ibot-spec-{path.stem}-{digest}.json"
    with contextlib.suppress(OSError, ValueError):
        return json.loads(cached.read_bytes())
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    data = yaml.load(raw, Loader=loader)
    with contextlib.suppress(OSError):  # no cache, then: only slower
        partial = cached.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(data, default=str))  # one example holds a date
        os.replace(partial, cached)
    return data


_NOT_SCHEMAS = frozenset({"example", "examples", "x-oaiMeta", "enum", "const", "default"})


def translate_openapi30(node: Json) -> Json:
    """The 3.0 keywords OpenAI's file still uses, rewritten as the JSON Schema they mean
    (in place; returns `node`):

    - `nullable: true` (3.1 ignores it, so null would be refused): `type: T` becomes
      `type: [T, "null"]` (null joins an `enum` too); a schema without `type` (a
      `$ref`, an `anyOf`…) becomes `anyOf: [itself, {type: null}]`;
    - `exclusiveMinimum: true` beside `minimum: m` (3.0's boolean form) becomes
      `exclusiveMinimum: m`; the same for the maximum.

    Examples and enum values are data, not schemas, and are left alone.
    """
    if isinstance(node, list):
        for item in node:
            translate_openapi30(item)
        return node
    if not isinstance(node, dict):
        return node
    for key, value in node.items():
        if key not in _NOT_SCHEMAS:
            translate_openapi30(value)
    for bound in ("Minimum", "Maximum"):
        flag = node.get(f"exclusive{bound}")
        if isinstance(flag, bool):
            limit = node.pop(bound.lower(), None)
            del node[f"exclusive{bound}"]
            if flag and limit is not None:
                node[f"exclusive{bound}"] = limit
            elif limit is not None:
                node[bound.lower()] = limit
    nullable = node.get("nullable")
    if isinstance(nullable, bool):
        del node["nullable"]
        if not nullable:
            return node
        kind = node.get("type")
        if isinstance(kind, str):
            node["type"] = [kind, "null"]
        elif isinstance(kind, list):
            if "null" not in kind:
                node["type"] = [*kind, "null"]
        elif any(k in node for k in ("$ref", "anyOf", "oneOf", "allOf", "enum", "const")):
            itself = dict(node)
            node.clear()
            node["anyOf"] = [itself, {"type": "null"}]
            return node
        if isinstance(node.get("enum"), list) and None not in node["enum"]:
            node["enum"] = [*node["enum"], None]
    return node


# -- checking one exchange -------------------------------------------------------------------


def _media(content: dict[str, Json] | None, media_type: str) -> tuple[str, Json] | None:
    """The spec's entry for `media_type` in a `content` map, with its key."""
    if not content:
        return None
    if media_type in content:
        return media_type, content[media_type]
    return None


def _report(where: str, found: Iterable[tuple[str, str, str]]) -> None:
    for field, problem, spec in found:
        record(Violation(where, field, problem, spec))


def check_request(
    spec: OpenApiSpec, method: str, path: str, media_type: str, body: Json
) -> Operation | None:
    """Check a request's JSON body (`None`: no body); returns its operation, or None
    after reporting an unknown route."""
    operation = spec.operation(method, path)
    if operation is None:
        record(
            Violation(
                f"{method} {path}",
                "(route)",
                f"unknown route: the spec has no {method} operation for this path",
                spec.spec_path("#/paths"),
            )
        )
        return None
    where = f"{method} {operation.template} request"
    pointer = f"{operation.pointer}/requestBody"
    if "requestBody" not in operation.node:
        if body is not None:
            record(
                Violation(
                    where,
                    "(body)",
                    "the spec defines no request body",
                    spec.spec_path(operation.pointer),
                )
            )
        return operation
    request_body, pointer = spec.deref(operation.node["requestBody"], pointer)
    if body is None:
        if request_body.get("required"):
            problem = "the spec requires a request body; none was sent"
            record(Violation(where, "(body)", problem, spec.spec_path(pointer)))
        return operation
    media = _media(request_body.get("content"), media_type)
    if media is None:
        accepted = ", ".join(request_body.get("content") or {}) or "none"
        problem = f"content type {media_type!r} not in the spec (accepted: {accepted})"
        record(Violation(where, "(body)", problem, spec.spec_path(f"{pointer}/content")))
        return operation
    key, entry = media
    if "schema" in entry:
        _report(where, spec.validate(f"{pointer}/content/{_escape(key)}/schema", body))
    return operation


def response_schemas(
    spec: OpenApiSpec, operation: Operation, status: int, *, where: str
) -> dict[str, str | None] | None:
    """For a response of `status`: each media type the spec allows → its schema's
    pointer (None: any body); {} when the spec says no body; None when there is nothing
    to check, after reporting a status the spec does not list."""
    responses = operation.node.get("responses", {})
    base = f"{operation.pointer}/responses"
    key = next((k for k in (str(status), f"{status // 100}XX", "default") if k in responses), None)
    if key is None:
        if status >= 500 and spec.name == DISCORD_SPEC:
            return None  # Discord's file documents no 5xx body
        if status >= 400 and spec.name == OPENAI_SPEC:
            return {JSON: "#/components/schemas/ErrorResponse"}
        problem = f"status {status} is not in the spec (it lists {', '.join(responses)})"
        record(Violation(where, "(status)", problem, spec.spec_path(base)))
        return None
    response, pointer = spec.deref(responses[key], f"{base}/{_escape(key)}")
    return {
        media: f"{pointer}/content/{_escape(media)}/schema" if "schema" in entry else None
        for media, entry in (response.get("content") or {}).items()
    }


def check_response(
    spec: OpenApiSpec, operation: Operation, status: int, media_type: str, body: bytes | None
) -> None:
    """Check a whole (non-streamed) response: its status, media type and JSON body."""
    where = f"{operation.method} {operation.template} {status} response"
    schemas = response_schemas(spec, operation, status, where=where)
    if schemas is None:
        return
    here = spec.spec_path(f"{operation.pointer}/responses")
    if not body:
        if schemas:
            problem = f"the spec defines a body ({', '.join(schemas)}); none was sent"
            record(Violation(where, "(body)", problem, here))
        return
    if not schemas:
        record(Violation(where, "(body)", "the spec defines no body; one was sent", here))
        return
    if media_type not in schemas:
        problem = f"content type {media_type!r} not in the spec (it lists {', '.join(schemas)})"
        record(Violation(where, "(body)", problem, here))
        return
    pointer = schemas[media_type]
    if pointer is None:
        return
    try:
        instance = json.loads(body)
    except ValueError:
        record(Violation(where, "(body)", "not JSON", spec.spec_path(pointer)))
        return
    _report(where, spec.validate(pointer, instance))


def check_stream_chunk(spec: OpenApiSpec, operation: Operation, status: int, chunk: Json) -> None:
    """Check one `data:` event of a text/event-stream answer against its schema."""
    where = f"{operation.method} {operation.template} {status} {SSE} chunk"
    schemas = response_schemas(spec, operation, status, where=where)
    if schemas is None:
        return
    if SSE not in schemas:
        problem = f"the spec has no {SSE} answer for this status (it lists {', '.join(schemas)})"
        record(Violation(where, "(body)", problem, spec.spec_path(operation.pointer)))
        return
    pointer = schemas[SSE]
    if pointer is not None:
        _report(where, spec.validate(pointer, chunk))


# -- the hooks in the two fakes ----------------------------------------------------------------


def check_discord_exchange(
    method: str, path: str, media_type: str, request_body: Json, response: web.StreamResponse
) -> None:
    """One request to the fake Discord (its JSON, or multipart `payload_json`) and the
    answer it built: the hook in `RestApi.handle`."""
    spec = _load(discord_spec, DISCORD_SPEC, f"{method} {path}")
    if spec is None:
        return
    operation = check_request(spec, method, path, _request_media(media_type), request_body)
    if operation is not None:
        check_response(spec, operation, response.status, *_sent(response))


def _load(load: Callable[[], OpenApiSpec], name: str, where: str) -> OpenApiSpec | None:
    """The spec, or None after reporting that it cannot be read (shared/ missing…)."""
    try:
        return load()
    except OSError as exc:
        record(Violation(where, "(spec)", f"cannot read the spec: {exc}", name))
        return None


def _sent(response: web.StreamResponse) -> tuple[str, bytes | None]:
    """The media type and body of a whole answer (`web.Response` with bytes)."""
    body = response.body if isinstance(response, web.Response) else None
    return response.content_type, body if isinstance(body, bytes) else None


def _request_media(media_type: str) -> str:
    return media_type.split(";", 1)[0].strip().lower()


class OpenAIExchange:
    """The checks of one request to the fake OpenAI: its body on arrival, then either its
    whole answer or each SSE event as it is written (the hooks in fake_openai/server.py)."""

    def __init__(self, method: str, path: str, media_type: str, raw_body: bytes) -> None:
        self.operation: Operation | None = None
        spec = _load(openai_spec, OPENAI_SPEC, f"{method} {path}")
        if spec is None:
            return
        self.spec = spec
        body: Json = None
        if raw_body:
            try:
                body = json.loads(raw_body)
            except ValueError:
                body = raw_body.decode(errors="replace")
        self.operation = check_request(self.spec, method, path, _request_media(media_type), body)
        self.base64_embeddings = (
            self.operation is not None
            and self.operation.template == "/embeddings"
            and isinstance(body, dict)
            and body.get("encoding_format") == "base64"
        )

    def response(self, response: web.StreamResponse) -> None:
        """A whole answer (a streamed one was checked event by event)."""
        if self.operation is None or not isinstance(response, web.Response):
            return
        media_type, body = _sent(response)
        if self.base64_embeddings and response.status == 200 and body:
            body = self._decoded_embeddings(self.operation, body)
        check_response(self.spec, self.operation, response.status, media_type, body)

    def _decoded_embeddings(self, operation: Operation, body: bytes) -> bytes:
        """A base64 embeddings answer with each vector decoded to its floats.

        The file's `Embedding` schema describes the float form only, while
        `encoding_format` says the same vectors may be asked for as base64 (the openai
        client asks for that by default): such an answer is checked as the floats it
        encodes, little-endian float32, and a string that is not one is a departure.
        """
        try:
            answer = json.loads(body)
        except ValueError:
            return body  # reported as "not JSON" by the check itself
        items = answer.get("data") if isinstance(answer, dict) else None
        for index, item in enumerate(items if isinstance(items, list) else []):
            encoded = item.get("embedding") if isinstance(item, dict) else None
            if not isinstance(encoded, str):
                continue
            try:
                raw = base64.b64decode(encoded, validate=True)
                if len(raw) % 4:
                    raise ValueError(f"{len(raw)} bytes is not a whole number of float32")
            except ValueError as exc:
                pointer = "#/components/schemas/CreateEmbeddingRequest/properties/encoding_format"
                where = f"{operation.method} {operation.template} 200 response"
                problem = f"not base64 of float32 values: {exc}"
                field = f"data[{index}].embedding"
                record(Violation(where, field, problem, self.spec.spec_path(pointer)))
                continue
            item["embedding"] = list(struct.unpack(f"<{len(raw) // 4}f", raw))
        return json.dumps(answer).encode()

    def stream_event(self, payload: Json) -> None:
        """One `data:` event of a 200 text/event-stream answer: a chunk; or the error
        object a stream that fails mid-way ends with, which the file gives no stream
        schema for and is checked as the `ErrorResponse` it is."""
        if self.operation is None:
            return
        if isinstance(payload, dict) and set(payload) == {"error"}:
            where = f"{self.operation.method} {self.operation.template} 200 {SSE} error event"
            _report(where, self.spec.validate("#/components/schemas/ErrorResponse", payload))
            return
        check_stream_chunk(self.spec, self.operation, 200, payload)
