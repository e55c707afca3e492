"""The boundary-only segmenter must cut exactly where jieba does."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import yaml

from graders.lexicon import tokenizer
from graders.segment import token_bounds
from graders.text import clean, normalize

ROOT = Path(__file__).resolve().parent.parent


def _jieba_bounds(text: str) -> frozenset[int]:
    bounds, position = {0}, 0
    for word in tokenizer().cut(text, HMM=False):
        position += len(word)
        bounds.add(position)
    return frozenset(bounds)


def _texts() -> list[str]:
    texts: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, str):
            texts.append(node)
        elif isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for path in [*ROOT.glob("scenarios/**/*.yaml"), ROOT / "graders/data/lexicon.yaml"]:
        walk(yaml.safe_load(path.read_text(encoding="utf-8")))
    for path in (ROOT / "tests/golden").glob("*.json"):
        texts += json.loads(path.read_text(encoding="utf-8"))["replies"]
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_grading import corpus

    texts += [t for _, t in corpus(3000, random.Random(7))]
    rng = random.Random(11)
    pieces = [t for t in texts if any("\u4e00" <= c <= "\u9fff" for c in t)]
    texts += ["".join(rng.sample(pieces, 3)) for _ in range(2000)]  # unseen combinations
    texts += ["退款299元ABC12x，SF1402336958111单号3-5天，100%满意😀 OK吗？", "a1b2 c3", ""]
    return texts


def test_boundaries_equal_jiebas_on_a_large_corpus() -> None:
    texts = _texts()
    assert len(texts) > 5000
    for text in texts:
        norm = normalize(clean(text)).text
        assert token_bounds(norm) == _jieba_bounds(norm) | {len(norm)}, norm
