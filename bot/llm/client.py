"""One role's connection to an OpenAI-compatible chat-completions server.

The openai SDK is the only retry layer (``max_retries=1``: one retry of 408/409/429/5xx,
timeouts and connection errors); every failure reaches the caller as an ``LLMError`` with a
short ``reason`` so it can fall back to scripted or rule behaviour. Structured answers use
the role's ``structured`` mode; ``auto`` uses what ``probe()`` found, else tries
``json_schema``, then ``grammar``, then ``json_object``, then ``text`` while the server
refuses the mode (a 400, or any error whose message names ``response_format`` or the mode:
llama.cpp's server answers 500), without retrying those tries, and remembers the first that
worked for every client of the same base URL and model in the process.

``grammar`` is llama.cpp's ``{"type": "json_object", "schema": ...}``: the server turns the
schema into a grammar the answer must follow, and the model never sees the schema. It is
used only once a tiny request showed the server enforces it (many servers accept the key
and ignore it).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import aiohttp

from bot.llm.config import RoleSettings

if TYPE_CHECKING:  # loaded with the first client: a trainer without a model never needs it
    import openai

Mode = Literal["json_schema", "grammar", "json_object", "text"]
MODES: tuple[Mode, ...] = ("json_schema", "grammar", "json_object", "text")
PLAIN = "plain"
"""``Completion.mode`` of a request without a schema."""

PROBE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}},
    "required": ["ok"],
    "additionalProperties": False,
}
COUNTING = [{"role": "user", "content": "Write the numbers from 1 to 100, separated by commas."}]
"""A request whose answer runs to its token limit."""
GRAMMAR_MARK = "grammar-enforced-7f3a"
"""A value only a server that enforces the ``grammar`` schema makes a model write."""
GRAMMAR_PROBE: dict[str, Any] = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}, "check": {"type": "string", "enum": [GRAMMAR_MARK]}},
    "required": ["ok", "check"],
    "additionalProperties": False,
}
PROBE_MESSAGES = [
    {"role": "system", "content": "You are a health check. Answer briefly."},
    {"role": "user", "content": 'Answer with the JSON object {"ok": true}.'},
]


_SETTLED: dict[tuple[str | None, str], Mode] = {}
"""The structured mode ``auto`` settled on, per (base URL, model), for the whole process."""
_TRANSIENT = frozenset({"server_error", "connection", "timeout", "rate_limited"})
"""Failures the SDK retries once (408/409/429/5xx, timeouts, connection errors)."""
_NAMES_A_MODE = re.compile(r"response_format|json_schema|json_object|grammar", re.IGNORECASE)


BREAK_AFTER = 2
"""Consecutive failures of a server (timeouts, refused connections, 5xx) that open its breaker."""
COOL_DOWN_S = 60.0
"""How long an open breaker answers at once before one trial request may go."""
_DOWN = frozenset({"timeout", "connection", "server_error", "rate_limited"})


@dataclass
class _Breaker:
    """One server's health, shared by every role and session of the process."""

    failures: int = 0
    open_until: float = 0.0
    trial: bool = False
    """A half-open trial request is on its way."""

    def admit(self, now: float) -> bool:
        """Whether a request may go (when the cool-down is over, one trial goes)."""
        if self.trial or now < self.open_until:
            return False
        if self.open_until:
            self.trial = True
        return True

    def record(self, ok: bool, now: float) -> None:
        """Count a request's outcome; the ``BREAK_AFTER``-th failure in a row opens it."""
        if ok:
            self.failures, self.open_until, self.trial = 0, 0.0, False
            return
        self.failures += 1
        if self.trial or self.failures >= BREAK_AFTER:
            self.open_until, self.trial = now + COOL_DOWN_S, False


_BREAKERS: dict[str | None, _Breaker] = {}

_TELEMETRY_HEADERS = (
    "X-Stainless-Lang",
    "X-Stainless-Package-Version",
    "X-Stainless-OS",
    "X-Stainless-Arch",
    "X-Stainless-Runtime",
    "X-Stainless-Runtime-Version",
    "X-Stainless-Async",
)

