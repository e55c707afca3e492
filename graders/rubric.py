"""Session scorecards: per-dimension scores, the points ledger, red lines and the verdict.

Two presets (``graders/data/rubrics.yaml``): ``default`` weighs the three per-reply
dimensions; ``assessment100`` is the company's 100-point assessment rubric. In both,
the ledger lists every point lost with its reply, quote, clause and reason, and the
ledger's points add up to exactly what the total lost.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from bot.i18n import LANGS, Text
from bot.scenario import ResolvedScenario
from graders._base import Bilingual, Grade
from graders.lexicon import LEXICON
from graders.messages import fact_name, intent_name
from graders.session import ReplyRecord
from graders.yamlload import load as load_yaml

Outcome = Literal[
    "resolved", "escalated", "left", "turn_limit", "trainee_ended", "abandoned", "drill_ended"
]
OUTCOME_TEXT: dict[str, Bilingual] = {
    "resolved": {"zh": "问题已解决", "en": "resolved"},
    "escalated": {"zh": "客户投诉升级", "en": "customer escalated"},
    "left": {"zh": "客户离开", "en": "customer left"},
    "turn_limit": {"zh": "达到回合上限", "en": "turn limit reached"},
    "trainee_ended": {"zh": "学员结束了会话", "en": "trainee ended the session"},
    "abandoned": {"zh": "客户久等无人回复，已离开", "en": "customer left after waiting unanswered"},
    "drill_ended": {"zh": "演练时间到", "en": "the drill's time ran out"},
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Dimension(_Strict):
    weight: float
    title: Text


class _DefaultRubric(_Strict):
    pass_mark: float
    dimension_floor: float
    dimensions: dict[str, _Dimension]


class _Rule(_Strict):
    code: str
    clause: str | None = None
    points: float


class _Item(_Strict):
    id: str
    title: Text
    max: float
    rules: list[_Rule]


class _Assessment(_Strict):
    pass_mark: float
    response_seconds: float
    resolution_minutes: float
    items: list[_Item]


class _Rubrics(_Strict):
    default: _DefaultRubric
    assessment100: _Assessment


@cache
def _rubrics() -> _Rubrics:
    text = resources.files("graders").joinpath("data/rubrics.yaml").read_text(encoding="utf-8")
    return _Rubrics.model_validate(load_yaml(text))


RUBRICS = ("default", "assessment100")


def response_seconds() -> float:
    """How long a reply may take before the 100-point rubric docks a point."""
    return _rubrics().assessment100.response_seconds


@dataclass(frozen=True)
class LedgerEntry:
    """One loss of points, explained."""

    item: str
    """Dimension (default rubric) or rubric item id (assessment100)."""
    item_title: Bilingual
    reply: int | None
    """Reply number, or None for a finding about the whole session."""
    points: float
    """Points lost out of the 100-point total."""
    reason: Bilingual
    quote: str
    clause_ids: tuple[str, ...] = ()
    code: str = ""
    capped: bool = False
    """True when the item's cap absorbed part or all of this loss."""

    @classmethod
    def from_dict(cls, e: dict[str, Any]) -> LedgerEntry:
        """Inverse of :meth:`to_dict`."""
        return cls(
            e["item"],
            e["item_title"],
            e["reply"],
            e["points"],
            e["reason"],
            e["quote"],
            tuple(e["clause_ids"]),
            e["code"],
            e["capped"],
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "item": self.item,
            "item_title": dict(self.item_title),
            "reply": self.reply,
            "points": round(self.points, 2),
            "reason": dict(self.reason),
            "quote": self.quote,
            "clause_ids": list(self.clause_ids),
            "code": self.code,
            "capped": self.capped,
        }


@dataclass(frozen=True)
class DimensionScore:
    """A dimension's or item's score out of 100 (or its own max for assessment items)."""

    id: str
    title: Bilingual
    score: float | None
    max_score: float
    scored: int = 0
    not_applicable: int = 0
    unscored: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "id": self.id,
            "title": dict(self.title),
            "score": None if self.score is None else round(self.score, 1),
            "max_score": self.max_score,
            "scored": self.scored,
            "not_applicable": self.not_applicable,
            "unscored": self.unscored,
        }


