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


def test_the_word_model_is_kept_per_user_and_a_damaged_copy_is_rebuilt(tmp_path: Path) -> None:
    """Built once into the user's cache, read back by later runs; the cuts are the same."""
    import os
    import subprocess

    text = "王女士您好，双11买的水壶到手就是裂的，7天无理由退货，退款299元原路退回。"
    probe = (
        "import json, sys; from graders.segment import token_bounds; "
        "print(json.dumps(sorted(token_bounds(sys.argv[1]))))"
    )
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}

    def bounds() -> list[int]:
        done = subprocess.run([sys.executable, "-c", probe, text], env=env, capture_output=True,
                              text=True, timeout=300, check=True)  # fmt: skip
        return list(json.loads(done.stdout))

    built = bounds()
    (cache,) = (tmp_path / "cs-trainer").glob("words-*.marshal")
    assert cache.stat().st_size > 1_000_000
    written = cache.stat().st_mtime_ns
    assert bounds() == built and cache.stat().st_mtime_ns == written  # read, not rebuilt
    cache.write_bytes(b"not a word model")
    assert bounds() == built
    assert cache.stat().st_size > 1_000_000  # rebuilt
    assert built == sorted(_jieba_bounds(text))