PRIORITY = {"customer": 0, "judge": 1, "rewriter": 2}
"""Who goes first when a server's slots are taken: the trainee reads the customer first."""


class _Gate:
    """At most ``capacity`` requests at once to one server; waiters by priority, then age."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.active = 0
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    async def enter(self, priority: int) -> None:
        """Wait for a slot."""
        if self.active < self.capacity and not self._waiting:
            self.active += 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (priority, next(self._order), future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.leave()  # the slot came as the wait was cancelled: hand it on
            raise

    def leave(self) -> None:
        """Free a slot: the first live waiter gets it."""
        while self._waiting:
            _, _, future = heapq.heappop(self._waiting)
            if not future.done():
                future.set_result(None)
                return
        self.active -= 1


_GATES: dict[str | None, _Gate] = {}
_GATE_LOCK: dict[str | None, asyncio.Lock] = {}

DEFAULT_CONCURRENCY = 4
"""Requests at once to a server that reports no slots (Ollama's default; raise
``max_concurrency`` for vLLM or a hosted API when a team practises at once)."""


def slots_limit(known: tuple[int, str] | None) -> int:
    """Requests at once to a server without ``max_concurrency``.

    1 for one that decodes one at a time, its slots when it reports more, else
    ``DEFAULT_CONCURRENCY``.
    """
    if known is None:
        return DEFAULT_CONCURRENCY
    slots, how = known
    if slots == 1:
        return 1
    return slots if how == "reported" else DEFAULT_CONCURRENCY


def forget_endpoints() -> None:
    """Forget what ``auto`` settled on and every breaker (a server replaced; tests)."""
    _SETTLED.clear()
    _BREAKERS.clear()
    _GATES.clear()
    _GATE_LOCK.clear()


def _mode_refused(error: LLMError) -> bool:
    """Whether a failed structured request says the server does not take that mode."""
    if error.reason == "bad_request":
        return True
    return error.reason in ("server_error", "not_found") and bool(
        _NAMES_A_MODE.search(error.message)
    )


class ModeMemory(Protocol):
    """Where what a server takes is kept between processes (the store).

    That is its structured mode, and how many requests it decodes at once.
    """

    def recall_mode(self, base_url: str | None, model: str) -> tuple[str, str] | None:
        """The mode last found for the server and model, and when."""
        ...

    def remember_mode(self, base_url: str | None, model: str, mode: str) -> None:
        """Keep the mode found."""
        ...

    def recall_slots(self, base_url: str | None) -> tuple[int, str] | None:
        """How many requests the server decodes at once, and how that was found."""
        ...

    def remember_slots(self, base_url: str | None, slots: int, how: str) -> None:
        """Keep how many requests the server decodes at once."""
        ...


@dataclass(frozen=True)
class _Ask:
    """What one completion asks for (see ``LLMClient.complete``)."""

    messages: list[dict[str, str]]
    schema: dict[str, Any] | None
    schema_name: str
    max_tokens: int | None
    grammar: dict[str, Any] | None = None
    cut_ok: bool = False


class LLMError(Exception):
    """A model call that gave no usable answer; ``reason`` is a short machine-readable word.

    Reasons: ``timeout``, ``rate_limited``, ``server_error``, ``connection``, ``auth``,
    ``not_found``, ``bad_request``, ``bad_response``, ``truncated``, ``refused``,
    ``circuit_open`` (the server failed too often just now; not asked).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Completion:
    """A model's answer."""

    text: str
    model: str
    """The model the server says answered (else the configured one)."""
    mode: str
    """``json_schema``, ``grammar``, ``json_object``, ``text`` (schema in the prompt) or
    ``plain``."""
    raw: str
    """The full response body as received, for storing with what it produced."""
    elapsed_s: float
    tokens: int | None = None
    """Completion tokens, when the server counts them."""
    cut: bool = False
    """The answer stopped at ``max_tokens`` (only returned to callers that accept that)."""


