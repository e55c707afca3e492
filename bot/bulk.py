"""Bulk QC of real chats (工单评估): many transcripts graded in one process.

``trainer grade`` reads JSON transcripts, JSONL files (one transcript per line) and
folders of both. Each transcript is graded as ``trainer grade`` grades one, a transcript
that cannot be read is reported with its file and line and skipped, and the results can
be summed up per agent.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.content import ContentError, ScenarioLibrary, UnknownScenario
from bot.scenario import ResolvedScenario
from bot.transcript import Transcript, TranscriptError, load_transcript, parse_transcript
from graders.rubric import RUBRICS, Scorecard, scorecard
from graders.session import ReplyRecord, SessionGrader


@dataclass(frozen=True)
class Source:
    """Where a transcript came from: a file, and a line for JSONL."""

    path: Path
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.path}:{self.line}" if self.line else str(self.path)


@dataclass(frozen=True)
class Graded:
    """One graded transcript."""

    source: Source
    transcript: Transcript
    scenario: ResolvedScenario
    records: list[ReplyRecord]
    card: Scorecard
    rubric: str

    @property
    def agent(self) -> str:
        """Who answered the customer (``agent`` in the transcript), or "—"."""
        return self.transcript.agent or "—"

    def to_dict(self) -> dict[str, Any]:
        """The same JSON ``trainer grade`` prints for one transcript, plus where it came from."""
        return {
            "source": str(self.source),
            "id": self.transcript.id,
            "agent": self.transcript.agent,
            **result_dict(self.scenario, self.transcript, self.rubric, self.records, self.card),
        }


def result_dict(
    scenario: ResolvedScenario,
    chat: Transcript,
    rubric: str,
    records: Sequence[ReplyRecord],
    card: Scorecard,
) -> dict[str, Any]:
    """Per-reply grades and the scorecard of one transcript, as JSON."""
    return {
        "scenario": scenario.id,
        "language": chat.language,
        "rubric": rubric,
        "replies": [
            {
                "number": r.number,
                "text": r.text,
                "stage": r.stage,
                "latency_s": r.latency_s,
                "grades": [g.to_dict() for g in r.grades],
            }
            for r in records
        ],
        "scorecard": card.to_dict(),
    }


def iter_sources(paths: Sequence[Path]) -> Iterator[tuple[Source, Transcript | None, str]]:
    """Every transcript in ``paths`` (files, JSONL files, folders), or why it cannot be read."""
    for path in paths:
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix in (".json", ".jsonl"))
            yield from iter_sources(files)
        elif path.suffix == ".jsonl":
            yield from _jsonl(path)
        else:
            try:
                yield Source(path), load_transcript(path), ""
            except TranscriptError as exc:
                yield Source(path), None, str(exc)


def _jsonl(path: Path) -> Iterator[tuple[Source, Transcript | None, str]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        yield Source(path), None, f"{path}: file not found — check the path"
        return
    except UnicodeDecodeError:
        yield Source(path), None, f"{path}: not UTF-8 text — save the file as UTF-8"
        return
    for number, raw in enumerate(lines, 1):
        if raw.strip():
            source = Source(path, number)
            try:
                yield source, parse_transcript(raw, str(source), one_line=True), ""
            except TranscriptError as exc:
                yield source, None, str(exc)


class Grader:
    """Grades transcripts one after another, resolving each scenario once."""

    def __init__(
        self, library: ScenarioLibrary, rubric: str | None = None, scenario: str | None = None
    ):
        self.library = library
        self.rubric = rubric
        """``--rubric``: over each transcript's own (None: theirs, else ``default``)."""
        self.scenario = scenario
        self._resolved: dict[str, ResolvedScenario] = {}

    def resolve(self, chat: Transcript, source: Source) -> ResolvedScenario:
        """The scenario a transcript is graded against (``--scenario`` wins)."""
        ref = self.scenario or chat.scenario
        if not ref:
            raise TranscriptError(
                f'{source}: no scenario — pass --scenario ID_OR_PATH or add "scenario" to it'
            )
        if ref not in self._resolved:
            try:
                self._resolved[ref] = self.library.get(ref)
            except UnknownScenario as exc:
                raise TranscriptError(f"{source}: scenario: {exc}") from None
            except ContentError as exc:
                raise TranscriptError(f"{source}: scenario file is invalid:\n{exc}") from None
        return self._resolved[ref]

    async def grade(self, source: Source, chat: Transcript) -> Graded:
        """Grade one transcript."""
        scenario = self.resolve(chat, source)
        rubric = self.rubric or chat.rubric or "default"
        if rubric not in RUBRICS:
            raise TranscriptError(
                f"{source}: rubric: unknown preset {rubric!r}; use one of {', '.join(RUBRICS)}"
            )
        grader = SessionGrader(scenario, chat.language)
        records = await grader.replay(chat.timed_turns())
        card = scorecard(rubric, scenario, records, chat.outcome, chat.duration_s())
        return Graded(source, chat, scenario, records, card, rubric)


