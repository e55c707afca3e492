"""Clauses the patterns missed, proposed by a small linear model trained on labelled replies.

The model reads what the patterns read: the normalised text of each sentence, as word
and character n-grams, plus the lexicon categories found in it. It is trained by
``scripts/train_clause_model.py`` on the dev split of ``scenarios/labels/`` (never on the
frozen test split) and shipped as ``graders/data/clause_model.json``. It applies only to
the policy packs it was trained for, only adds a clause the patterns did not cite, and
only above that clause's threshold; the deduction quotes the sentence that weighs most
and the words in it that weigh most. The same text always gets the same answer.
"""

from __future__ import annotations

import bisect
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from typing import Any

import numpy as np

from graders._base import Recent
from graders.text import CJK, Analysis

MODEL_PATH = Path(__file__).parent / "data" / "clause_model.json"
FORMAT = 1

_TOKEN = re.compile(
    r"[\u3400-\u9fff]|[a-z]+(?:'[a-z]+)?|[0-9]+|[¥$]|[\u2600-\u27bf\u2b50\U0001f300-\U0001faff]"
)
_DIGITS = re.compile(r"[0-9]+")
_MAX_N = 3


def sentence_tokens(text: str) -> list[str]:
    """Tokens of normalised text: each Chinese character, word or emoji, any number as ``0``."""
    return ["0" if t[0].isdigit() else t for t in _TOKEN.findall(text)]


def ngrams(tokens: Sequence[str]) -> set[str]:
    """Uni-, bi- and trigrams of one sentence's tokens, with sentence start and end marks."""
    marked = ["<s>", *tokens, "</s>"]
    found = set(tokens)
    for n in range(2, _MAX_N + 1):
        found.update(" ".join(marked[i : i + n]) for i in range(len(marked) - n + 1))
    return found


def sentence_parts(analysis: Analysis) -> list[tuple[int, int, str, frozenset[str]]]:
    """Each sentence's span, its text with numbers folded to ``0``, its lexicon categories.

    Categories read ``hit:forbidden.blame`` or, under a negation, ``neg:signals.promise``.
    """
    text = analysis.text
    spans = analysis.sentences() or [(0, len(text))]
    starts = [start for start, _ in spans]
    categories: list[set[str]] = [set() for _ in spans]
    for key, hits in analysis.hits.items():
        for hit in hits:
            index = 0 if len(spans) == 1 else bisect.bisect_right(starts, hit.start) - 1
            categories[max(0, index)].add(("neg:" if hit.negated else "hit:") + key)
    return [
        (start, end, _DIGITS.sub("0", text[start:end]), frozenset(found))
        for (start, end), found in zip(spans, categories, strict=True)
    ]


def reply_features(analysis: Analysis) -> Counter[str]:
    """A reply's features, each with the number of sentences it occurs in (model input).

    A sentence's features are its n-grams and the lexicon categories found in it.
    """
    return Counter(
        feature
        for _, _, words, categories in sentence_parts(analysis)
        for feature in ngrams(sentence_tokens(words)) | categories
    )


def shown(feature: str) -> str:
    """An n-gram as the trainee would read it (Chinese without spaces)."""
    parts = [p for p in feature.split(" ") if p not in ("<s>", "</s>")]
    text = ""
    for part in parts:
        joined = bool(text) and not (CJK.match(part) or CJK.match(text[-1]))
        text += (" " if joined else "") + part
    return text


_Sentence = tuple[int, int, tuple[int, ...], tuple[float, ...]]
"""A sentence's start and end, the rows of its known features, its score per head."""
_Scored = tuple[list[_Sentence], tuple[float, ...], list[int]]


@dataclass(frozen=True, slots=True)
class Proposal:
    """A clause the model reads in the reply, and the words behind it."""

    clause: str
    probability: float
    start: int
    end: int
    """The span of the sentence that weighs most (normalised text offsets)."""
    words: tuple[str, ...]


