"""Load, resolve and validate scenarios and policy packs.

Every problem is reported as ``file:line: key: problem — how to fix`` so an author can
go straight to it. Loading never half-succeeds: a library with errors raises
:class:`ContentError` listing all of them.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from bot import paths
from bot.drill.plan import DrillPlan
from bot.i18n import LANGS, Lang, Text
from bot.scenario import (
    DIFFICULTIES,
    LINE_PLACEHOLDERS,
    ORDER_ID_PATTERN,
    PAYMENT_CHANNELS,
    PHOTO_MARKERS,
    REACTION_KEYS,
    Calibration,
    Clause,
    Line,
    PhraseCheck,
    PolicyPack,
    PolicyParams,
    ReactionKey,
    ResolvedPolicy,
    ResolvedScenario,
    Scenario,
    SharedCustomer,
    param_items,
    patch_params,
    placeholders,
)
from graders import available_graders
from graders.dialogue import revealed_in
from graders.lexicon import LEXICON
from graders.yamlload import SafeLoader
from graders.yamlload import load as load_yaml

DOCS_HINT = "see docs/scenarios.md"
REQUIRED_FACT_CHECKS = {
    "refund_amount": "order_facts",
    "price_difference": "order_facts",
    "eta": "order_facts",
    "refund_channel": "refund_channel",
    "refund_timing": "refund_timing",
    "reship_timing": "reship_timing",
    "shipping_payer": "shipping_fee_payer",
    "callback_time": "escalation_ticket",
}
"""Which check kind credits each required fact (see graders/findings.py)."""


@dataclass(frozen=True)
class Problem:
    """One validation problem in a content file."""

    file: str
    key: str
    problem: str
    fix: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        key = f" {self.key}:" if self.key else ""
        return f"{where}:{key} {self.problem} — {self.fix}"


class ContentError(Exception):
    """Raised when content files are invalid; ``problems`` lists every issue found."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class UnknownScenario(LookupError):
    """Raised for a scenario id that does not exist; the message suggests close ids."""

    def __init__(self, scenario_id: str, known: Iterable[str]):
        self.scenario_id = scenario_id
        self.suggestions = difflib.get_close_matches(scenario_id, list(known), n=3, cutoff=0.4)
        hint = (
            f" Did you mean: {', '.join(self.suggestions)}?"
            if self.suggestions
            else " Run `trainer scenarios list` to see the ids."
        )
        super().__init__(f"Unknown scenario '{scenario_id}'.{hint}")


# --- YAML with line numbers and duplicate-key detection ------------------------------


