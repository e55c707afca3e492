"""Judge grades replayed from recorded model answers, so grading tests are deterministic.

``tests/cassettes/judge-kettle.json`` holds the judge's answers, keyed by request, for golden
kettle transcripts. The fake server replays them to the real SDK and judge, so the whole
path (prompt, request, validation, bounds, storage) runs without a model.

The committed recordings were made by ``reference_judge`` below, because no live model was
reachable where they were made. To record a real model's answers instead, delete the file
and run, with a configured endpoint (OPENAI_BASE_URL, OPENAI_API_KEY, TRAINER_LLM_MODEL):

    TRAINER_RECORD_CASSETTES=1 .venv/bin/pytest --runapi tests/test_judge_replay.py

The fake server then forwards each unrecorded request to that endpoint and stores the answer.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from llmapi import Cassette, FakeLLM

from bot.content import ScenarioLibrary
from bot.engine import Engine
from bot.llm.client import LLMClient
from bot.llm.config import RoleSettings
from bot.llm.roles import Assistants
from bot.storage import Store

ROOT = Path(__file__).resolve().parent.parent
CASSETTE = ROOT / "tests" / "cassettes" / "judge-kettle.json"
CASES = ["damaged-kettle.zh.good", "damaged-kettle.zh.bad", "damaged-kettle.en.mediocre"]
RECORD = os.environ.get("TRAINER_RECORD_CASSETTES") == "1"
REFERENCE_MODEL = "reference-judge"

pytestmark = [pytest.mark.runapi] if RECORD else []


def reference_judge(request: dict[str, Any]) -> str:
    """A plain, valid judge answer: the rule graders' score would do as well; here, full
    marks unless the reply brushes the customer off, then a deduction quoting it."""
    text = "\n".join(str(m.get("content")) for m in request["messages"])
    reply = re.search(r"<<<REPLY \w+>>>\n(.*?)\n<<<END REPLY", text, re.S)
    dimension = re.search(r"(?:Grade this reply on |”（)(empathy|accuracy|policy)", text)
    top = 3.0 if dimension and dimension.group(1) == "empathy" else 2.0
    quote = reply.group(1) if reply else ""
    rude = next((w for w in ("不归我管", "自己去", "not my", "yourself") if w in quote), None)
    violations = [{"quote": rude, "points": top, "clause_ids": [], "why": "dismissive"}]
    return json.dumps(
        {
            "reasoning": "Compared the reply with the rubric, the case facts and the clauses.",
            "violations": violations if rude else [],
            "score": 0.0 if rude else top,
            "summary_zh": "推脱客户。" if rude else "符合要求。",
            "summary_en": "Brushes the customer off." if rude else "Meets the rubric.",
        },
        ensure_ascii=False,
    )


async def live_endpoint(request: dict[str, Any]) -> str:
    """Forward a request to the configured real endpoint (recording only)."""
    from openai import AsyncOpenAI

    async with AsyncOpenAI() as client:
        answer = await client.chat.completions.create(**request)
    return answer.choices[0].message.content or ""


def _model(cassette: Cassette) -> str:
    if RECORD:
        return os.environ.get("TRAINER_LLM_MODEL", REFERENCE_MODEL)
    models = {str(entry["model"]) for entry in cassette.entries.values()}
    assert len(models) == 1, models
    return models.pop()


async def _grade(library: ScenarioLibrary, case: str, cassette: Cassette) -> list[list[Any]]:
    """Play a golden transcript with the judge; the final grades of each reply."""
    golden = json.loads((ROOT / "tests" / "golden" / f"{case}.json").read_text("utf-8"))
    model = _model(cassette)
    async with FakeLLM("sk-replay", models=[model]) as api:
        fallback = live_endpoint if RECORD and os.environ.get("OPENAI_BASE_URL") else None
        api.responder = cassette.responder(fallback or (reference_judge if RECORD else None))
        settings = RoleSettings(api.base_url, "sk-replay", model, timeout_s=30)
        assistants = Assistants(judge=LLMClient(settings))
        store = Store.open(None)  # fresh: the judge's own cache must not answer
        try:
            engine = Engine(store, library, assistants)
            session, _ = await engine.start(
                trainee="replay",
                scenario=golden["scenario"],
                lang=golden["language"],
                difficulty=golden["difficulty"],
                seed=golden["seed"],
                judge="llm",
            )
            graded = []
            for reply in golden["replies"]:
                if session.ended:
                    break
                result = await session.reply(reply)
                graded.append([g.to_dict() for g in result.record.grades])
            return graded
        finally:
            store.close()
            await assistants.aclose()


@pytest.mark.parametrize("case", CASES)
def test_recorded_judge_answers_replay_to_the_same_grades(library, case: str) -> None:
    cassette = Cassette(CASSETTE, record=RECORD)
    first = asyncio.run(_grade(library, case, cassette))
    assert not cassette.misses or RECORD, (
        f"{len(cassette.misses)} judge request(s) have no recording: the judge's prompt or "
        "the chat changed. Review the change, then re-record (see this module's docstring)."
    )
    second = asyncio.run(_grade(library, case, Cassette(CASSETTE)))  # replay only
    assert first == second
    recorded = {str(entry["content"]) for entry in cassette.entries.values()}
    judged = [g for reply in first for g in reply if g["grader"] == "llm_judge"]
    assert judged, "no grade was decided by the judge"
    for grade in judged:
        assert grade["status"] == "scored"
        assert grade["audit"]["raw"][-1] in recorded  # the recorded answer decided it