@dataclass(frozen=True)
class ProbeResult:
    """What ``LLMClient.probe()`` found out about a server."""

    ok: bool
    """A plain completion works."""
    latency_s: float
    """Seconds for the plain completion."""
    model: str | None
    """The model the server reported."""
    modes: dict[str, bool] = field(default_factory=dict)
    """Structured mode -> whether it works."""
    errors: dict[str, str] = field(default_factory=dict)
    """``plain`` or a mode -> why it failed."""
    tokens_per_s: float | None = None
    """Decoding speed of the plain completion, when the server counts tokens."""
    listed: bool | None = None
    """Whether the server lists the model (None: it lists no models)."""
    context: int | None = None
    """The model's context length, when the server says it."""
    slots: int | None = None
    """Requests the server decodes at once (2: more than one), None if unknown."""
    slots_how: str = ""
    """``reported`` (by the server) or ``measured`` (a short request sent behind a long one)."""

    @property
    def auto(self) -> Mode | None:
        """The mode ``structured = "auto"`` uses, None if nothing works."""
        if not self.ok:
            return None
        return next((m for m in MODES if self.modes.get(m)), "text")


class LLMClient:
    """An async client for one role (one ``openai.AsyncOpenAI``)."""

    def __init__(self, settings: RoleSettings, role: str = "customer") -> None:
        self.settings = settings
        self.priority = PRIORITY.get(role, len(PRIORITY))
        self.memory: ModeMemory | None = None
        """Where the mode ``auto`` finds is kept (and read from) between processes."""
        import openai

        self._secret = settings.api_key or ""
        self._openai = openai.AsyncOpenAI(
            base_url=settings.base_url,
            api_key=settings.api_key or "not-needed",
            timeout=settings.timeout_s,
            max_retries=1,
            # The SDK's aiohttp transport: the same client API, a quarter less CPU per turn
            # than httpx (bench_llm); the bot already depends on aiohttp.
            http_client=openai.DefaultAioHttpClient(timeout=settings.timeout_s),
            # The SDK's telemetry headers tell the server this machine's OS, CPU and Python;
            # a model server needs none of them, and each costs CPU on every request (a
            # tenth of a request's). The retry count and read timeout still go. (The SDK
            # drops a default header given as Omit(); its annotation says only str.)
            default_headers=dict.fromkeys(_TELEMETRY_HEADERS, openai.Omit()),  # type: ignore[arg-type]
        )

    def __repr__(self) -> str:
        return f"LLMClient({self.settings!r})"

    @property
    def _endpoint(self) -> tuple[str | None, str]:
        return (self.settings.base_url, self.settings.model)

    @property
    def auto_mode(self) -> Mode | None:
        """The structured mode ``auto`` settled on for this endpoint (None until known).

        Known from this process, else from the memory (what an earlier process or
        ``trainer llm check`` found).
        """
        found = _SETTLED.get(self._endpoint)
        if found is None and self.memory is not None:
            kept = self.memory.recall_mode(*self._endpoint)
            if kept is not None and kept[0] in MODES:
                found = _SETTLED[self._endpoint] = kept[0]
        return found

    def _settle(self, mode: Mode) -> None:
        _SETTLED[self._endpoint] = mode
        if self.memory is not None:
            self.memory.remember_mode(*self._endpoint, mode)

    async def aclose(self) -> None:
        """Close the connections."""
        await self._openai.close()

    async def __aenter__(self) -> LLMClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def complete(
        self,
        messages: list[dict[str, str]],
        *,
        schema: dict[str, Any] | None = None,
        schema_name: str = "answer",
        max_tokens: int | None = None,
        budget_s: float | None = None,
        grammar: dict[str, Any] | None = None,
        cut_ok: bool = False,
    ) -> Completion:
        """One chat completion; with ``schema`` the answer is asked for as JSON fitting it.

        ``grammar`` is a stricter schema for the ``grammar`` mode only (the model never sees
        it there, so it may hold values no prompt should); ``budget_s`` caps the whole
        call, retries included (a ``timeout`` failure after it). An answer cut at
        ``max_tokens`` is a ``truncated`` failure unless ``cut_ok`` (then ``cut`` says so).

        Raises ``LLMError``. The JSON is not validated here: the caller checks it. While
        the server's breaker is open (``BREAK_AFTER`` failures in a row), raises at once
        with reason ``circuit_open``: a hung server costs a trainee one timeout, not one
        per turn and role.
        """
        ask = _Ask(messages, schema, schema_name, max_tokens, grammar, cut_ok)
        breaker = _BREAKERS.setdefault(self.settings.base_url, _Breaker())
        if not breaker.admit(time.monotonic()):
            left = max(0.0, breaker.open_until - time.monotonic())
            raise self._error(
                "circuit_open",
                f"the server failed {breaker.failures} times in a row; "
                f"not asked again for {left:.0f} s",
            )
        try:
            completion = await asyncio.wait_for(self._gated(ask), budget_s)
        except TimeoutError:
            breaker.record(False, time.monotonic())
            raise self._error(
                "timeout", f"no answer within {round(budget_s or 0.0, 1):g} s"
            ) from None
        except LLMError as error:
            breaker.record(error.reason not in _DOWN, time.monotonic())
            raise
        except BaseException:  # cancelled: says nothing about the server
            breaker.trial = False
            raise
        breaker.record(True, time.monotonic())
        return completion

    async def _gate(self) -> _Gate:
        """The server's gate, made at its first request.

        ``max_concurrency`` slots if set, else what the server reports (llama.cpp's slots)
        or ``llm check`` measured: see ``slots_limit``.
        """
        url = self.settings.base_url
        if url in _GATES:
            return _GATES[url]
        async with _GATE_LOCK.setdefault(url, asyncio.Lock()):
            if url not in _GATES:
                limit = self.settings.max_concurrency
                if limit is None:
                    known = self.memory.recall_slots(url) if self.memory is not None else None
                    if known is None:
                        reported = await self._reported_slots()
                        known = None if reported is None else (reported, "reported")
                    limit = slots_limit(known)
                _GATES[url] = _Gate(limit)
        return _GATES[url]

    async def _reported_slots(self) -> int | None:
        """The slots the server reports (llama.cpp's ``GET /props``), if it does."""
        import openai

        root = (self.settings.base_url or "").rstrip("/").removesuffix("/v1")
        if not root:
            return None  # a hosted default: it reports nothing of the kind
        # A hung server must not cost more than the role's own timeout here either.
        timeout = min(5.0, self.settings.timeout_s)
        try:
            props: Any = await self._openai.get(
                f"{root}/props", cast_to=object, options={"max_retries": 0, "timeout": timeout}
            )
        except (openai.APIError, ValueError):
            return None
        slots = props.get("total_slots") if isinstance(props, dict) else None
        return slots if isinstance(slots, int) and slots > 0 else None

    async def _gated(self, ask: _Ask) -> Completion:
        """The call once the server has a free slot (a cancelled one frees it at once)."""
        gate = await self._gate()
        await gate.enter(self.priority)
        try:
            return await self._complete(ask)
        finally:
            gate.leave()

    async def _complete(self, ask: _Ask) -> Completion:
        if ask.schema is None:
            return await self._call(ask, None)
        wanted = self.settings.structured
        if wanted != "auto":
            return await self._call(ask, wanted)
        settled = self.auto_mode
        if settled is not None:
            try:
                return await self._call(ask, settled)
            except LLMError as error:
                if settled == "text" or not _mode_refused(error):
                    raise
                # The server behind the URL changed since the mode was found: find it again.
        for mode in (m for m in MODES if m != settled):
            try:
                completion = await self._try_mode(ask, mode)
            except LLMError as error:
                if mode != "text" and _mode_refused(error):
                    continue  # the server does not take this response_format: try the next
                raise
            self._settle(mode)
            return completion
        raise AssertionError("unreachable: text mode either returns or raises")

    async def _try_mode(self, ask: _Ask, mode: Mode) -> Completion:
        """One structured request while ``auto`` is still finding its mode.

        A refusal of the mode is an answer, so it is not retried; any other failure gets
        the one retry every request gets (after half a second, as the SDK would wait).
        ``grammar`` is tried only on a server seen to enforce it.
        """
        if mode == "text":
            return await self._call(ask, mode)
        if mode == "grammar":
            ignored = await self._grammar_ignored()
            if ignored:
                raise self._error("bad_request", ignored)
        try:
            return await self._call(ask, mode, retry=False)
        except LLMError as error:
            if _mode_refused(error) or error.reason not in _TRANSIENT:
                raise
        await asyncio.sleep(0.5)
        return await self._call(ask, mode, retry=False)

    async def _grammar_ignored(self) -> str | None:
        """Why the server does not enforce a ``grammar`` schema (None: it does).

        Raises ``LLMError`` when the server refuses the mode or fails.
        """
        probe = _Ask(PROBE_MESSAGES, PROBE_SCHEMA, "probe", 64, GRAMMAR_PROBE)
        done = await self._call(probe, "grammar", retry=False)
        try:
            answer = json.loads(done.text)
        except ValueError:
            answer = None
        if isinstance(answer, dict) and answer.get("check") == GRAMMAR_MARK:
            return None
        return "response_format grammar: the server takes the schema but does not enforce it"

    async def probe(self) -> ProbeResult:
        """Try a tiny plain request, then one per structured mode; sets what ``auto`` uses."""
        errors: dict[str, str] = {}
        modes: dict[str, bool] = {}
        try:  # a plain answer cut at the probe's small token limit still shows it works
            plain = await self._call(_Ask(PROBE_MESSAGES, None, "probe", 64, cut_ok=True), None)
        except LLMError as error:
            errors[PLAIN] = str(error)
            return ProbeResult(False, 0.0, None, {m: False for m in MODES}, errors)
        ask = _Ask(PROBE_MESSAGES, PROBE_SCHEMA, "probe", 64)
        for mode in MODES:
            try:
                if mode == "grammar":
                    ignored = await self._grammar_ignored()
                    if ignored:
                        raise self._error("bad_request", ignored)
                else:
                    done = await self._call(ask, mode, retry=mode == "text")
                    if mode != "text":
                        json.loads(done.text)
                modes[mode] = True
            except LLMError as error:
                modes[mode], errors[mode] = False, str(error)
            except ValueError:
                modes[mode], errors[mode] = False, "bad_response: the answer is not JSON"
        speed = plain.tokens / plain.elapsed_s if plain.tokens and plain.elapsed_s else None
        listed, context = await self._model_listing()
        slots, how = await self._slots()
        result = ProbeResult(
            True, plain.elapsed_s, plain.model, modes, errors, speed, listed, context, slots, how
        )
        if result.auto is not None:
            self._settle(result.auto)
        if slots is not None and self.memory is not None:
            self.memory.remember_slots(self.settings.base_url, slots, how)
        _GATES.pop(self.settings.base_url, None)  # the next request's gate uses what was found
        return result

    async def _slots(self) -> tuple[int | None, str]:
        """How many requests the server decodes at once: as it reports, else measured.

        A long answer is asked for, then a one-token one: a server that decodes one request
        at a time finishes the short one after the long one, one that decodes them
        together long before. Order, not speed, decides, so a loaded machine does not
        change the verdict; a long answer that came too fast to tell leaves it unknown.
        """
        reported = await self._reported_slots()
        if reported is not None:
            return reported, "reported"
        long = _Ask(COUNTING, None, "probe", 128, cut_ok=True)
        short = _Ask(PROBE_MESSAGES, None, "probe", 1, cut_ok=True)
        finished: dict[str, float] = {}

        async def timed(name: str, ask: _Ask) -> None:
            await self._call(ask, None, retry=False)
            finished[name] = time.monotonic()

        try:
            await self._call(short, None, retry=False)  # connection and model warm
            start = time.monotonic()
            async with asyncio.TaskGroup() as group:
                group.create_task(timed("long", long))
                await asyncio.sleep(0.1)  # the long one reaches the server first
                group.create_task(timed("short", short))
        except LLMError:
            return None, ""
        except ExceptionGroup as failed:
            _, other = failed.split(LLMError)
            if other is not None:
                raise other from None
            return None, ""
        if finished["long"] - start < 0.5:
            return None, ""
        return (1 if finished["long"] < finished["short"] else 2), "measured"

    async def _model_listing(self) -> tuple[bool | None, int | None]:
        """Whether ``GET /models`` lists the model, and its context length if it says."""
        import openai

        try:
            listing: Any = await self._openai.get("/models", cast_to=object)
        except (openai.APIError, ValueError):
            return None, None
        models = listing.get("data") if isinstance(listing, dict) else None
        if not isinstance(models, list):
            return None, None
        found = next(
            (m for m in models if isinstance(m, dict) and m.get("id") == self.settings.model),
            None,
        )
        if found is None:
            return False, None
        meta: dict[str, Any] = found["meta"] if isinstance(found.get("meta"), dict) else {}
        for value in (  # vLLM, llama.cpp's server, others
            found.get("max_model_len"),
            meta.get("n_ctx"),
            meta.get("n_ctx_train"),
            found.get("context_length"),
            found.get("context_window"),
        ):
            if isinstance(value, int) and value > 0:
                return True, value
        return True, None

    # ------------------------------------------------------------------ internals

    def _request(self, ask: _Ask, mode: Mode | None) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.settings.model}
        if self.settings.temperature is not None:
            body["temperature"] = self.settings.temperature
        if ask.max_tokens is not None:
            body["max_tokens"] = ask.max_tokens
        messages = ask.messages
        if mode == "json_schema":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": ask.schema_name, "schema": ask.schema, "strict": True},
            }
        elif mode == "grammar":
            body["response_format"] = {"type": "json_object", "schema": ask.grammar or ask.schema}
        elif mode is not None:
            if mode == "json_object":
                body["response_format"] = {"type": "json_object"}
            messages = _with_schema(messages, ask.schema or {})
        body["messages"] = messages
        return body

    async def _call(self, ask: _Ask, mode: Mode | None, *, retry: bool = True) -> Completion:
        import openai
        from openai._constants import RAW_RESPONSE_HEADER

        body = self._request(ask, mode)
        start = time.monotonic()
        try:
            # The SDK's post, without create()'s per-call conversion of the typed parameters
            # (a sixth of a model call's CPU); the body is already plain JSON.
            response: Any = await self._openai.post(
                "/chat/completions",
                body=body,
                cast_to=object,  # the body is read as it came (see _answer)
                options={
                    "headers": {RAW_RESPONSE_HEADER: "true"},
                    "security": {"bearer_auth": True},
                    **({} if retry else {"max_retries": 0}),
                },
            )
            raw = response.text
            content_type = str(response.headers.get("content-type", ""))
        except openai.APITimeoutError as error:
            if _connection_failed(error):
                raise self._error("connection", _unreachable(error)) from None
            raise self._error(
                "timeout", f"no answer within {self.settings.timeout_s:g} s"
            ) from None
        except openai.APIConnectionError as error:
            raise self._error("connection", _unreachable(error)) from None
        except openai.APIStatusError as error:
            raise self._error(_status_reason(error.status_code), _status_text(error)) from None
        except openai.APIError as error:
            raise self._error("bad_response", str(error)) from None
        elapsed = time.monotonic() - start
        answer = self._answer(raw, content_type)
        choice = answer["choices"][0]
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            raise self._error("bad_response", "the answer's first choice has no message")
        refusal = message.get("refusal")
        if refusal:
            raise self._error("refused", f"the model refused: {_clip(str(refusal))}")
        finish = choice.get("finish_reason")
        if finish == "content_filter":
            raise self._error("refused", "the answer was stopped by the content filter")
        if finish == "length" and not ask.cut_ok:
            raise self._error("truncated", "the answer was cut at the token limit (max_tokens)")
        if not finish:
            raise self._error("bad_response", "the answer has no finish_reason (incomplete)")
        content = message.get("content")
        text = content if isinstance(content, str) else ""
        if not text.strip():
            raise self._error("bad_response", "the answer is empty")
        usage = answer.get("usage")
        tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
        model = answer.get("model")
        return Completion(
            text=text,
            model=model if isinstance(model, str) and model else self.settings.model,
            mode=mode or PLAIN,
            raw=raw,
            elapsed_s=elapsed,
            tokens=tokens if isinstance(tokens, int) else None,
            cut=finish == "length",
        )

    def _answer(self, raw: str, content_type: str) -> dict[str, Any]:
        """The chat completion in a 200 body, read as plain JSON; raises ``LLMError``.

        Read without the SDK's typed models (a fifth of a call's CPU); only the fields used
        are checked. A body that is not JSON is a broken answer, or, when the server did not
        even say JSON, not a chat completion.
        """
        try:
            answer = json.loads(raw)
        except ValueError as error:
            if content_type.split(";")[0].strip().endswith("json"):
                raise self._error(
                    "bad_response", f"the answer is not valid JSON ({error})"
                ) from None
            answer = raw
        if not isinstance(answer, dict):
            shown = _clip(str(answer) or repr(answer))
            raise self._error("bad_response", f"not a chat completion: {shown}")
        choices = answer.get("choices")
        if not isinstance(choices, list) or not choices:
            raise self._error("bad_response", "the answer has no choices")
        return answer

    def _error(self, reason: str, message: str) -> LLMError:
        where = f"{self.settings.base_url or 'default base URL'} model {self.settings.model}"
        text = f"{message} ({where})"
        if len(self._secret) >= 8:  # shorter ones are placeholders ("EMPTY", "ollama")
            text = text.replace(self._secret, "***")
        return LLMError(reason, text)


