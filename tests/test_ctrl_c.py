"""A real SIGINT to `trainer play` at each point of a session: it saves and ends cleanly.

The points: while the program loads, while the customer writes the opening line, while
the trainee types, while a reply is graded and while the customer answers it. A model
(the fake OpenAI-compatible server) makes the last three last until Ctrl-C is pressed: it
holds its answer until then. Ctrl-C pressed once lets the work in flight finish, then ends
and saves the session; pressed twice, it stops at once and says how to resume.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from llmapi import FakeLLM

TRAINER = [str(Path(sys.executable).with_name("trainer"))]
REPLY = "I'm so sorry your kettle arrived cracked. Could you send the order number and photos?"
SLOW_S = 2.0
"""How long the fake model takes to write the opening while the program loads."""


class Play:
    """A `trainer play damaged-kettle` process on pipes, its output read as it comes."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.output = ""
        self._reading = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while chunk := await self.proc.stdout.read(4096):
            self.output += chunk.decode(errors="replace")

    async def shows(self, text: str) -> None:
        """Wait until the output has ``text``."""
        for _ in range(2400):  # 120 s: a generous bound for a loaded machine
            if text in self.output:
                return
            assert not self._reading.done(), self.output
            await asyncio.sleep(0.05)
        raise AssertionError(f"never showed {text!r}:\n{self.output}")

    def type(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")

    async def ctrl_c(self, times: int = 1) -> None:
        """Press Ctrl-C (signals sent together would arrive as one, so a human's pause)."""
        for press in range(times):
            if press:
                await asyncio.sleep(0.3)
            self.proc.send_signal(signal.SIGINT)

    async def finish(self) -> int:
        await asyncio.wait_for(self.proc.wait(), 120)
        await self._reading
        assert "Traceback" not in self.output and "Aborted!" not in self.output, self.output
        return int(self.proc.returncode or 0)


def _sessions(db: Path) -> list[tuple[str, str | None]]:
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        return [(s, o) for s, o in conn.execute("SELECT status, outcome FROM sessions")]


def _count(db: Path, table: str, where: str = "1=1") -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table} WHERE {where}").fetchone()[0])


def _run(
    tmp_path: Path,
    roles: tuple[str, ...],
    scene: Callable[[Play, FakeLLM], Awaitable[None]],
    *,
    latency: float = 0.0,
    held: bool = False,
) -> None:
    """Start `trainer play` (``roles`` played by the model) and act ``scene`` on it.

    ``held``: the model holds its answers from the start, until ``api.hold`` is set.
    """

    async def main() -> None:
        async with FakeLLM(api_key="sk-test", latency=latency) as api:
            if held:
                api.hold = asyncio.Event()
            env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINER_")}
            env.update(
                OPENAI_BASE_URL=api.base_url, OPENAI_API_KEY="sk-test", TRAINER_LLM_MODEL="m"
            )
            args = [f"--{role}=llm" for role in roles]
            proc = await asyncio.create_subprocess_exec(
                *TRAINER, "--db", str(tmp_path / "t.db"), "play", "damaged-kettle",
                "--lang", "en", "--plain", "--trainee", "t", *args,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, env=env, cwd=tmp_path,
            )  # fmt: skip
            await scene(Play(proc), api)

    asyncio.run(main())


def _completions(api: FakeLLM) -> int:
    return sum(call.path.endswith("/chat/completions") for call in api.calls)


async def _asked(api: FakeLLM, calls: int) -> None:
    """Wait until the model has been asked ``calls`` times (the last is being answered)."""
    for _ in range(2400):
        if _completions(api) >= calls:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the model was asked {_completions(api)} times, not {calls}")


def _hold(api: FakeLLM) -> None:
    """Hold the model's next answers until :func:`_answer` (Ctrl-C comes in between)."""
    api.hold = asyncio.Event()


def _answer(api: FakeLLM) -> None:
    """Let the model answer what it holds, and answer at once from now on."""
    assert api.hold is not None
    api.hold.set()


