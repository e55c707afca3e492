"""The learned clause model: what it adds to the rules, how it explains it, how it is made."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bot.content import ScenarioLibrary
from graders import learned
from graders.learned import ClauseModel, reply_features, shown
from graders.text import analyze

ROOT = Path(__file__).resolve().parent.parent
DEV = ROOT / "scenarios" / "labels" / "dev.jsonl"


def tiny(**changes: Any) -> ClauseModel:
    """A hand-made model: two features push CONDUCT-NO-BLAME over its threshold together."""
    data: dict[str, Any] = {
        "format": learned.FORMAT,
        "packs": ["default-shop"],
        "heads": ["CONDUCT-NO-BLAME"],
        "thresholds": [0.0],
        "bias": [-1.0],
        "features": ["尺 码", "看", "谢 谢"],
        "weights": [0.8, 0.5, -2.0],
        "trained_on": {"files": {}, "replies": 0},
    }
    return ClauseModel(data | changes)


def test_a_head_fires_on_the_sentence_that_weighs_most_and_quotes_its_words() -> None:
    analysis = analyze("您好。您没看尺码表吗？")
    [proposal] = tiny().propose(analysis, ["CONDUCT-NO-BLAME"])
    assert analysis.text[proposal.start : proposal.end] == "您没看尺码表吗"
    assert proposal.words == ("尺码", "看")  # phrases before single characters
    assert proposal.probability == pytest.approx(0.57, abs=0.01)


def test_below_the_threshold_or_not_asked_for_nothing_is_proposed() -> None:
    assert tiny().propose(analyze("您没看尺码表吗？谢谢。"), ["CONDUCT-NO-BLAME"]) == []
    assert tiny().propose(analyze("您没看尺码表吗？"), ["CONDUCT-NO-INSULT"]) == []


def test_a_feature_counts_once_per_sentence_it_occurs_in() -> None:
    analysis = analyze("尺码看了。尺码没看。")
    features = reply_features(analysis)
    assert features["尺 码"] == 2 and features["看"] == 2
    [proposal] = tiny().propose(analysis, ["CONDUCT-NO-BLAME"])
    assert proposal.probability == pytest.approx(
        1 / (1 + math.exp(-(-1.0 + 2 * 0.8 + 2 * 0.5))), abs=0.005
    )


def test_two_models_never_share_results_cached_with_a_text() -> None:
    analysis = analyze("您没看尺码表吗？")
    assert tiny().propose(analysis, ["CONDUCT-NO-BLAME"])
    assert tiny(bias=[-10.0]).propose(analysis, ["CONDUCT-NO-BLAME"]) == []


@pytest.mark.parametrize(
    ("changes", "problem"),
    [({"bias": []}, "one value per head"), ({"weights": [0.8]}, "one value per feature")],
)
def test_a_model_file_with_inconsistent_sizes_is_refused(
    changes: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        tiny(**changes)


def test_the_model_applies_only_to_the_packs_it_was_trained_for() -> None:
    assert tiny().applies_to("default-shop")
    assert not tiny(packs=["other-shop"]).applies_to("default-shop")


def test_a_model_file_of_another_format_is_refused() -> None:
    with pytest.raises(ValueError, match="format"):
        tiny(format=99)


def test_ngrams_are_shown_as_the_trainee_wrote_them() -> None:
    assert shown("<s> 您 确 定") == "您确定"
    assert shown("are you sure") == "are you sure"


def test_the_shipped_model_was_trained_on_the_current_dev_split_and_lexicon_never_the_test_split(
    library: ScenarioLibrary,
) -> None:
    model = learned.shipped()
    assert model is not None
    digest = hashlib.sha256(DEV.read_bytes()).hexdigest()
    lexicon = hashlib.sha256((ROOT / "graders/data/lexicon.yaml").read_bytes()).hexdigest()
    retrain = "changed since graders/data/clause_model.json was trained: run python scripts/train_clause_model.py"
    assert model.trained_on["files"] == {"scenarios/labels/dev.jsonl": digest}, (
        f"dev.jsonl {retrain}"
    )
    assert model.trained_on["lexicon_sha256"] == lexicon, f"the lexicon {retrain}"
    pack = library.get("damaged-kettle").policy
    assert model.packs == {pack.id}
    assert set(model.heads) <= set(pack.clauses)


def test_a_late_present_finding_does_not_zero_empathy(library: ScenarioLibrary) -> None:
    from graders.findings import rules_for

    rules = rules_for(library.get("delivery-delay-gift"))
    assert rules.dismissive_clauses == {
        "CONDUCT-NO-BLAME",
        "CONDUCT-NO-DEFLECT",
        "CONDUCT-NO-INSULT",
    }


def test_a_blame_the_patterns_miss_is_cited_with_the_trainees_words(grading) -> None:  # type: ignore[no-untyped-def]
    reply = "您下单的时候没仔细看尺码表吗？"
    grades = grading("wrong-item-hoodie", "zh").customer("发错货了！").reply(reply)
    [deduction] = grades["policy"].deductions
    assert deduction.code == "policy.learned"
    assert deduction.clause_ids == ("CONDUCT-NO-BLAME",)
    assert deduction.quote == "您下单的时候没仔细看尺码表吗"
    assert "“下单”" in deduction.reason["zh"] and "CONDUCT-NO-BLAME" in deduction.reason["en"]
    assert grades["empathy"].score == 0  # blaming the customer, as the labelling guide says


@pytest.mark.parametrize(
    ("lang", "reply"),
    [
        ("en", "When did you sign for the parcel?"),
        ("en", "Which day did you place the order?"),
        ("en", "How many items were in the box when you opened it?"),
        ("zh", "请问您当时下单选的是哪个尺码呢？"),
        ("zh", "您好，请问您是什么时候下单的？"),
    ],
)
def test_questions_an_agent_must_ask_are_not_read_as_blame(grading, lang: str, reply: str) -> None:  # type: ignore[no-untyped-def]
    grades = grading("wrong-item-hoodie", lang).customer("发错货了！").reply(reply)
    assert not [d for g in grades.values() for d in g.deductions if d.code == "policy.learned"]


def test_the_same_reply_gets_the_same_scores_in_every_process() -> None:
    script = (
        "from graders.learned import shipped; from graders.text import analyze; m = shipped()\n"
        "for t in ['Next time maybe read the size chart before you checkout?',"
        " '您下单之前就没想过量一下尺寸吗？', '亲，加我微信，差评删了给您返20。']:\n"
        "    print(m._scored(analyze(t))[1], m.propose(analyze(t), m.heads))\n"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script],
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": seed},  # a different set and dict order
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1 and "CONDUCT-NO-BLAME" in outputs.pop()


@pytest.mark.parametrize("split", ["test.jsonl", "test-season.jsonl"])
def test_training_refuses_the_frozen_test_splits(tmp_path: Path, split: str) -> None:
    copy = tmp_path / "renamed.jsonl"  # by content too, not only by name
    copy.write_bytes((ROOT / "scenarios" / "labels" / split).read_bytes())
    run = subprocess.run(
        [
            sys.executable,
            "scripts/train_clause_model.py",
            "--labels",
            str(copy),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode != 0 and "frozen test split" in run.stderr


@pytest.mark.slow
def test_training_gives_the_same_file_twice_and_a_model_the_graders_load(tmp_path: Path) -> None:
    lines = DEV.read_text(encoding="utf-8").splitlines()
    small = tmp_path / "labels.jsonl"  # two writing batches: dev and dev2
    small.write_text(
        "\n".join(line for line in lines if '"id": "dev-' in line or '"id": "dev2' in line),
        encoding="utf-8",
    )
    names = ("a.json", "b.json")
    script = ROOT / "scripts/train_clause_model.py"
    runs = [  # two separate processes, side by side: nothing shared but the input
        subprocess.Popen(
            [sys.executable, script, "--labels", small, "--out", name],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in names
    ]
    try:
        for run in runs:
            _, stderr = run.communicate(timeout=600)
            assert run.returncode == 0, stderr
    finally:
        for run in runs:
            if run.poll() is None:
                run.kill()
                run.wait()
    outputs = [(tmp_path / name).read_bytes() for name in names]
    assert outputs[0] == outputs[1]
    model = ClauseModel(json.loads(outputs[0]))
    assert model.heads and model.trained_on["replies"] == 704