class ClauseModel:
    """One logistic-regression head per clause over shared sparse features.

    A feature's value is the number of sentences it occurs in, so a reply's score is the
    sum of its sentences' scores, and the sentence that weighs most is the evidence.
    """

    def __init__(self, data: dict[str, Any]):
        if data.get("format") != FORMAT:
            raise ValueError(f"clause model format {data.get('format')!r}, expected {FORMAT}")
        heads, features = len(data["heads"]), len(data["features"])
        if not (len(data["thresholds"]) == len(data["bias"]) == heads):
            raise ValueError("thresholds and bias need one value per head")
        if len(data["weights"]) != heads * features:
            raise ValueError("weights need one value per feature and head")
        self.packs: frozenset[str] = frozenset(data["packs"])
        self.heads: tuple[str, ...] = tuple(data["heads"])
        self.thresholds: tuple[float, ...] = tuple(data["thresholds"])
        """Per head, the logit a reply must reach."""
        self.bias: tuple[float, ...] = tuple(data["bias"])
        self.names: tuple[str, ...] = tuple(data["features"])
        self.features: dict[str, int] = {f: i for i, f in enumerate(self.names)}
        self.weights = np.array(data["weights"], dtype=np.float64).reshape(
            len(self.names), len(self.heads)
        )
        self.trained_on: dict[str, Any] = data["trained_on"]
        self._head = {clause: i for i, clause in enumerate(self.heads)}
        self._token = object()  # this model's results in an analysis memo (never reused)
        self._known: Recent[tuple[tuple[int, ...], tuple[float, ...]]] = Recent(8192)
        """Sentences already scored (numbers folded to 0): agents reuse stock lines."""

    def applies_to(self, pack: str) -> bool:
        """Whether the model was trained on this policy pack's clause ids."""
        return pack in self.packs

    def candidates(self, analysis: Analysis, clauses: Iterable[str]) -> list[str]:
        """The clauses among ``clauses`` whose score reaches their threshold (cheap)."""
        _, _, over = self._scored(analysis)
        if not over:
            return []
        wanted = clauses if isinstance(clauses, (set, frozenset)) else set(clauses)
        return [self.heads[head] for head in over if self.heads[head] in wanted]

    def propose(self, analysis: Analysis, clauses: Iterable[str]) -> list[Proposal]:
        """The candidates among ``clauses``, each with its sentence and words."""
        sentences, logits, _ = self._scored(analysis)
        proposals = []
        for clause in self.candidates(analysis, clauses):
            head = self._head[clause]
            best = max(range(len(sentences)), key=lambda i: (sentences[i][3][head], -i))
            start, end, rows, _ = sentences[best]
            chance = round(1 / (1 + math.exp(-logits[head])), 2)
            words = self._words(analysis, start, end, rows, self.weights[:, head])
            proposals.append(Proposal(clause, chance, start, end, words))
        return proposals

    def _scored(self, analysis: Analysis) -> _Scored:
        """Sentences, logits and the heads over threshold; text-only, kept with the analysis."""
        key = ("learned", self._token)
        if key not in analysis.memo:  # shared by every scenario and turn of the same text
            sentences = self._sentences(analysis)
            logits = self.bias
            for _, _, _, score in sentences:  # plain floats: cheaper than numpy for 8 heads
                logits = tuple(x + y for x, y in zip(logits, score, strict=True))
            pairs = zip(logits, self.thresholds, strict=True)
            analysis.memo[key] = (
                sentences,
                logits,
                [h for h, (x, t) in enumerate(pairs) if x >= t],
            )
        scored: _Scored = analysis.memo[key]
        return scored

    def _sentences(self, analysis: Analysis) -> list[_Sentence]:
        """Each sentence's span, the rows of its known features and its score per head."""
        out = []
        for start, end, words, categories in sentence_parts(analysis):
            key = (words, categories)  # stock lines repeat: score each once
            rows, score = self._known.get(key, partial(self._score, words, categories))
            out.append((start, end, rows, score))
        return out

    def _score(
        self, words: str, categories: frozenset[str]
    ) -> tuple[tuple[int, ...], tuple[float, ...]]:
        """A sentence's known feature rows and its score per head."""
        found = ngrams(sentence_tokens(words)) | categories
        rows = tuple(  # in feature order: the same sum, to the last bit, in every process
            sorted(row for f in found if (row := self.features.get(f)) is not None)
        )
        return rows, tuple(self.weights[list(rows)].sum(axis=0).tolist())

    def _words(
        self, analysis: Analysis, start: int, end: int, rows: tuple[int, ...], weights: np.ndarray
    ) -> tuple[str, ...]:
        """Up to three of the sentence's own phrases that weigh most for the head.

        A lexicon category is shown as the trainee's words it matched; single words and
        characters only when nothing longer weighs in, and never a folded number.
        """
        ranked = sorted((r for r in set(rows) if weights[r] > 0), key=lambda r: (-weights[r], r))
        said = analysis.text[start:end]
        phrases: list[str] = []
        singles: list[str] = []
        for row in ranked:
            name = self.names[row]
            if name.startswith(("hit:", "neg:")):
                negated = name.startswith("neg:")
                hits = analysis.hits.get(name[4:], ())
                hit = next(
                    (h for h in hits if start <= h.start < end and h.negated == negated), None
                )
                word = analysis.quote(hit).strip() if hit else ""
            else:
                word = shown(name)
                if word not in said:  # an n-gram across punctuation is not the trainee's words
                    continue
            if not word or "0" in name.split(" "):
                continue
            single = " " not in word and not (len(word) > 1 and CJK.match(word))
            (singles if single else phrases).append(word)
        words: list[str] = []
        for word in phrases + singles:
            folded = word.lower()
            if not any(folded in w.lower() or w.lower() in folded for w in words):
                words.append(word)
                if len(words) == 3:
                    break
        return tuple(words)


@cache
def shipped() -> ClauseModel | None:
    """The model shipped with the graders (None when the file is absent).

    A file that is there but is not a clause model is a broken install: grading stops with
    a message that says so rather than silently grading without the model.
    """
    if not MODEL_PATH.exists():
        return None
    try:
        return ClauseModel(json.loads(MODEL_PATH.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"{MODEL_PATH} is not a clause model ({exc}): restore it with git checkout, "
            "or retrain it with python scripts/train_clause_model.py"
        ) from exc