class _StrictLoader(SafeLoader):
    """SafeLoader that rejects duplicate mapping keys (PyYAML keeps the last silently)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key '{key}' (first on line {seen[key]})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


@dataclass
class _Doc:
    path: Path
    data: Any
    root: yaml.Node | None

    def problem(self, display: str, loc: Sequence[int | str], problem: str, fix: str) -> Problem:
        """A problem at ``loc`` (``clauses.0.checks``) of this file, with its line."""
        return Problem(display, ".".join(map(str, loc)), problem, fix, self.line_of(loc))

    def line_of(self, loc: Sequence[int | str]) -> int | None:
        """Line (1-based) of the YAML node at ``loc``, or of its nearest existing parent."""
        node = self.root
        line = node.start_mark.line + 1 if node is not None else None
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                match = [(k, v) for k, v in node.value if k.value == str(part)]
                if not match:
                    break
                node = match[0][1]
                line = match[0][0].start_mark.line + 1
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                if part >= len(node.value):
                    break
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                break
        return line


MAX_CONTENT_BYTES = 1_000_000
"""Largest scenario or pack file read (the bundled ones are under 40 kB)."""


def _too_big(path: Path) -> bool:
    try:
        return path.stat().st_size > MAX_CONTENT_BYTES
    except OSError:
        return False  # reading it says what is wrong


def _read_yaml(path: Path, display: str) -> tuple[_Doc | None, list[Problem]]:
    if _too_big(path):
        size = f"{path.stat().st_size / 1e6:.1f} MB"
        limit = f"{MAX_CONTENT_BYTES // 1_000_000} MB"
        return None, [Problem(display, "", f"the file is {size}, over {limit}", "split it")]
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        return None, [Problem(display, "", f"not UTF-8 ({exc.reason})", "save it as UTF-8")]
    except OSError as exc:
        return None, [Problem(display, "", f"cannot read ({exc.strerror})", "check the path")]
    try:
        data = yaml.load(text, Loader=_StrictLoader)
        root = yaml.compose(text, Loader=SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = getattr(exc, "problem", None) or str(exc)
        return None, [Problem(display, "", f"invalid YAML: {reason}", "fix the syntax", line)]
    if not isinstance(data, dict):
        return None, [Problem(display, "", "the file is not a mapping", "start with 'id: ...'")]
    return _Doc(path, data, root), []


def _kind_of(data: dict[str, Any]) -> str:
    """What a content file is: a ``pack``, the ``shared`` defaults, a ``drill`` or a ``scenario``."""
    if {"clauses", "params", "extends"} & set(data) and "order" not in data:
        return "pack"
    if "difficulty" in data and "lines" in data and "id" not in data:
        return "shared"
    if "concurrency" in data and "customers_per_hour" in data:
        return "drill"
    return "scenario"


def _is_pack_file(path: Path) -> bool:
    """Whether a YAML file looks like a policy pack (unreadable files are not packs)."""
    if _too_big(path):
        return False
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and _kind_of(data) == "pack"


def _fields_at(model: type[BaseModel], loc: Sequence[int | str]) -> list[str]:
    """Field names of the model found by walking ``loc`` (for 'did you mean' hints)."""
    current: Any = model
    for part in loc:
        if isinstance(current, type) and issubclass(current, BaseModel):
            info = current.model_fields.get(str(part))
            if info is None:
                return []
            current = info.annotation
        while get_origin(current) is not None:
            args = [a for a in get_args(current) if a is not type(None)]
            origin = get_origin(current)
            if origin in (list, tuple):
                current = args[0] if isinstance(part, int) else current
                break
            if origin is dict:
                current = args[1]
                break
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            current = models[0] if models else args[0]
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _validation_problems(
    exc: ValidationError, model: type[BaseModel], doc: _Doc, display: str
) -> list[Problem]:
    problems = []
    for err in exc.errors(include_url=False):
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p in _UNION_TAGS)]
        key = ".".join(str(p) for p in loc)
        kind = err["type"]
        if kind == "extra_forbidden":
            allowed = _fields_at(model, loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            fix = f"did you mean '{close[0]}'?" if close else "remove it"
            if allowed:
                fix += f" (allowed here: {', '.join(allowed)})"
            problem = "unknown key"
        elif kind == "missing":
            problem, fix = "required key is missing", f"add it ({DOCS_HINT})"
        elif kind == "string_pattern_mismatch":
            problem = f"{err.get('input')!r} is not in the expected form"
            fix = _PATTERN_HINTS.get(
                str((err.get("ctx") or {}).get("pattern")), "see docs/scenarios.md"
            )
        elif kind in ("literal_error", "enum"):
            problem = f"invalid value {err.get('input')!r}"
            fix = str(err["msg"]).replace("Input should be", "use")
        else:
            problem = str(err["msg"]).removeprefix("Value error, ")
            fix = "correct the value" if kind != "value_error" else DOCS_HINT
            if kind == "value_error":
                problem, _, fix_part = problem.partition(" — ")
                fix = fix_part or f"correct the value ({DOCS_HINT})"
        problems.append(Problem(display, key, problem, fix, doc.line_of(loc)))
    return problems


_PATTERN_HINTS = {
    r"^[A-Z][A-Z0-9]*(?:-[A-Z0-9]+)+$": "use upper-case words joined by dashes, e.g. DMG-TRANSIT",
    r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$": "use lower-case letters, digits and dashes, e.g. damaged-kettle",
    ORDER_ID_PATTERN: "use up to 4 capital letters, then 6–20 digits, then optional "
    "dash-separated groups, e.g. JD2026111100123 or JD20261201-0042",
    r"^1\d{10}$": "use an 11-digit mainland mobile number starting with 1",
}
_UNION_TAGS = {"SimpleCheck", "PhraseCheck", "simple", "forbidden_phrases"}


# --- the library ------------------------------------------------------------------


class ScenarioLibrary:
    """All scenarios and policy packs under one directory, validated together."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root else paths.scenarios_dir()
        self._pack_sources: dict[str, tuple[PolicyPack, _Doc]] = {}
        self.packs: dict[str, ResolvedPolicy] = {}
        self.scenarios: dict[str, ResolvedScenario] = {}
        self.drills: dict[str, DrillPlan] = {}
        """Drill presets by id (``drills/*.yaml``)."""
        self.shared: SharedCustomer | None = None
        self.problems: list[Problem] = []
        self._load()

    # public API

    @classmethod
    def load(cls, root: Path | None = None) -> ScenarioLibrary:
        """Load a library and raise :class:`ContentError` if anything is invalid."""
        library = cls(root)
        if library.problems:
            raise ContentError(library.problems)
        return library

    def ids(self) -> list[str]:
        """Scenario ids, sorted."""
        return sorted(self.scenarios)

    def get(self, id_or_path: str) -> ResolvedScenario:
        """Return a scenario by id, or load one from a YAML path (outside the library too)."""
        if id_or_path in self.scenarios:
            return self.scenarios[id_or_path]
        candidate = Path(id_or_path)
        if candidate.suffix in (".yaml", ".yml") or candidate.exists():
            return self.load_file(candidate)
        raise UnknownScenario(id_or_path, self.scenarios)

    def check_files(
        self, paths: Sequence[Path]
    ) -> tuple[list[Problem], list[ResolvedScenario], int]:
        """Validate files from outside the library, each as what it is.

        Policy packs are loaded before scenarios, so the order of ``paths`` never matters.
        Returns the problems, the valid scenarios and how many of the files are packs.
        """
        problems: list[Problem] = []
        packs: list[Path] = []
        scenarios: list[Path] = []
        for path in paths:
            doc, errs = _read_yaml(path, self._display(path))
            problems += errs
            if doc is None:
                continue
            kind = _kind_of(doc.data)
            if kind == "pack":
                packs.append(path)
            elif kind == "shared":
                problems += self._load_shared(path)
            elif kind == "drill":
                problems += self._load_drill(path)[1]
            else:
                scenarios.append(path)
        problems += self._load_packs(packs)
        loaded = []
        for path in scenarios:
            try:
                loaded.append(self.load_file(path))
            except ContentError as exc:
                problems += exc.problems
        return problems, loaded, len(packs)

    def load_file(self, path: Path) -> ResolvedScenario:
        """Load one scenario file, resolving its policy from its own folder or the library.

        A draft outside the library finds packs beside it and in a ``policies/`` folder
        next to it, as well as the library's packs.
        """
        if not path.exists():
            raise ContentError([Problem(str(path), "", "file not found", "check the path")])
        if path.parent.resolve() != self.root.resolve():
            nearby = [p for p in sorted(path.parent.glob("*.y*ml")) if p != path]
            extra_packs = path.parent / "policies"
            if extra_packs.is_dir() and extra_packs.resolve() != (self.root / "policies").resolve():
                nearby += sorted(extra_packs.glob("*.y*ml"))
            problems = self._load_packs([p for p in nearby if _is_pack_file(p)])
            if problems:
                raise ContentError(problems)
        scenario, problems = self._load_scenario(path)
        if problems or scenario is None:
            raise ContentError(problems)
        return scenario

    # loading

    def _display(self, path: Path) -> str:
        try:
            return str(path.resolve().relative_to(self.root.resolve().parent))
        except ValueError:
            return str(path)

    def _load(self) -> None:
        if not self.root.is_dir():
            self.problems.append(
                Problem(str(self.root), "", "scenario folder not found", "set TRAINER_SCENARIOS")
            )
            return
        self.problems += self._load_shared(self.root / "shared" / "customer.yaml")
        self.problems += self._load_packs(sorted((self.root / "policies").glob("*.y*ml")))
        for path in sorted(self.root.glob("*.y*ml")):
            scenario, problems = self._load_scenario(path)
            self.problems += problems
            if scenario is None:
                continue
            if scenario.id in self.scenarios:
                first = self.scenarios[scenario.id].source.name
                self.problems.append(
                    Problem(
                        self._display(path),
                        "id",
                        f"'{scenario.id}' is also used by {first}",
                        "give each scenario a unique id",
                    )
                )
                continue
            self.scenarios[scenario.id] = scenario
        for path in sorted((self.root / "drills").glob("*.y*ml")):
            drill, problems = self._load_drill(path)
            self.problems += problems
            if drill is not None:
                self.drills[drill.id] = drill

    def _load_drill(self, path: Path) -> tuple[DrillPlan | None, list[Problem]]:
        """A drill preset, its scenarios checked against the library's."""
        drill, doc, problems = self._parse(path, DrillPlan)
        if drill is None or doc is None:
            return None, problems
        display = self._display(path)
        unknown = [
            doc.problem(
                display,
                ["scenarios", key],
                f"no scenario '{key}' in the library",
                "use an id from `trainer scenarios list`",
            )
            for key in drill.scenarios
            if key not in self.scenarios
        ]
        if drill.id in self.drills:
            unknown.append(doc.problem(display, ["id"], f"drill id '{drill.id}' is used twice",
                                       "give each drill preset a unique id"))  # fmt: skip
        return (None, unknown) if unknown else (drill, [])

    def _parse(self, path: Path, model: type[BaseModel]) -> tuple[Any, _Doc | None, list[Problem]]:
        display = self._display(path)
        doc, problems = _read_yaml(path, display)
        if doc is None:
            return None, None, problems
        try:
            return model.model_validate(doc.data), doc, []
        except ValidationError as exc:
            return None, doc, _validation_problems(exc, model, doc, display)

    def _load_shared(self, path: Path) -> list[Problem]:
        if not path.exists():
            return [
                Problem(
                    self._display(path),
                    "",
                    "shared customer defaults missing",
                    "restore scenarios/shared/customer.yaml",
                )
            ]
        shared, doc, problems = self._parse(path, SharedCustomer)
        if shared is None or doc is None:
            return problems
        self.shared = shared
        return self._check_lines(shared.lines, doc, ["lines"], None)

    def _load_packs(self, files: list[Path]) -> list[Problem]:
        raw: dict[str, tuple[PolicyPack, _Doc]] = {}
        problems: list[Problem] = []
        loaded = {doc.path.resolve() for _, doc in self._pack_sources.values()}
        for path in files:
            if path.resolve() in loaded:
                continue  # already part of the library (or an earlier call)
            pack, doc, errs = self._parse(path, PolicyPack)
            problems += errs
            if pack is None or doc is None:
                continue
            first = raw.get(pack.id) or self._pack_sources.get(pack.id)
            if first is not None:
                problems.append(doc.problem(self._display(path), ["id"],
                                            f"pack id '{pack.id}' is also used by {first[1].path.name}",
                                            "give each policy pack a unique id"))  # fmt: skip
                continue
            raw[pack.id] = (pack, doc)
        self._pack_sources.update(raw)
        for pack_id in raw:
            resolved, errs = self._resolve_pack(pack_id, raw)
            problems += errs
            if resolved is not None:
                self.packs[pack_id] = resolved
        return problems

    def _resolve_pack(
        self, pack_id: str, raw: dict[str, tuple[PolicyPack, _Doc]]
    ) -> tuple[ResolvedPolicy | None, list[Problem]]:
        pack, doc = raw[pack_id]
        display = self._display(doc.path)
        chain = [pack]
        while chain[-1].extends:
            parent_id = chain[-1].extends
            if parent_id in (p.id for p in chain):
                return None, [
                    doc.problem(
                        display,
                        ["extends"],
                        f"inheritance cycle via '{parent_id}'",
                        "remove the cycle",
                    )
                ]
            parent = raw.get(parent_id) or self._pack_sources.get(parent_id)
            if parent is None:
                close = difflib.get_close_matches(parent_id, [*raw, *self.packs], n=1)
                fix = f"did you mean '{close[0]}'?" if close else "name an existing pack id"
                return None, [doc.problem(display, ["extends"], f"unknown pack '{parent_id}'", fix)]
            chain.append(parent[0])
        params: dict[str, Any] = {}
        origins: dict[str, str] = {}
        clauses: dict[str, Clause] = {}
        for link in reversed(chain):
            params = patch_params(params, link.params)
            given = param_items(link.params.model_dump(exclude_none=True))
            origins.update(dict.fromkeys(given, link.id))
            clauses.update({c.id: c for c in link.clauses})
        missing = [name for name in PolicyParams.model_fields if name not in params]
        if "refund_days" in params:
            days = params["refund_days"]
            missing += [f"refund_days.{c}" for c in PAYMENT_CHANNELS if c not in days]
        if missing:
            return None, [
                doc.problem(
                    display,
                    ["params"],
                    f"missing parameters {', '.join(missing)}",
                    "set them here or 'extends' a pack that does",
                )
            ]
        problems = []
        for index, clause in enumerate(pack.clauses):
            for check_index, check in enumerate(clause.checks):
                if (
                    isinstance(check, PhraseCheck)
                    and check.lexicon is not None
                    and check.lexicon not in LEXICON.forbidden
                ):
                    loc: list[int | str] = ["clauses", index, "checks", check_index, "lexicon"]
                    problems.append(
                        doc.problem(
                            display,
                            loc,
                            f"unknown lexicon category '{check.lexicon}'",
                            "use one of " + ", ".join(sorted(LEXICON.forbidden)),
                        )
                    )
        resolved = ResolvedPolicy(
            id=pack.id,
            title={"zh": pack.title.zh, "en": pack.title.en},
            params=PolicyParams.model_validate(params),
            clauses=clauses,
            source=doc.path,
            calibration=pack.calibration,
            origins=origins,
        )
        problems += _calibration_problems(pack.calibration, doc, display)
        return resolved, problems

    def _load_scenario(self, path: Path) -> tuple[ResolvedScenario | None, list[Problem]]:
        scenario, doc, problems = self._parse(path, Scenario)
        if scenario is None or doc is None:
            return None, problems
        display = self._display(path)
        pack = self.packs.get(scenario.policy)
        if pack is None:
            close = difflib.get_close_matches(scenario.policy, list(self.packs), n=1)
            fix = f"did you mean '{close[0]}'?" if close else "add the pack to scenarios/policies/"
            return None, [
                doc.problem(display, ["policy"], f"unknown policy pack '{scenario.policy}'", fix)
            ]
        if self.shared is None:
            return None, [
                Problem(
                    display,
                    "",
                    "shared customer defaults are invalid",
                    "fix scenarios/shared/customer.yaml first",
                )
            ]
        profiles = {
            level: self.shared.difficulty[level].model_copy(
                update=scenario.difficulty[level].model_dump(exclude_none=True)
                if level in scenario.difficulty
                else {}
            )
            for level in DIFFICULTIES
        }
        lines = {
            key: tuple(scenario.customer.lines.get(key) or self.shared.lines.get(key) or ())
            for key in REACTION_KEYS
        }
        policy = pack
        if scenario.params.model_dump(exclude_none=True):  # its own copy: texts are cached
            merged = patch_params(pack.params.model_dump(), scenario.params)
            policy = replace(pack, params=PolicyParams.model_validate(merged))
        always = [cid for cid, c in pack.clauses.items() if c.scope == "always"]
        resolved = ResolvedScenario(
            scenario=scenario,
            policy=policy,
            profiles=profiles,
            lines=lines,
            source=path,
            applicable_clauses=tuple(dict.fromkeys([*always, *scenario.clauses])),
        )
        problems = _ScenarioChecker(resolved, doc, display).run()
        problems += self._check_lines(scenario.customer.lines, doc, ["customer", "lines"], resolved)
        return (None if problems else resolved), problems

    def _check_lines(
        self,
        lines: dict[ReactionKey, list[Line]],
        doc: _Doc,
        base: list[int | str],
        scenario: ResolvedScenario | None,
    ) -> list[Problem]:
        display = self._display(doc.path)
        problems = []
        allowed = _allowed_placeholders(scenario)
        for key, variants in lines.items():
            for index, line in enumerate(variants):
                for lang in LANGS:
                    try:
                        unknown = placeholders(line.get(lang)) - allowed
                    except ValueError as exc:
                        loc = [*base, key, index, lang]
                        problem, _, fix = str(exc).partition(" — ")
                        problems.append(doc.problem(display, loc, problem, fix))
                        continue
                    if unknown:
                        loc = [*base, key, index, lang]
                        problems.append(
                            doc.problem(
                                display,
                                loc,
                                f"placeholder {{{sorted(unknown)[0]}}} has no value here",
                                "use one of " + ", ".join(sorted(allowed)),
                            )
                        )
        if scenario is not None:
            for key in REACTION_KEYS:
                for level in DIFFICULTIES:
                    if not scenario.lines_for(key, level):
                        loc = [*base, key]
                        problems.append(
                            doc.problem(
                                display,
                                loc,
                                f"no '{key}' line usable at difficulty '{level}'",
                                "add one here or in scenarios/shared/customer.yaml",
                            )
                        )
        return problems


