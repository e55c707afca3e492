"""A fake OpenAI-compatible chat-completions server for tests and benchmarks.

It listens on 127.0.0.1 (the OS picks the port) and speaks real HTTP and SSE, so the real
``openai.AsyncOpenAI`` client (httpx2 underneath, where respx cannot reach) is exercised::

    async with FakeLLM(api_key="sk-test") as api:
        api.responder = lambda request: '{"score": 3}'
        client = AsyncOpenAI(base_url=api.base_url, api_key="sk-test", max_retries=0, timeout=5)
        reply = await client.chat.completions.create(model="m", messages=[...])
        assert api.calls[0].mode == "text"

Every request under ``/v1`` is handled in this order: it is recorded in ``calls``; the global
``latency`` is slept; the next queued fault (``fail_next``, ``reset_next``, ``truncate_next``,
``malformed_next``), if any, is applied instead of an answer; the ``Authorization: Bearer`` key
is checked (401); the body is validated (400, or ``reject_status`` for a ``response_format``
type outside ``supports``); then the responder decides the answer (a ``str`` or a ``Reply``).
A responder that raises (a cassette miss, a bug in the test) is answered with a 500 carrying
``x-should-retry: false`` and, unless ``raise_responder_errors=False``, fails the test again
with an AssertionError when the server stops, so a caller that swallows errors cannot hide it.

What the openai 3.54 SDK does with each fault (tests/test_llmapi.py checks all but the
408/409, retry-after-ms and over-120-s details, which come from reading its source):

- 4xx/5xx status: ``BadRequestError`` (400), ``AuthenticationError`` (401), ``NotFoundError``
  (404), ``RateLimitError`` (429), ``InternalServerError`` (>= 500). 408/409/429/5xx and
  connection errors and timeouts are retried ``max_retries`` times; ``Retry-After`` (seconds,
  floats accepted; or ``retry-after-ms``) sets the wait when 0 < value <= 120 s, otherwise the
  SDK backs off from 0.5 s (and does not retry at all when it exceeds 120 s).
  ``x-should-retry: false`` disables the retry.
- ``reset_next``: ``APIConnectionError`` (after retries).
- ``truncate_next()`` without a stream: a 200 whose JSON is cut short raises a plain
  ``json.JSONDecodeError`` (a ValueError, *not* an ``openai.APIError``) and is not retried;
  ``truncate_next(abort=True)`` (connection closed mid-body) is ``APIConnectionError``.
- ``malformed_next()``: a non-JSON body labelled ``application/json`` raises
  ``json.JSONDecodeError``; labelled ``text/html``, ``create()`` *returns the body as a str*
  unless the client was built with ``_strict_response_validation=True``.
- streams: errors while iterating are wrapped like request errors (never retried): a
  connection closed mid-stream (``truncate_next(abort=True)``) is ``APIConnectionError``, a
  stall longer than the read timeout (``Reply(chunk_delay=...)``) is ``APITimeoutError``; but a
  stream that ends cleanly without ``[DONE]`` (``truncate_next()``) just stops iterating, with
  no finish_reason and no error, and a ``data:`` line that is not JSON raises a plain
  ``json.JSONDecodeError``.
- ``chat.completions.parse(response_format=Model)`` sends ``{"type": "json_schema",
  "json_schema": {"name", "schema", "strict": true}}`` (``additionalProperties: false``
  added); content that does not fit raises a plain ``pydantic.ValidationError``, and
  ``finish_reason="length"`` raises ``openai.LengthFinishReasonError``.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import hashlib
import inspect
import itertools
import json
import math
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

__all__ = [
    "MODES",
    "Call",
    "Cassette",
    "CassetteMiss",
    "FakeLLM",
    "Reply",
    "Responder",
    "check_json",
    "default_responder",
    "error_body",
    "request_key",
    "serve",
    "simplest",
]

MODES = frozenset({"json_schema", "grammar", "json_object"})
"""Structured-output modes a server may support (``text`` always is). ``grammar`` is
llama.cpp's ``{"type": "json_object", "schema": ...}``: a server that supports it answers
with JSON fitting the schema (the responder's answer, or else the schema's simplest
instance, as a constrained decoder would); one that supports only ``json_object`` ignores
the schema."""


@dataclass
class Reply:
    """What the server answers to one chat completion (returned by a responder)."""

    content: str = ""
    latency: float = 0.0
    """Seconds to wait before answering (after the global ``FakeLLM.latency``)."""
    status: int = 200
    error: str | dict[str, Any] | None = None
    """For ``status != 200``: a message (wrapped by ``error_body``) or the whole JSON body."""
    retry_after: float | str | None = None
    """Value of the ``Retry-After`` header, if any."""
    finish_reason: str = "stop"
    usage: dict[str, int] | None = None
    """Overrides the computed usage (``prompt_tokens``, ``completion_tokens``, ``total_tokens``)."""
    chunks: list[str] | None = None
    """Explicit split of ``content`` for a stream (default: ``FakeLLM.chunk_chars`` pieces)."""
    chunk_delay: float = 0.0
    """Seconds between stream chunks."""
    headers: dict[str, str] = field(default_factory=dict)


ReplyLike = str | Reply
Responder = Callable[[dict[str, Any]], ReplyLike | Awaitable[ReplyLike]]
"""Called with the decoded request body; returns (or awaits to) the answer."""


@dataclass
class Decoding:
    """A responder that takes ``seconds`` per answer (plus ``per_token`` for each token the
    request allows) and records what ran at the same time.

    ``started`` and ``finished`` hold each request's last message, in the order they began
    and ended decoding; ``most`` is how many decoded at once at the peak.
    """

    seconds: float
    answer: str = "ok"
    per_token: float = 0.0
    """Seconds more for each token the request allows (``max_tokens``): long answers take
    longer, as on a real server."""
    running: int = 0
    most: int = 0
    started: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)

    async def __call__(self, request: dict[str, Any]) -> str:
        """Decode one request."""
        last = request["messages"][-1]["content"]
        self.running += 1
        self.most = max(self.most, self.running)
        self.started.append(last)
        allowed = request.get("max_tokens") or 0
        await asyncio.sleep(self.seconds + self.per_token * allowed)
        self.running -= 1
        self.finished.append(last)
        return self.answer


@dataclass
class Call:
    """One request received by the fake server (answered or not)."""

    method: str
    path: str
    """Path without the query, e.g. ``/v1/chat/completions``."""
    body: dict[str, Any]
    """The decoded JSON body (``{}`` for GET or an undecodable body)."""
    headers: dict[str, str]
    """Request headers, names lower-cased."""
    at: float
    """``time.monotonic()`` when the request arrived."""
    model: str | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    response_format: dict[str, Any] | None = None
    mode: str = "text"
    """``response_format.type`` (``json_schema``/``json_object``/``text``; ``grammar`` for a
    ``json_object`` with a ``schema``); ``text`` when absent."""
    stream: bool = False
    include_usage: bool = False
    temperature: float | None = None
    seed: int | None = None
    max_tokens: int | None = None
    """``max_completion_tokens`` or else ``max_tokens``."""
    status: int = 0
    """HTTP status answered; 0 while in progress, when dropped, or when the client went away."""
    content: str | None = None
    """The content answered (the full content, even when a fault cut it short on the wire)."""
    error: str | None = None
    """The error message answered, or what went wrong (``client disconnected``...)."""
    fault: str | None = None
    """The injected fault applied: ``status``, ``reset``, ``truncate`` or ``malformed``."""

    @property
    def retry_count(self) -> int:
        """The SDK's ``x-stainless-retry-count`` header (0 on a first attempt)."""
        return int(self.headers.get("x-stainless-retry-count", "0") or 0)

    @property
    def last_user(self) -> str | None:
        """Text of the last user message, if any."""
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return _text(message.get("content"))
        return None

    def summary(self) -> str:
        """One line for assertion messages."""
        shown = f" {self.content[:60]!r}" if self.content is not None else ""
        error = f" ({self.error})" if self.error else ""
        fault = f" [{self.fault}]" if self.fault else ""
        return f"{self.method} {self.path} {self.mode} -> {self.status}{fault}{shown}{error}"


