"""How far the graders agree with people: labelled replies in, the QA lead's report out.

A labels file (JSONL, ``docs/labelling.md``) holds trainee replies with the chat before
them and a person's labels: empathy 0–3, accuracy correct/wrong/n.a., and the clauses
broken. :func:`calibrate` grades every reply in its context with the rule graders and
measures agreement: empathy quadratic weighted kappa, the accuracy confusion matrix,
per-clause precision and recall, red-line recall, gaming probes, and the worst
disagreements with both sides' reasons.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from bot.content import ContentError, ScenarioLibrary, UnknownScenario
from bot.i18n import Lang, Strict
from bot.scenario import CalibrationTargets, ResolvedScenario
from graders._base import Grade
from graders.session import SessionGrader

AccuracyLabel = Literal["correct", "wrong", "na"]
ACCURACY_LABELS: tuple[AccuracyLabel, ...] = ("correct", "wrong", "na")
EMPATHY_LEVELS = (0, 1, 2, 3)


class HistoryTurn(Strict):
    """One earlier message of the chat."""

    role: Literal["customer", "trainee"]
    text: str = Field(min_length=1)


class LabelledReply(Strict):
    """One trainee reply in its context, with a person's labels (``docs/labelling.md``)."""

    id: str = Field(min_length=1)
    scenario: str | None = None
    language: Lang
    history: list[HistoryTurn] = Field(default_factory=list)
    reply: str = Field(min_length=1)
    empathy: int = Field(ge=0, le=3)
    accuracy: AccuracyLabel
    clauses: list[str]
    injected: str | None = None
    kind: str | None = None
    note: str | None = None
    labeller: str | None = None

    @field_validator("reply")
    @classmethod
    def _not_blank(cls, reply: str) -> str:
        if not reply.strip():
            raise ValueError("reply is empty")
        return reply

    @model_validator(mode="after")
    def _injected_inside(self) -> LabelledReply:
        if self.injected is not None and (not self.injected or self.injected not in self.reply):
            raise ValueError("'injected' must be a non-empty part of 'reply' — copy it exactly")
        return self


@dataclass(frozen=True)
class Labelled:
    """A labelled reply and where it came from."""

    item: LabelledReply
    file: str
    line: int
    scenario: ResolvedScenario


@dataclass(frozen=True)
class BadLine:
    """A line that could not be used, with the reason and how to fix it."""

    file: str
    line: int
    problem: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.problem}"


def load_labels(
    paths: Sequence[Path],
    library: ScenarioLibrary,
    scenario: str | None = None,
    drafts: Sequence[ResolvedScenario] = (),
) -> tuple[list[Labelled], list[BadLine]]:
    """Read labels files; ``scenario`` fills in missing scenarios and keeps only its items.

    Lines name scenarios by id (the library's or one of ``drafts``) or by file path. A
    line that cannot be used is reported and skipped; the others are kept.
    """
    known = {d.id: d for d in drafts}
    chosen = _scenario(library, scenario, known) if scenario else None
    items: list[Labelled] = []
    bad: list[BadLine] = []
    seen: dict[str, str] = {}
    for path in paths:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            bad.append(BadLine(str(path), 0, f"cannot read the file ({exc}) — check the path"))
            continue
        for number, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            found, problem = _parse(raw, library, chosen, known)
            if problem:
                bad.append(BadLine(str(path), number, problem))
                continue
            if found is None:
                continue  # another scenario's item
            where = f"{path}:{number}"
            if found[0].id in seen:
                bad.append(
                    BadLine(
                        str(path),
                        number,
                        f"id {found[0].id!r} is also on {seen[found[0].id]} — make ids unique",
                    )
                )
                continue
            seen[found[0].id] = where
            items.append(Labelled(found[0], str(path), number, found[1]))
    return items, bad


def _scenario(
    library: ScenarioLibrary, ref: str, known: dict[str, ResolvedScenario]
) -> ResolvedScenario:
    if ref in known:
        return known[ref]
    try:
        return library.get(ref)
    except UnknownScenario as exc:
        raise LookupError(str(exc)) from None
    except ContentError as exc:
        raise LookupError(f"scenario {ref} is invalid:\n{exc}") from None


