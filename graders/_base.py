"""The grader protocol, the grade record and the registry of graders by name."""

from __future__ import annotations

import difflib
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar, runtime_checkable

from bot.i18n import Lang
from bot.scenario import Severity

Status = Literal["scored", "not_applicable", "unscored"]
"""scored: has a score; not_applicable: the dimension does not apply to this reply;
unscored: it should have a score but none could be computed (flagged for review)."""

Bilingual = dict[Lang, str]


@dataclass(frozen=True, slots=True)
class Deduction:
    """Points lost on one grade, with the words that cost them and the rule behind it."""

    code: str
    """Machine-readable reason, e.g. ``empathy.no_acknowledgement``."""
    points: float
    """Points lost on the grade's own scale (0 when the grade was already at its floor)."""
    reason: Bilingual
    quote: str
    """The trainee's own words (or the start of the reply when something is missing)."""
    clause_ids: tuple[str, ...] = ()
    severity: Severity | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "code": self.code,
            "points": self.points,
            "reason": dict(self.reason),
            "quote": self.quote,
            "clause_ids": list(self.clause_ids),
            "severity": self.severity,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Deduction:
        """Inverse of :meth:`to_dict`."""
        return cls(
            code=data["code"],
            points=data["points"],
            reason=data["reason"],
            quote=data["quote"],
            clause_ids=tuple(data.get("clause_ids", ())),
            severity=data.get("severity"),
        )


@dataclass(frozen=True, slots=True)
class Grade:
    """One dimension's grade of one trainee reply."""

    dimension: str
    grader: str
    """The registered grader that decided this grade."""
    status: Status
    score: float | None
    max_score: float
    reason: Bilingual
    evidence: tuple[str, ...] = ()
    clause_ids: tuple[str, ...] = ()
    deductions: tuple[Deduction, ...] = ()
    flags: tuple[str, ...] = ()
    """e.g. ``red_line``, ``needs_review``, ``injection_attempt``."""
    audit: dict[str, Any] = field(default_factory=dict, compare=False)
    """How a model-assisted grade was decided: the model, the prompt template's hash, the
    raw output, the rule grade that bounded it (empty for rule grades)."""

    @property
    def lost(self) -> float:
        """Points lost on this grade (0 unless scored)."""
        return sum(d.points for d in self.deductions) if self.status == "scored" else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "dimension": self.dimension,
            "grader": self.grader,
            "status": self.status,
            "score": self.score,
            "max_score": self.max_score,
            "reason": dict(self.reason),
            "evidence": list(self.evidence),
            "clause_ids": list(self.clause_ids),
            "deductions": [d.to_dict() for d in self.deductions],
            "flags": list(self.flags),
            **({"audit": self.audit} if self.audit else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Grade:
        """Inverse of :meth:`to_dict`."""
        return cls(
            dimension=data["dimension"],
            grader=data["grader"],
            status=data["status"],
            score=data["score"],
            max_score=data["max_score"],
            reason=data["reason"],
            evidence=tuple(data.get("evidence", ())),
            clause_ids=tuple(data.get("clause_ids", ())),
            deductions=tuple(Deduction.from_dict(d) for d in data.get("deductions", ())),
            flags=tuple(data.get("flags", ())),
            audit=dict(data.get("audit", {})),
        )


@runtime_checkable
class Grader(Protocol):
    """Grades one trainee reply on one dimension.

    Implementations must be deterministic for rule graders: the same reply in the same
    context gets the same grade. A grader that cannot decide returns a grade with status
    ``unscored`` and the ``needs_review`` flag, never a guessed score.
    """

    name: str
    dimension: str

    async def __call__(self, reply: str, ctx: Any) -> Grade:
        """Grade ``reply`` in context ``ctx`` (a :class:`graders.GradingContext`)."""
        ...


GraderFactory = Callable[..., Grader]
_REGISTRY: dict[str, GraderFactory] = {}


class UnknownGrader(LookupError):
    """Raised for a grader name that is not registered; suggests close names."""


def grader(name: str) -> Callable[[GraderFactory], GraderFactory]:
    """Register a grader factory under ``name`` (scenarios refer to graders by name)."""

    def register(factory: GraderFactory) -> GraderFactory:
        if name in _REGISTRY:
            raise ValueError(f"grader '{name}' is already registered")
        _REGISTRY[name] = factory
        return factory

    return register


_GRADER_TYPES: set[type] = set()
"""Classes already seen to satisfy the Grader protocol."""


def get_grader(name: str, **options: Any) -> Grader:
    """Build the grader registered as ``name``."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f" Closest matches: {', '.join(close)}." if close else ""
        raise UnknownGrader(
            f"Grader '{name}' is not registered.{hint} Known: {', '.join(sorted(_REGISTRY))}."
        ) from None
    built = factory(**options)
    if type(built) not in _GRADER_TYPES:  # a protocol check is slow: once per class
        if not isinstance(built, Grader):
            raise TypeError(f"grader factory '{name}' did not return a Grader")
        _GRADER_TYPES.add(type(built))
    return built


def available_graders() -> list[str]:
    """Registered grader names, sorted."""
    return sorted(_REGISTRY)


_V = TypeVar("_V")


class Recent(Generic[_V]):
    """The most recently made values by key, at most ``size`` of them."""

    def __init__(self, size: int):
        self.size = size
        self._values: OrderedDict[Hashable, _V] = OrderedDict()

    def get(self, key: Hashable, make: Callable[[], _V]) -> _V:
        """The value for ``key``, made (and kept) if it is not known yet."""
        value = self._values.get(key)
        if value is None:
            value = self._values[key] = make()
            if len(self._values) > self.size:
                self._values.popitem(last=False)
        return value
