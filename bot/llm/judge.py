"""The LLM judge: grades one trainee reply on one dimension, bounded by the rule grade.

Each call asks the model for an analytic verdict as JSON: brief reasoning first, then every
fault as a quote from the reply with the points it costs; the grade is the maximum minus
those points, so every lost point is explained by construction. The answer is checked
strictly, re-asked once when it is invalid, and otherwise the grade is *unscored* for a
mentor, never a guess. The three dimensions' prompts differ only in their last paragraph,
so a server that keeps a prompt prefix reads the shared part once. The
rule graders' grade bounds the result: a red line, a critical clause or text aimed at the
grader caps the judge at the rule score. All trainee text reaches the model fenced.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Any, Protocol, TypeGuard

from bot.i18n import Lang
from bot.llm.client import Completion, LLMClient, LLMError
from bot.llm.fence import fence, neutralise, nonce
from bot.llm.prompts import Prompt, render
from bot.llm.reasons import describe
from bot.scenario import ResolvedScenario
from graders._base import Bilingual, Deduction, Grade

JUDGED = ("empathy", "accuracy", "policy")
log = logging.getLogger(__name__)

_MAX_TOKENS = 600
"""The answer's cap. The prompt asks for about 300 tokens (three sentences of reasoning, a
few faults, two summaries) and the ``grammar`` mode bounds every field, but a model with a
poor Chinese vocabulary spends two tokens a character, and a cut answer is lost."""
HISTORY_CHARS: dict[Lang, int] = {"zh": 400, "en": 1000}
"""The chat shown to the judge: the latest messages up to this many characters (at least
the last one), so the prompt stays small however long the session runs."""
_LIMITS: dict[Lang, dict[str, int]] = {
    "zh": {"reasoning": 120, "why": 60, "summary_zh": 60, "summary_en": 160},
    "en": {"reasoning": 300, "why": 150, "summary_zh": 60, "summary_en": 160},
}
"""Field lengths (characters) the ``grammar`` mode enforces: about 300 tokens in all."""
_MOST_FAULTS = 3
"""Violations the ``grammar`` mode allows (a reply's faults rarely number more)."""
_SEGMENT = re.compile(r"[^。！？!?；;，,、\n]+[。！？!?；;，,、]?")
_TOLERANCE = 1e-6
_FENCED_JSON = re.compile(r"```(?:json)?\s*(\{.*?\})\s*```", re.DOTALL | re.IGNORECASE)
_BOUND_FLAGS = ("red_line", "injection_attempt")


def _schema(max_score: float, allowed: Sequence[str]) -> dict[str, Any]:
    """What a verdict looks like; points in steps of 0.5, clause ids from ``allowed``."""
    ids: dict[str, Any] = {"type": "array", "items": {"type": "string"}}
    if allowed:
        ids["items"]["enum"] = list(allowed)
    else:
        ids["maxItems"] = 0
    violation = {
        "type": "object",
        "properties": {
            "quote": {"type": "string"},
            "points": {"type": "number", "enum": [n / 2 for n in range(1, int(max_score * 2) + 1)]},
            "clause_ids": ids,
            "why": {"type": "string"},
        },
        "required": ["quote", "points", "clause_ids", "why"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {
            "reasoning": {"type": "string"},
            "violations": {"type": "array", "items": violation},
            "summary_zh": {"type": "string"},
            "summary_en": {"type": "string"},
        },
        "required": ["reasoning", "violations", "summary_zh", "summary_en"],
        "additionalProperties": False,
    }


def _pieces(reply: str) -> list[str]:
    """The pieces of ``reply`` a ``grammar`` quote may be (clauses, at most 60)."""
    pieces = dict.fromkeys(p.strip() for p in _SEGMENT.findall(neutralise(reply)))
    return [p for p in pieces if p][:60] or [""]


def _grammar(schema: dict[str, Any], pieces: list[str], lang: Lang) -> dict[str, Any]:
    """``schema`` made stricter (in place) for a server that enforces it (``grammar``).

    The model never sees it. Quotes are ``pieces`` of the reply (:func:`_pieces`), so
    every one the model writes is found in it; fields have a length cap, so the answer fits
    ``_MAX_TOKENS``. Trainee text may appear here because the model never reads it.
    """
    violation = schema["properties"]["violations"]
    violation["maxItems"] = _MOST_FAULTS
    fields = violation["items"]["properties"]
    fields["quote"] = {"type": "string", "enum": pieces}
    limits = _LIMITS[lang]
    fields["why"].update(minLength=1, maxLength=limits["why"])
    for name in ("reasoning", "summary_zh", "summary_en"):
        schema["properties"][name].update(minLength=1, maxLength=limits[name])
    return schema


@dataclass(frozen=True)
class _Violation:
    quote: str
    points: float
    clause_ids: tuple[str, ...]
    why: str


@dataclass(frozen=True)
class _Verdict:
    reasoning: str
    violations: tuple[_Violation, ...]
    score: float
    summary_zh: str
    summary_en: str


@dataclass
class _Attempts:
    """What the calls of one grading produced so far (readable after a cancellation)."""

    prompt: Prompt
    completions: list[Completion] = field(default_factory=list)


class _Failed(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class VerdictCache(Protocol):
    """Validated judge answers by request.

    The same reply in the same context is the same request to the same model: it gets the
    same answer, and so the same grade.
    """

    def recall_verdict(self, key: str) -> tuple[str, str] | None:
        """The answer text and model stored under ``key``, if any."""
        ...

    def remember_verdict(self, key: str, answer: str, model: str) -> None:
        """Store a validated answer (the first one stored for a key stays)."""
        ...


class Judge:
    """Grades replies with an LLM, one dimension per call, bounded by the rule grades."""

    def __init__(
        self, client: LLMClient, *, budget_s: float = 20.0, cache: VerdictCache | None = None
    ) -> None:
        self.client = client
        self.budget_s = budget_s
        self.cache = cache

    async def grade(
        self,
        reply: str,
        rule: Grade,
        *,
        scenario: ResolvedScenario,
        lang: Lang,
        history: Sequence[tuple[str, str]],
        tainted: bool,
        reply_number: int,
    ) -> Grade:
        """The final grade of ``rule.dimension`` for ``reply``.

        ``rule`` passes through unchanged when it is not scored or its dimension is not
        judged. ``history`` is the chat before the reply as ``(role, text)``; ``tainted``
        says text aimed at the grader was found in this or an earlier trainee reply.
        """
        if not _judged(rule):
            return rule
        asked = _Asked.of(reply, scenario, lang, history, reply_number)
        return await self._grade(asked, rule, tainted=tainted)

    async def _grade(self, asked: _Asked, rule: Grade, *, tainted: bool) -> Grade:
        """:meth:`grade` of a judged ``rule``, with the reply's prompt parts made."""
        reply, scenario, lang = asked.reply, asked.scenario, asked.lang
        prompt, messages = asked.messages(rule)
        attempts = _Attempts(prompt)
        allowed = frozenset(scenario.applicable_clauses)
        key = self._key(messages, rule.dimension)
        cached = self.cache.recall_verdict(key) if self.cache is not None else None
        if cached is not None:
            checked = _check(cached[0], reply, rule.max_score, allowed, lang)
            if isinstance(checked, _Verdict):
                attempts.completions.append(Completion(cached[0], cached[1], "cached", "", 0.0))
                return _bounded(rule, checked, attempts, tainted=tainted, lang=lang)
        try:
            deadline = time.monotonic() + self.budget_s
            verdict = await self._ask(messages, attempts, asked, rule, allowed, deadline)
        except _Failed as failure:
            return _unscored(rule, attempts, failure)
        except Exception as error:  # a bug must cost the judge's grade, never the reply
            log.exception("judge failed on a %s grade", rule.dimension)
            return _unscored(rule, attempts, _Failed("error", repr(error)))
        if self.cache is not None:
            last = attempts.completions[-1]
            self.cache.remember_verdict(key, last.text, last.model)
        return _bounded(rule, verdict, attempts, tainted=tainted, lang=lang)

    def _key(self, messages: list[dict[str, str]], dimension: str) -> str:
        """The request's identity: model, dimension and every message."""
        request = {"model": self.client.settings.model, "dimension": dimension, "m": messages}
        encoded = json.dumps(request, ensure_ascii=False, sort_keys=True).encode("utf-8")
        return hashlib.sha256(encoded).hexdigest()

    async def grade_all(
        self,
        reply: str,
        rules: Sequence[Grade],
        *,
        scenario: ResolvedScenario,
        lang: Lang,
        history: Sequence[tuple[str, str]],
        tainted: bool,
        reply_number: int,
    ) -> list[Grade]:
        """:meth:`grade` for every judged dimension, concurrently.

        Other grades pass through unchanged; the result is in the order of ``rules``. What
        the dimensions' prompts share is made once.
        """
        if not any(_judged(rule) for rule in rules):
            return list(rules)
        asked = _Asked.of(reply, scenario, lang, history, reply_number)

        async def one(rule: Grade) -> Grade:
            if not _judged(rule):
                return rule
            return await self._grade(asked, rule, tainted=tainted)

        return list(await asyncio.gather(*(one(rule) for rule in rules)))

    async def _ask(
        self,
        messages: list[dict[str, str]],
        attempts: _Attempts,
        asked: _Asked,
        rule: Grade,
        allowed: frozenset[str],
        deadline: float,
    ) -> _Verdict:
        """Ask, check, re-ask once with what was wrong, all by ``deadline``; raises ``_Failed``.

        Each call gets what is left of the budget as its own, so a server that does not
        answer in time counts as failing (its breaker opens), not as a call given up.
        """
        error = ""
        reply, lang = asked.reply, asked.lang
        schema = _schema(rule.max_score, sorted(allowed))
        grammar = _grammar(_schema(rule.max_score, sorted(allowed)), asked.pieces, lang)
        for _ in range(2):
            left = deadline - time.monotonic()
            if left <= 0:
                raise _Failed("budget", f"no valid answer within {self.budget_s:g} s")
            try:
                completion = await self.client.complete(
                    messages,
                    schema=schema,
                    schema_name=f"judge_{rule.dimension}",
                    max_tokens=_MAX_TOKENS,
                    grammar=grammar,
                    budget_s=left,
                )
            except LLMError as failure:
                raise _Failed(failure.reason, failure.message) from None
            attempts.completions.append(completion)
            checked = _check(completion.text, reply, rule.max_score, allowed, lang)
            if isinstance(checked, _Verdict):
                return checked
            error = checked
            messages = [
                *messages,
                {"role": "assistant", "content": completion.text},
                {"role": "user", "content": _correction(error, lang)},
            ]
        raise _Failed("invalid_answer", error)


# ---------------------------------------------------------------------- prompt


def _judged(rule: Grade) -> bool:
    """Whether the judge grades ``rule`` (a scored grade of a judged dimension)."""
    return rule.status == "scored" and rule.score is not None and rule.dimension in JUDGED


@dataclass(frozen=True)
class _Asked:
    """What the judge's prompts for one reply share, whatever the dimension, made once.

    The system part never depends on the dimension (a server that keeps a prompt prefix
    reads it once), so it is rendered without it; the user part ends with the dimension's
    paragraph.
    """

    reply: str
    scenario: ResolvedScenario
    lang: Lang
    values: dict[str, Any]
    system: Prompt
    pieces: list[str]
    """The reply's pieces a ``grammar`` quote may be."""

    @classmethod
    def of(
        cls,
        reply: str,
        scenario: ResolvedScenario,
        lang: Lang,
        history: Sequence[tuple[str, str]],
        reply_number: int,
    ) -> _Asked:
        marker = nonce("judge", scenario.id, lang, reply_number, reply)  # one for all dimensions
        shown = _recent(history, HISTORY_CHARS[lang])
        s = scenario.scenario
        key = s.answer_key
        values: dict[str, Any] = {
            "marker": marker,
            "order": scenario.template_values(lang),
            "payment": s.order.payment,
            "freight_insurance": s.order.freight_insurance,
            "key": {
                "acceptable_resolutions": list(key.acceptable_resolutions),
                "forbidden_resolutions": list(key.forbidden_resolutions),
                "evidence_required": list(key.evidence_required),
                "shipping_payer": key.shipping_payer,
                "return_eligible": key.return_eligible,
                "price_protection_eligible": key.price_protection_eligible,
                "required_facts": {k: list(v) for k, v in key.required_facts.items()},
                "problem_terms": list(key.problem_terms.get(lang)),
            },
            "clauses": [_clause(scenario, cid, lang) for cid in scenario.applicable_clauses],
            "chat": [(role, fence(text, "CHAT", marker)) for role, text in shown],
            "omitted": len(history) - len(shown),
            "reply": fence(reply, "REPLY", marker),
            "reply_number": reply_number,
        }
        system = render("judge", lang, part="system", **values)
        return cls(reply, scenario, lang, values, system, _pieces(reply))

    def messages(self, rule: Grade) -> tuple[Prompt, list[dict[str, str]]]:
        """The rendered prompt (its system part) and the messages for ``rule``'s dimension."""
        user = render(
            "judge",
            self.lang,
            part="user",
            dimension=rule.dimension,
            max_score=f"{rule.max_score:g}",
            **self.values,
        )
        return self.system, [
            {"role": "system", "content": self.system.text},
            {"role": "user", "content": user.text},
        ]


def _messages(
    reply: str,
    rule: Grade,
    scenario: ResolvedScenario,
    lang: Lang,
    history: Sequence[tuple[str, str]],
    reply_number: int,
) -> tuple[Prompt, list[dict[str, str]]]:
    """The rendered prompt (system and user parts of one template) and the messages."""
    return _Asked.of(reply, scenario, lang, history, reply_number).messages(rule)


def _clause(scenario: ResolvedScenario, clause_id: str, lang: Lang) -> dict[str, str]:
    """A clause as the judge reads it: a red line by its title, the others in full.

    The rule graders find red lines, and one caps the judge at the rule grade.
    """
    clause = scenario.policy.clauses[clause_id]
    critical = clause.severity == "critical"
    text = clause.title.get(lang) if critical else scenario.policy.clause_text(clause_id, lang)
    return {"id": clause_id, "severity": clause.severity, "text": text}


def _recent(history: Sequence[tuple[str, str]], limit: int) -> Sequence[tuple[str, str]]:
    """The latest messages of ``history`` within ``limit`` characters (at least the last)."""
    size, start = 0, len(history)
    while start > 0:
        size += len(history[start - 1][1])
        if size > limit and start < len(history):
            break
        start -= 1
    return history[start:]


def _correction(error: str, lang: Lang) -> str:
    if lang == "zh":
        return f"你的回答无效：{error}。请修正，只回答一个符合要求的 JSON 对象。"
    return f"Your answer is invalid: {error}. Fix it and answer with one valid JSON object only."


# ---------------------------------------------------------------------- checking


def _check(
    text: str, reply: str, max_score: float, allowed: frozenset[str], lang: Lang
) -> _Verdict | str:
    """The verdict in ``text``, or what is wrong with it (in ``lang``)."""

    def say(zh: str, en: str) -> str:
        return zh if lang == "zh" else en

    data = _extract(text)
    if data is None:
        return say("找不到可解析的 JSON 对象", "no JSON object could be parsed")
    reasoning = data.get("reasoning")
    summaries = (data.get("summary_zh"), data.get("summary_en"))
    raw_violations = data.get("violations")
    if not isinstance(reasoning, str):
        return say("缺少字符串字段 reasoning", "missing string field 'reasoning'")
    if not all(isinstance(s, str) and s.strip() for s in summaries):
        return say(
            "summary_zh 和 summary_en 不能为空", "'summary_zh' and 'summary_en' must not be empty"
        )
    if not isinstance(raw_violations, list):
        return say("violations 必须是数组", "'violations' must be an array")
    haystack = _comparable(reply)
    violations = []
    for index, item in enumerate(raw_violations, 1):
        if not isinstance(item, dict):
            return say(f"第 {index} 条扣分不是对象", f"violation {index} is not an object")
        quote, points, ids, why = (item.get(k) for k in ("quote", "points", "clause_ids", "why"))
        if not isinstance(quote, str) or not quote.strip():
            return say(f"第 {index} 条扣分缺少引文", f"violation {index} has no quote")
        if _comparable(quote) not in haystack:
            return say(
                f"第 {index} 条扣分的引文“{quote}”不在回复原文中",
                f"the quote of violation {index} ({quote!r}) is not in the reply",
            )
        if not _is_number(points) or float(points) <= 0 or not _is_half(float(points)):
            return say(
                f"第 {index} 条扣分的分数必须大于 0 且是 0.5 的倍数",
                f"violation {index} must cost more than 0 points, in steps of 0.5",
            )
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            return say(
                f"第 {index} 条扣分的 clause_ids 必须是字符串数组",
                f"violation {index}: 'clause_ids' must be strings",
            )
        unknown = [i for i in ids if i not in allowed]
        if unknown:
            return say(
                f"第 {index} 条扣分引用了不适用的条款 {', '.join(unknown)}",
                f"violation {index} cites clauses that do not apply: {', '.join(unknown)}",
            )
        if not isinstance(why, str) or not why.strip():
            return say(f"第 {index} 条扣分缺少原因 why", f"violation {index} has no 'why'")
        violations.append(_Violation(quote, float(points), tuple(ids), why))
    lost = sum(v.points for v in violations)
    if lost > max_score + _TOLERANCE:
        return say(
            f"扣分合计 {lost:g}，超过了本维度的满分 {max_score:g}",
            f"the violations take {lost:g} points, more than this dimension's {max_score:g}",
        )
    score = max_score - lost
    stated = data.get("score")  # not asked for; a model that gives one must agree
    if stated is not None and (not _is_number(stated) or abs(stated - score) > _TOLERANCE):
        return say(
            f"score {stated} 与扣分不符：{max_score:g} − {lost:g} = {score:g}",
            f"'score' {stated} does not match the violations: {max_score:g} − {lost:g} = {score:g}",
        )
    return _Verdict(reasoning, tuple(violations), score, str(summaries[0]), str(summaries[1]))


def _extract(text: str) -> dict[str, Any] | None:
    """The first JSON object in ``text`` (bare, in a ```json fence, or inside prose)."""
    candidates = [text.strip(), *(m.group(1) for m in _FENCED_JSON.finditer(text))]
    for candidate in candidates:
        try:  # a line break inside a string (some grammars allow one) is still readable
            value = json.loads(candidate, strict=False)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    decoder = json.JSONDecoder(strict=False)
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def _is_number(value: object) -> TypeGuard[float]:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


def _is_half(value: float) -> bool:
    return abs(value * 2 - round(value * 2)) < _TOLERANCE


@cache
def _t2s() -> Any:
    import opencc

    return opencc.OpenCC("t2s")


@lru_cache(maxsize=1024)
def _comparable(text: str) -> str:
    """``text`` as the model saw it, simplified, whitespace collapsed, case-folded.

    Remembered per text: each dimension's answer is checked against the same reply.
    """
    return " ".join(str(_t2s().convert(neutralise(text))).split()).casefold()


# ---------------------------------------------------------------------- grades


def _merge(*groups: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(flag for group in groups for flag in group))


def _audit(
    rule: Grade,
    attempts: _Attempts,
    *,
    judge_score: float | None,
    decided_by: str,
    error: str | None,
) -> dict[str, Any]:
    last = attempts.completions[-1] if attempts.completions else None
    return {
        "model": last.model if last else None,
        "prompt_sha": attempts.prompt.sha,
        "template": attempts.prompt.template,
        "mode": last.mode if last else None,
        "raw": [c.text for c in attempts.completions],
        "attempts": len(attempts.completions),
        "judge_score": judge_score,
        "rule": {"grader": rule.grader, "score": rule.score, "status": rule.status},
        "decided_by": decided_by,
        "error": error,
    }


def _unscored(rule: Grade, attempts: _Attempts, failure: _Failed) -> Grade:
    provisional = f"{rule.score:g}/{rule.max_score:g}"
    why = describe(failure.reason)
    reason: Bilingual = {
        "zh": f"AI 评审未能评分（{why['zh']}），待导师复核；暂按规则评分 {provisional} 计。",
        "en": f"The AI judge could not grade this reply ({why['en']}); until a mentor "
        f"reviews it, the rule graders' {provisional} counts.",
    }
    return Grade(
        dimension=rule.dimension,
        grader="llm_judge",
        status="unscored",
        score=None,
        max_score=rule.max_score,
        reason=reason,
        evidence=rule.evidence,
        clause_ids=rule.clause_ids,
        deductions=rule.deductions,
        flags=_merge(rule.flags, ("needs_review", "judge_unavailable")),
        audit=_audit(rule, attempts, judge_score=None, decided_by="none", error=str(failure)),
    )


def _bounded(
    rule: Grade,
    verdict: _Verdict,
    attempts: _Attempts,
    *,
    tainted: bool,
    lang: Lang,
) -> Grade:
    """The judge's grade when it is at most the rule grade; otherwise the rule grade.

    The judge lowers a grade on its own (every point it takes quotes the reply), but it
    never raises one: a higher score waits for a mentor (flag ``judge_higher``), so text
    that fools the model cannot buy points. A red line, a critical clause or text aimed
    at the grader are named as the reason.
    """
    j, r = verdict.score, float(rule.score or 0.0)
    critical = any(d.severity == "critical" for d in rule.deductions)
    capped = critical or tainted or any(f in rule.flags for f in _BOUND_FLAGS)
    disagree = ("disagreement", "needs_review") if abs(j - r) >= rule.max_score / 2 else ()
    suspect = ("injection_attempt", "needs_review") if tainted else ()
    higher = ("judge_higher", "needs_review") if j > r and not capped else ()
    flags = _merge(rule.flags, suspect, disagree, higher)
    if j > r:
        top = f"{r:g}/{rule.max_score:g}"
        cap: Bilingual = (
            {
                "zh": f"规则评分的发现（红线、严重违规或针对评分的文字）限定本项不高于 {top}"
                f"（AI 评审给出 {j:g}）。{rule.reason.get('zh', '')}",
                "en": f"The rule graders' finding (a red line, a critical clause or text aimed "
                f"at the grader) caps this grade at {top} (the AI judge gave {j:g}). "
                f"{rule.reason.get('en', '')}",
            }
            if capped
            else {
                "zh": f"AI 评审认为可得 {j:g} 分；高于规则评分 {top} 的部分需导师复核后才计入。"
                f"{rule.reason.get('zh', '')}",
                "en": f"The AI judge would give {j:g}; points above the rule graders' {top} "
                f"count only after a mentor's review. {rule.reason.get('en', '')}",
            }
        )
        return Grade(
            dimension=rule.dimension,
            grader=rule.grader,
            status="scored",
            score=rule.score,
            max_score=rule.max_score,
            reason={k: v.strip() for k, v in cap.items()},
            evidence=rule.evidence,
            clause_ids=rule.clause_ids,
            deductions=rule.deductions,
            flags=flags,
            audit=_audit(rule, attempts, judge_score=j, decided_by="rule_bound", error=None),
        )
    other: Lang = "en" if lang == "zh" else "zh"
    summaries: Bilingual = {"zh": verdict.summary_zh, "en": verdict.summary_en}
    deductions = tuple(
        Deduction(
            code=f"judge.{rule.dimension}",
            points=v.points,
            reason={lang: v.why, other: summaries[other]},
            quote=v.quote,
            clause_ids=v.clause_ids,
            severity=None,
        )
        for v in verdict.violations
    )
    return Grade(
        dimension=rule.dimension,
        grader="llm_judge",
        status="scored",
        score=j,
        max_score=rule.max_score,
        reason=summaries,
        evidence=tuple(v.quote for v in verdict.violations),
        clause_ids=_merge(*(v.clause_ids for v in verdict.violations)),
        deductions=deductions,
        flags=flags,
        audit=_audit(rule, attempts, judge_score=j, decided_by="llm_judge", error=None),
    )