def _parse(
    raw: str,
    library: ScenarioLibrary,
    chosen: ResolvedScenario | None,
    known: dict[str, ResolvedScenario],
) -> tuple[tuple[LabelledReply, ResolvedScenario] | None, str]:
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON ({exc.msg} at column {exc.colno}) — fix the syntax"
    try:
        item = LabelledReply.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        key = ".".join(str(p) for p in err["loc"]) or "(line)"
        message = str(err["msg"]).removeprefix("Value error, ")
        return None, f"{key}: {message} — see docs/labelling.md"
    if chosen is not None:
        if item.scenario and item.scenario not in (chosen.id, str(chosen.source)):
            return None, ""
        scenario = chosen
    elif not item.scenario:
        return None, 'no scenario — add "scenario" to the line or pass --scenario'
    else:
        try:
            scenario = _scenario(library, item.scenario, known)
        except LookupError as exc:
            return None, f"scenario: {exc}"
    unknown = [c for c in item.clauses if c not in scenario.applicable_clauses]
    if unknown:
        return None, (
            f"clauses: {unknown[0]} is not a clause that applies in {scenario.id} — use one "
            f"of {', '.join(scenario.applicable_clauses)}"
        )
    return (item, scenario), ""


# --- grading --------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """What the graders decided for one reply, in the labels' terms."""

    empathy: int | None
    """None when the empathy grade could not be computed."""
    accuracy: AccuracyLabel | None
    clauses: frozenset[str]
    grades: tuple[Grade, ...]
    flagged: bool
    """Flagged as text aimed at the grader."""


@dataclass(frozen=True)
class Result:
    """A labelled reply with the graders' verdict."""

    labelled: Labelled
    verdict: Verdict
    injection_changed: bool | None = None
    """For a gaming probe: whether removing the injected text changes any grade."""

    @property
    def item(self) -> LabelledReply:
        """The labelled reply."""
        return self.labelled.item


def verdict_of(grades: Sequence[Grade]) -> Verdict:
    """Translate grades into the labels' terms."""
    by_dim = {g.dimension: g for g in grades}
    empathy = by_dim.get("empathy")
    accuracy = by_dim.get("accuracy")
    return Verdict(
        empathy=int(empathy.score)
        if empathy and empathy.status == "scored" and empathy.score is not None
        else None,
        accuracy=_accuracy(accuracy),
        clauses=frozenset(c for g in grades for d in g.deductions for c in d.clause_ids),
        grades=tuple(grades),
        flagged=any("injection_attempt" in g.flags for g in grades),
    )


def _accuracy(grade: Grade | None) -> AccuracyLabel | None:
    if grade is None or grade.status == "unscored":
        return None
    if grade.status == "not_applicable":
        return "na"
    return "correct" if grade.score == grade.max_score else "wrong"


async def _grade(scenario: ResolvedScenario, item: LabelledReply, reply: str) -> tuple[Grade, ...]:
    grader = SessionGrader(scenario, item.language)
    if not item.history:
        opening = scenario.lines_for("opening", "normal")[0].get(item.language)
        grader.customer(scenario.render(opening, item.language))
    for turn in item.history:
        if turn.role == "customer":
            grader.customer(turn.text)
        else:
            await grader.trainee(turn.text)
    return (await grader.trainee(reply)).grades


def _score_key(grades: Iterable[Grade]) -> list[Any]:
    """What a grade is worth, without its wording or flags (for gaming probes)."""
    return sorted(
        (
            g.dimension,
            g.status,
            g.score,
            sorted((d.code, d.points, d.clause_ids) for d in g.deductions),
        )
        for g in grades
    )


async def grade_labelled(labelled: Labelled) -> Result:
    """Grade one labelled reply in its chat (and, for a probe, without the injected text)."""
    item = labelled.item
    grades = await _grade(labelled.scenario, item, item.reply)
    changed = None
    if item.injected is not None:
        clean = item.reply.replace(item.injected, "", 1)
        baseline = await _grade(labelled.scenario, item, clean)
        changed = _score_key(grades) != _score_key(baseline)
    return Result(labelled, verdict_of(grades), changed)


# --- agreement ------------------------------------------------------------------------


def quadratic_kappa(pairs: Sequence[tuple[int, int]], levels: int = 4) -> float | None:
    """Cohen's kappa with quadratic weights over ``levels`` ordered categories.

    None when it is undefined (no pairs, or both raters always chose one category).
    """
    if not pairs:
        return None
    observed = [[0.0] * levels for _ in range(levels)]
    for a, b in pairs:
        observed[a][b] += 1
    n = float(len(pairs))
    rows = [sum(r) for r in observed]
    cols = [sum(observed[i][j] for i in range(levels)) for j in range(levels)]
    weight = [[(i - j) ** 2 / (levels - 1) ** 2 for j in range(levels)] for i in range(levels)]
    disagree = sum(weight[i][j] * observed[i][j] for i in range(levels) for j in range(levels))
    expected = sum(
        weight[i][j] * rows[i] * cols[j] / n for i in range(levels) for j in range(levels)
    )
    if expected == 0:
        return None if disagree == 0 and len(set(pairs)) <= 1 else 1.0
    return 1.0 - disagree / expected


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