def _allowed_placeholders(scenario: ResolvedScenario | None) -> set[str]:
    if scenario is None:  # shared lines may only use facts every order has
        return {"order_id", "item", "price", "courier", "ordered_on", "refund_amount"}
    values = set(scenario.template_values("zh"))
    return values & LINE_PLACEHOLDERS


def _calibration_problems(
    calibration: Calibration | None, doc: _Doc, display: str
) -> list[Problem]:
    """Every labels file a ``calibration`` block names must exist."""
    if calibration is None:
        return []
    problems = []
    for index, name in enumerate(calibration.labels):
        if not (doc.path.parent / name).is_file():
            loc: list[int | str] = ["calibration", "labels", index]
            problems.append(
                doc.problem(
                    display,
                    loc,
                    f"no file {name!r} next to this one",
                    "give a path relative to this file",
                )
            )
    return problems


class _ScenarioChecker:
    """Cross-reference checks that need the whole scenario and its policy."""

    def __init__(self, resolved: ResolvedScenario, doc: _Doc, display: str):
        self.r = resolved
        self.s = resolved.scenario
        self.doc = doc
        self.display = display
        self.problems: list[Problem] = []

    def add(self, loc: list[int | str], problem: str, fix: str) -> None:
        self.problems.append(self.doc.problem(self.display, loc, problem, fix))

    def run(self) -> list[Problem]:
        self.check_texts()
        self.check_clauses()
        self.check_graders()
        self.check_facts()
        self.check_answer_key()
        self.check_difficulty()
        self.check_agenda()
        self.problems += _calibration_problems(self.s.calibration, self.doc, self.display)
        return self.problems

    def check_texts(self) -> None:
        """Placeholders in curveballs, their answers and exemplars must have values (filled live)."""
        values = {lang: set(self.r.template_values(lang)) for lang in LANGS}
        texts: list[tuple[list[int | str], Text]] = [
            (["customer", "agenda", i, "say"], item.say)
            for i, item in enumerate(self.s.customer.agenda)
        ]
        texts += [(["customer", "agenda", i, "answer"], item.answer)
                  for i, item in enumerate(self.s.customer.agenda) if item.answer is not None]  # fmt: skip
        texts += [(["answer_key", "exemplars", stage], t)
                  for stage, t in self.s.answer_key.exemplars.items()]  # fmt: skip
        for loc, text in texts:
            for lang in LANGS:
                try:
                    unknown = placeholders(text.get(lang)) - values[lang]
                except ValueError as exc:
                    problem, _, fix = str(exc).partition(" — ")
                    self.add([*loc, lang], problem, fix)
                    continue
                if unknown:
                    self.add([*loc, lang], f"placeholder {{{sorted(unknown)[0]}}} has no value here",
                             "use one of " + ", ".join(sorted(values[lang])))  # fmt: skip

    def check_clauses(self) -> None:
        known = self.r.policy.clauses
        for index, clause_id in enumerate(self.s.clauses):
            if clause_id not in known:
                close = difflib.get_close_matches(clause_id, list(known), n=1)
                fix = f"did you mean '{close[0]}'?" if close else f"define it in {self.s.policy}"
                self.add(["clauses", index], f"unknown clause '{clause_id}'", fix)
            elif self.s.answer_key.ticket is None and any(
                check.kind == "escalation_ticket" for check in known[clause_id].checks
            ):
                self.add(["clauses", index], f"'{clause_id}' checks an escalation ticket, but "
                         "answer_key has no ticket",
                         "set answer_key.ticket to the team the ticket goes to")  # fmt: skip

    def check_graders(self) -> None:
        names = available_graders()
        for index, name in enumerate(self.s.graders):
            if name not in names:
                close = difflib.get_close_matches(name, names, n=1)
                fix = f"did you mean '{close[0]}'?" if close else "use one of " + ", ".join(names)
                self.add(["graders", index], f"unknown grader '{name}'", fix)

    def check_facts(self) -> None:
        seen: set[str] = set()
        values = {lang: self.r.template_values(lang) for lang in LANGS}
        for index, fact in enumerate(self.s.customer.facts):
            base: list[int | str] = ["customer", "facts", index]
            if fact.id in seen:
                self.add([*base, "id"], f"fact id '{fact.id}' appears twice", "make ids unique")
            seen.add(fact.id)
            if fact.kind == "detail" and not (fact.markers.zh and fact.markers.en):
                self.add(
                    [*base, "markers"],
                    "a 'detail' fact needs markers in zh and en",
                    "list words that show the fact was given",
                )
            for line_index, line in enumerate(fact.say):
                for lang in LANGS:
                    template = line.get(lang)
                    loc = [*base, "say", line_index, lang]
                    try:
                        unknown = placeholders(template) - set(values[lang])
                    except ValueError as exc:
                        problem, _, fix = str(exc).partition(" — ")
                        self.add(loc, problem, fix)
                        continue
                    if unknown:
                        self.add(
                            loc,
                            f"placeholder {{{sorted(unknown)[0]}}} has no value here",
                            "use one of " + ", ".join(sorted(values[lang])),
                        )
                        continue
                    text = template.format(**values[lang])
                    if fact.id not in revealed_in(self.r, text):
                        self.add(
                            loc,
                            f"this reveal of '{fact.id}' would not be recognised",
                            self._marker_fix(fact.kind, lang),
                        )

    def _marker_fix(self, kind: str, lang: Lang) -> str:
        return {
            "order_id": "include {order_id}",
            "identity": "include {phone_last4} or {receiver_name}",
            "photos": "include a marker such as " + PHOTO_MARKERS[lang][0],
            "signed_time": "include {signed_on} (and set order.signed_on)",
        }.get(kind, "include one of the fact's markers")

    def check_answer_key(self) -> None:
        key = self.s.answer_key
        facts = {f.id for f in self.s.customer.facts}
        both = set(key.acceptable_resolutions) & set(key.forbidden_resolutions)
        if both:
            self.add(
                ["answer_key", "forbidden_resolutions"],
                f"{', '.join(sorted(both))} is both acceptable and forbidden",
                "pick one",
            )
        for index, move in enumerate(key.forbidden_phrases):
            if move.clause not in self.r.applicable_clauses:
                self.add(["answer_key", "forbidden_phrases", index, "clause"],
                         f"'{move.clause}' is not an applicable clause here",
                         "name a clause listed in 'clauses' or one with scope 'always'")  # fmt: skip
        for index, fact_id in enumerate(key.evidence_required):
            if fact_id not in facts:
                self.add(
                    ["answer_key", "evidence_required", index],
                    f"no fact '{fact_id}'",
                    "name a fact id from customer.facts",
                )
        for resolution, required in key.required_facts.items():
            loc: list[int | str] = ["answer_key", "required_facts", resolution]
            if resolution not in key.acceptable_resolutions:
                self.add(
                    loc,
                    f"'{resolution}' is not an acceptable resolution",
                    "add it to acceptable_resolutions or remove this entry",
                )
            if "price_difference" in required and key.price_difference is None:
                self.add(
                    loc,
                    "requires price_difference but answer_key has none",
                    "set answer_key.price_difference",
                )
            if "eta" in required and key.eta is None:
                self.add(loc, "requires eta but answer_key has none", "set answer_key.eta")
            if "callback_time" in required and key.ticket is None:
                self.add(loc, "requires callback_time but answer_key has no ticket",
                         "set answer_key.ticket (finance, logistics, quality or supervisor)")  # fmt: skip
            checks = {
                c.kind
                for cid in self.r.applicable_clauses
                if cid in self.r.policy.clauses  # unknown ids are reported by check_clauses
                for c in self.r.policy.clauses[cid].checks
            }  # fmt: skip
            for fact in required:
                if REQUIRED_FACT_CHECKS[fact] not in checks:
                    self.add(loc, f"'{fact}' can never be credited: no applicable clause has a "
                             f"'{REQUIRED_FACT_CHECKS[fact]}' check",
                             "list a clause with that check in 'clauses' or drop the fact")  # fmt: skip
        for lang in LANGS:
            if not key.problem_terms.get(lang):
                self.add(
                    ["answer_key", "problem_terms", lang],
                    "no problem terms",
                    "list words that name the customer's problem",
                )

    def check_difficulty(self) -> None:
        facts = {f.id for f in self.s.customer.facts}
        for level, profile in self.r.profiles.items():
            for index, fact_id in enumerate(profile.volunteers):
                if fact_id not in facts:
                    self.add(
                        ["difficulty", level, "volunteers", index],
                        f"no fact '{fact_id}'",
                        "name a fact id from customer.facts",
                    )

    def check_agenda(self) -> None:
        seen: set[str] = set()
        for index, item in enumerate(self.s.customer.agenda):
            if item.after_event == "evidence_given" and not self.s.answer_key.evidence_required:
                self.add(["customer", "agenda", index, "after_event"],
                         "'evidence_given' never happens: answer_key.evidence_required is empty",
                         "list the evidence facts or use after_turn")  # fmt: skip
            if item.id in seen:
                self.add(
                    ["customer", "agenda", index, "id"],
                    f"agenda id '{item.id}' repeats",
                    "make ids unique",
                )
            seen.add(item.id)