@pytest.mark.parametrize("delay", [0.1, 0.3, 0.6, 1.0])
def test_ctrl_c_while_the_program_loads_stops_it_in_one_line(tmp_path: Path, delay: float) -> None:
    """Whenever the press comes while starting, it ends cleanly: said in one line while the
    program loads, or held back until the customer's opening, then saved and ended."""

    async def scene(play: Play, api: FakeLLM) -> None:
        await asyncio.sleep(delay)
        await play.ctrl_c()
        code = await play.finish()
        if code == -signal.SIGINT:  # before Python's own handler was in place: no output
            assert not play.output.strip(), play.output
        elif code == 130:
            assert play.output.strip().endswith("已停止 / Stopped (Ctrl-C).")
        else:
            assert code == 0 and "Interrupted: the session was ended and saved." in play.output
        assert all(status == "ended" for status, _ in _sessions(tmp_path / "t.db"))

    _run(tmp_path, ("customer",), scene, latency=SLOW_S)


def test_ctrl_c_while_the_customer_writes_the_opening_ends_the_session_after_it(
    tmp_path: Path,
) -> None:
    async def scene(play: Play, api: FakeLLM) -> None:
        await _asked(api, 1)
        await play.ctrl_c()
        _answer(api)
        assert await play.finish() == 0
        assert "Interrupted: the session was ended and saved." in play.output
        assert _sessions(tmp_path / "t.db") == [("ended", "trainee_ended")]
        assert _count(tmp_path / "t.db", "turns", "role = 'customer'") == 1  # the opening

    _run(tmp_path, ("customer",), scene, held=True)


def test_ctrl_c_twice_while_the_customer_writes_the_opening_stops_at_once_and_resumes(
    tmp_path: Path,
) -> None:
    async def scene(play: Play, api: FakeLLM) -> None:
        await _asked(api, 1)
        await play.ctrl_c(2)
        _answer(api)  # too late: the program stopped waiting for it
        assert await play.finish() == 130
        assert "trainer play --resume" in play.output.replace("\n", " ")
        assert _sessions(tmp_path / "t.db") == [("active", None)]

    _run(tmp_path, ("customer",), scene, held=True)


def test_ctrl_c_while_the_trainee_types_ends_and_saves(tmp_path: Path) -> None:
    async def scene(play: Play, api: FakeLLM) -> None:
        await play.shows("You ›")
        await play.ctrl_c()
        assert await play.finish() == 0
        assert "Interrupted" in play.output and "Scorecard" in play.output
        assert _sessions(tmp_path / "t.db") == [("ended", "trainee_ended")]

    _run(tmp_path, (), scene)


def test_ctrl_c_while_a_reply_is_graded_finishes_the_grade_then_ends(tmp_path: Path) -> None:
    async def scene(play: Play, api: FakeLLM) -> None:
        await play.shows("You ›")
        _hold(api)
        play.type(REPLY)
        await _asked(api, 1)  # the judge is reading the reply
        await play.ctrl_c()
        _answer(api)
        assert await play.finish() == 0
        assert "Interrupted" in play.output and "Scorecard" in play.output
        assert _sessions(tmp_path / "t.db") == [("ended", "trainee_ended")]
        assert _count(tmp_path / "t.db", "grades", "grader = 'llm_judge'") >= 1

    _run(tmp_path, ("judge",), scene)


def test_ctrl_c_while_the_customer_answers_keeps_the_answer_then_ends(tmp_path: Path) -> None:
    async def scene(play: Play, api: FakeLLM) -> None:
        await play.shows("You ›")
        _hold(api)
        play.type(REPLY)
        await _asked(api, 2)  # the opening, then the answer to the reply
        await play.ctrl_c()
        _answer(api)
        assert await play.finish() == 0
        assert "Interrupted" in play.output
        assert _sessions(tmp_path / "t.db") == [("ended", "trainee_ended")]
        assert _count(tmp_path / "t.db", "turns", "role = 'customer'") == 2

    _run(tmp_path, ("customer",), scene)
