"""The trainer CLI, driven as a user would: piped input, files, exit codes, messages."""

from __future__ import annotations

import io
import json
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from bot.cli import cli
from graders.session import SessionGrader

ROOT = Path(__file__).resolve().parent.parent
GOOD_ZH = (
    "王女士您好，新水壶到手就是裂的，真的很抱歉。麻烦发一下订单号，再拍两张照片，我马上为您处理。\n"
    "照片收到了，确实摔裂了，给您添麻烦了。48小时内免费补发，或全额退款299元，1–3个工作日原路退回支付宝。\n"
    "为了保护您的信息，麻烦先提供收货人姓名或手机号后四位，我核实后为您确认地址。\n"
)


@pytest.fixture
def run(tmp_path: Path):  # type: ignore[no-untyped-def]
    db = tmp_path / "t.db"

    def invoke(*args: str, input: str | None = None):  # type: ignore[no-untyped-def]
        return CliRunner().invoke(cli, ["--db", str(db), *args], input=input, obj={})

    return invoke


def test_play_a_whole_session_from_a_pipe(run) -> None:
    result = run("play", "damaged-kettle", "--lang", "zh", "--seed", "1", input=GOOD_ZH)
    assert result.exit_code == 0, result.output
    assert "王女士" in result.output and "共情 3/3：" in result.output
    assert "通过" in result.output and "问题已解决" in result.output
    history = run("history", "--json")
    sessions = json.loads(history.output)
    assert sessions[0]["outcome"] == "resolved" and sessions[0]["passed"] is True


def test_exam_mode_shows_grades_only_at_the_end(run) -> None:
    result = run("play", "damaged-kettle", "--lang", "en", "--mode", "exam", "--seed", "1",
                 input="I'm so sorry your kettle arrived cracked. I'll sort it out.\n/end\n")  # fmt: skip
    assert result.exit_code == 0
    assert "Empathy 3/3" not in result.output and "Empathy" in result.output
    assert "Scorecard" in result.output and "NOT PASSED" in result.output


def test_end_of_input_ends_cleanly_and_saves(run) -> None:
    result = run("play", "damaged-kettle", "--lang", "zh", input="王女士您好，真的很抱歉。\n")
    assert result.exit_code == 0 and "已中断" in result.output and "已保存" in result.output
    assert json.loads(run("history", "--json").output)[0]["status"] == "ended"


