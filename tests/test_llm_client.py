"""LLM settings, the LLM client and `trainer llm check`, against the fake OpenAI-compatible
server through the real openai SDK."""

from __future__ import annotations

import asyncio
import json
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from bot.cli import cli
from bot.config import ConfigError
from bot.llm import LLMClient, LLMError, LLMSettings, RoleSettings, llm_settings
from bot.llm import client as client_module
from bot.llm.client import DEFAULT_CONCURRENCY, forget_endpoints
from bot.llm.roles import Assistants
from bot.storage import Store
from tests.llmapi import Decoding, FakeLLM, Reply, serve

KEY = "sk-test-secret-0123456789"
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"score": {"type": "integer"}},
    "required": ["score"],
    "additionalProperties": False,
}
SYSTEM = [
    {"role": "system", "content": "You grade replies."},
    {"role": "user", "content": "顾客说水壶坏了"},
]
USER = [{"role": "user", "content": "hello"}]
ENV = [
    "TRAINER_CONFIG",
    "OPENAI_BASE_URL",
    "OPENAI_API_KEY",
    "TRAINER_LLM_MODEL",
    *(
        f"TRAINER_LLM_{role}_{key}"
        for role in ("CUSTOMER", "JUDGE", "REWRITER")
        for key in ("MODEL", "BASE_URL", "API_KEY")
    ),
]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no ./trainer.toml
    yield


def settings(api: FakeLLM, **kw: Any) -> RoleSettings:
    options: dict[str, Any] = {"timeout_s": 5.0, "structured": "auto"} | kw
    return RoleSettings(base_url=api.base_url, api_key=KEY, model="fake-model", **options)


run = partial(serve, api_key=KEY)


async def error_of(client: LLMClient, **kw: Any) -> LLMError:
    with pytest.raises(LLMError) as caught:
        await client.complete(USER, **kw)
    assert KEY not in str(caught.value)
    return caught.value


# ---------------------------------------------------------------------- settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "trainer.toml"
    path.write_text(text, encoding="utf-8")
    return path


def endpoint_config(tmp_path: Path, api: FakeLLM) -> Path:
    """A config file for every role on the fake server."""
    return write(
        tmp_path,
        f'[llm]\nbase_url = "{api.base_url}"\napi_key = "{KEY}"\nmodel = "fake-model"\n',
    )


def test_no_config_means_no_role() -> None:
    found = llm_settings(None)
    assert found == LLMSettings({})
    assert found.for_role("judge") is None


def test_precedence_file_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(
        tmp_path,
        """
[llm]
base_url = "http://shared-file/v1"
api_key = "sk-shared-file"
model = "shared-file-model"
timeout_s = 7
structured = "json_object"

[llm.judge]
model = "judge-file-model"
base_url = "http://judge-file/v1"
temperature = 0.0
structured = "text"
""",
    )
    found = llm_settings(path)
    judge, customer = found.for_role("judge"), found.for_role("customer")
    assert judge == RoleSettings(
        "http://judge-file/v1", "sk-shared-file", "judge-file-model", 7.0, "text", 0.0
    )
    assert customer == RoleSettings(
        "http://shared-file/v1", "sk-shared-file", "shared-file-model", 7.0, "json_object"
    )

    monkeypatch.setenv("OPENAI_BASE_URL", "http://shared-env/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-shared-env")
    monkeypatch.setenv("TRAINER_LLM_MODEL", "shared-env-model")
    found = llm_settings(path)
    judge, customer = found.for_role("judge"), found.for_role("customer")
    assert judge is not None and customer is not None
    # per-role file beats shared env; shared env beats shared file
    assert (judge.base_url, judge.api_key, judge.model) == (
        "http://judge-file/v1",
        "sk-shared-env",
        "judge-file-model",
    )
    assert (customer.base_url, customer.model) == ("http://shared-env/v1", "shared-env-model")

    monkeypatch.setenv("TRAINER_LLM_JUDGE_MODEL", "judge-env-model")
    monkeypatch.setenv("TRAINER_LLM_JUDGE_BASE_URL", "http://judge-env/v1")
    monkeypatch.setenv("TRAINER_LLM_JUDGE_API_KEY", "sk-judge-env")
    judge = llm_settings(path).for_role("judge")
    assert judge is not None
    assert (judge.base_url, judge.api_key, judge.model) == (
        "http://judge-env/v1",
        "sk-judge-env",
        "judge-env-model",
    )


