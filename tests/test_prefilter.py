"""The regex gates: a pattern is skipped only when it cannot match."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

from graders.lexicon import LEXICON
from graders.prefilter import Gate, required_literals
from graders.text import _dedupe, _lexicon_matcher, compile_pattern, normalize

LABELS = Path(__file__).resolve().parent.parent / "scenarios" / "labels"


def _lexicon_patterns() -> list[tuple[str, re.Pattern[str]]]:
    out = []
    for section, entries in LEXICON.sections().items():
        for name, phrases in entries.items():
            for phrase in [*phrases.zh, *phrases.en]:
                if phrase.startswith("re:"):
                    out.append((f"{section}.{name}", compile_pattern(phrase[3:])))
    return out


@cache
def _corpus() -> list[str]:
    """Every labelled reply and conversation turn, once each (histories repeat a lot)."""
    texts = []
    for path in sorted(LABELS.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            item = json.loads(line)
            texts.append(item["reply"])
            texts += [turn["text"] for turn in item.get("history", [])]
    return list(dict.fromkeys(normalize(t).text for t in dict.fromkeys(texts)))


def test_required_literals_come_from_the_mandatory_parts() -> None:
    assert required_literals(r"\bnot (?:an?|the) (?:kidney )?transplant\b") == {"transplant"}
    assert required_literals(r"(?:说|问)(?:了)?第?[二三四]遍") == {"遍"}
    assert required_literals(r"(?:您|你)再(?:仔细)?瞅瞅") == {"瞅瞅"}
    assert required_literals(r"[您你]太急") == {"太急"}
    assert required_literals(r"(?:a|b)\d+") is None  # one Latin letter is no gate
    assert required_literals(r"\d{5}") is None
    assert required_literals(r"(?:full|top) MARKS", re.IGNORECASE) == {" marks"}


Spans = dict[int, list[tuple[int, int]]]


@cache
def _matches() -> list[tuple[str, re.Pattern[str], Spans]]:
    """Each lexicon pattern with every match in every corpus text (by text index).

    Running every pattern on every text is the slow part of both tests below, so it runs
    once for both; ``search`` picks the texts (most match nothing), ``finditer`` the spans.
    """
    texts = _corpus()
    found = []
    for key, pattern in _lexicon_patterns():
        spans = {
            i: [(m.start(), m.end()) for m in pattern.finditer(texts[i])]
            for i, hit in enumerate(map(pattern.search, texts))
            if hit is not None
        }
        found.append((key, pattern, spans))
    return found


def test_a_gate_opens_on_every_text_its_pattern_matches() -> None:
    texts = _corpus()
    assert len(texts) > 800
    matches = _matches()
    assert len(matches) > 200
    for key, pattern, spans in matches:
        gate = Gate(pattern)
        for i in spans:  # every text the pattern matches (search), none left out
            assert gate.open(texts[i]), (key, pattern.pattern, texts[i])


def test_the_gated_scan_finds_what_running_every_pattern_finds() -> None:
    """Same hits once overlaps are settled (a category's patterns run as one alternation)."""
    matcher = _lexicon_matcher()
    texts = _corpus()
    expected: dict[int, list[tuple[str, int, int]]] = {}
    for key, _, spans in _matches():
        for i, found in spans.items():
            expected.setdefault(i, []).extend((key, s, e) for s, e in found if e > s)
    for i, text in enumerate(texts):  # texts no pattern matches too: no hit from the scan
        scanned = [(k, s, e) for k, s, e, check in matcher.scan(text) if check == "none"]
        assert _dedupe(scanned) == _dedupe(expected.get(i, [])), text