def error_body(
    message: str,
    *,
    error_type: str = "invalid_request_error",
    code: str | int | None = None,
    param: str | None = None,
) -> dict[str, Any]:
    """An OpenAI-style error body (also what llama.cpp and recent vLLM send)."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    429: "rate_limit_exceeded",
    500: "server_error",
    502: "server_error",
    503: "server_error",
}
_DEFAULT_MESSAGES = {
    400: "Bad request",
    401: "Incorrect API key provided",
    404: "Not found",
    408: "Request timed out",
    429: "Rate limit reached for requests",
    500: "The server had an error while processing your request",
    502: "Bad gateway",
    503: "The engine is currently overloaded, please try again later",
    504: "Gateway timeout",
}


@dataclass
class _Fault:
    kind: str  # status | reset | truncate | malformed
    status: int = 200
    message: str | None = None
    retry_after: float | str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    abort: bool = False
    after_chunks: int | None = None
    body: bytes = b""
    content_type: str = "application/json"


class _Answer(Exception):
    """Raised inside the handler to answer with an error."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        body: dict[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.body = body or error_body(
            message, error_type=_ERROR_TYPES.get(status, "api_error"), code=status, param=param
        )
        self.headers = dict(headers or {})


def _mode_of(response_format: dict[str, Any] | None) -> str:
    if response_format is None:
        return "text"
    kind = str(response_format.get("type", "text"))
    return "grammar" if kind == "json_object" and "schema" in response_format else kind