async def grade_all(
    paths: Sequence[Path],
    grader: Grader,
    progress: Callable[[], None] | None = None,
) -> tuple[list[Graded], list[str]]:
    """Grade every transcript in ``paths``; the problems of the ones that could not be."""
    graded: list[Graded] = []
    problems: list[str] = []
    for source, chat, problem in iter_sources(paths):
        if chat is None:
            problems.append(problem)
        else:
            try:
                graded.append(await grader.grade(source, chat))
            except TranscriptError as exc:
                problems.append(str(exc))
        if progress:
            progress()
    return graded, problems


# --- summaries ------------------------------------------------------------------------

DIMENSIONS = ("empathy", "accuracy", "policy")


def _dimension(card: Scorecard, name: str) -> float | None:
    return next((d.score for d in card.dimensions if d.id == name), None)


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(sum(present) / len(present), 1) if present else None


def summarize(graded: Sequence[Graded], by: str | None = None) -> list[dict[str, Any]]:
    """One summary row for all transcripts, or one per agent (``by="agent"``)."""
    groups: dict[str, list[Graded]] = defaultdict(list)
    for g in graded:
        groups[g.agent if by == "agent" else "all"].append(g)
    rows = []
    for name, items in sorted(groups.items()):
        clauses = Counter(c for g in items for e in g.card.ledger for c in e.clause_ids)
        cards = [g.card for g in items]
        row: dict[str, Any] = {
            "agent" if by == "agent" else "group": name,
            "transcripts": len(items),
            "replies": sum(len(g.records) for g in items),
            "mean_total": _mean([c.total for c in cards]),
            "passed": sum(c.passed for c in cards),
            "pass_rate": round(sum(c.passed for c in cards) / len(cards), 3),
            "red_line_chats": sum(bool(c.red_lines) for c in cards),
            "needs_review": sum(c.needs_review for c in cards),
        }
        for dim in DIMENSIONS:
            row[f"mean_{dim}"] = _mean([_dimension(c, dim) for c in cards])
        row["most_broken_clauses"] = [f"{c} ×{n}" for c, n in clauses.most_common(3)]
        rows.append(row)
    return rows


CSV_COLUMNS = (
    "source",
    "id",
    "agent",
    "scenario",
    "language",
    "rubric",
    "replies",
    "total",
    "passed",
    "outcome",
    *DIMENSIONS,
    "red_lines",
    "needs_review",
    "fail_reasons",
)


def to_csv(graded: Sequence[Graded], summary: Sequence[dict[str, Any]] | None = None) -> str:
    """One row per transcript, or the summary rows when given."""
    out = io.StringIO()
    if summary is not None:
        columns = list(summary[0]) if summary else ["agent"]
        writer = csv.DictWriter(out, columns)
        writer.writeheader()
        for row in summary:
            writer.writerow({**row, "most_broken_clauses": "; ".join(row["most_broken_clauses"])})
        return out.getvalue()
    writer = csv.DictWriter(out, CSV_COLUMNS)
    writer.writeheader()
    for g in graded:
        card = g.card
        writer.writerow(
            {
                "source": str(g.source),
                "id": g.transcript.id or "",
                "agent": g.transcript.agent or "",
                "scenario": g.scenario.id,
                "language": g.transcript.language,
                "rubric": g.rubric,
                "replies": len(g.records),
                "total": "" if card.total is None else round(card.total, 1),
                "passed": card.passed,
                "outcome": card.outcome,
                **{
                    dim: "" if (v := _dimension(card, dim)) is None else round(v, 1)
                    for dim in DIMENSIONS
                },
                "red_lines": " ".join(
                    dict.fromkeys(c for e in card.red_lines for c in e.clause_ids)
                ),
                "needs_review": card.needs_review,
                "fail_reasons": " | ".join(r["en"] for r in card.fail_reasons),
            }
        )
    return out.getvalue()


def to_json(
    graded: Sequence[Graded], problems: Sequence[str], summary: Sequence[dict[str, Any]]
) -> str:
    """Every result, the problems and the summary as one JSON document."""
    return json.dumps(
        {
            "transcripts": [g.to_dict() for g in graded],
            "problems": list(problems),
            "summary": list(summary),
        },
        ensure_ascii=False,
        indent=2,
    )