def _with_schema(messages: list[dict[str, str]], schema: dict[str, Any]) -> list[dict[str, str]]:
    """``messages`` with the JSON Schema appended to the system message (or one added)."""
    note = (
        "Answer with one JSON object only, no other text, matching this JSON Schema:\n"
        + json.dumps(schema, ensure_ascii=False)
    )
    out = [dict(m) for m in messages]
    for message in out:
        if message.get("role") == "system":
            message["content"] = f"{message.get('content', '')}\n\n{note}"
            return out
    return [{"role": "system", "content": note}, *out]


def _connection_failed(error: BaseException) -> bool:
    """Whether a "timeout" was really a refused or dropped connection.

    The aiohttp transport reports both as timeouts; the chained cause tells them apart.
    """
    cause = error.__cause__
    while cause is not None:
        if isinstance(cause, aiohttp.ClientConnectionError):
            return not isinstance(cause, asyncio.TimeoutError)
        cause = cause.__cause__
    return False


def _unreachable(error: BaseException) -> str:
    """Why the server could not be reached, in the words an operator looks for."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError) or (
            isinstance(cause, aiohttp.ClientConnectorError)
            and isinstance(cause.os_error, ConnectionRefusedError)
        ):
            return "connection refused: nothing listens there (is the server running?)"
        cause = cause.__cause__ or cause.__context__
    return f"cannot reach the server ({error})"


def _status_reason(status: int) -> str:
    if status in (401, 403):
        return "auth"
    if status == 404:
        return "not_found"
    if status == 408:
        return "timeout"
    if status == 429:
        return "rate_limited"
    if status >= 500:
        return "server_error"
    return "bad_request"


def _status_text(error: openai.APIStatusError) -> str:
    body = error.body
    detail = body.get("message") if isinstance(body, dict) else None
    return f"HTTP {error.status_code}: {_clip(str(detail or error.message))}"


def _clip(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