def test_ctrl_c_ends_cleanly_and_saves(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    trainer = Path(sys.executable).with_name("trainer")
    proc = subprocess.Popen(
        [str(trainer), "--db", str(db), "play", "damaged-kettle", "--lang", "zh", "--plain"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdin is not None
    proc.stdin.write("王女士您好，真的很抱歉，我马上为您处理。\n")
    proc.stdin.flush()
    deadline = time.monotonic() + 300  # a generous bound for a loaded machine, not a timing
    answered = False
    while not answered and time.monotonic() < deadline:  # the reply is graded and answered
        if db.exists():
            try:
                with sqlite3.connect(db) as conn:
                    answered = conn.execute("SELECT COUNT(*) FROM turns").fetchone()[0] >= 3
            except sqlite3.OperationalError:  # the schema is still being created
                pass
        time.sleep(0.1)
    assert answered, "the reply was not answered within 300 s"
    # Ctrl-C while the feedback is printed or the trainee is typing: both end cleanly.
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert "已中断" in output and "Traceback" not in output
    with sqlite3.connect(db) as conn:
        status, outcome = conn.execute("SELECT status, outcome FROM sessions").fetchone()
        grades = conn.execute("SELECT COUNT(*) FROM grades").fetchone()[0]
    assert (status, outcome) == ("ended", "trainee_ended") and grades == 3


def _ctrl_c_while_grading(monkeypatch: pytest.MonkeyPatch, presses: int) -> None:
    """Press Ctrl-C ``presses`` times while the first reply is graded (a real SIGINT)."""
    grade = SessionGrader.trainee
    pressed = False

    async def graded_with_ctrl_c(self: SessionGrader, *args: Any, **kwargs: Any) -> Any:
        nonlocal pressed
        if not pressed:
            pressed = True
            for _ in range(presses):
                signal.raise_signal(signal.SIGINT)
        return await grade(self, *args, **kwargs)

    monkeypatch.setattr(SessionGrader, "trainee", graded_with_ctrl_c)


def _graded_replies(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT COUNT(DISTINCT turn_idx) FROM grades").fetchone()[0])


def test_ctrl_c_while_a_reply_is_graded_lets_it_finish(run, monkeypatch, tmp_path) -> None:
    _ctrl_c_while_grading(monkeypatch, presses=1)
    result = run("play", "damaged-kettle", "--lang", "en", "--plain",
                 input="I'm so sorry, I'll sort it out now.\nnever read\n")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Interrupted" in result.output and re.search(r"Empathy \d/3", result.output)  # graded
    [session] = json.loads(run("history", "--json").output)
    assert session["status"] == "ended" and _graded_replies(tmp_path / "t.db") == 1


def test_ctrl_c_twice_stops_at_once_and_resume_grades_the_reply(run, monkeypatch, tmp_path) -> None:
    _ctrl_c_while_grading(monkeypatch, presses=2)
    reply = "I'm so sorry, I'll sort it out now."
    result = run("play", "damaged-kettle", "--lang", "en", "--plain", input=f"{reply}\n")
    assert result.exit_code == 130, result.output
    [session] = json.loads(run("history", "--json").output)
    assert session["status"] == "active" and _graded_replies(tmp_path / "t.db") == 0
    assert f"trainer play --resume {session['id']}" in "".join(result.output.split("\n"))
    resumed = run("play", "--resume", session["id"], "--plain", input="/end\n")
    assert resumed.exit_code == 0, resumed.output
    assert reply in resumed.output and "Scorecard" in resumed.output
    [session] = json.loads(run("history", "--json").output)
    assert session["status"] == "ended" and _graded_replies(tmp_path / "t.db") == 1


def test_resume_errors_name_the_option(run) -> None:
    missing = run("play", "--resume", "nope")
    assert missing.exit_code == 1 and "--resume nope" in missing.output
    assert "Traceback" not in missing.output
    both = run("play", "damaged-kettle", "--resume", "nope")
    assert both.exit_code == 2 and "not both" in both.output
    run("play", "damaged-kettle", "--lang", "en", input="/end\n")
    [session] = json.loads(run("history", "--json").output)
    ended = run("play", "--resume", session["id"])
    assert ended.exit_code == 1 and "already ended" in ended.output


def test_bad_replies_get_messages_and_the_session_goes_on(run) -> None:
    long_reply = "抱歉" * 5001
    result = run("play", "damaged-kettle", "--lang", "zh",
                 input=f"\n{long_reply}\n/hint\n/policy\n/order\n/whatever\n/end\n")  # fmt: skip
    assert result.exit_code == 0
    output = "".join(result.output.split())  # rich wraps long lines
    assert "回复是空的" in output
    assert "超过了2000的上限" in output
    assert "PRIV-VERIFY" in output  # /policy
    assert "请先向客户要订单号" in output  # /order before the order number is known
    assert "Traceback" not in output


def test_unknown_scenario_suggests_close_ids(run) -> None:
    result = run("play", "damaged-ketle")
    assert result.exit_code != 0 and "damaged-kettle" in result.output


def _transcript(tmp_path: Path, **extra) -> Path:  # type: ignore[no-untyped-def]
    data = {
        "language": "zh",
        "scenario": "damaged-kettle",
        "turns": [
            {"role": "customer", "text": "水壶裂了！", "timestamp": "2026-11-15T10:00:00+08:00"},
            {
                "role": "trainee",
                "text": "亲，您自己联系快递吧。",
                "timestamp": "2026-11-15T10:02:00+08:00",
            },
        ],
    } | extra
    path = tmp_path / "chat.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def test_grade_a_transcript_prints_grades_and_scorecard_as_json(run, tmp_path: Path) -> None:
    result = run("grade", str(_transcript(tmp_path)), "--rubric", "assessment100")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    reply = data["replies"][0]
    assert reply["latency_s"] == 120.0
    assert {g["dimension"]: g["score"] for g in reply["grades"]}["empathy"] == 0
    assert data["scorecard"]["rubric"] == "assessment100"
    assert any(e["code"] == "session.slow_reply" for e in data["scorecard"]["ledger"])


def test_grade_with_a_scenario_file_outside_the_repo(run, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere" / "case.yaml"
    outside.parent.mkdir()
    shutil.copy(ROOT / "scenarios" / "damaged-kettle.yaml", outside)
    result = run("grade", str(_transcript(tmp_path, scenario=None)), "--scenario", str(outside))
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["scenario"] == "damaged-kettle"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "invalid JSON"),
        (json.dumps({"language": "fr", "turns": []}), "language"),
        (
            json.dumps({"language": "zh", "turns": [{"role": "customer", "text": "hi"}]}),
            "nothing to grade",
        ),
        (
            json.dumps(
                {"language": "zh", "turns": [{"role": "trainee", "text": "hi", "extra": 1}]}
            ),
            "turns.0.extra",
        ),
    ],
)
def test_grade_explains_bad_transcripts(run, tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    result = run("grade", str(path), "--scenario", "damaged-kettle")
    assert result.exit_code != 0 and message in result.output
    assert str(path) in result.output and "Traceback" not in result.output


def test_grade_missing_file_and_missing_scenario(run, tmp_path: Path) -> None:
    assert "file not found" in run("grade", str(tmp_path / "nope.json")).output
    result = run("grade", str(_transcript(tmp_path, scenario=None)))
    assert result.exit_code != 0 and "--scenario" in result.output


def test_scenarios_list_show_validate(run, tmp_path: Path) -> None:
    listed = run("scenarios", "list", "--lang", "en")
    assert listed.exit_code == 0 and "damaged-kettle" in listed.output
    shown = run("scenarios", "show", "damaged-kettle", "--lang", "en")
    assert "DMG-TRANSIT" in shown.output and "patience" in shown.output
    assert run("scenarios", "validate").exit_code == 0
    broken = tmp_path / "broken.yaml"
    broken.write_text("id: Bad Id\n", encoding="utf-8")
    result = run("scenarios", "validate", str(broken))
    assert result.exit_code == 1 and "broken.yaml" in result.output and "id:" in result.output


def test_history_shows_a_session_in_detail(run) -> None:
    run("play", "damaged-kettle", "--lang", "en", "--seed", "2",
        input="Sorry, I'll check it for you.\n/end\n")  # fmt: skip
    sid = json.loads(run("history", "--json").output)[0]["id"]
    shown = run("history", sid, "--lang", "en")
    assert shown.exit_code == 0 and "customer:" in shown.output and "Scorecard" in shown.output
    assert run("history", "nosuchsession").exit_code != 0


def _commands(group: click.Group, prefix: str = "trainer") -> list[tuple[str, click.Command]]:
    found = []
    for name, command in group.commands.items():
        path = f"{prefix} {name}"
        found.append((path, command))
        if isinstance(command, click.Group):
            found += _commands(command, path)
    return found


@pytest.mark.parametrize(
    ("path", "command"), _commands(cli), ids=lambda v: v if isinstance(v, str) else ""
)
def test_every_command_has_help_and_is_documented(path: str, command: click.Command) -> None:
    assert command.help, f"{path} has no help"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert path in readme, f"{path} is not documented in README.md"


def test_grade_into_a_missing_folder_fails_first_in_one_line(run, tmp_path: Path) -> None:
    transcript = tmp_path / "t.json"
    transcript.write_text(
        json.dumps({"language": "zh", "scenario": "damaged-kettle",
                    "turns": [{"role": "trainee", "text": "您好"}]}), encoding="utf-8")  # fmt: skip
    result = run("grade", str(transcript), "-o", str(tmp_path / "no" / "such" / "o.json"))
    assert result.exit_code == 2
    assert "'--output'" in result.output and "does not exist" in result.output
    assert "Traceback" not in result.output


def test_a_transcript_nested_50000_deep_is_one_reported_line(run, tmp_path: Path) -> None:
    deep = "[" * 50_000 + "]" * 50_000
    good = {"language": "zh", "scenario": "damaged-kettle", "turns": [{"role": "trainee", "text": "您好"}]}  # fmt: skip
    chats = tmp_path / "chats.jsonl"
    chats.write_text(
        '{"language": "zh", "scenario": "damaged-kettle", "turns": ' + deep + "}\n"
        + json.dumps(good) + "\n", encoding="utf-8")  # fmt: skip
    result = run("grade", str(chats), "--format", "jsonl")
    assert result.exit_code == 1
    assert "chats.jsonl:1" in result.output and "nested too deeply" in result.output
    assert "Traceback" not in result.output and "RecursionError" not in result.output
    assert '"scenario": "damaged-kettle"' in result.output  # the good chat was graded


def test_a_database_that_cannot_be_written_is_one_line_and_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """As on a read-only file (root can write any file, so the error is staged)."""
    from bot import cli as cli_module
    from bot.storage import Store, StoreError

    def read_only(*args: Any, **kwargs: Any) -> str:
        raise StoreError("attempt to write a readonly database")

    monkeypatch.setattr(Store, "create_session", read_only)
    monkeypatch.setattr(
        sys, "argv", ["trainer", "--db", str(tmp_path / "t.db"), "play", "damaged-kettle"]
    )
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    with pytest.raises(SystemExit) as stopped:
        cli_module.main()
    assert stopped.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "readonly database" in err[0] and "--db" in err[0]


def test_an_oversized_scenario_file_is_refused_with_its_size(run, tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("id: big\n" + "# padding\n" * 120_000, encoding="utf-8")
    result = run("scenarios", "validate", str(big))
    assert result.exit_code == 1
    assert (
        "big.yaml" in result.output and "over 1 MB" in result.output and "split it" in result.output
    )


def test_help_and_a_missing_token_load_none_of_the_bot(tmp_path: Path) -> None:
    """`trainer --help` and a missing token are answered before the graders, aiogram or
    openai load (what made them take seconds)."""
    probe = (
        "import sys\n"
        "from bot.cli import main\n"
        "sys.argv = ['trainer'] + sys.argv[1:]\n"
        "try:\n    main()\n"
        "except SystemExit:\n    pass\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('graders', 'aiogram', 'openai', 'matplotlib', 'jieba') or m == 'bot.engine')\n"
        "print('LOADED', heavy, file=sys.stderr)\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("TELEGRAM_")}
    env["TRAINER_CONFIG"] = str(tmp_path / "none.toml")
    for args in (["--help"], ["serve", "telegram"]):
        done = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True,
                              text=True, env=env, cwd=tmp_path, timeout=120)  # fmt: skip
        assert "LOADED []" in done.stderr, (args, done.stderr[-500:])
    assert "BotFather" in done.stderr or "token" in done.stderr.lower()


def test_admin_invite_prints_the_web_link_too(run) -> None:  # type: ignore[no-untyped-def]
    assert run("admin", "team", "Alpha").exit_code == 0
    result = run(
        "admin", "invite", "--role", "trainee", "--team", "Alpha", "--web", "https://t.example/"
    )
    assert result.exit_code == 0, result.output
    code = re.search(r"Invite code \(trainee, 50 use\(s\)\): (\S+)", result.output)
    assert code and f"Web: https://t.example/join/{code.group(1)}" in result.output
    assert "t.me/<your_bot>?start=" in result.output  # the Telegram way still shown


def test_a_drill_is_planned_listed_and_reported_from_the_command_line(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from bot.content import ScenarioLibrary
    from bot.engine import Engine
    from bot.service import Training
    from bot.storage import Store

    assert run("admin", "team", "Alpha").exit_code == 0
    store = Store.open(tmp_path / "t.db")
    library = ScenarioLibrary.load()
    svc = Training(store, library, Engine(store, library))
    team = svc.team_named("Alpha")
    for n in range(3):
        user = svc.register(str(10 + n), name=f"T{n}", lang="zh", chat_id=str(10 + n))
        svc.join(user, svc.create_invite("trainee", team))
    store.close()
    presets = run("drill", "presets")
    assert presets.exit_code == 0 and "double11-peak" in presets.output
    assert "carries ~109 trainees" in presets.output
    planned = run("drill", "plan", "double11-peak", "--team", "Alpha", "--seed", "4")
    assert planned.exit_code == 0, planned.output
    assert "Drill #1 (double11-peak) planned: 3 trainee(s)" in planned.output
    assert "Warning" not in planned.output  # three trainees fit one bot
    bad = run("drill", "plan", "double11-peak", "--team", "Alpha", "--start", "soon")
    assert bad.exit_code == 2 and "--start" in bad.output and "Traceback" not in bad.output
    listed = run("drill", "list")
    assert "#1 double11-peak: planned" in listed.output and "3 trainee(s)" in listed.output
    out = tmp_path / "drill.csv"
    report = run("drill", "report", "1", "--csv", str(out))
    assert report.exit_code == 0, report.output
    assert out.read_text(encoding="utf-8").splitlines()[0].startswith("trainee,arrived")
    missing = run("drill", "report", "7")
    assert missing.exit_code == 1 and "No drill #7" in missing.output


def test_a_redis_url_that_is_not_one_is_named_before_anything_starts(
    run, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "1:x")
    bot = run("serve", "telegram", "--redis", "localhost:6379")
    monkeypatch.setenv("TRAINER_REDIS_URL", "127.0.0.1")
    web = run("serve", "web", "--port", "1")
    for result in (bot, web):
        assert result.exit_code == (2 if result is web else 1), result.output
        assert "that is not a Redis URL: write redis://host:6379/0" in result.output
        assert "Traceback" not in result.output


def test_piped_replies_need_a_scenario_and_none_is_taken_for_a_choice(run, tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = run("play", "--lang", "en", input="1\nI'm so sorry.\n")
    assert result.exit_code == 2
    assert (
        "the input is not a terminal" in result.output
        and "trainer play damaged-kettle" in result.output
    )
    assert not (tmp_path / "t.db").exists() or json.loads(run("history", "--json").output) == []


def test_a_chinese_session_speaks_chinese_throughout(run) -> None:  # type: ignore[no-untyped-def]
    reply = "王女士您好，非常抱歉水壶裂了，麻烦发一下订单号和照片。"
    result = run("play", "damaged-kettle", "--lang", "zh", "--seed", "1", "--plain",
                 input=f"{reply}\n/foo\n/order\n/end\n")  # fmt: skip
    assert result.exit_code == 0, result.output
    out = result.output
    for said in ("难度：普通", "共情 2/3：", "准确 不适用：", "没有 /foo 这个命令。", "订单号",
                 "运费险", "(及格 80)", "你的回复：" + reply, "参考写法："):  # fmt: skip
        assert said in out, said
    for english in ("empathy", "Empathy", "n/a", "normal", "pass 80", "freight", "Weakest"):
        assert english not in out, english


@pytest.mark.parametrize("rubric", ["default", "assessment100"])
def test_an_exported_session_regrades_to_the_grades_it_got(run, tmp_path, rubric) -> None:  # type: ignore[no-untyped-def]
    """history SESSION --json is a transcript: trainer grade gives it the same grades and
    scorecard (a hint's system note included, which is no message of the chat)."""
    replies = GOOD_ZH.splitlines()
    played = run("play", "damaged-kettle", "--lang", "zh", "--seed", "3", "--rubric", rubric,
                 input=f"{replies[0]}\n/hint\n{replies[1]}\n/end\n")  # fmt: skip
    assert played.exit_code == 0, played.output
    sid = json.loads(run("history", "--json").output)[0]["id"]
    exported = run("history", sid, "--json")
    assert '"role": "system"' in exported.output
    path = tmp_path / "session.json"
    path.write_text(exported.output, encoding="utf-8")
    graded = run("grade", str(path))
    assert graded.exit_code == 0, graded.output
    result, session = json.loads(graded.output), json.loads(exported.output)
    live = [t["grades"] for t in session["turns"] if t["role"] == "trainee"]
    again = [reply["grades"] for reply in result["replies"]]
    assert again == live
    assert result["rubric"] == rubric
    assert result["scorecard"]["total"] == session["scorecard"]["total"] == session["total"]