def _constrained(result: ReplyLike, schema: dict[str, Any]) -> ReplyLike:
    """The answer a grammar-constrained decoder gives: ``result`` if it fits ``schema``,
    else the schema's simplest instance."""
    content = result.content if isinstance(result, Reply) else result
    try:
        check_json(content, {"response_format": {"type": "json_object", "schema": schema}})
    except ValueError:
        content = json.dumps(simplest(schema), ensure_ascii=False)
    return dataclasses.replace(result, content=content) if isinstance(result, Reply) else content


def simplest(schema: dict[str, Any]) -> Any:
    """The simplest value fitting ``schema`` (first enum value, required properties only)."""
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "object":
        props = schema.get("properties", {})
        return {name: simplest(props.get(name, {})) for name in schema.get("required", [])}
    if kind == "array":
        return [simplest(schema.get("items", {}))] * int(schema.get("minItems", 0))
    if kind in ("number", "integer"):
        return schema.get("minimum", 0)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return "x" * int(schema.get("minLength", 0))


def _text(content: Any) -> str:
    """Text of a message ``content`` (a string or a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


def _tokens(text: str) -> int:
    """A deterministic stand-in for a token count: one per four characters."""
    return math.ceil(len(text) / 4)


def _format_retry_after(value: float | str) -> str:
    if isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def default_responder(request: dict[str, Any]) -> str:
    """Echo the last user message: ``echo: <text>``."""
    for message in reversed(request.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return f"echo: {_text(message.get('content'))}"
    return "echo:"


class FakeLLM:
    """A fake OpenAI-compatible server on 127.0.0.1; see the module docstring.

    ``api_key=None`` accepts any (or no) key, like a local vLLM started without ``--api-key``.
    ``supports`` lists the structured-output modes accepted (a subset of ``MODES``); a request
    for another one is answered ``reject_status`` (400 like vLLM/llama.cpp; llama-cpp-python
    answers 500, which the SDK then retries).
    """

    def __init__(
        self,
        api_key: str | None = "sk-test",
        *,
        responder: Responder | None = None,
        supports: Iterable[str] = MODES,
        models: Iterable[str] = ("fake-model",),
        latency: float = 0.0,
        reject_status: int = 400,
        chunk_chars: int = 4,
        raise_responder_errors: bool = True,
        slots: int | None = None,
        props: Mapping[str, Any] | None = None,
    ) -> None:
        self.api_key = api_key
        self.responder: Responder = responder or default_responder
        self.supports = frozenset(supports)
        unknown = self.supports - MODES
        if unknown:
            raise ValueError(f"unknown modes {sorted(unknown)}; choose among {sorted(MODES)}")
        self.models = list(models)
        self.latency = latency
        """Seconds slept before handling every request (faults included)."""
        self.hold: asyncio.Event | None = None
        """If set to an Event, chat completions wait (after ``latency``) until it is set: the
        test decides when a call in flight is answered."""
        self.slots = None if slots is None else asyncio.Semaphore(slots)
        self.props = None if props is None else dict(props)
        """Answered to ``GET /props`` (llama.cpp's server reports ``total_slots`` there);
        None: that path is a 404, as on most servers."""
        self._decoding: set[asyncio.Future[web.StreamResponse]] = set()
        """Chat completions decoded at once (a llama.cpp server started with one slot);
        the others wait in line, and one whose client gave up is still decoded."""
        self.reject_status = reject_status
        self.chunk_chars = chunk_chars
        self.raise_responder_errors = raise_responder_errors
        self.calls: list[Call] = []
        self.errors: list[str] = []
        """Messages of responder exceptions (each also answered as a 500)."""
        self.port = 0
        self._faults: deque[_Fault] = deque()
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/v1``: what ``AsyncOpenAI(base_url=...)`` wants."""
        if not self.port:
            raise RuntimeError("the fake LLM server is not started")
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> None:
        """Start listening on 127.0.0.1 at a free port."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=1.0,
            handler_cancellation=True,  # a client that times out cancels the pending answer
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        """Close the server."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeLLM:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        await self.stop()
        if exc_type is None and self.errors and self.raise_responder_errors:
            raise AssertionError(
                "the fake LLM responder failed (answered 500):\n  " + "\n  ".join(self.errors)
            )

    # ------------------------------------------------------------------ fault injection

    def fail_next(
        self,
        status: int = 429,
        *,
        retry_after: float | str | None = None,
        message: str | None = None,
        headers: Mapping[str, str] | None = None,
        count: int = 1,
    ) -> None:
        """Answer the next ``count`` requests with ``status`` and an OpenAI-style error body."""
        fault = _Fault("status", status, message, retry_after, dict(headers or {}))
        self._faults.extend(copy.copy(fault) for _ in range(count))

    def reset_next(self, count: int = 1) -> None:
        """Drop the connection of the next ``count`` requests without any response."""
        self._faults.extend(_Fault("reset", 0) for _ in range(count))

    def truncate_next(self, *, abort: bool = False, after_chunks: int | None = None) -> None:
        """Cut the next answer short.

        Without a stream: a 200 whose JSON body stops halfway (``Content-Length`` matching what
        is sent); with ``abort=True`` the full length is announced and the connection closed
        halfway. With a stream: the role chunk and ``after_chunks`` content chunks (default
        half) are sent, then the response ends cleanly without finish chunk nor ``[DONE]``, or
        with ``abort=True`` the connection is closed mid-stream.
        """
        self._faults.append(_Fault("truncate", abort=abort, after_chunks=after_chunks))

    def malformed_next(
        self,
        body: str | bytes = "<html><body>502 Bad Gateway</body></html>",
        *,
        content_type: str = "application/json",
    ) -> None:
        """Answer the next request with a 200 whose body is not JSON.

        With a stream: one good chunk, then a ``data:`` line that is not JSON, then the end.
        """
        raw = body.encode() if isinstance(body, str) else body
        self._faults.append(_Fault("malformed", body=raw, content_type=content_type))

    @property
    def pending_faults(self) -> int:
        """Number of queued faults not yet consumed."""
        return len(self._faults)

    # ------------------------------------------------------------------ inspection

    @property
    def completions(self) -> list[Call]:
        """Recorded ``POST /v1/chat/completions`` calls."""
        return [c for c in self.calls if c.path == "/v1/chat/completions"]

    def describe(self) -> str:
        """All calls, one per line, for assertion messages."""
        return "\n".join(c.summary() for c in self.calls) or "(no calls)"

    # ------------------------------------------------------------------ HTTP

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body: dict[str, Any] = {}
        body_error: str | None = None
        if request.can_read_body:
            raw = await request.read()
            try:
                decoded = json.loads(raw)
            except ValueError as error:
                body_error = f"request body is not valid JSON: {error}"
            else:
                if isinstance(decoded, dict):
                    body = decoded
                else:
                    body_error = "request body must be a JSON object"
        call = self._new_call(request, body)
        if self.slots is not None and request.path == "/v1/chat/completions":
            # Decoded to the end even when the client gives up, as llama.cpp does.
            task = asyncio.ensure_future(self._in_slot(request, call, body_error))
            self._decoding.add(task)
            task.add_done_callback(self._decoding.discard)
            return await asyncio.shield(task)
        return await self._answer(request, call, body_error)

    async def _in_slot(
        self, request: web.Request, call: Call, body_error: str | None
    ) -> web.StreamResponse:
        assert self.slots is not None
        async with self.slots:
            return await self._answer(request, call, body_error)

    async def _answer(
        self, request: web.Request, call: Call, body_error: str | None
    ) -> web.StreamResponse:
        try:
            if self.latency > 0:
                await asyncio.sleep(self.latency)
            if self.hold is not None and request.path == "/v1/chat/completions":
                await self.hold.wait()
            if request.path.startswith("/v1/") and self._faults:
                fault = self._faults.popleft()
                call.fault = fault.kind
                if fault.kind == "status":
                    raise self._fault_error(fault)
                if fault.kind == "reset":
                    call.error = "connection reset"
                    return self._drop(request)
            else:
                fault = None
            self._check_auth(request)
            if request.method == "POST" and request.path == "/v1/chat/completions":
                if body_error:
                    raise _Answer(400, body_error)
                return await self._chat(request, call, fault)
            if request.method == "GET" and request.path == "/props" and self.props is not None:
                call.status = 200
                return web.json_response(self.props)
            if request.method == "GET" and request.path == "/v1/models":
                data = [
                    {"id": m, "object": "model", "created": 0, "owned_by": "fake"}
                    for m in self.models
                ]
                call.status = 200
                return web.json_response({"object": "list", "data": data})
            raise _Answer(404, f"Invalid URL ({request.method} {request.path})")
        except _Answer as answer:
            call.status = answer.status
            call.error = answer.message
            return web.json_response(answer.body, status=answer.status, headers=answer.headers)
        except asyncio.CancelledError:
            call.error = call.error or "client disconnected"
            raise

    def _new_call(self, request: web.Request, body: dict[str, Any]) -> Call:
        response_format = body.get("response_format")
        if not isinstance(response_format, dict):
            response_format = None
        stream_options = body.get("stream_options")
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        messages = body.get("messages")
        call = Call(
            method=request.method,
            path=request.path,
            body=body,
            headers={k.lower(): v for k, v in request.headers.items()},
            at=time.monotonic(),
            model=body.get("model") if isinstance(body.get("model"), str) else None,
            messages=list(messages) if isinstance(messages, list) else [],
            response_format=response_format,
            mode=_mode_of(response_format),
            stream=body.get("stream") is True,
            include_usage=isinstance(stream_options, dict)
            and stream_options.get("include_usage") is True,
            temperature=body.get("temperature"),
            seed=body.get("seed"),
            max_tokens=max_tokens if isinstance(max_tokens, int) else None,
        )
        self.calls.append(call)
        return call

    def _check_auth(self, request: web.Request) -> None:
        if self.api_key is None:
            return
        given = request.headers.get("Authorization", "")
        if given != f"Bearer {self.api_key}":
            shown = given.removeprefix("Bearer ")
            message = (
                f"Incorrect API key provided: {shown[:3]}***{shown[-4:]}."
                if shown
                else "You didn't provide an API key."
            )
            raise _Answer(401, message, body=error_body(message, code="invalid_api_key"))

    @staticmethod
    def _fault_error(fault: _Fault) -> _Answer:
        headers = dict(fault.headers)
        if fault.retry_after is not None:
            headers["Retry-After"] = _format_retry_after(fault.retry_after)
        message = fault.message or _DEFAULT_MESSAGES.get(fault.status, f"Error {fault.status}")
        return _Answer(fault.status, message, headers=headers)

    @staticmethod
    def _drop(request: web.Request) -> web.Response:
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=500)  # never reaches the client

    def _check_request(self, call: Call) -> None:
        body = call.body
        if not isinstance(body.get("model"), str) or not body["model"]:
            raise _Answer(400, "model: a non-empty string is required", param="model")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _Answer(400, "messages: a non-empty array is required", param="messages")
        for message in messages:
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise _Answer(400, "messages: each message needs a role", param="messages")
        if "response_format" not in body:
            return
        fmt = body["response_format"]
        kind = call.mode if isinstance(fmt, dict) else None
        if kind == "grammar" and "grammar" not in self.supports:
            kind = "json_object"  # the schema key is ignored
        allowed = ["text", *sorted(self.supports - {"grammar"})]
        if kind not in ("text", *MODES) or kind not in ("grammar", *allowed):
            quoted = ", ".join(f'"{a}"' for a in allowed)
            raise _Answer(
                self.reject_status if kind in MODES else 400,
                f"response_format type must be one of {quoted}, but got: {kind}",
                param="response_format",
            )
        if kind == "json_schema":
            spec = fmt.get("json_schema")
            if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
                raise _Answer(
                    400,
                    "response_format.json_schema.schema: an object is required",
                    param="response_format",
                )

    async def _respond(self, call: Call) -> Reply:
        try:
            result = self.responder(copy.deepcopy(call.body))
            if inspect.isawaitable(result):
                result = await result
            if call.mode == "grammar" and "grammar" in self.supports:
                result = _constrained(result, call.body["response_format"]["schema"])
        except Exception as error:
            message = f"fake LLM responder failed: {error}"
            self.errors.append(f"{message} ({type(error).__name__}; call: {call.summary()})")
            raise _Answer(500, message, headers={"x-should-retry": "false"}) from None
        if isinstance(result, str):
            return Reply(result)
        if isinstance(result, Reply):
            return result
        message = f"fake LLM responder returned {type(result).__name__}, not str or Reply"
        self.errors.append(message)
        raise _Answer(500, message, headers={"x-should-retry": "false"})

    def _usage(self, call: Call, reply: Reply) -> dict[str, int]:
        if reply.usage is not None:
            return dict(reply.usage)
        prompt = sum(_tokens(_text(m.get("content"))) for m in call.messages)
        completion = _tokens(reply.content)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    async def _chat(
        self, request: web.Request, call: Call, fault: _Fault | None
    ) -> web.StreamResponse:
        self._check_request(call)
        reply = await self._respond(call)
        if reply.latency > 0:
            await asyncio.sleep(reply.latency)
        if reply.status != 200:
            headers = dict(reply.headers)
            if reply.retry_after is not None:
                headers["Retry-After"] = _format_retry_after(reply.retry_after)
            if isinstance(reply.error, dict):
                message = str(reply.error.get("error", reply.error))
                raise _Answer(reply.status, message, body=reply.error, headers=headers)
            message = reply.error or _DEFAULT_MESSAGES.get(reply.status, f"Error {reply.status}")
            raise _Answer(reply.status, message, headers=headers)
        call.content = reply.content
        if call.stream:
            return await self._stream(request, call, reply, fault)
        completion = {
            "id": f"chatcmpl-fake{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": call.model,
            "system_fingerprint": "fp_fake",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.content},
                    "logprobs": None,
                    "finish_reason": reply.finish_reason,
                }
            ],
            "usage": self._usage(call, reply),
        }
        raw = json.dumps(completion, ensure_ascii=False).encode()
        call.status = 200
        if fault is not None and fault.kind == "malformed":
            return web.Response(body=fault.body, headers={"Content-Type": fault.content_type})
        if fault is not None and fault.kind == "truncate":
            if not fault.abort:
                return web.Response(body=raw[: len(raw) // 2], content_type="application/json")
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            response.content_length = len(raw)
            await response.prepare(request)
            await response.write(raw[: len(raw) // 2])
            return self._drop(request)
        return web.Response(body=raw, content_type="application/json", headers=reply.headers)

    async def _stream(
        self, request: web.Request, call: Call, reply: Reply, fault: _Fault | None
    ) -> web.StreamResponse:
        size = max(1, self.chunk_chars)
        pieces = (
            list(reply.chunks)
            if reply.chunks is not None
            else [reply.content[i : i + size] for i in range(0, len(reply.content), size)]
        )
        base = {
            "id": f"chatcmpl-fake{next(self._ids)}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": call.model,
            "system_fingerprint": "fp_fake",
        }
        extra: dict[str, Any] = {"usage": None} if call.include_usage else {}

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return base | {"choices": [choice]} | extra

        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                **reply.headers,
            }
        )
        call.status = 200
        await response.prepare(request)

        async def send(data: dict[str, Any] | str) -> None:
            text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
            await response.write(f"data: {text}\n\n".encode())

        await send(chunk({"role": "assistant", "content": ""}))
        cut = len(pieces)
        if fault is not None and fault.kind == "truncate":
            cut = fault.after_chunks if fault.after_chunks is not None else len(pieces) // 2
        if fault is not None and fault.kind == "malformed":
            cut = min(1, len(pieces))
        for piece in pieces[:cut]:
            if reply.chunk_delay > 0:
                await asyncio.sleep(reply.chunk_delay)
            await send(chunk({"content": piece}))
        if fault is not None and fault.kind == "truncate":
            if fault.abort:
                if request.transport is not None:
                    request.transport.close()  # flushes what was written, then closes
                return response
            await response.write_eof()
            return response
        if fault is not None and fault.kind == "malformed":
            await send(fault.body.decode("utf-8", "replace"))
            await response.write_eof()
            return response
        await send(chunk({}, reply.finish_reason))
        if call.include_usage:
            await send(base | {"choices": [], "usage": self._usage(call, reply)})
        await send("[DONE]")
        await response.write_eof()
        return response


# ---------------------------------------------------------------------- cassette


class CassetteMiss(LookupError):
    """A replayed request has no recording."""

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


def request_key(request: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of ``model``, ``messages`` and ``response_format``."""
    subset = {k: request.get(k) for k in ("model", "messages", "response_format")}
    canonical = json.dumps(subset, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class Cassette:
    """Recorded contents by ``request_key``, for deterministic replay.

    The file is a JSON object ``{key: {"content", "model", "mode", "last_message"}}`` (UTF-8,
    sorted keys, indented, Chinese unescaped). ``responder(fallback)`` answers recordings; a
    miss raises ``CassetteMiss`` (the server answers 500 naming the key) unless ``record`` is
    true, when the fallback's answer is stored and the file written at once. Existing
    recordings are replayed in both modes; delete an entry (or the file) to re-record it.
    """

    def __init__(self, path: str | os.PathLike[str], *, record: bool = False) -> None:
        self.path = Path(path)
        self.record = record
        self.entries: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            loaded = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(loaded, dict):
                raise ValueError(f"{self.path}: a cassette is a JSON object")
            self.entries = loaded
        self.hits: list[str] = []
        self.misses: list[str] = []
        self.recorded: list[str] = []

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, key: object) -> bool:
        return key in self.entries

    def lookup(self, request: Mapping[str, Any]) -> Reply | None:
        """The recorded reply for ``request``, if any."""
        entry = self.entries.get(request_key(request))
        if entry is None:
            return None
        return Reply(str(entry["content"]), finish_reason=str(entry.get("finish_reason", "stop")))

    def add(self, request: Mapping[str, Any], reply: Reply) -> str:
        """Store ``reply`` for ``request`` (in memory); returns the key."""
        key = request_key(request)
        fmt = request.get("response_format")
        messages = request.get("messages") or []
        entry: dict[str, Any] = {
            "content": reply.content,
            "model": request.get("model"),
            "mode": fmt.get("type", "text") if isinstance(fmt, dict) else "text",
            "last_message": _text(messages[-1].get("content")) if messages else "",
        }
        if reply.finish_reason != "stop":
            entry["finish_reason"] = reply.finish_reason
        self.entries[key] = entry
        return key

    def save(self) -> None:
        """Write the file (atomically)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.entries, ensure_ascii=False, sort_keys=True, indent=2) + "\n"
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(self.path)

    def responder(self, fallback: Responder | None = None) -> Responder:
        """A responder replaying recordings; in record mode, misses go to ``fallback``."""

        async def respond(request: dict[str, Any]) -> ReplyLike:
            key = request_key(request)
            found = self.lookup(request)
            if found is not None:
                self.hits.append(key)
                return found
            self.misses.append(key)
            if not self.record or fallback is None:
                why = "record mode has no fallback" if self.record else "replay mode"
                raise CassetteMiss(
                    f"cassette {self.path.name} has no recording for key {key} ({why}; "
                    f"model={request.get('model')!r}, last message="
                    f"{_text((request.get('messages') or [{}])[-1].get('content'))[:80]!r}); "
                    "record it with Cassette(path, record=True)",
                    key,
                )
            result = fallback(request)
            if inspect.isawaitable(result):
                result = await result
            reply = Reply(result) if isinstance(result, str) else result
            if reply.status == 200:
                self.add(request, reply)
                self.recorded.append(key)
                self.save()
            return reply

        return respond


def serve(
    scenario: Callable[[FakeLLM], Awaitable[None]], api_key: str | None = "sk-test", **options: Any
) -> FakeLLM:
    """Start a fake server, run ``scenario`` against it, stop it; returns the server, whose
    ``calls`` stay readable."""

    async def main() -> FakeLLM:
        async with FakeLLM(api_key, **options) as api:
            await scenario(api)
        return api

    return asyncio.run(main())


# ---------------------------------------------------------------------- schema check


def check_json(text: str, request: Mapping[str, Any] | None = None) -> Any:
    """Parse ``text`` as JSON and check it against the request's schema (minimal subset).

    The schema is ``response_format.json_schema.schema`` (or ``response_format.schema`` for
    llama.cpp-style ``json_object``). Supported keywords: type, enum, const, properties,
    required, additionalProperties (false), items, minItems, maxItems, minimum, maximum,
    minLength, maxLength, anyOf, and ``$ref`` to ``#/$defs/...``. Raises ValueError naming the
    path of the first problem; returns the parsed value.
    """
    value = json.loads(text)
    fmt = (request or {}).get("response_format")
    schema: Any = None
    if isinstance(fmt, dict):
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else fmt.get("schema")
    if isinstance(schema, dict):
        _validate(value, schema, schema, "$")
    return value


_JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def _validate(value: Any, schema: dict[str, Any], root: dict[str, Any], path: str) -> None:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        target: Any = root
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]
        _validate(value, target, root, path)
    if "anyOf" in schema:
        problems = []
        for option in schema["anyOf"]:
            try:
                _validate(value, option, root, path)
                break
            except ValueError as error:
                problems.append(str(error))
        else:
            raise ValueError(f"{path}: matches no anyOf option ({'; '.join(problems)})")
    kinds = schema.get("type")
    if kinds is not None:
        names = [kinds] if isinstance(kinds, str) else list(kinds)
        if not any(_JSON_TYPES[name](value) for name in names):
            raise ValueError(f"{path}: expected {'/'.join(names)}, got {value!r}")
    if "enum" in schema and value not in schema["enum"]:
        raise ValueError(f"{path}: {value!r} is not one of {schema['enum']!r}")
    if "const" in schema and value != schema["const"]:
        raise ValueError(f"{path}: expected {schema['const']!r}, got {value!r}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                raise ValueError(f"{path}: missing required property {name!r}")
        for name, item in value.items():
            if name in props:
                _validate(item, props[name], root, f"{path}.{name}")
            elif schema.get("additionalProperties") is False:
                raise ValueError(f"{path}: unexpected property {name!r}")
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            raise ValueError(f"{path}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise ValueError(f"{path}: more than {schema['maxItems']} items")
        if isinstance(schema.get("items"), dict):
            for i, item in enumerate(value):
                _validate(item, schema["items"], root, f"{path}[{i}]")
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            raise ValueError(f"{path}: shorter than {schema['minLength']}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise ValueError(f"{path}: longer than {schema['maxLength']}")
    if _JSON_TYPES["number"](value):
        if "minimum" in schema and value < schema["minimum"]:
            raise ValueError(f"{path}: {value} < minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            raise ValueError(f"{path}: {value} > maximum {schema['maximum']}")
