"""Bulk QC: many transcripts in one run, bad ones reported by line, summaries per agent."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from click.testing import CliRunner

from bot.cli import cli


def _chat(n: int, agent: str, reply: str, scenario: str | None = "damaged-kettle") -> dict:  # type: ignore[type-arg]
    chat = {
        "id": f"chat-{n}",
        "agent": agent,
        "language": "zh",
        "turns": [
            {"role": "customer", "text": "水壶裂了！"},
            {"role": "trainee", "text": reply},
        ],
    }
    if scenario:
        chat["scenario"] = scenario
    return chat


GOOD = "王女士您好，水壶到手就裂了，真的很抱歉。麻烦发一下订单号和照片，我马上为您处理。"
BAD = "您自己联系快递吧，加我微信私聊。"


def _jsonl(path: Path, chats: list[dict], extra: tuple[str, ...] = ()) -> Path:  # type: ignore[type-arg]
    lines = [json.dumps(c, ensure_ascii=False) for c in chats] + list(extra)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _grade(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, ["grade", *args], obj={})


def test_a_jsonl_file_is_graded_and_a_bad_line_is_reported_without_stopping(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = _jsonl(
        tmp_path / "chats.jsonl",
        [_chat(1, "ann", GOOD), _chat(2, "bob", BAD)],
        ('{"language": "zh", "turns": [', json.dumps(_chat(4, "ann", GOOD, scenario=None))),
    )
    path.write_text(path.read_text("utf-8") + json.dumps(_chat(5, "bob", GOOD)) + "\n", "utf-8")
    result = _grade(str(path))
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert [t["id"] for t in data["transcripts"]] == ["chat-1", "chat-2", "chat-5"]
    assert data["transcripts"][1]["source"] == f"{path}:2"
    assert (
        data["problems"][0].startswith(f"{path}:3: column")
        and "invalid JSON" in data["problems"][0]
    )
    assert data["problems"][1].startswith(f"{path}:4: no scenario")
    assert f"skipped {path}:3" in result.stderr
    assert "Graded 3 transcripts (3 replies)" in result.stderr and "Traceback" not in result.output


def test_bulk_grades_equal_single_grades(tmp_path) -> None:  # type: ignore[no-untyped-def]
    single = tmp_path / "one.json"
    single.write_text(json.dumps(_chat(1, "ann", BAD), ensure_ascii=False), "utf-8")
    alone = json.loads(_grade(str(single)).stdout)
    bulk = json.loads(_grade(str(_jsonl(tmp_path / "c.jsonl", [_chat(1, "ann", BAD)]))).stdout)
    graded = bulk["transcripts"][0]
    assert graded["replies"] == alone["replies"] and graded["scorecard"] == alone["scorecard"]
    assert "CONDUCT-OFF-PLATFORM" in {
        c for e in alone["scorecard"]["red_lines"] for c in e["clause_ids"]
    }


def test_a_folder_of_json_and_jsonl_files_is_graded(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "a.json").write_text(json.dumps(_chat(1, "ann", GOOD), ensure_ascii=False), "utf-8")
    _jsonl(tmp_path / "b.jsonl", [_chat(2, "bob", BAD), _chat(3, "bob", GOOD)])
    (tmp_path / "notes.txt").write_text("not a transcript", "utf-8")
    result = _grade(str(tmp_path), "--format", "jsonl")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["id"] for r in rows] == ["chat-1", "chat-2", "chat-3"]


def test_csv_has_a_row_per_transcript(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = _jsonl(tmp_path / "c.jsonl", [_chat(1, "ann", GOOD), _chat(2, "bob", BAD)])
    out = tmp_path / "out.csv"
    result = _grade(str(path), "--format", "csv", "-o", str(out))
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(out.read_text("utf-8"))))
    assert [r["agent"] for r in rows] == ["ann", "bob"]
    assert rows[1]["passed"] == "False" and "CONDUCT-OFF-PLATFORM" in rows[1]["red_lines"]
    assert rows[0]["red_lines"] == "" and float(rows[0]["empathy"]) == 100.0


def test_by_agent_sums_up_each_agent(tmp_path) -> None:  # type: ignore[no-untyped-def]
    chats = [_chat(1, "ann", GOOD), _chat(2, "bob", BAD), _chat(3, "bob", BAD)]
    path = _jsonl(tmp_path / "c.jsonl", chats)
    result = _grade(str(path), "--by", "agent", "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = {r["agent"]: r for r in csv.DictReader(io.StringIO(result.stdout))}
    assert rows["ann"]["transcripts"] == "1" and rows["ann"]["red_line_chats"] == "0"
    assert rows["bob"]["transcripts"] == "2" and rows["bob"]["red_line_chats"] == "2"
    assert "CONDUCT-OFF-PLATFORM ×2" in rows["bob"]["most_broken_clauses"]
    assert "bob: 2 chats" in result.stderr
    as_json = json.loads(_grade(str(path), "--by", "agent").stdout)
    assert [s["agent"] for s in as_json["summary"]] == ["ann", "bob"]