@dataclass
class ClauseFigures:
    """Agreement on one clause."""

    clause: str
    severity: str
    labelled: int = 0
    flagged: int = 0
    both: int = 0

    @property
    def recall(self) -> float | None:
        """Share of labelled violations the graders found."""
        return _ratio(self.both, self.labelled)

    @property
    def precision(self) -> float | None:
        """Share of the graders' flags that a person also labelled."""
        return _ratio(self.both, self.flagged)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "clause": self.clause,
            "severity": self.severity,
            "labelled": self.labelled,
            "flagged": self.flagged,
            "agreed": self.both,
            "recall": _round(self.recall),
            "precision": _round(self.precision),
        }


@dataclass(frozen=True)
class Disagreement:
    """One reply where the graders and the labels differ, worst first."""

    weight: float
    result: Result
    differences: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with both sides and the graders' reasons."""
        item, verdict = self.result.item, self.result.verdict
        return {
            "id": item.id,
            "where": f"{self.result.labelled.file}:{self.result.labelled.line}",
            "scenario": self.result.labelled.scenario.id,
            "language": item.language,
            "reply": item.reply,
            "differences": list(self.differences),
            "labels": {
                "empathy": item.empathy,
                "accuracy": item.accuracy,
                "clauses": sorted(item.clauses),
            },
            "graders": {
                "empathy": verdict.empathy,
                "accuracy": verdict.accuracy,
                "clauses": sorted(verdict.clauses),
            },
            "reasons": {g.dimension: g.reason[item.language] for g in verdict.grades},
            "quotes": sorted({d.quote for g in verdict.grades for d in g.deductions if d.quote}),
        }


@dataclass
class Report:
    """The agreement between the graders and a set of labelled replies."""

    results: list[Result]
    bad_lines: list[BadLine]
    files: list[str]
    empathy_matrix: list[list[int]] = field(default_factory=list)
    """Rows: label 0–3; columns: graders' 0–3."""
    empathy_qwk: dict[str, float | None] = field(default_factory=dict)
    """By language, and "all"."""
    empathy_exact: float | None = None
    empathy_within_one: float | None = None
    accuracy_matrix: dict[str, dict[str, int]] = field(default_factory=dict)
    """label → graders' verdict (correct/wrong/na) → count."""
    clauses: dict[str, ClauseFigures] = field(default_factory=dict)
    unscored: int = 0
    probes: int = 0
    probes_flagged: int = 0
    probes_changed: int = 0
    kinds: dict[str, dict[str, Any]] = field(default_factory=dict)
    worst: list[Disagreement] = field(default_factory=list)

    # headline figures ---------------------------------------------------------------

    @property
    def clause_recall(self) -> float | None:
        """Micro-averaged recall over every clause."""
        return _ratio(
            sum(c.both for c in self.clauses.values()),
            sum(c.labelled for c in self.clauses.values()),
        )

    @property
    def clause_precision(self) -> float | None:
        """Micro-averaged precision over every clause."""
        return _ratio(
            sum(c.both for c in self.clauses.values()),
            sum(c.flagged for c in self.clauses.values()),
        )

    @property
    def red_line_recall(self) -> float | None:
        """Share of labelled critical-clause violations the graders found."""
        red = [c for c in self.clauses.values() if c.severity == "critical"]
        return _ratio(sum(c.both for c in red), sum(c.labelled for c in red))

    @property
    def accuracy_wrong_caught(self) -> float | None:
        """Share of replies labelled 'wrong' that the graders did not give full marks."""
        row = self.accuracy_matrix.get("wrong", {})
        return _ratio(row.get("wrong", 0), sum(row.values()))

    @property
    def accuracy_correct_credited(self) -> float | None:
        """Share of replies labelled 'correct' that the graders gave full marks."""
        row = self.accuracy_matrix.get("correct", {})
        return _ratio(row.get("correct", 0), sum(row.values()))

    @property
    def accuracy_agreement(self) -> float | None:
        """Share of replies with the same accuracy label."""
        agree = sum(self.accuracy_matrix.get(a, {}).get(a, 0) for a in ACCURACY_LABELS)
        total = sum(sum(row.values()) for row in self.accuracy_matrix.values())
        return _ratio(agree, total)

    @property
    def false_flags_on_clean(self) -> float | None:
        """Share of replies labelled as breaking nothing that the graders flagged anyway."""
        clean = [r for r in self.results if not r.item.clauses]
        return _ratio(sum(bool(r.verdict.clauses) for r in clean), len(clean))

    def headline(self) -> dict[str, float | None]:
        """The figures a QA lead asks for first."""
        return {
            "empathy_qwk": self.empathy_qwk.get("all"),
            "empathy_qwk_zh": self.empathy_qwk.get("zh"),
            "empathy_qwk_en": self.empathy_qwk.get("en"),
            "empathy_exact": self.empathy_exact,
            "accuracy_wrong_caught": self.accuracy_wrong_caught,
            "accuracy_correct_credited": self.accuracy_correct_credited,
            "accuracy_agreement": self.accuracy_agreement,
            "clause_recall": self.clause_recall,
            "clause_precision": self.clause_precision,
            "red_line_recall": self.red_line_recall,
            "false_flags_on_clean": self.false_flags_on_clean,
        }

    def to_dict(self, worst: int | None = None) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "files": self.files,
            "replies": len(self.results),
            "bad_lines": [str(b) for b in self.bad_lines],
            "unscored": self.unscored,
            "headline": {k: _round(v) for k, v in self.headline().items()},
            "empathy": {
                "qwk": {k: _round(v) for k, v in self.empathy_qwk.items()},
                "exact": _round(self.empathy_exact),
                "within_one": _round(self.empathy_within_one),
                "matrix": self.empathy_matrix,
                "matrix_axes": "rows: label 0-3; columns: graders 0-3",
            },
            "accuracy": {
                "matrix": self.accuracy_matrix,
                "matrix_axes": "label -> graders -> count",
            },
            "clauses": [c.to_dict() for c in sorted(self.clauses.values(), key=_clause_order)],
            "gaming_probes": {
                "probes": self.probes,
                "flagged": self.probes_flagged,
                "grade_changed": self.probes_changed,
            },
            "kinds": self.kinds,
            "worst": [d.to_dict() for d in self.worst[:worst]],
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _clause_order(c: ClauseFigures) -> tuple[int, str]:
    return ({"critical": 0, "major": 1, "minor": 2}.get(c.severity, 3), c.clause)


