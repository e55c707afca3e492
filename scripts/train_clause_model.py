"""Train the clause model the graders ship (graders/data/clause_model.json).

    pip install -e '.[train]'
    python scripts/train_clause_model.py [--labels FILE ...] [--out PATH] [--precision P]

Reads labelled replies (docs/labelling.md), never the frozen test split, and fits one
logistic-regression head per clause in HEADS on the features graders.learned reads. The
model only adds clauses the rule graders did not cite, so a head is judged on what it
adds: every writing batch of the labels is predicted by a head trained on the other
batches, and the head's threshold is the lowest probability at which its own flags are
right at least 90 % of the time and the clauses it adds to the rules' at least
``--precision`` of the time (judged once it adds five). A head that never gets there is
left out. The same labels give the same file, byte for byte.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from scipy.sparse import csr_matrix  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from bot.calibration import grade_labelled, load_labels  # noqa: E402
from bot.content import ScenarioLibrary  # noqa: E402
from graders import learned  # noqa: E402
from graders.findings import strip_injections  # noqa: E402
from graders.learned import FORMAT, MODEL_PATH, reply_features  # noqa: E402
from graders.text import analyze  # noqa: E402

# Clauses a model of the words alone can judge: the same words break them in every
# scenario and at any point of the chat. The rest depend on the order's facts (amounts,
# the payment method, who pays postage in this case) or on the chat so far (photos asked,
# identity checked), which the rule graders track and a bag of words cannot see: trained
# on them, a model flags correct replies for words like 到了.
HEADS = (
    "AUTH-NO-OVERPROMISE",
    "CONDUCT-NO-BLAME",
    "CONDUCT-NO-DEFLECT",
    "CONDUCT-NO-INSULT",
    "CONDUCT-NO-REVIEW-BAIT",
    "CONDUCT-OFF-PLATFORM",
    "DELAY-HANDLING",  # one scenario: guaranteeing the date, leaving the chasing to the customer
    "PRICE-PROTECT",  # one scenario: refusing the price protection it is owed
)
C = 3.0  # inverse regularisation strength, chosen on an untouched dev batch (dev6)
MIN_DOCS = 2  # a feature must occur in at least this many replies
MIN_ADDED = 5  # fewer additions than this say little about their precision
MODEL_PRECISION = 0.9  # the head's own flags, cited by the rules or not
# candidate probabilities 0.60–0.95: a deduction only where the model is clearly more
# sure than not (at 0.50 a plain 您好，请问您是什么时候下单的？ read as blame)
GRID = [round(0.6 + 0.05 * i, 2) for i in range(8)]
LEXICON = ROOT / "graders" / "data" / "lexicon.yaml"  # the rules a head's additions are judged by


@dataclass(frozen=True)
class Item:
    """A labelled reply as the trainer sees it."""

    batch: str
    features: Counter[str]
    labelled: frozenset[str]
    by_rules: frozenset[str]
    applicable: frozenset[str]
    pack: str


def batch_of(item_id: str) -> str:
    """The writing batch of an item: its id up to the first dash (dev2a…dev2d are one)."""
    head = item_id.split("-")[0]
    return head.rstrip("abcd") if head.startswith("dev2") else head


def load(paths: list[Path]) -> list[Item]:
    """Labelled replies with their features and what the rule graders alone cite."""
    items, bad = load_labels(paths, ScenarioLibrary(None))
    if bad:
        sys.exit("\n".join(map(str, bad)))
    learned.MODEL_PATH = ROOT / "no-model"  # grade with the rules alone
    learned.shipped.cache_clear()

    async def by_rules() -> list[frozenset[str]]:
        return [(await grade_labelled(it)).verdict.clauses for it in items]

    cited = asyncio.run(by_rules())
    return [
        Item(
            batch=batch_of(it.item.id),
            features=reply_features(analyze(strip_injections(it.item.reply).text)),
            labelled=frozenset(it.item.clauses),
            by_rules=rules,
            applicable=frozenset(it.scenario.applicable_clauses),
            pack=it.scenario.policy.id,
        )
        for it, rules in zip(items, cited, strict=True)
    ]


def vocabulary_of(items: list[Item]) -> dict[str, int]:
    """Features in at least MIN_DOCS replies, in sorted order."""
    df = Counter(f for item in items for f in item.features)
    return {f: i for i, f in enumerate(sorted(f for f, n in df.items() if n >= MIN_DOCS))}


def matrix(items: list[Item], vocabulary: dict[str, int]) -> csr_matrix:
    """How many sentences of each reply have each feature."""
    rows, cols, values = [], [], []
    for i, item in enumerate(items):
        for feature, count in sorted(item.features.items()):
            if feature in vocabulary:
                rows.append(i)
                cols.append(vocabulary[feature])
                values.append(count)
    shape = (len(items), len(vocabulary))
    return csr_matrix((np.array(values, dtype=float), (rows, cols)), shape=shape)


def fit(items: list[Item], clause: str, vocabulary: dict[str, int]) -> LogisticRegression:
    """One head, on the replies the clause applies to."""
    model = LogisticRegression(C=C, max_iter=5000)
    model.fit(matrix(items, vocabulary), np.array([clause in i.labelled for i in items]))
    return model


def out_of_batch(items: list[Item], clause: str) -> list[tuple[float, bool, bool]]:
    """(probability, labelled, cited by the rules) per reply, out of batch.

    Each batch is predicted by a head trained on the other batches.
    """
    applicable = [i for i in items if clause in i.applicable]
    scored = []
    for batch in sorted({i.batch for i in applicable}):
        train = [i for i in applicable if i.batch != batch]
        test = [i for i in applicable if i.batch == batch]
        if sum(clause in i.labelled for i in train) < 3:
            continue
        vocabulary = vocabulary_of(train)
        probabilities = fit(train, clause, vocabulary).predict_proba(matrix(test, vocabulary))
        scored += [
            (float(p), clause in i.labelled, clause in i.by_rules)
            for p, i in zip(probabilities[:, 1], test, strict=True)
        ]
    return scored


def threshold(
    scored: list[tuple[float, bool, bool]], precision: float
) -> tuple[float, float, float, float] | None:
    """The lowest grid probability at which the head is precise enough.

    Returns (probability, precision of its additions, recall of the rules alone, recall
    of rules and head), all out of batch; None when no probability qualifies.
    """
    positives = sum(labelled for _, labelled, _ in scored)
    if not positives:
        return None
    by_rules = sum(labelled for _, labelled, cited in scored if cited)
    for p in GRID:
        flagged = [labelled for q, labelled, _ in scored if q >= p]
        added = [labelled for q, labelled, cited in scored if q >= p and not cited]
        if not flagged or sum(flagged) / len(flagged) < MODEL_PRECISION:
            continue
        right = sum(added) / len(added) if added else 1.0
        if len(added) < MIN_ADDED or right >= precision:
            return p, right, by_rules / positives, (by_rules + sum(added)) / positives
    return None


def main() -> None:
    """Train the heads, choose their thresholds, write the model file."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = ROOT / "scenarios" / "labels" / "dev.jsonl"
    parser.add_argument("--labels", nargs="+", type=Path, default=[default])
    parser.add_argument("--out", type=Path, default=MODEL_PATH)
    parser.add_argument("--precision", type=float, default=0.7)
    args = parser.parse_args()
    splits = sorted((ROOT / "scenarios" / "labels").glob("test*.jsonl"))
    frozen = {hashlib.sha256(p.read_bytes()).digest(): p.name for p in splits}
    for path in args.labels:
        name = frozen.get(hashlib.sha256(path.read_bytes()).digest())
        if name is not None or path.name.startswith("test"):
            sys.exit(f"{name or path.name} is a frozen test split: measure on it, never train")
    items = load(args.labels)
    heads, thresholds, report = [], [], {}
    for clause in HEADS:
        chosen = threshold(out_of_batch(items, clause), args.precision)
        if chosen is None:
            print(f"{clause:24s} left out: never precise enough out of batch")
            continue
        p, added, before, after = chosen
        print(f"{clause:24s} p >= {p:.2f}: additions {added:.2f} right, recall {before:.2f} -> {after:.2f}")  # fmt: skip
        heads.append(clause)
        thresholds.append(round(math.log(p / (1 - p)), 4))
        report[clause] = {
            "added_precision": round(added, 3),
            "recall_rules": round(before, 3),
            "recall_with_model": round(after, 3),
        }
    vocabulary = vocabulary_of(items)
    weights = np.zeros((len(vocabulary), len(heads)))
    bias = []
    for j, clause in enumerate(heads):
        model = fit([i for i in items if clause in i.applicable], clause, vocabulary)
        weights[:, j] = model.coef_[0]
        bias.append(round(float(model.intercept_[0]), 4))
    weights = np.round(weights, 3)
    used = [row for row in range(len(vocabulary)) if np.any(weights[row] != 0)]
    names = sorted(vocabulary, key=vocabulary.__getitem__)
    files = {
        p.resolve().relative_to(ROOT).as_posix()
        if p.resolve().is_relative_to(ROOT)
        else str(p): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in args.labels
    }
    document = {
        "format": FORMAT,
        "packs": sorted({i.pack for i in items}),
        "heads": heads,
        "thresholds": thresholds,
        "bias": bias,
        "features": [names[row] for row in used],
        "weights": [float(w) for row in used for w in weights[row]],
        "trained_on": {
            "files": files,
            "lexicon_sha256": hashlib.sha256(LEXICON.read_bytes()).hexdigest(),
            "replies": len(items),
            "out_of_batch": report,
            "C": C,
            "precision": args.precision,
        },
    }
    text = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
    args.out.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {args.out} ({len(heads)} heads, {len(used)} features)")


if __name__ == "__main__":
    main()
