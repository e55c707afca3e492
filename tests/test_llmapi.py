"""The fake OpenAI-compatible server, exercised with the real openai SDK over HTTP."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any, Literal

import httpx2
import openai
import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam
from openai.types.shared_params import ResponseFormatJSONSchema
from pydantic import BaseModel, ValidationError

from tests.llmapi import Cassette, Decoding, FakeLLM, Reply, check_json, request_key, serve

KEY = "sk-test-key"
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "顾客说水壶坏了"}]
SCHEMA_FORMAT: ResponseFormatJSONSchema = {
    "type": "json_schema",
    "json_schema": {
        "name": "grade",
        "schema": {
            "type": "object",
            "properties": {"score": {"type": "integer"}},
            "required": ["score"],
            "additionalProperties": False,
        },
    },
}

Scenario = Callable[[FakeLLM], Awaitable[None]]
run = partial(serve, api_key=KEY)


def client(api: FakeLLM, **kw: Any) -> AsyncOpenAI:
    options: dict[str, Any] = {"api_key": KEY, "max_retries": 0, "timeout": 5.0} | kw
    return AsyncOpenAI(base_url=api.base_url, **options)


async def ask(api: FakeLLM, **kw: Any) -> Any:
    """One ``chat.completions.create`` through a fresh client; ``client_kw`` configures it."""
    async with client(api, **kw.pop("client_kw", {})) as c:
        return await c.chat.completions.create(model="fake-model", messages=USER, **kw)


async def collect(api: FakeLLM, **kw: Any) -> list[Any]:
    """All chunks of a streamed completion."""
    async with client(api, **kw.pop("client_kw", {})) as c:
        stream = await c.chat.completions.create(
            model="fake-model", messages=USER, stream=True, **kw
        )
        assert isinstance(stream, openai.AsyncStream)
        return [chunk async for chunk in stream]


def texts(chunks: list[Any]) -> list[str]:
    return [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]


# ---------------------------------------------------------------------- plain answers


def test_plain_completion_is_recorded() -> None:
    async def scenario(api: FakeLLM) -> None:
        assert api.base_url.startswith("http://127.0.0.1:") and api.base_url.endswith("/v1")
        reply = await ask(api, temperature=0.2, seed=7, max_tokens=50)
        assert reply.choices[0].message.content == "echo: 顾客说水壶坏了"
        assert reply.choices[0].finish_reason == "stop"
        assert reply.model == "fake-model"
        assert reply.usage.prompt_tokens == 2 and reply.usage.completion_tokens == 4
        [call] = api.calls
        assert (call.model, call.messages, call.mode, call.stream) == (
            "fake-model",
            USER,
            "text",
            False,
        )
        assert (call.temperature, call.seed, call.max_tokens) == (0.2, 7, 50)
        assert call.headers["authorization"] == f"Bearer {KEY}"
        assert call.retry_count == 0 and call.last_user == "顾客说水壶坏了"
        assert (call.status, call.content, call.fault) == (200, "echo: 顾客说水壶坏了", None)

    run(scenario)


def test_reply_sets_content_finish_reason_and_usage() -> None:
    seen: list[dict[str, Any]] = []

    def responder(request: dict[str, Any]) -> Reply:
        seen.append(request)
        return Reply("截断的回答", finish_reason="length", usage={"prompt_tokens": 11})

    async def scenario(api: FakeLLM) -> None:
        reply = await ask(api)
        assert reply.choices[0].message.content == "截断的回答"
        assert reply.choices[0].finish_reason == "length"
        assert reply.usage.prompt_tokens == 11
        assert seen[0]["messages"] == USER and seen[0]["model"] == "fake-model"

    run(scenario, responder=responder)


def test_async_responder_and_models_list() -> None:
    async def responder(request: dict[str, Any]) -> str:
        await asyncio.sleep(0)
        return f"async {request['model']}"

    async def scenario(api: FakeLLM) -> None:
        assert (await ask(api)).choices[0].message.content == "async fake-model"
        async with client(api) as c:
            models = await c.models.list()
        assert [m.id for m in models.data] == ["m1", "m2"]
        assert [c.path for c in api.calls] == ["/v1/chat/completions", "/v1/models"]
        assert len(api.completions) == 1

    run(scenario, responder=responder, models=["m1", "m2"])


def test_invalid_request_is_a_400() -> None:
    async def scenario(api: FakeLLM) -> None:
        async with client(api) as c:
            with pytest.raises(openai.BadRequestError, match="messages"):
                await c.chat.completions.create(model="fake-model", messages=[])
            with pytest.raises(openai.BadRequestError, match="but got: xml"):
                await ask(api, response_format={"type": "xml"})
        assert [c.status for c in api.calls] == [400, 400]

    run(scenario)


# ---------------------------------------------------------------------- streaming


def test_stream_is_split_into_chunks_with_usage() -> None:
    content = "您好，非常抱歉给您带来不便，我们马上为您办理退款。"

    async def scenario(api: FakeLLM) -> None:
        chunks = await collect(api, stream_options={"include_usage": True})
        pieces = texts(chunks)
        assert len(pieces) > 3 and "".join(pieces) == content
        assert chunks[0].choices[0].delta.role == "assistant"
        finals = [c.choices[0].finish_reason for c in chunks if c.choices]
        assert finals[-1] == "stop" and set(finals[:-1]) == {None}
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == 7  # ceil(25 / 4)
        assert all(c.usage is None for c in chunks[:-1])
        assert api.calls[0].stream and api.calls[0].include_usage

        plain = await collect(api)
        assert "".join(texts(plain)) == content
        assert all(c.usage is None for c in plain) and all(c.choices for c in plain)
        assert not api.calls[1].include_usage

    run(scenario, responder=lambda request: content, chunk_chars=6)


def test_stream_with_explicit_chunks() -> None:
    async def scenario(api: FakeLLM) -> None:
        assert texts(await collect(api)) == ["a", "bc", "d"]

    run(scenario, responder=lambda request: Reply("abcd", chunks=["a", "bc", "d"]))


# ---------------------------------------------------------------------- structured output


class Grade(BaseModel):
    score: int
    verdict: Literal["good", "bad"]


@pytest.mark.parametrize("mode", ["json_schema", "json_object"])
def test_response_format_accepted_only_when_supported(mode: str) -> None:
    fmt = SCHEMA_FORMAT if mode == "json_schema" else {"type": "json_object"}
    other = "json_object" if mode == "json_schema" else "json_schema"

    async def scenario_supported(api: FakeLLM) -> None:
        reply = await ask(api, response_format=fmt)
        assert reply.choices[0].message.content == '{"score": 4}'
        assert api.calls[-1].mode == mode and api.calls[-1].response_format == fmt

    async def scenario_unsupported(api: FakeLLM) -> None:
        with pytest.raises(openai.BadRequestError, match=f"but got: {mode}") as caught:
            await ask(api, response_format=fmt)
        assert caught.value.status_code == 400
        assert isinstance(caught.value.body, dict) and caught.value.body["param"] == (
            "response_format"
        )
        assert (await ask(api)).choices[0].message.content == '{"score": 4}'  # text still works
        assert [(c.mode, c.status) for c in api.calls] == [(mode, 400), ("text", 200)]

    answer = '{"score": 4}'
    run(scenario_supported, supports={mode}, responder=lambda request: answer)
    run(scenario_unsupported, supports={other}, responder=lambda request: answer)
    run(scenario_unsupported, supports=(), responder=lambda request: answer)


def test_parse_sends_a_strict_json_schema() -> None:
    async def scenario(api: FakeLLM) -> None:
        async with client(api) as c:
            reply = await c.chat.completions.parse(
                model="fake-model", messages=USER, response_format=Grade
            )
            assert reply.choices[0].message.parsed == Grade(score=3, verdict="good")
            fmt = api.calls[0].response_format
            assert fmt is not None and fmt["type"] == "json_schema"
            assert fmt["json_schema"]["name"] == "Grade" and fmt["json_schema"]["strict"] is True
            assert fmt["json_schema"]["schema"]["additionalProperties"] is False
            assert check_json('{"score": 3, "verdict": "good"}', api.calls[0].body)["score"] == 3
            with pytest.raises(ValueError, match=r"\$\.verdict"):
                check_json('{"score": 3, "verdict": "meh"}', api.calls[0].body)

            api.responder = lambda request: '{"score": "three", "verdict": "good"}'
            with pytest.raises(ValidationError):  # not an openai error
                await c.chat.completions.parse(
                    model="fake-model", messages=USER, response_format=Grade
                )
            api.responder = lambda request: Reply('{"score": 3', finish_reason="length")
            with pytest.raises(openai.LengthFinishReasonError):
                await c.chat.completions.parse(
                    model="fake-model", messages=USER, response_format=Grade
                )

    run(scenario, responder=lambda request: '{"score": 3, "verdict": "good"}')


def test_llama_cpp_python_style_rejection_is_a_retried_500() -> None:
    async def scenario(api: FakeLLM) -> None:
        with pytest.raises(openai.InternalServerError, match="json_schema"):
            await ask(api, response_format=SCHEMA_FORMAT, client_kw={"max_retries": 1})
        assert [c.status for c in api.calls] == [500, 500]

    run(scenario, supports={"json_object"}, reject_status=500)


def test_check_json_subset() -> None:
    schema = {
        "type": "object",
        "$defs": {"Item": {"type": "object", "properties": {"n": {"type": "integer"}}}},
        "properties": {
            "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}, "maxItems": 2},
            "note": {"anyOf": [{"type": "string", "maxLength": 3}, {"type": "null"}]},
        },
        "required": ["items"],
    }
    request = {"response_format": {"type": "json_schema", "json_schema": {"schema": schema}}}
    assert check_json('{"items": [{"n": 1}], "note": null}', request) == {
        "items": [{"n": 1}],
        "note": None,
    }
    for bad, where in [
        ('{"items": [{"n": "1"}]}', r"\$\.items\[0\]\.n"),
        ('{"items": [{}, {}, {}]}', "more than 2"),
        ('{"items": [], "note": "long"}', "anyOf"),
        ('{"note": "x"}', "required property 'items'"),
    ]:
        with pytest.raises(ValueError, match=where):
            check_json(bad, request)
    with pytest.raises(json.JSONDecodeError):
        check_json('{"items": [', request)
    llama = {"response_format": {"type": "json_object", "schema": {"type": "array"}}}
    with pytest.raises(ValueError, match="expected array"):
        check_json("{}", llama)
    assert check_json("[1]") == [1]  # no request: just JSON


# ---------------------------------------------------------------------- faults


def test_429_retry_after_is_honoured_once() -> None:
    async def scenario(api: FakeLLM) -> None:
        api.fail_next(429, retry_after=0.2)
        start = time.monotonic()
        reply = await ask(api, client_kw={"max_retries": 1})
        assert time.monotonic() - start >= 0.2
        assert reply.choices[0].message.content.startswith("echo:")
        first, second = api.calls
        assert (first.status, first.fault, second.status) == (429, "status", 200)
        assert (first.retry_count, second.retry_count) == (0, 1)
        assert second.at - first.at >= 0.2

        api.fail_next(429, retry_after=0.2)
        with pytest.raises(openai.RateLimitError) as caught:
            await ask(api)
        assert caught.value.response.headers["retry-after"] == "0.2"
        assert len(api.calls) == 3 and api.pending_faults == 0

        api.fail_next(429, retry_after=0.01, headers={"x-should-retry": "false"})
        with pytest.raises(openai.RateLimitError):
            await ask(api, client_kw={"max_retries": 1})
        assert len(api.calls) == 4

    run(scenario)


def test_faults_are_consumed_in_order() -> None:
    async def scenario(api: FakeLLM) -> None:
        api.fail_next(503, retry_after=0.01, message="overloaded")
        api.fail_next(429, retry_after=0.01)
        reply = await ask(api, client_kw={"max_retries": 2})
        assert reply.choices[0].message.content.startswith("echo:")
        assert [(c.status, c.retry_count) for c in api.calls] == [(503, 0), (429, 1), (200, 2)]
        assert api.calls[0].error == "overloaded"

    run(scenario)


def test_503_is_an_internal_server_error() -> None:
    async def scenario(api: FakeLLM) -> None:
        api.fail_next(503)
        with pytest.raises(openai.InternalServerError) as caught:
            await ask(api)
        assert caught.value.status_code == 503
        assert isinstance(caught.value.body, dict) and "overloaded" in caught.value.body["message"]

    run(scenario)


def test_connection_reset() -> None:
    async def scenario(api: FakeLLM) -> None:
        api.reset_next()
        with pytest.raises(openai.APIConnectionError) as caught:
            await ask(api)
        assert not isinstance(caught.value, openai.APITimeoutError)
        assert isinstance(caught.value.__cause__, httpx2.RemoteProtocolError)
        assert (api.calls[0].status, api.calls[0].fault) == (0, "reset")

        api.reset_next()  # the SDK retries a reset POST (after ~0.5 s of backoff)
        reply = await ask(api, client_kw={"max_retries": 1})
        assert reply.choices[0].message.content.startswith("echo:")
        assert [c.status for c in api.calls[1:]] == [0, 200]

    run(scenario)


def test_truncated_body() -> None:
    async def scenario(api: FakeLLM) -> None:
        api.truncate_next()
        with pytest.raises(json.JSONDecodeError):  # a ValueError, not an openai.APIError
            await ask(api, client_kw={"max_retries": 1})
        assert len(api.calls) == 1  # not retried

        api.truncate_next(abort=True)
        with pytest.raises(openai.APIConnectionError):
            await ask(api)
        assert [(c.status, c.fault) for c in api.calls] == [(200, "truncate"), (200, "truncate")]

    run(scenario)


def test_malformed_body() -> None:
    async def scenario(api: FakeLLM) -> None:
        api.malformed_next()
        with pytest.raises(json.JSONDecodeError):
            await ask(api)

        api.malformed_next("<html>oops</html>", content_type="text/html")
        assert await ask(api) == "<html>oops</html>"  # the SDK hands back the raw text!

        api.malformed_next("<html>oops</html>", content_type="text/html")
        with pytest.raises(openai.APIResponseValidationError):
            await ask(api, client_kw={"_strict_response_validation": True})
        assert [c.fault for c in api.calls] == ["malformed"] * 3

    run(scenario)


def test_stream_faults() -> None:
    content = "abcdefghijklmnop"  # four chunks of four

    async def scenario(api: FakeLLM) -> None:
        api.truncate_next()  # clean end without [DONE]: the SDK notices nothing
        chunks = await collect(api)
        assert texts(chunks) == ["abcd", "efgh"]
        assert all(c.choices[0].finish_reason is None for c in chunks)

        api.truncate_next(abort=True, after_chunks=1)
        with pytest.raises(openai.APIConnectionError):
            await collect(api)

        api.malformed_next()
        with pytest.raises(json.JSONDecodeError):
            await collect(api)

        api.fail_next(503)  # a status fault comes before the stream starts
        with pytest.raises(openai.InternalServerError):
            await collect(api)
        assert [c.fault for c in api.calls] == ["truncate", "truncate", "malformed", "status"]

    run(scenario, responder=lambda request: content)


def test_stream_stall_times_out() -> None:
    async def scenario(api: FakeLLM) -> None:
        start = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            await collect(api, client_kw={"timeout": 0.1})
        assert time.monotonic() - start < 0.3

    run(scenario, responder=lambda request: Reply("abcdefgh", chunk_delay=0.3))


# ---------------------------------------------------------------------- latency and auth


def test_latency_is_honoured() -> None:
    async def scenario(api: FakeLLM) -> None:
        api.latency = 0.15
        start = time.monotonic()
        await ask(api)
        assert time.monotonic() - start >= 0.15

        api.latency = 0.0
        api.responder = lambda request: Reply("slow", latency=0.15)
        start = time.monotonic()
        assert (await ask(api)).choices[0].message.content == "slow"
        assert time.monotonic() - start >= 0.15

        api.latency = 0.3
        start = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            await ask(api, client_kw={"timeout": 0.1})
        assert time.monotonic() - start < 0.3
        for _ in range(100):  # the server notices the client left
            if api.calls[-1].error:
                break
            await asyncio.sleep(0.01)
        assert (api.calls[-1].status, api.calls[-1].error) == (0, "client disconnected")

    run(scenario)


def test_wrong_api_key() -> None:
    async def scenario(api: FakeLLM) -> None:
        with pytest.raises(openai.AuthenticationError) as caught:
            await ask(api, client_kw={"api_key": "sk-wrong"})
        assert isinstance(caught.value.body, dict)
        assert caught.value.body["code"] == "invalid_api_key"
        assert api.calls[0].status == 401

    run(scenario)

    async def any_key(api: FakeLLM) -> None:
        assert (await ask(api, client_kw={"api_key": "whatever"})).choices

    asyncio.run(_with(FakeLLM(None), any_key))


async def _with(api: FakeLLM, scenario: Scenario) -> None:
    async with api:
        await scenario(api)


# ---------------------------------------------------------------------- responder errors


def test_responder_error_is_a_loud_500() -> None:
    def broken(request: dict[str, Any]) -> str:
        raise KeyError("no canned answer")

    async def scenario(api: FakeLLM) -> None:
        with pytest.raises(openai.InternalServerError, match="no canned answer"):
            await ask(api, client_kw={"max_retries": 2})
        assert len(api.calls) == 1  # x-should-retry: false
        assert len(api.errors) == 1

    with pytest.raises(AssertionError, match="responder failed"):
        run(scenario, responder=broken)
    run(scenario, responder=broken, raise_responder_errors=False)


# ---------------------------------------------------------------------- cassette


def test_cassette_record_then_replay(tmp_path: Path) -> None:
    path = tmp_path / "grader.json"
    produced: list[str] = []

    def live(request: dict[str, Any]) -> str:
        answer = f"评分：{len(produced) + 1}"
        produced.append(answer)
        return answer

    questions = ["第一句", "第二句"]

    async def exchange(api: FakeLLM) -> list[str]:
        out = []
        async with client(api) as c:
            for q in questions:
                reply = await c.chat.completions.create(
                    model="fake-model",
                    messages=[{"role": "user", "content": q}],
                    response_format=SCHEMA_FORMAT,
                )
                out.append(reply.choices[0].message.content or "")
        return out

    recorded: list[str] = []

    async def record(api: FakeLLM) -> None:
        recorded.extend(await exchange(api))

    cassette = Cassette(path, record=True)
    run(record, responder=cassette.responder(live))
    assert recorded == ["评分：1", "评分：2"] and len(cassette.recorded) == 2

    text = path.read_text(encoding="utf-8")
    assert "评分：1" in text and "\\u" not in text  # Chinese unescaped
    data = json.loads(text)
    assert list(data) == sorted(data) and len(data) == 2
    entry = data[request_key(_body("第一句"))]
    assert entry == {
        "content": "评分：1",
        "last_message": "第一句",
        "mode": "json_schema",
        "model": "fake-model",
    }

    replay = Cassette(path)
    replayed: list[str] = []

    async def again(api: FakeLLM) -> None:
        replayed.extend(await exchange(api))

    run(again, responder=replay.responder(live))
    assert replayed == recorded and len(produced) == 2  # the fallback was not called
    assert len(replay.hits) == 2 and not replay.misses

    questions.append("没录过的一句")
    missing = request_key(_body("没录过的一句"))

    async def miss(api: FakeLLM) -> None:
        with pytest.raises(openai.InternalServerError, match=missing):
            await exchange(api)
        assert len(api.calls) == 3 and api.calls[-1].status == 500
        assert missing in api.errors[0]
        api.errors.clear()

    run(miss, responder=Cassette(path).responder(live))
    assert len(produced) == 2 and json.loads(path.read_text(encoding="utf-8")) == data


def _body(question: str) -> dict[str, Any]:
    """The request the SDK sends in the cassette test (only keyed fields matter)."""
    return {
        "model": "fake-model",
        "messages": [{"role": "user", "content": question}],
        "response_format": SCHEMA_FORMAT,
    }


def test_request_key_is_canonical() -> None:
    a = {"model": "m", "messages": USER, "temperature": 0.1}
    b = {"messages": json.loads(json.dumps(USER)), "model": "m", "temperature": 0.9}
    assert request_key(a) == request_key(b)
    assert request_key(a) != request_key(a | {"response_format": {"type": "json_object"}})
    assert len(request_key(a)) == 64


def test_a_single_slot_server_decodes_one_request_at_a_time_even_if_its_client_left() -> None:
    decoding = Decoding(0.6, answer="done")

    async def scenario(api: FakeLLM) -> None:
        async def one(text: str, timeout: float = 30.0) -> Any:
            async with client(api, timeout=timeout) as c:
                user: list[ChatCompletionMessageParam] = [{"role": "user", "content": text}]
                return await c.chat.completions.create(model="fake-model", messages=user)

        gave_up = asyncio.create_task(one("abandoned", timeout=0.3))
        while not decoding.started:  # on a loaded machine the request may take a while
            await asyncio.sleep(0.01)
        waited = await one("next")
        with pytest.raises(openai.APITimeoutError):
            await gave_up
        assert waited.choices[0].message.content == "done"
        # decoded though abandoned
        assert decoding.most == 1 and decoding.finished == ["abandoned", "next"]

    run(scenario, responder=decoding, slots=1)