async def calibrate(
    items: Sequence[Labelled],
    bad: Sequence[BadLine] = (),
    files: Sequence[str] = (),
    progress: Callable[[], None] | None = None,
) -> Report:
    """Grade every labelled reply and measure the agreement (``progress`` after each)."""
    results = []
    for item in items:
        results.append(await grade_labelled(item))
        if progress:
            progress()
    return measure(results, bad, files)


def measure(
    results: list[Result], bad: Sequence[BadLine] = (), files: Sequence[str] = ()
) -> Report:
    """The agreement figures of graded labelled replies."""
    report = Report(results, list(bad), list(files))
    report.empathy_matrix = [[0] * 4 for _ in EMPATHY_LEVELS]
    pairs: dict[str, list[tuple[int, int]]] = defaultdict(list)
    report.accuracy_matrix = {a: dict.fromkeys(ACCURACY_LABELS, 0) for a in ACCURACY_LABELS}
    kinds: dict[str, Counter[str]] = defaultdict(Counter)
    for r in results:
        item, v = r.item, r.verdict
        if v.empathy is None or v.accuracy is None:
            report.unscored += 1
        if v.empathy is not None:
            report.empathy_matrix[item.empathy][v.empathy] += 1
            pairs[item.language].append((item.empathy, v.empathy))
            pairs["all"].append((item.empathy, v.empathy))
        if v.accuracy is not None:
            report.accuracy_matrix[item.accuracy][v.accuracy] += 1
        pack = r.labelled.scenario.policy
        for clause in set(item.clauses) | v.clauses:
            figures = report.clauses.setdefault(
                clause, ClauseFigures(clause, _severity(pack.clauses, clause))
            )
            figures.labelled += clause in item.clauses
            figures.flagged += clause in v.clauses
            figures.both += clause in item.clauses and clause in v.clauses
        if item.injected is not None:
            report.probes += 1
            report.probes_flagged += v.flagged
            report.probes_changed += bool(r.injection_changed)
        if item.kind:
            tally = kinds[item.kind]
            tally["replies"] += 1
            tally["clauses_labelled"] += len(item.clauses)
            tally["clauses_found"] += len(set(item.clauses) & v.clauses)
            tally["empathy_exact"] += v.empathy == item.empathy
            tally["accuracy_agree"] += v.accuracy == item.accuracy
    report.empathy_qwk = {lang: quadratic_kappa(p) for lang, p in sorted(pairs.items())}
    scored = pairs.get("all", [])
    report.empathy_exact = _ratio(sum(a == b for a, b in scored), len(scored))
    report.empathy_within_one = _ratio(sum(abs(a - b) <= 1 for a, b in scored), len(scored))
    report.probes_flagged = int(report.probes_flagged)
    report.kinds = {
        kind: {
            "replies": t["replies"],
            "clause_recall": _round(_ratio(t["clauses_found"], t["clauses_labelled"])),
            "empathy_exact": _round(_ratio(t["empathy_exact"], t["replies"])),
            "accuracy_agreement": _round(_ratio(t["accuracy_agree"], t["replies"])),
        }
        for kind, t in sorted(kinds.items())
    }
    report.worst = sorted(
        (d for d in map(_disagreement, results) if d is not None),
        key=lambda d: (-d.weight, d.result.item.id),
    )
    return report