@dataclass(frozen=True)
class Scorecard:
    """The end-of-session verdict."""

    rubric: str
    total: float | None
    pass_mark: float
    passed: bool
    outcome: Outcome
    dimensions: tuple[DimensionScore, ...]
    ledger: tuple[LedgerEntry, ...]
    red_lines: tuple[LedgerEntry, ...]
    weakest_reply: int | None
    exemplar: Bilingual | None
    needs_review: int
    provisional: bool
    notes: tuple[Bilingual, ...] = field(default=())
    fail_reasons: tuple[Bilingual, ...] = field(default=())
    """Why the session did not pass (empty when it passed)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "rubric": self.rubric,
            "total": None if self.total is None else round(self.total, 1),
            "pass_mark": self.pass_mark,
            "passed": self.passed,
            "outcome": self.outcome,
            "outcome_text": OUTCOME_TEXT[self.outcome],
            "dimensions": [d.to_dict() for d in self.dimensions],
            "ledger": [e.to_dict() for e in self.ledger],
            "red_lines": [e.to_dict() for e in self.red_lines],
            "weakest_reply": self.weakest_reply,
            "exemplar": self.exemplar,
            "needs_review": self.needs_review,
            "provisional": self.provisional,
            "notes": [dict(n) for n in self.notes],
            "fail_reasons": [dict(n) for n in self.fail_reasons],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scorecard:
        """Inverse of :meth:`to_dict` (for stored scorecards)."""
        return cls(
            rubric=data["rubric"],
            total=data["total"],
            pass_mark=data["pass_mark"],
            passed=data["passed"],
            outcome=data["outcome"],
            dimensions=tuple(
                DimensionScore(
                    d["id"],
                    d["title"],
                    d["score"],
                    d["max_score"],
                    d["scored"],
                    d["not_applicable"],
                    d["unscored"],
                )
                for d in data["dimensions"]
            ),
            ledger=tuple(LedgerEntry.from_dict(e) for e in data["ledger"]),
            red_lines=tuple(LedgerEntry.from_dict(e) for e in data["red_lines"]),
            weakest_reply=data["weakest_reply"],
            exemplar=data["exemplar"],
            needs_review=data["needs_review"],
            provisional=data["provisional"],
            notes=tuple(data["notes"]),
            fail_reasons=tuple(data.get("fail_reasons", ())),
        )


# --- session-level findings -------------------------------------------------------------


@dataclass(frozen=True)
class _Finding:
    code: str
    reply: int | None
    reason: Bilingual
    quote: str
    clause_ids: tuple[str, ...] = ()
    points: float = 0.0


def _session_findings(
    scenario: ResolvedScenario,
    records: Sequence[ReplyRecord],
    outcome: Outcome,
) -> list[_Finding]:
    s = scenario.scenario
    key = s.answer_key
    out: list[_Finding] = []
    facts_by_intent: dict[str, list[str]] = {}
    for fact in s.customer.facts:
        for intent in fact.asked_by:
            facts_by_intent.setdefault(intent, []).append(fact.id)
    acceptable = set(key.acceptable_resolutions)
    neutral = {"escalate", "urge_courier", "compensation"}
    for r in records:
        excerpt = r.findings.analysis.excerpt()
        for asked in sorted(r.findings.asks):
            facts = facts_by_intent.get(asked, [])
            if facts and all(f in r.state.revealed for f in facts):
                out.append(
                    _Finding(
                        "session.reasked",
                        r.number,
                        {
                            "zh": f"客户已经提供过的{intent_name(asked)['zh']}又问了一遍。",
                            "en": f"Asked again for {intent_name(asked)['en']}, which the customer had already given.",
                        },
                        excerpt,
                    )
                )
        for kind in sorted(set(r.findings.offers) - acceptable - neutral):
            if kind in r.state.offered:
                out.append(
                    _Finding(
                        "session.offer_repeated",
                        r.number,
                        {
                            "zh": "客户已经拒绝过的方案又提了一遍。",
                            "en": "Offered again a solution the customer had already turned down.",
                        },
                        r.findings.offers[kind],
                    )
                )
        if r.findings.stonewall:
            out.append(
                _Finding(
                    "session.stonewall",
                    r.number,
                    {
                        "zh": "只让客户等待或搬出规定，没有给出任何行动。",
                        "en": "Only asked the customer to wait or cited the rules, with no action.",
                    },
                    excerpt,
                )
            )
    final = records[-1].state if records else None
    offered: set[str] = set()
    asked_any = False
    stated: set[str] = set()
    for r in records:
        offered |= set(r.findings.offers)
        asked_any = asked_any or bool(r.findings.asks)
        stated |= r.findings.stated_facts
    if final is not None:
        stated |= set(final.stated_facts)
    good = offered & acceptable
    if records and not good:
        options = {
            lang: ("、" if lang == "zh" else ", ").join(
                LEXICON.resolutions[k].get(lang)[0] for k in key.acceptable_resolutions
            )
            for lang in LANGS
        }
        out.append(
            _Finding(
                "session.no_resolution",
                None,
                {
                    "zh": f"整场对话没有提出可行的解决方案（可行的有：{options['zh']}）。",
                    "en": f"No workable solution was offered in the whole chat (workable: {options['en']}).",
                },
                "",
                (),
                2.0,
            )
        )
    required = sorted(
        {fact for kind, needed in key.required_facts.items() if kind in good for fact in needed}
    )
    for needed_fact in required:
        if needed_fact not in stated:
            name = fact_name(needed_fact)
            out.append(
                _Finding(
                    f"session.missing_fact.{needed_fact}",
                    None,
                    {
                        "zh": f"提出了方案，但始终没有准确告知{name['zh']}。",
                        "en": f"Offered a solution but never stated the {name['en']} correctly.",
                    },
                    "",
                    (),
                    2.0 / len(required),
                )
            )
    if records and s.customer.facts and not asked_any:
        out.append(
            _Finding(
                "session.no_investigation",
                None,
                {
                    "zh": "没有向客户询问订单号、照片等任何核实信息就处理了。",
                    "en": "Never asked the customer for the order number, photos or anything to check.",
                },
                "",
            )
        )
    if outcome == "escalated":
        out.append(
            _Finding(
                "session.escalated",
                None,
                {
                    "zh": "客户情绪没有安抚住，最终投诉升级。",
                    "en": "The customer's anger was not managed and they escalated a complaint.",
                },
                "",
            )
        )
    if records and outcome != "resolved":
        out.append(
            _Finding(
                "session.unresolved",
                None,
                {
                    "zh": f"会话结束时问题仍未解决（{OUTCOME_TEXT[outcome]['zh']}）。",
                    "en": f"The problem was still unsolved at the end ({OUTCOME_TEXT[outcome]['en']}).",
                },
                "",
            )
        )
    return out


def _timing_findings(
    records: Sequence[ReplyRecord], duration_s: float | None, limit_s: float, limit_min: float
) -> tuple[list[_Finding], list[Bilingual]]:
    out: list[_Finding] = []
    notes: list[Bilingual] = []
    if all(r.latency_s is None for r in records):
        notes.append(
            {
                "zh": "没有回复时间数据，未评估响应时间。",
                "en": "No reply times recorded, so response time was not assessed.",
            }
        )
    for r in records:
        if r.latency_s is not None and r.latency_s > limit_s:
            out.append(
                _Finding(
                    "session.slow_reply",
                    r.number,
                    {
                        "zh": f"这条回复用了 {r.latency_s:.0f} 秒，超过 {limit_s:.0f} 秒的标准。",
                        "en": f"This reply took {r.latency_s:.0f} s, over the {limit_s:.0f} s standard.",
                    },
                    r.findings.analysis.excerpt(),
                )
            )
    if duration_s is None:
        notes.append(
            {
                "zh": "没有时间戳，未评估解决时长。",
                "en": "No timestamps, so resolution time was not assessed.",
            }
        )
    elif duration_s > limit_min * 60:
        out.append(
            _Finding(
                "session.slow_resolution",
                None,
                {
                    "zh": f"整场对话用了 {duration_s / 60:.1f} 分钟，超过 {limit_min:.0f} 分钟的标准。",
                    "en": f"The chat took {duration_s / 60:.1f} min, over the {limit_min:.0f} min standard.",
                },
                "",
            )
        )
    return out, notes


# --- scorecards ---------------------------------------------------------------------------


def scorecard(
    rubric: str,
    scenario: ResolvedScenario,
    records: Sequence[ReplyRecord],
    outcome: Outcome,
    duration_s: float | None = None,
) -> Scorecard:
    """Build the scorecard of a session under ``rubric`` (``default`` or ``assessment100``)."""
    if rubric not in RUBRICS:
        raise ValueError(f"unknown rubric '{rubric}'; use one of {', '.join(RUBRICS)}")
    session = _session_findings(scenario, records, outcome)
    red_lines = tuple(
        LedgerEntry(
            "policy",
            {"zh": "红线", "en": "red line"},
            r.number,
            0.0,
            d.reason,
            d.quote,
            d.clause_ids,
            d.code,
        )
        for r in records
        for g in r.grades
        if "red_line" in g.flags
        for d in g.deductions
        if d.severity == "critical"
    )
    if rubric == "default":
        result = _default(records, session)
    else:
        result = _assessment(records, session, duration_s)
    reasons = _fail_reasons(result.total, result.pass_mark, red_lines, outcome)
    reasons += result.fail_reasons
    weakest, exemplar = _weakest(scenario, records)
    return Scorecard(
        rubric=rubric,
        total=result.total,
        pass_mark=result.pass_mark,
        passed=not reasons,
        outcome=outcome,
        dimensions=result.dimensions,
        ledger=result.ledger,
        red_lines=red_lines,
        weakest_reply=weakest,
        exemplar=exemplar,
        needs_review=sum(1 for r in records for g in r.grades if "needs_review" in g.flags),
        provisional=any(g.status == "unscored" for r in records for g in r.grades),
        notes=result.notes,
        fail_reasons=reasons,
    )


@dataclass(frozen=True)
class _Result:
    """What a preset decides; :func:`scorecard` adds what every preset shares."""

    total: float | None
    pass_mark: float
    dimensions: tuple[DimensionScore, ...]
    ledger: tuple[LedgerEntry, ...]
    notes: tuple[Bilingual, ...] = ()
    fail_reasons: tuple[Bilingual, ...] = ()


def _weakest(
    scenario: ResolvedScenario, records: Sequence[ReplyRecord]
) -> tuple[int | None, Bilingual | None]:
    worst: tuple[float, int] | None = None
    for r in records:
        loss = sum(g.lost / g.max_score for g in r.grades if g.status == "scored" and g.max_score)
        if loss > 0 and (worst is None or loss > worst[0]):
            worst = (loss, r.number)
    if worst is None:
        return None, None
    record = next(r for r in records if r.number == worst[1])
    return worst[1], scenario.exemplar(record.stage)


def _counted(grade: Grade) -> Grade:
    """The grade as totals count it.

    An unscored grade that carries the rule graders' own score (the LLM judge could not
    grade the reply) counts at that score, with the rule's deductions, until a mentor
    reviews it: failing the judge must never drop a bad reply from the total.
    """
    rule = grade.audit.get("rule") if grade.status == "unscored" else None
    if not rule or rule.get("status") != "scored" or rule.get("score") is None:
        return grade
    return replace(grade, status="scored", score=float(rule["score"]))


def _default(records: Sequence[ReplyRecord], session: list[_Finding]) -> _Result:
    config = _rubrics().default
    completeness = _completeness_points(session)
    sums: dict[str, tuple[float, float]] = {}
    counts: dict[str, list[int]] = {}
    for dim in config.dimensions:
        grades = [g for r in records for g in r.grades if g.dimension == dim]
        scored = [c for c in map(_counted, grades) if c.status == "scored"]
        got = sum(g.score or 0.0 for g in scored)
        top = sum(g.max_score for g in scored)
        counts[dim] = [
            len(scored),
            sum(g.status == "not_applicable" for g in grades),
            sum(g.status == "unscored" for g in grades),
        ]
        if dim == "accuracy" and records:
            top += 2.0  # the session's completeness item: solution and required facts
            got += 2.0 - sum(points for _, points in completeness)
        sums[dim] = (got, top)
    present = {d: c for d, c in config.dimensions.items() if sums[d][1] > 0}
    weight_total = sum(c.weight for c in present.values())
    total: float | None = None
    ledger: list[LedgerEntry] = []
    if present:
        total = 0.0
        for dim, conf in present.items():
            got, top = sums[dim]
            share = conf.weight / weight_total * 100
            total += share * got / top
            title = _title(conf.title)
            for r in records:
                for g in map(_counted, r.grades):
                    if g.dimension != dim or g.status != "scored":
                        continue
                    for d in g.deductions:
                        if d.points:
                            ledger.append(
                                LedgerEntry(
                                    dim,
                                    title,
                                    r.number,
                                    share * d.points / top,
                                    d.reason,
                                    d.quote,
                                    d.clause_ids,
                                    d.code,
                                )
                            )
            if dim == "accuracy":
                for f, points in completeness:
                    ledger.append(
                        LedgerEntry(
                            dim,
                            title,
                            None,
                            share * points / top,
                            f.reason,
                            f.quote,
                            f.clause_ids,
                            f.code,
                        )
                    )
    dimensions = tuple(
        DimensionScore(
            dim,
            _title(conf.title),
            None if sums[dim][1] == 0 else 100 * sums[dim][0] / sums[dim][1],
            100.0,
            *counts[dim],
        )
        for dim, conf in config.dimensions.items()
    )
    floor = config.dimension_floor
    below: tuple[Bilingual, ...] = tuple(
        {
            "zh": f"{d.title['zh']} {d.score:.0f} 分，低于单项最低分 {floor:g}。",
            "en": f"{d.title['en']} is {d.score:.0f}, below the {floor:g} floor for any dimension.",
        }
        for d in dimensions
        if d.score is not None and d.score < floor
    )
    return _Result(total, config.pass_mark, dimensions, tuple(ledger), fail_reasons=below)


def _completeness_points(findings: list[_Finding]) -> list[tuple[_Finding, float]]:
    """The accuracy completeness item (max 2): all of it for no solution, else per fact."""
    no_solution = [f for f in findings if f.code == "session.no_resolution"]
    if no_solution:
        return [(no_solution[0], no_solution[0].points)]
    return [(f, f.points) for f in findings if f.code.startswith("session.missing_fact.")]


def _assessment(
    records: Sequence[ReplyRecord], session: list[_Finding], duration_s: float | None
) -> _Result:
    config = _rubrics().assessment100
    timing, notes = _timing_findings(
        records, duration_s, config.response_seconds, config.resolution_minutes
    )
    candidates: list[_Finding] = []
    for r in records:
        for g in map(_counted, r.grades):
            if g.status != "scored":
                continue
            for d in g.deductions:
                candidates.append(_Finding(d.code, r.number, d.reason, d.quote, d.clause_ids))
    candidates += session + timing
    lost: dict[str, float] = {item.id: 0.0 for item in config.items}
    seen: set[tuple[str, int | None, str]] = set()
    ledger: list[LedgerEntry] = []
    for finding in candidates:
        match = _match(config.items, finding)
        if match is None:
            continue
        item, points = match
        dedupe = (item.id, finding.reply, finding.quote)
        if finding.quote and dedupe in seen:
            continue  # one occurrence: the same words found by two graders count once
        seen.add(dedupe)
        taken = min(points, item.max - lost[item.id])
        lost[item.id] += taken
        ledger.append(
            LedgerEntry(
                item.id,
                _title(item.title),
                finding.reply,
                taken,
                finding.reason,
                finding.quote,
                finding.clause_ids,
                finding.code,
                taken < points,
            )
        )
    dimensions = tuple(
        DimensionScore(item.id, _title(item.title), item.max - lost[item.id], item.max)
        for item in config.items
    )
    total = 100.0 - sum(lost.values()) if records else None
    return _Result(total, config.pass_mark, dimensions, tuple(ledger), tuple(notes))


def below_pass_reason(total: float, pass_mark: float) -> Bilingual:
    """The fail reason for a total under the pass mark (mentor adjustments recompute it)."""
    return {
        "zh": f"总分 {total:.1f} 低于及格线 {pass_mark:g}。",
        "en": f"The total {total:.1f} is below the pass mark {pass_mark:g}.",
    }


def _fail_reasons(
    total: float | None, pass_mark: float, red_lines: tuple[LedgerEntry, ...], outcome: Outcome
) -> tuple[Bilingual, ...]:
    """Why a session fails: no graded reply, a red line, too low a score, or unresolved."""
    reasons: list[Bilingual] = []
    if total is None:
        reasons.append({"zh": "没有可评分的回复。", "en": "No reply was graded."})
        return tuple(reasons)
    if red_lines:
        clauses = ", ".join(dict.fromkeys(c for e in red_lines for c in e.clause_ids))
        reasons.append(
            {
                "zh": f"触碰红线（{clauses}），自动不通过。",
                "en": f"A red line was crossed ({clauses}): automatic fail.",
            }
        )
    if total < pass_mark:
        reasons.append(below_pass_reason(total, pass_mark))
    if outcome != "resolved":
        text = OUTCOME_TEXT[outcome]
        reasons.append(
            {
                "zh": f"客户的问题没有解决（{text['zh']}）。",
                "en": f"The customer's problem was not resolved ({text['en']}).",
            }
        )
    return tuple(reasons)


def _title(text: Text) -> Bilingual:
    return {"zh": text.zh, "en": text.en}


def _match(items: Sequence[_Item], finding: _Finding) -> tuple[_Item, float] | None:
    for item in items:
        for rule in item.rules:
            if not fnmatch.fnmatchcase(finding.code, rule.code):
                continue
            if rule.clause is not None and rule.clause not in finding.clause_ids:
                continue
            return item, rule.points
    return None