def test_environment_alone_configures_one_role(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINER_LLM_CUSTOMER_MODEL", "qwen-plus")
    found = llm_settings(None)
    assert found.for_role("judge") is None
    customer = found.for_role("customer")
    assert customer == RoleSettings(None, None, "qwen-plus")
    assert (customer.timeout_s, customer.structured, customer.temperature) == (20.0, "auto", None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[llm]\nmodle = "x"', ["unknown key(s) in [llm]: modle", "known keys: base_url"]),
        ('[llm.boss]\nmodel = "x"', ["unknown key(s) in [llm]: boss", "customer, judge"]),
        ('[llm.judge]\nkey = "x"', ["unknown key(s) in [llm.judge]: key", "api_key"]),
        (
            '[llm]\nstructured = "xml"',
            ["[llm] structured", "'xml'", "json_schema, grammar, json_object"],
        ),
        ("[llm.judge]\ntimeout_s = 0", ["[llm.judge] timeout_s", "more than 0"]),
        ("[llm]\ntimeout_s = -1", ["[llm] timeout_s", "more than 0"]),
        ('[llm]\ntimeout_s = "soon"', ["[llm] timeout_s", "not a number of seconds"]),
        ("[llm]\nmodel = 3", ["[llm] model", "must be a string"]),
        ('llm = "x"', ["[llm] must be a table"]),
        ('[llm]\nmodel = "m"\nmax_concurrency = 0', ["max_concurrency must be 1 or more"]),
        ('[llm]\nmodel = "m"\nmax_concurrency = "two"', ["max_concurrency = 'two'"]),
    ],
)
def test_config_errors_name_the_file_and_the_fix(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        llm_settings(path)
    message = str(caught.value)
    assert str(path) in message
    for part in expected:
        assert part in message


def test_max_concurrency_is_read_per_role(tmp_path: Path) -> None:
    path = write(tmp_path, '[llm]\nmodel = "m"\n[llm.judge]\nmax_concurrency = 1\n')
    found = llm_settings(path)
    judge, customer = found.for_role("judge"), found.for_role("customer")
    assert judge is not None and judge.max_concurrency == 1
    assert customer is not None and customer.max_concurrency is None  # no limit


def test_api_key_is_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINER_LLM_JUDGE_MODEL", "m")
    monkeypatch.setenv("TRAINER_LLM_JUDGE_API_KEY", KEY)
    found = llm_settings(None)
    judge = found.for_role("judge")
    assert judge is not None and judge.api_key == KEY
    assert KEY not in repr(found) and KEY not in str(judge) and "model='m'" in repr(judge)

    async def scenario(api: FakeLLM) -> None:
        async with LLMClient(settings(api)) as client:
            assert KEY not in repr(client)

    run(scenario)


# ---------------------------------------------------------------------- completions


def test_plain_completion() -> None:
    async def scenario(api: FakeLLM) -> None:
        async with LLMClient(settings(api, temperature=0.2)) as client:
            done = await client.complete(USER, max_tokens=50)
        assert done.text == "echo: hello" and done.model == "fake-model"
        assert done.mode == "plain" and done.elapsed_s > 0
        assert json.loads(done.raw)["choices"][0]["message"]["content"] == "echo: hello"
        (call,) = api.completions
        assert call.response_format is None and call.messages == USER
        assert (call.temperature, call.max_tokens, call.model) == (0.2, 50, "fake-model")
        assert call.headers["authorization"] == f"Bearer {KEY}"

    run(scenario)


def test_requests_say_nothing_of_the_machine() -> None:
    """No SDK telemetry about the machine (OS, CPU, Python) goes to the model server."""

    async def scenario(api: FakeLLM) -> None:
        async with LLMClient(settings(api)) as client:
            await client.complete(USER)
            await client.complete(SYSTEM, schema=SCHEMA, schema_name="grade")

    api = run(scenario)
    assert len(api.completions) >= 2
    for call in api.completions:
        sent = {name for name in call.headers if name.startswith("x-stainless")}
        assert sent <= {
            "x-stainless-retry-count",
            "x-stainless-read-timeout",
            "x-stainless-raw-response",
        }
        assert call.headers["content-type"] == "application/json"


def test_json_schema_mode_sends_a_strict_schema() -> None:
    async def scenario(api: FakeLLM) -> None:
        async with LLMClient(settings(api, structured="json_schema")) as client:
            done = await client.complete(SYSTEM, schema=SCHEMA, schema_name="grade")
        assert (done.text, done.mode) == ('{"score": 3}', "json_schema")
        call = api.completions[-1]
        assert call.response_format == {
            "type": "json_schema",
            "json_schema": {"name": "grade", "schema": SCHEMA, "strict": True},
        }
        assert call.messages == SYSTEM

    run(scenario, responder=lambda request: '{"score": 3}')


def test_json_object_mode_puts_the_schema_in_the_system_message() -> None:
    async def scenario(api: FakeLLM) -> None:
        async with LLMClient(settings(api, structured="json_object")) as client:
            done = await client.complete(SYSTEM, schema=SCHEMA)
            assert done.mode == "json_object"
            call = api.completions[-1]
            assert call.response_format == {"type": "json_object"}
            system, user = call.messages
            assert system["content"].startswith("You grade replies.")
            assert "JSON" in system["content"]  # DeepSeek wants the word in the prompt
            assert json.dumps(SCHEMA) in system["content"] and user == SYSTEM[1]
            assert SYSTEM[0]["content"] == "You grade replies."  # the caller's list is intact

            await client.complete(USER, schema=SCHEMA)  # no system message: one is added
            first, second = api.completions[-1].messages
            assert first["role"] == "system" and json.dumps(SCHEMA) in first["content"]
            assert second == USER[0]

    run(scenario, responder=lambda request: '{"score": 3}')


def test_text_mode_has_no_response_format() -> None:
    async def scenario(api: FakeLLM) -> None:
        async with LLMClient(settings(api, structured="text")) as client:
            done = await client.complete(SYSTEM, schema=SCHEMA)
        assert done.mode == "text"
        call = api.completions[-1]
        assert call.response_format is None and "response_format" not in call.body
        assert json.dumps(SCHEMA) in call.messages[0]["content"]

    run(scenario, responder=lambda request: '{"score": 3}', supports=())


@pytest.mark.parametrize(
    ("supports", "tried", "settled"),
    [
        ({"json_schema", "json_object"}, [("json_schema", 200)], "json_schema"),
        # the grammar probe's schema is ignored (a 200 without the mark): not used
        (
            {"json_object"},
            [("json_schema", 400), ("grammar", 200), ("json_object", 200)],
            "json_object",
        ),
        (
            set(),
            [("json_schema", 400), ("grammar", 400), ("json_object", 400), ("text", 200)],
            "text",
        ),
    ],
)
def test_auto_falls_back_on_400_and_remembers(
    supports: set[str], tried: list[tuple[str, int]], settled: str
) -> None:
    async def scenario(api: FakeLLM) -> None:
        async with LLMClient(settings(api)) as client:
            done = await client.complete(SYSTEM, schema=SCHEMA)
            assert done.mode == settled and client.auto_mode == settled
            assert [(c.mode, c.status) for c in api.completions] == tried
            api.calls.clear()
            again = await client.complete(SYSTEM, schema=SCHEMA)
            assert again.mode == settled and [c.mode for c in api.completions] == [settled]

    run(scenario, responder=lambda request: '{"score": 3}', supports=supports)


def test_auto_moves_on_when_a_server_answers_500_naming_json_schema_and_never_retries_it() -> None:
    """llama-cpp-python answers an unsupported response_format with a 500 the SDK retried."""

    async def scenario(api: FakeLLM) -> None:
        async with LLMClient(settings(api)) as client:
            done = await client.complete(SYSTEM, schema=SCHEMA)
            assert done.mode == "json_object" == client.auto_mode
            assert [(c.mode, c.status) for c in api.completions] == [
                ("json_schema", 500),  # once: a refusal is not retried
                ("grammar", 200),  # the schema was ignored
                ("json_object", 200),
            ]
        async with LLMClient(settings(api)) as other:  # another role, same server and model
            api.calls.clear()
            assert other.auto_mode == "json_object"
            await other.complete(SYSTEM, schema=SCHEMA)
            assert [c.mode for c in api.completions] == ["json_object"]

    run(scenario, responder=lambda request: '{"score": 3}', supports={"json_object"},
        reject_status=500)  # fmt: skip


def test_a_server_that_enforces_a_grammar_schema_gets_the_stricter_one_and_shows_it_to_no_one() -> (
    None
):
    """llama-cpp-python: json_schema is a 500, ``json_object`` + ``schema`` is a grammar."""
    strict = {**SCHEMA, "properties": {"score": {"type": "integer", "enum": [7]}}}

    async def scenario(api: FakeLLM) -> None:
        async with LLMClient(settings(api)) as client:
            done = await client.complete(SYSTEM, schema=SCHEMA, grammar=strict)
            assert done.mode == "grammar" == client.auto_mode
            assert json.loads(done.text) == {"score": 7}  # the decoder kept to the grammar
            assert [(c.mode, c.status) for c in api.completions] == [
                ("json_schema", 500),
                ("grammar", 200),  # the tiny check that the schema is enforced
                ("grammar", 200),
            ]
            asked = api.completions[-1]
            assert asked.response_format == {"type": "json_object", "schema": strict}
            assert asked.messages == SYSTEM  # neither schema is put in the prompt
            api.calls.clear()
            await client.complete(SYSTEM, schema=SCHEMA)  # no grammar: the schema is used
            assert api.completions[0].response_format == {"type": "json_object", "schema": SCHEMA}

    run(scenario, responder=lambda request: '{"score": 3}', supports={"grammar", "json_object"},
        reject_status=500)  # fmt: skip


def test_a_500_that_names_no_mode_is_a_server_error_not_a_refusal() -> None:
    async def scenario(api: FakeLLM) -> None:
        async with LLMClient(settings(api)) as client:
            api.fail_next(500, count=2)
            error = await error_of(client, schema=SCHEMA)
            assert error.reason == "server_error" and client.auto_mode is None

    run(scenario, responder=lambda request: '{"score": 3}')


def test_fixed_mode_does_not_fall_back() -> None:
    async def scenario(api: FakeLLM) -> None:
        async with LLMClient(settings(api, structured="json_schema")) as client:
            error = await error_of(client, schema=SCHEMA)
        assert error.reason == "bad_request" and "HTTP 400" in str(error)
        assert len(api.completions) == 1

    run(scenario, supports={"json_object"})


def test_probe_finds_the_modes_and_auto_uses_it() -> None:
    async def scenario(api: FakeLLM) -> None:
        async with LLMClient(settings(api)) as client:
            result = await client.probe()
            assert result.ok and result.model == "fake-model" and result.latency_s > 0
            assert result.modes == {
                "json_schema": False, "grammar": False, "json_object": True, "text": True
            }  # fmt: skip
            assert "bad_request" in result.errors["json_schema"]
            assert "does not enforce" in result.errors["grammar"]
            assert result.auto == "json_object" == client.auto_mode
            api.calls.clear()
            done = await client.complete(SYSTEM, schema=SCHEMA)
            assert done.mode == "json_object" and len(api.completions) == 1

    run(scenario, responder=lambda request: '{"ok": true}', supports={"json_object"})


# ---------------------------------------------------------------------- failures


def test_rate_limited_after_exactly_one_retry() -> None:
    async def scenario(api: FakeLLM) -> None:
        async with LLMClient(settings(api)) as client:
            api.fail_next(429, retry_after=0.01, count=2)
            error = await error_of(client)
            assert error.reason == "rate_limited" and "HTTP 429" in error.message
            assert [(c.status, c.retry_count) for c in api.completions] == [(429, 0), (429, 1)]

            api.calls.clear()
            api.fail_next(429, retry_after=0.01)  # one failure: the SDK's retry succeeds
            assert (await client.complete(USER)).text == "echo: hello"
            assert [c.status for c in api.completions] == [429, 200]

    run(scenario)


def test_server_error_after_one_retry() -> None:
    async def scenario(api: FakeLLM) -> None:
        async with LLMClient(settings(api)) as client:
            api.fail_next(503, retry_after=0.01, count=2)
            error = await error_of(client)
        assert error.reason == "server_error" and "overloaded" in error.message
        assert [c.status for c in api.completions] == [503, 503]

    run(scenario)


def test_connection_reset() -> None:
    async def scenario(api: FakeLLM) -> None:
        async with LLMClient(settings(api)) as client:
            api.reset_next(count=2)
            error = await error_of(client)
        assert error.reason == "connection"
        assert [c.fault for c in api.completions] == ["reset", "reset"]

    run(scenario)


@pytest.mark.parametrize(
    "inject",
    [
        lambda api: api.truncate_next(),
        lambda api: api.malformed_next(),
        lambda api: api.malformed_next("<html>oops</html>", content_type="text/html"),
    ],
    ids=["truncated", "malformed", "html"],
)
def test_broken_bodies_are_bad_responses(inject: Callable[[FakeLLM], None]) -> None:
    async def scenario(api: FakeLLM) -> None:
        async with LLMClient(settings(api)) as client:
            inject(api)
            error = await error_of(client)
        assert error.reason == "bad_response"
        assert len(api.completions) == 1  # a 200 is not retried

    run(scenario)


def test_timeout_after_one_retry() -> None:
    async def scenario(api: FakeLLM) -> None:
        api.latency = 0.3
        async with LLMClient(settings(api, timeout_s=0.1)) as client:
            start = time.monotonic()
            error = await error_of(client)
        assert error.reason == "timeout" and "0.1 s" in error.message
        assert len(api.completions) == 2
        assert time.monotonic() - start < 2.5

    run(scenario)


def test_wrong_key_is_auth_and_the_key_stays_hidden() -> None:
    async def scenario(api: FakeLLM) -> None:
        wrong = RoleSettings(api.base_url, "sk-wrong-secret-key", "fake-model", 5.0)
        async with LLMClient(wrong) as client:
            with pytest.raises(LLMError) as caught:
                await client.complete(USER)
        assert caught.value.reason == "auth" and "HTTP 401" in str(caught.value)
        assert "sk-wrong-secret-key" not in str(caught.value)
        assert len(api.completions) == 1  # 401 is not retried

    run(scenario)


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (Reply('{"score":', finish_reason="length"), "truncated"),
        (Reply(""), "bad_response"),
        (Reply("   "), "bad_response"),
        (Reply("no", finish_reason="content_filter"), "refused"),
        (Reply("gone", status=404), "not_found"),
    ],
)
def test_unusable_answers(reply: Reply, reason: str) -> None:
    async def scenario(api: FakeLLM) -> None:
        async with LLMClient(settings(api)) as client:
            error = await error_of(client)
        assert error.reason == reason, error

    run(scenario, responder=lambda request: reply)