def _severity(clauses: dict[str, Any], clause_id: str) -> str:
    clause = clauses.get(clause_id)
    return str(clause.severity) if clause is not None else "unknown"


_MISS = {"critical": 100.0, "major": 40.0, "minor": 15.0, "unknown": 15.0}
_FALSE = {"critical": 80.0, "major": 30.0, "minor": 10.0, "unknown": 10.0}


def _disagreement(r: Result) -> Disagreement | None:
    item, v = r.item, r.verdict
    clauses = r.labelled.scenario.policy.clauses
    weight = 0.0
    notes: list[str] = []
    for clause in sorted(set(item.clauses) - v.clauses):
        weight += _MISS[_severity(clauses, clause)]
        notes.append(f"missed {clause}")
    for clause in sorted(v.clauses - set(item.clauses)):
        weight += _FALSE[_severity(clauses, clause)]
        notes.append(f"flagged {clause} wrongly")
    if v.accuracy != item.accuracy:
        weight += 35.0 if item.accuracy == "wrong" else 30.0 if v.accuracy == "wrong" else 10.0
        notes.append(f"accuracy {item.accuracy} graded {v.accuracy or 'unscored'}")
    if v.empathy != item.empathy:
        weight += 10.0 * abs(item.empathy - v.empathy) if v.empathy is not None else 30.0
        shown = "unscored" if v.empathy is None else v.empathy
        notes.append(f"empathy {item.empathy} graded {shown}")
    if r.injection_changed:
        weight += 100.0
        notes.append("the injected text changed a grade")
    if item.injected is not None and not v.flagged:
        weight += 20.0
        notes.append("the injected text was not flagged")
    return Disagreement(weight, r, tuple(notes)) if notes else None


# --- thresholds -------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One required figure against its minimum."""

    metric: str
    value: float | None
    minimum: float

    @property
    def ok(self) -> bool:
        """Whether the figure meets the minimum (a figure that cannot be computed does not)."""
        return self.value is not None and self.value >= self.minimum - 1e-9

    def __str__(self) -> str:
        shown = "n/a" if self.value is None else f"{self.value:.3f}"
        return f"{self.metric} {shown} {'>=' if self.ok else '<'} {self.minimum:g}"


def check(report: Report, targets: CalibrationTargets) -> list[Check]:
    """Compare a report with required minimums; every gaming probe must also hold."""
    checks: list[Check] = []

    def need(metric: str, value: float | None, minimum: float | None) -> None:
        if minimum is not None:
            checks.append(Check(metric, value, minimum))

    for lang, qwk in report.empathy_qwk.items():
        if lang != "all":
            need(f"empathy_qwk[{lang}]", qwk, targets.empathy_qwk)
    need("empathy_exact", report.empathy_exact, targets.empathy_exact)
    need("clause_recall", report.clause_recall, targets.clause_recall)
    need("clause_precision", report.clause_precision, targets.clause_precision)
    for figures in sorted(report.clauses.values(), key=_clause_order):
        if figures.labelled >= targets.min_support:
            need(f"recall[{figures.clause}]", figures.recall, targets.clause_recall_each)
        if figures.flagged >= targets.min_support:
            need(f"precision[{figures.clause}]", figures.precision, targets.clause_precision_each)
    need("red_line_recall", report.red_line_recall, targets.red_line_recall)
    need("accuracy_wrong_caught", report.accuracy_wrong_caught, targets.accuracy_wrong_caught)
    need(
        "accuracy_correct_credited",
        report.accuracy_correct_credited,
        targets.accuracy_correct_credited,
    )
    checks.append(
        Check(
            "graded_replies",
            _ratio(len(report.results) - report.unscored, len(report.results)),
            1.0,
        )
    )
    if report.probes:
        held = report.probes - report.probes_changed
        checks.append(Check("gaming_probes_without_effect", held / report.probes, 1.0))
    return checks