def test_a_key_echoed_by_the_server_is_masked() -> None:
    async def scenario(api: FakeLLM) -> None:
        async with LLMClient(settings(api)) as client:
            error = await error_of(client)  # asserts the key is absent
        assert error.reason == "bad_request" and "key ***" in error.message

    run(scenario, responder=lambda request: Reply(status=400, error=f"bad key {KEY}"))


def test_missing_finish_reason_is_a_bad_response() -> None:
    async def scenario(api: FakeLLM) -> None:
        async with LLMClient(settings(api)) as client:
            error = await error_of(client)
        assert error.reason == "bad_response" and "finish_reason" in error.message

    run(scenario, responder=lambda request: Reply("half", finish_reason=""))


# ---------------------------------------------------------------------- trainer llm check


async def invoke(*args: str, env: dict[str, str] | None = None, db: Path | None = None) -> Result:
    """Run the CLI in a worker thread (it has its own event loop) while the fake serves."""
    where = db or Path(tempfile.mkdtemp()) / "t.db"
    return await asyncio.to_thread(
        CliRunner().invoke, cli, ["--db", str(where), "llm", "check", *args], env=env, obj={}
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_check_a_working_endpoint(tmp_path: Path) -> None:
    async def scenario(api: FakeLLM) -> None:
        config = endpoint_config(tmp_path, api)
        result = await invoke("--config", str(config), "--role", "judge")
        assert result.exit_code == 0, result.output
        out = result.output
        assert f"judge: {api.base_url} model fake-model" in out and KEY not in out
        assert "plain completion: ok" in out
        assert "json_schema: no" in out and "json_object: ok" in out and "text: ok" in out
        assert "grammar: no (bad_request: response_format grammar: the server takes" in out
        assert "auto -> json_object" in out
        assert "customer" not in out

        assert "model listed: yes" in out and "tokens/s" in out

        api.calls.clear()
        result = await invoke("--config", str(config))  # every role: one server, one verdict
        assert result.exit_code == 0, result.output
        assert f"customer, judge, rewriter: {api.base_url}" in result.output
        assert result.output.count("plain completion: ok") == 1
        assert sum(c.path.endswith("/chat/completions") for c in api.calls) == 8  # once

    run(scenario, responder=lambda request: '{"ok": true}', supports={"json_object"})


def test_the_mode_check_finds_is_saved_and_a_new_process_starts_with_it(tmp_path: Path) -> None:
    async def scenario(api: FakeLLM) -> None:
        config = endpoint_config(tmp_path, api)
        db = tmp_path / "t.db"
        result = await invoke("--config", str(config), "--role", "judge", db=db)
        assert "auto -> json_object (saved: sessions start with it)" in result.output
        forget_endpoints()  # as a new process
        store = Store.open(db)
        assert store.recall_mode(api.base_url, "fake-model")[0] == "json_object"  # type: ignore[index]
        async with LLMClient(settings(api)) as judge:
            Assistants(judge=judge).remember_modes(store)
            api.calls.clear()
            await judge.complete(SYSTEM, schema=SCHEMA)
            assert [c.mode for c in api.completions] == ["json_object"]  # no json_schema try first
        store.close()

    run(scenario, responder=lambda request: '{"ok": true}', supports={"json_object"})


def test_a_saved_mode_the_server_no_longer_takes_is_found_again(tmp_path: Path) -> None:
    async def scenario(api: FakeLLM) -> None:
        store = Store.open(tmp_path / "t.db")
        store.remember_mode(api.base_url, "fake-model", "json_schema")  # an older server
        async with LLMClient(settings(api)) as judge:
            judge.memory = store
            done = await judge.complete(SYSTEM, schema=SCHEMA)
            assert done.mode == "json_object"
            assert [c.mode for c in api.completions] == ["json_schema", "grammar", "json_object"]
        assert store.recall_mode(api.base_url, "fake-model")[0] == "json_object"  # type: ignore[index]
        store.close()

    run(scenario, responder=lambda request: '{"ok": true}', supports={"json_object"})


def test_check_says_when_a_server_is_too_slow_for_the_judge(tmp_path: Path) -> None:
    async def scenario(api: FakeLLM) -> None:
        config = write(
            tmp_path,
            f'[llm]\nbase_url = "{api.base_url}"\napi_key = "{KEY}"\nmodel = "fake-model"\n'
            "timeout_s = 5\n",
        )
        result = await invoke("--config", str(config), "--role", "judge")
        assert result.exit_code == 0, result.output
        assert "too slow for the judge" in result.output and "raise timeout_s to" in result.output

    run(scenario, responder=lambda request: Reply('{"ok": true}', latency=0.8))


def test_a_plain_answer_cut_at_the_probes_token_limit_still_works() -> None:
    async def scenario(api: FakeLLM) -> None:
        async with LLMClient(settings(api)) as client:
            result = await client.probe()
            assert result.ok and "plain" not in result.errors

    def answer(request: dict[str, Any]) -> Reply:
        if "response_format" in request or "JSON Schema" in json.dumps(request):
            return Reply('{"ok": true}')
        return Reply("Sure! Here is a long and chatty health check answer", finish_reason="length")

    run(scenario, responder=answer)


def test_check_a_dead_endpoint() -> None:
    async def scenario(api: FakeLLM) -> None:
        env = {
            "TRAINER_LLM_CUSTOMER_MODEL": "fake-model",
            "TRAINER_LLM_CUSTOMER_BASE_URL": api.base_url,
            "TRAINER_LLM_CUSTOMER_API_KEY": KEY,
            "TRAINER_LLM_JUDGE_MODEL": "fake-model",
            "TRAINER_LLM_JUDGE_BASE_URL": f"http://127.0.0.1:{free_port()}/v1",
            "TRAINER_LLM_JUDGE_API_KEY": KEY,
        }
        result = await invoke(env=env)
        assert result.exit_code == 1, result.output
        assert "customer" in result.output and "plain completion: ok" in result.output
        assert "plain completion: FAILED: connection: connection refused" in result.output
        assert "rewriter: not configured" in result.output and KEY not in result.output

    run(scenario)


def test_check_unconfigured_and_config_errors(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["llm", "check"], obj={})
    assert result.exit_code == 0, result.output
    assert "TRAINER_LLM_JUDGE_MODEL" in result.output and "[llm.judge]" in result.output

    result = CliRunner().invoke(cli, ["llm", "check", "--role", "judge"], obj={})
    assert result.exit_code == 1 and "judge: not configured" in result.output

    bad = write(tmp_path, "[llm]\ntimeout_s = 0\n")
    result = CliRunner().invoke(cli, ["llm", "check", "--config", str(bad)], obj={})
    assert result.exit_code == 2
    assert str(bad) in result.output and "timeout_s" in result.output


# ---------------------------------------------------------------------- circuit breaker


def test_a_hung_server_costs_two_timeouts_then_is_not_asked_until_the_cool_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(client_module, "COOL_DOWN_S", 0.5)

    async def scenario(api: FakeLLM) -> None:
        async with (
            LLMClient(settings(api, timeout_s=0.3)) as customer,
            LLMClient(settings(api, timeout_s=0.3)) as judge,
        ):
            api.latency = 5.0  # hung: every request outlives the timeout
            for client in (customer, judge):
                assert (await error_of(client)).reason == "timeout"
            reached = len(api.completions)
            for client in (customer, judge, customer):  # every role, at once, no request
                error = await error_of(client)
                assert error.reason == "circuit_open" and "2 times in a row" in error.message
            assert len(api.completions) == reached
            api.latency = 0.0  # the server is back
            await asyncio.sleep(0.6)
            assert (await customer.complete(USER)).text  # the one trial goes, and closes it
            assert (await judge.complete(USER)).text
            assert len(api.completions) == reached + 2

    run(scenario)


def test_a_failed_trial_opens_the_breaker_again_and_a_refusal_does_not_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(client_module, "COOL_DOWN_S", 0.3)

    async def scenario(api: FakeLLM) -> None:
        async with LLMClient(settings(api)) as client:
            api.fail_next(400, count=3)  # the server answers: it is up
            for _ in range(3):
                assert (await error_of(client)).reason == "bad_request"
            assert (await client.complete(USER)).text
            api.fail_next(503, count=4, retry_after=0.01)  # two calls, each retried once
            for _ in range(2):
                assert (await error_of(client)).reason == "server_error"
            assert (await error_of(client)).reason == "circuit_open"
            await asyncio.sleep(0.35)
            api.fail_next(503, count=2, retry_after=0.01)
            assert (await error_of(client)).reason == "server_error"  # the trial fails
            assert (await error_of(client)).reason == "circuit_open"  # open again at once

    run(scenario)


def test_a_flapping_server_never_opens_the_breaker() -> None:
    async def scenario(api: FakeLLM) -> None:
        async with LLMClient(settings(api)) as client:
            for _ in range(4):
                api.fail_next(503, count=2, retry_after=0.01)
                assert (await error_of(client)).reason == "server_error"
                assert (await client.complete(USER)).text  # a success in between

    run(scenario)


# ---------------------------------------------------------------------- one server, few slots


def test_a_single_slot_server_gets_one_request_at_a_time_customer_first() -> None:
    decoding = Decoding(0.2)

    async def scenario(api: FakeLLM) -> None:
        one = settings(api, max_concurrency=1)
        async with (
            LLMClient(one, "customer") as customer,
            LLMClient(one, "judge") as judge,
            LLMClient(one, "rewriter") as rewriter,
        ):

            def ask(client: LLMClient, what: str) -> asyncio.Task[Any]:
                return asyncio.create_task(client.complete([{"role": "user", "content": what}]))

            first = ask(judge, "judge-1")  # takes the slot
            await asyncio.sleep(0.05)
            queued = [ask(rewriter, "rewrite"), ask(judge, "judge-2"), ask(customer, "customer")]
            await asyncio.gather(first, *queued)
        assert decoding.most == 1
        assert decoding.started == ["judge-1", "customer", "judge-2", "rewrite"]

    run(scenario, responder=decoding)


@pytest.mark.parametrize(
    ("props", "most"),
    [
        ({"total_slots": 1}, 1),  # llama.cpp started with one slot says so at GET /props
        ({"total_slots": 6}, 6),  # as many as it says it has
        (None, DEFAULT_CONCURRENCY),  # a server that reports nothing
    ],
)
def test_without_max_concurrency_a_server_gets_what_it_reports_else_four(
    props: dict[str, int] | None, most: int
) -> None:
    decoding = Decoding(0.2)

    async def scenario(api: FakeLLM) -> None:
        async with LLMClient(settings(api), "judge") as judge:
            asks = (judge.complete([{"role": "user", "content": f"{n}"}]) for n in range(6))
            await asyncio.gather(*asks)
        assert sum(c.path == "/props" for c in api.calls) == 1  # asked once, not per call

    run(scenario, responder=decoding, props=props)
    assert decoding.most == most


@pytest.mark.parametrize(("slots", "found"), [(1, 1), (None, 2)])
def test_check_measures_a_server_that_reports_no_slots_and_sessions_keep_to_it(
    tmp_path: Path, slots: int | None, found: int
) -> None:
    """llama-cpp-python's server reports no slots and decodes one request at a time."""
    decoding = Decoding(0.05, answer='{"ok": true}', per_token=0.01)

    async def scenario(api: FakeLLM) -> None:
        config = endpoint_config(tmp_path, api)
        db = tmp_path / "t.db"
        result = await invoke("--config", str(config), "--role", "judge", db=db)
        assert result.exit_code == 0, result.output
        if found == 1:
            assert (
                "decodes one request at a time (measured); sessions send at most 1 at once (saved)"
                in result.output
            )
        else:
            assert (
                "decodes several requests at once (measured); sessions send at most 4"
                in result.output
            )
        forget_endpoints()  # as a new process
        store = Store.open(db)
        assert store.recall_slots(api.base_url) == (found, "measured")
        decoding.most = 0
        async with LLMClient(settings(api), "judge") as judge:
            judge.memory = store
            await asyncio.gather(*(judge.complete(USER) for _ in range(3)))
        store.close()
        assert decoding.most == (1 if found == 1 else 3)

    run(scenario, responder=decoding, slots=slots)


def test_a_call_given_up_closes_its_connection_so_the_server_can_stop() -> None:
    """The server sees the connection close at once, not when its answer is ready."""

    async def scenario(api: FakeLLM) -> None:
        async with LLMClient(settings(api, max_concurrency=1)) as client:
            ask = client.complete(USER, budget_s=0.3)
            with pytest.raises(LLMError) as caught:
                await ask
            assert caught.value.reason == "timeout"
            deadline = time.monotonic() + 30
            while api.completions[-1].error != "client disconnected":
                assert time.monotonic() < deadline, api.describe()
                await asyncio.sleep(0.05)

    run(scenario, responder=lambda request: Reply("late", latency=20.0))


def test_a_call_given_up_while_waiting_for_a_slot_frees_nothing_it_did_not_take() -> None:

    async def scenario(api: FakeLLM) -> None:
        async with LLMClient(settings(api, max_concurrency=1), "judge") as client:
            busy = asyncio.create_task(client.complete(USER))
            await asyncio.sleep(0.05)
            error = await error_of(client, budget_s=0.1)  # gives up in the queue
            assert error.reason == "timeout"
            assert (await busy).text == "ok"
            assert (await client.complete(USER)).text == "ok"  # the slot is free again
            assert len(api.completions) == 2

    run(scenario, responder=Decoding(0.3))
