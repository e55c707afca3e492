"""The ``trainer`` command line: practise, grade transcripts, manage scenarios, see history."""

from __future__ import annotations

import asyncio
import getpass
import json
import locale
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from bot import paths

# The modules behind the commands load when a command runs: `trainer --help` and a
# missing setting are answered at once.
if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Column

    from bot.content import Problem, ScenarioLibrary
    from bot.i18n import Lang
    from bot.llm.roles import Assistants
    from bot.storage import Store
    from bot.telegram.app import TelegramApp, TelegramConfig

SCHEMA_PATH = Path("docs") / "scenario.schema.json"


class _LazyChoice(click.Choice):  # type: ignore[type-arg]
    """A choice whose values live in a module loaded only when the option is used or shown."""

    def __init__(self, module: str, name: str):
        self._where = (module, name)
        self.case_sensitive = True

    @property
    def choices(self) -> tuple[str, ...]:  # type: ignore[override]
        """The values, from their module."""
        import importlib

        module, name = self._where
        return tuple(getattr(importlib.import_module(module), name))


DIFFICULTY_CHOICE = _LazyChoice("bot.scenario", "DIFFICULTIES")
MODE_CHOICE = _LazyChoice("bot.engine", "MODES")
RUBRIC_CHOICE = _LazyChoice("graders.rubric", "RUBRICS")

config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="TOML config file (default: $TRAINER_CONFIG or ./trainer.toml).",
)


def _default_lang() -> Lang:
    env = os.environ.get("TRAINER_LANG") or os.environ.get("LANG") or ""
    if not env:
        env = (locale.getlocale()[0] or "") if hasattr(locale, "getlocale") else ""
    return "zh" if env.lower().startswith("zh") else "en"


def _default_trainee() -> str:
    try:
        return os.environ.get("TRAINER_NAME") or getpass.getuser()
    except (KeyError, OSError):
        return "trainee"


def _console(plain: bool = False) -> Console:
    from rich.console import Console

    return Console(no_color=plain or None, highlight=False, soft_wrap=False)


def _library(ctx: click.Context) -> ScenarioLibrary:
    from bot.content import ContentError, ScenarioLibrary

    root = ctx.obj.get("scenarios")
    try:
        library = ScenarioLibrary.load(Path(root) if root else None)
    except ContentError as exc:
        raise click.ClickException(
            "The scenario library has errors; fix them or run `trainer scenarios validate`:\n"
            + str(exc)
        ) from None
    if ctx.obj.get("tune_gc"):  # the command may grade many replies: after the loading
        from graders import tune_gc

        tune_gc()
    return library


def _store(ctx: click.Context) -> Store:
    from bot.storage import Store, StoreError

    path = ctx.obj.get("db") or paths.default_db_path()
    try:
        return Store.open(path)
    except StoreError as exc:
        raise click.ClickException(
            f"{exc}. Use --db to choose another file or a postgresql:// URL."
        ) from None


def _resolve(library: ScenarioLibrary, ref: str) -> Any:
    from bot.content import ContentError, UnknownScenario

    try:
        return library.get(ref)
    except UnknownScenario as exc:
        raise click.ClickException(str(exc)) from None
    except ContentError as exc:
        raise click.ClickException(f"Scenario file is invalid:\n{exc}") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--db",
    envvar=["TRAINER_DB_URL", "TRAINER_DB"],
    metavar="FILE|URL",
    help="Where sessions and grades are kept: an SQLite file (default: data/trainer.db in "
    "the project) or a PostgreSQL URL, postgresql://user:password@host/database "
    "(env TRAINER_DB_URL).",
)
@click.option(
    "--scenarios",
    type=click.Path(file_okay=False),
    envvar="TRAINER_SCENARIOS",
    help="Scenario folder (default: the bundled scenarios/).",
)
@click.version_option(package_name="cs-trainer")
@click.pass_context
def cli(ctx: click.Context, db: str | None, scenarios: str | None) -> None:
    """Practise after-sales customer service on angry customers, with a grade for every reply.

    Start with `trainer play`; see `trainer COMMAND --help` for each command.
    """
    ctx.ensure_object(dict)
    ctx.obj.update(db=db, scenarios=scenarios)


@cli.command()
@click.argument("scenario", required=False)
@click.option(
    "--lang",
    type=click.Choice(["zh", "en"]),
    default=None,
    help="Language of the chat (default: from TRAINER_LANG or the system locale).",
)
@click.option(
    "--difficulty",
    type=DIFFICULTY_CHOICE,
    default="normal",
    show_default=True,
    help="easy, normal or hard: changes how the customer behaves.",
)
@click.option(
    "--mode",
    type=MODE_CHOICE,
    default="coach",
    show_default=True,
    help="coach: grades after every reply; exam: grades at the end.",
)
@click.option(
    "--rubric",
    type=RUBRIC_CHOICE,
    default="default",
    show_default=True,
    help="Scorecard: the three dimensions, or the 100-point assessment.",
)
@click.option("--seed", type=int, default=None, help="Fix the customer's choice of lines.")
@click.option(
    "--customer",
    type=click.Choice(["scripted", "llm"]),
    default=None,
    help="Who phrases the customer: the scenario's lines or an LLM (default: the scenario's).",
)
@click.option(
    "--judge",
    type=click.Choice(["rules", "llm"]),
    default=None,
    help="Who grades: the rule graders, or an LLM judge they bound (default: the scenario's).",
)
@config_option
@click.option("--trainee", default=None, help="Your name in the history (default: login name).")
@click.option("--plain", is_flag=True, help="No colours (for screen readers or logs).")
@click.option(
    "--resume",
    metavar="SESSION",
    default=None,
    help="Continue an unfinished session (its id is in `trainer history`) instead of a new one.",
)
@click.pass_context
def play(
    ctx: click.Context,
    scenario: str | None,
    lang: str | None,
    difficulty: str,
    mode: str,
    rubric: str,
    seed: int | None,
    customer: str | None,
    judge: str | None,
    config_file: str | None,
    trainee: str | None,
    plain: bool,
    resume: str | None,
) -> None:
    """Practise one SCENARIO (an id or a YAML path) in the terminal.

    Without SCENARIO you pick one from a list (in a terminal; with replies piped in, name
    the scenario). Type your replies to the customer; type
    /end (or press Ctrl-C) to finish. The session is saved as you go; Ctrl-C while a reply
    is graded lets it finish first. An LLM customer or judge needs a model (see `trainer llm
    check` and docs/llm.md); if its server fails mid-session, the scripted customer takes
    over and the grades wait for review.
    """
    from bot.engine import Engine, NotConfigured, SessionClosed
    from bot.terminal import Interrupted, TerminalPractice

    if resume is not None and scenario is not None:
        raise click.UsageError("give either a SCENARIO or --resume SESSION, not both")
    assistants = _assistants(config_file)
    library = _library(ctx)
    console = _console(plain)
    start: dict[str, Any] = {"resume": resume}
    if resume is None:
        chosen_lang: Lang = lang or _default_lang()  # type: ignore[assignment]
        resolved = _resolve(library, scenario or _choose(console, library, chosen_lang))
        start = {
            "trainee": trainee or _default_trainee(),
            "scenario": resolved.id if resolved.id in library.scenarios else str(resolved.source),
            "lang": chosen_lang,
            "difficulty": difficulty,
            "mode": mode,
            "rubric": rubric,
            "seed": seed,
            "player": customer,
            "judge": judge,
        }
    store = _store(ctx)
    try:
        TerminalPractice(Engine(store, library, assistants), console).run(**start)
    except (LookupError, SessionClosed) as exc:
        if resume is None:
            raise
        raise click.ClickException(
            f"--resume {resume}: {exc}; `trainer history` lists the sessions"
        ) from None
    except NotConfigured as exc:
        raise click.ClickException(str(exc)) from None
    except Interrupted:
        ctx.exit(130)
    finally:
        store.close()


def _assistants(config_file: str | None) -> Assistants:
    """The LLM roles configured in the config file and the environment."""
    from bot.config import ConfigError, config_path
    from bot.llm.config import llm_settings
    from bot.llm.roles import Assistants

    try:
        return Assistants.from_settings(llm_settings(config_path(config_file)))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _whole(header: str, values: Sequence[str]) -> Column:
    """A table column of ids: never cut or wrapped, however narrow the terminal."""
    from rich.table import Column

    return Column(header, no_wrap=True, min_width=max(map(len, values), default=len(header)))


def _choose(console: Console, library: ScenarioLibrary, lang: Lang) -> str:
    from rich.markup import escape

    ids = library.ids()
    if not sys.stdin.isatty():  # piped replies: the first line must not become a choice
        raise click.UsageError(
            "the input is not a terminal, so there is no list to pick from: name the "
            f"scenario, e.g. `trainer play {ids[0]}` (`trainer scenarios list` shows them all)"
        )
    for index, scenario_id in enumerate(ids, 1):
        title = library.scenarios[scenario_id].scenario.title.get(lang)
        console.print(f"  {index}. {escape(title)} [dim]({scenario_id})[/]")
    prompt = "选择场景编号" if lang == "zh" else "Pick a scenario number"
    choice = click.prompt(prompt, type=click.IntRange(1, len(ids)), default=1)
    return ids[choice - 1]


@cli.command()
@click.argument("transcripts", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--scenario",
    "scenario_ref",
    default=None,
    help="Scenario id, or path to a scenario YAML file (default: each transcript's).",
)
@click.option(
    "--rubric",
    type=RUBRIC_CHOICE,
    default=None,
    help="Scorecard preset (default: each transcript's own, else default).",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the results here instead of standard output.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["json", "jsonl", "csv"]),
    default=None,
    help="json (default), jsonl (one transcript's result per line) or csv (one row each).",
)
@click.option(
    "--by",
    type=click.Choice(["agent"]),
    default=None,
    help="Also sum up per agent (the transcripts' `agent`): mean scores, pass rate, red "
    "lines, most broken clauses. With --format csv the rows are the agents.",
)
@click.pass_context
def grade(
    ctx: click.Context,
    transcripts: tuple[Path, ...],
    scenario_ref: str | None,
    rubric: str | None,
    output: Path | None,
    fmt: str | None,
    by: str | None,
) -> None:
    """Grade chats: TRANSCRIPTS are JSON files, JSONL files (one chat per line) or folders.

    One JSON file prints its per-reply grades and scorecard as JSON. Several files, a
    JSONL file or a folder are graded in one run (bulk QC of real chats), counting the
    chats done on a terminal; a transcript that cannot be read is reported with its file and line and the
    others are still graded (the exit status is then 1). The format is in
    docs/transcripts.md; a message may have up to 20,000 characters. Real chats can be
    graded against any scenario whose order and policy match them.
    """
    from bot import bulk
    from bot.transcript import TranscriptError, load_transcript

    _check_output(output)
    library = _library(ctx)
    grader = bulk.Grader(library, rubric, scenario_ref)
    single = len(transcripts) == 1 and transcripts[0].suffix != ".jsonl"
    if single and not transcripts[0].is_dir() and fmt is None and by is None:
        try:
            chat = load_transcript(transcripts[0])
            graded = asyncio.run(grader.grade(bulk.Source(transcripts[0]), chat))
        except TranscriptError as exc:
            raise click.ClickException(str(exc)) from None
        text = json.dumps(
            bulk.result_dict(graded.scenario, chat, graded.rubric, graded.records, graded.card),
            ensure_ascii=False,
            indent=2,
        )
        _emit(text + "\n", output)
        return
    started = time.perf_counter()
    with _progress("Grading transcripts") as advance:
        results, problems = asyncio.run(bulk.grade_all(list(transcripts), grader, advance))
    for problem in problems:
        click.echo(f"skipped {problem}", err=True)
    summary = bulk.summarize(results, by)
    if fmt == "csv":
        text = bulk.to_csv(results, summary if by else None)
    elif fmt == "jsonl":
        text = "".join(json.dumps(g.to_dict(), ensure_ascii=False) + "\n" for g in results)
    else:
        text = bulk.to_json(results, problems, summary) + "\n"
    _emit(text, output)
    replies = sum(len(g.records) for g in results)
    click.echo(
        f"Graded {_count(len(results), 'transcript')} ({_count(replies, 'reply', 'replies')}) in "
        f"{time.perf_counter() - started:.1f} s"
        + (f"; {len(problems)} could not be read (above)." if problems else "."),
        err=True,
    )
    if by:
        _print_summary(summary)
    if problems:
        raise SystemExit(1)


def _check_output(output: Path | None) -> None:
    """Fail before the work, not after it, when the results could not be written."""
    if output is not None and not output.parent.is_dir():
        raise click.BadParameter(
            f"the folder {output.parent} does not exist; create it or choose another file",
            param_hint="'--output'",
        )


def _emit(text: str, output: Path | None) -> None:
    if output:
        output.write_text(text, encoding="utf-8")
        click.echo(f"Wrote {output}", err=True)
    else:
        click.echo(text, nl=False)


def _print_summary(rows: list[dict[str, Any]]) -> None:
    """One line per agent on standard error (the full figures are in the output)."""

    def score(value: float | None) -> str:
        return "—" if value is None else f"{value:.0f}"

    for row in rows:
        mean = score(row["mean_total"])
        dims = " / ".join(
            f"{d} {score(row[f'mean_{d}'])}" for d in ("empathy", "accuracy", "policy")
        )
        broken = ", ".join(row["most_broken_clauses"]) or "—"
        click.echo(
            f"{row['agent']}: {_count(row['transcripts'], 'chat')}, mean {mean}, "
            f"passed {row['passed']} "
            f"({row['pass_rate']:.0%}), with a red line {row['red_line_chats']}; {dims}; "
            f"most broken: {broken}",
            err=True,
        )


@cli.command()
@click.argument("labels", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--scenario",
    "scenario_ref",
    default=None,
    help="Scenario id or YAML path: grade only its replies (and use it for lines without one).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write an HTML report with the confusion matrices as charts.",
)
@click.option("--worst", default=15, show_default=True, help="How many disagreements to list.")
@click.pass_context
def calibrate(
    ctx: click.Context,
    labels: tuple[Path, ...],
    scenario_ref: str | None,
    as_json: bool,
    html_path: Path | None,
    worst: int,
) -> None:
    """Grade LABELS.jsonl files of labelled replies and report the graders' agreement.

    Each line is a trainee reply with its chat so far and a person's labels (empathy
    0-3, accuracy correct/wrong/na, the clauses broken); the format is in
    docs/labelling.md. The report gives empathy QWK and exact agreement, the accuracy
    confusion matrix, per-clause precision and recall, red-line recall, gaming probes
    and the worst disagreements with both sides. A line that cannot be used is reported
    with its number and skipped; the exit status is then 1.
    """
    _check_output(html_path)
    from bot.calibration import calibrate as run_calibration
    from bot.calibration import check, load_labels

    library = _library(ctx)
    try:
        items, bad = load_labels(list(labels), library, scenario_ref)
    except LookupError as exc:
        raise click.ClickException(str(exc)) from None
    for line in bad:
        click.echo(f"skipped {line}", err=True)
    if not items:
        raise click.ClickException("No labelled reply to grade: see docs/labelling.md.")
    with _progress(f"Grading {len(items)} labelled replies") as advance:
        report = asyncio.run(run_calibration(items, bad, [str(p) for p in labels], advance))
    plans = {str(plan[1]): plan[0] for i in items if (plan := i.scenario.calibration())}
    shared = len(plans) == 1 and all(i.scenario.calibration() for i in items)
    checks = check(report, next(iter(plans.values())).min) if shared else []
    if html_path:
        from bot.reports import calibration_html

        html_path.write_text(calibration_html(report, checks, worst), encoding="utf-8")
        click.echo(f"Wrote {html_path}", err=True)
    if as_json:
        data = report.to_dict(worst)
        data["checks"] = [{"check": str(c), "ok": c.ok} for c in checks]
        click.echo(json.dumps(data, ensure_ascii=False, indent=2))
    else:
        _print_calibration(_console(), report, checks, worst)
    if bad:
        raise SystemExit(1)


def _print_calibration(console: Console, report: Any, checks: list[Any], worst: int) -> None:
    from rich.markup import escape
    from rich.table import Table

    def figure(value: float | None) -> str:
        return "—" if value is None else f"{value:.3f}"

    console.print(
        f"[bold]Calibration[/]: {len(report.results)} labelled replies "
        f"({', '.join(escape(f) for f in report.files)})"
    )
    if report.unscored:
        console.print(f"[red]{report.unscored} replies could not be graded.[/]")
    headline = Table("figure", "value", title="Headline 概览")
    for name, value in report.headline().items():
        headline.add_row(name, figure(value))
    console.print(headline)
    empathy = Table("label \\ graders", "0", "1", "2", "3", title="Empathy 共情")
    for level, row in enumerate(report.empathy_matrix):
        empathy.add_row(str(level), *map(str, row))
    console.print(empathy)
    accuracy = Table("label \\ graders", "correct", "wrong", "na", title="Accuracy 准确性")
    for label, row in report.accuracy_matrix.items():
        accuracy.add_row(label, *(str(row[k]) for k in ("correct", "wrong", "na")))
    console.print(accuracy)
    clauses = Table(
        "clause",
        "severity",
        "labelled",
        "flagged",
        "agreed",
        "recall",
        "precision",
        title="Clauses 条款",
    )
    for c in report.to_dict()["clauses"]:
        clauses.add_row(
            c["clause"],
            c["severity"],
            str(c["labelled"]),
            str(c["flagged"]),
            str(c["agreed"]),
            figure(c["recall"]),
            figure(c["precision"]),
        )
    console.print(clauses)
    console.print(
        f"Gaming probes: {report.probes}, flagged {report.probes_flagged}, "
        f"changed a grade {report.probes_changed}"
    )
    if checks:
        console.print("[bold]Required agreement[/]")
        for c in checks:
            console.print(f"  {'ok ' if c.ok else '[red]LOW[/]'} {escape(str(c))}")
    if report.worst and worst:
        console.print(
            f"[bold]Worst disagreements[/] ({min(worst, len(report.worst))} of {len(report.worst)})"
        )
    for d in report.to_dict(worst)["worst"]:
        console.print(
            f"\n[bold]{escape(d['id'])}[/] {escape(d['where'])} · {d['scenario']} · {d['language']}"
        )
        console.print(f"  「{escape(d['reply'])}」")
        console.print(f"  [red]{escape('; '.join(d['differences']))}[/]")
        lab, got = d["labels"], d["graders"]
        console.print(
            f"  label:   empathy {lab['empathy']}, accuracy {lab['accuracy']}, "
            f"clauses {', '.join(lab['clauses']) or '—'}"
        )
        console.print(
            f"  graders: empathy {got['empathy']}, accuracy {got['accuracy']}, "
            f"clauses {', '.join(got['clauses']) or '—'}"
        )
        for dim, reason in d["reasons"].items():
            console.print(f"    {dim}: {escape(reason)}")


@contextmanager
def _progress(description: str) -> Iterator[Callable[[], None]]:
    """A running count on a terminal's standard error; nothing when it is redirected."""
    from rich.console import Console

    if not sys.stderr.isatty():
        yield lambda: None
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}: {task.completed}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(description, total=None)
        yield lambda: progress.advance(task)


@cli.group()
def scenarios() -> None:
    """List, show and validate scenarios and policy packs."""


@scenarios.command("list")
@click.option("--lang", type=click.Choice(["zh", "en"]), default=None, help="Language of titles.")
@click.pass_context
def scenarios_list(ctx: click.Context, lang: str | None) -> None:
    """List the scenarios you can play."""
    from rich.markup import escape
    from rich.table import Table

    library = _library(ctx)
    chosen: Lang = lang or _default_lang()  # type: ignore[assignment]
    table = Table(_whole("id", library.ids()), "category", "title", "clauses")
    for scenario_id in library.ids():
        s = library.scenarios[scenario_id].scenario
        table.add_row(scenario_id, s.category, escape(s.title.get(chosen)), ", ".join(s.clauses))
    _console().print(table)


@scenarios.command("show")
@click.argument("scenario")
@click.option("--lang", type=click.Choice(["zh", "en"]), default=None, help="Language.")
@click.pass_context
def scenarios_show(ctx: click.Context, scenario: str, lang: str | None) -> None:
    """Show a scenario's briefing, order, applicable policy, parameters and difficulty."""
    from rich.markup import escape

    from bot.scenario import param_items

    library = _library(ctx)
    resolved = _resolve(library, scenario)
    chosen: Lang = lang or _default_lang()  # type: ignore[assignment]
    s = resolved.scenario
    console = _console()
    console.print(f"[bold]{escape(s.title.get(chosen))}[/] ({s.id}, v{s.version}, {s.category})")
    console.print(escape(s.briefing.get(chosen)))
    console.print(
        f"\n[bold]Customer[/]: {escape(s.customer.persona.name.get(chosen))} — "
        f"{escape(s.customer.persona.description.get(chosen))}"
    )
    console.print(f"[bold]Wants[/]: {escape(s.customer.wants.get(chosen))}")
    console.print(
        f"[bold]Order[/]: {s.order.order_id} · {escape(s.order.item.get(chosen))} · "
        f"¥{s.order.price:g} · {s.order.payment} · {s.order.courier}"
    )
    console.print(f"[bold]Acceptable[/]: {', '.join(s.answer_key.acceptable_resolutions)}")
    console.print("\n[bold]Policy[/]")
    for clause_id in resolved.applicable_clauses:
        clause = resolved.policy.clauses[clause_id]
        console.print(
            f"  {clause_id} ({clause.severity}) {escape(clause.title.get(chosen))}: "
            f"{escape(resolved.policy.clause_text(clause_id, chosen))}"
        )
    console.print("\n[bold]Params[/]")
    own = param_items(s.params.model_dump(exclude_none=True))
    for name, value in param_items(resolved.policy.params.model_dump()).items():
        shown = f"[{value[0]}, {value[1]}]" if isinstance(value, tuple) else value
        if name in own:
            source = "[bold]本场景设置[/]" if chosen == "zh" else "[bold]set by this scenario[/]"
        else:
            pack = resolved.policy.origins.get(name, resolved.policy.id)
            source = f"来自 {pack}" if chosen == "zh" else f"from {pack}"
        console.print(f"  {name} = {escape(str(shown))} ({source})")
    console.print("\n[bold]Difficulty[/]")
    for level, profile in resolved.profiles.items():
        console.print(
            f"  {level}: " + ", ".join(f"{k}={v}" for k, v in profile.model_dump().items())
        )


@scenarios.command("validate")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--calibrated",
    is_flag=True,
    help="Also grade the labelled replies named under `calibration:` and check that the "
    "graders reach the agreement the scenario or pack requires.",
)
@click.pass_context
def scenarios_validate(ctx: click.Context, paths: tuple[Path, ...], calibrated: bool) -> None:
    """Check scenario and policy files and every cross-reference; exit 1 on any problem.

    With no PATHS, checks the whole scenario folder. Each problem is printed as
    `file:line: key: problem — how to fix`. With --calibrated, a scenario or pack that
    declares `calibration:` thresholds must also meet them on its labelled replies
    (see docs/labelling.md) before it is used for assessment.
    """
    from bot.content import ScenarioLibrary

    root = ctx.obj.get("scenarios")
    library = ScenarioLibrary(Path(root) if root else None)
    problems: list[Problem] = list(library.problems)
    inside = {
        (library.root / sub).resolve() for sub in (".", "policies", "shared")
    }  # files already checked with the library
    files = [
        file
        for path in paths
        for file in (sorted(path.glob("*.y*ml")) if path.is_dir() else [path])
        if file.resolve().parent not in inside
    ]
    found, drafts, _ = library.check_files(files)
    problems += found
    for problem in problems:
        click.echo(str(problem), err=True)
    if problems:
        raise SystemExit(1)
    scenarios_ok = _count(len(library.scenarios) + len(drafts), "scenario")
    click.echo(f"OK: {scenarios_ok} and {_count(len(library.packs), 'policy pack')} are valid.")
    if calibrated and not _check_calibration(library, [*library.scenarios.values(), *drafts]):
        raise SystemExit(1)


def _check_calibration(library: ScenarioLibrary, scenarios: list[Any]) -> bool:
    """Grade each calibration block's labelled replies and print the verdicts; True if all met."""
    from bot.calibration import calibrate, check, load_labels

    plans: dict[Path, tuple[Any, list[Any]]] = {}
    for scenario in scenarios:
        plan = scenario.calibration()
        if plan is None:
            click.echo(f"{scenario.id}: no calibration required (no `calibration:` block)")
            continue
        calibration, declared_in = plan
        plans.setdefault(declared_in, (calibration, []))[1].append(scenario)
    all_met = True
    for declared_in, (calibration, members) in plans.items():
        files = [declared_in.parent / name for name in calibration.labels]
        ids = {s.id for s in members}
        items, bad = load_labels(files, library, drafts=members)
        items = [i for i in items if i.scenario.id in ids]
        report = asyncio.run(calibrate(items, bad, [str(f) for f in files]))
        checks = check(report, calibration.min)
        unlabelled = sorted(ids - {i.scenario.id for i in items})
        met = not unlabelled and not bad and all(c.ok for c in checks)
        all_met = all_met and met
        verdict = "calibrated" if met else "NOT calibrated"
        click.echo(
            f"{verdict}: {', '.join(sorted(ids))} ({declared_in.name}), "
            f"{len(items)} labelled replies"
        )
        for line in bad:
            click.echo(f"  {line}", err=True)
        if unlabelled:  # agreement measured on other cases says nothing about these
            click.echo(
                f"  no labelled replies for {', '.join(unlabelled)} — label some "
                "(docs/labelling.md) and list the file in `calibration.labels`"
            )
        for c in checks:
            click.echo(f"  {'ok ' if c.ok else 'LOW'} {c}")
    return all_met


def _count(number: int, noun: str, plural: str | None = None) -> str:
    """``1 chat``, ``2 chats``."""
    return f"{number} {noun if number == 1 else plural or noun + 's'}"


@scenarios.command("schema")
@click.option("--check", is_flag=True, help="Exit 1 if the committed schema is out of date.")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=SCHEMA_PATH,
    show_default=True,
    help="Where to write the schema.",
)
def scenarios_schema(check: bool, output: Path) -> None:
    """Write the JSON Schema of scenario files (generated from the models)."""
    text = schema_text()
    if check:
        current = output.read_text(encoding="utf-8") if output.exists() else ""
        if current != text:
            raise click.ClickException(f"{output} is out of date: run `trainer scenarios schema`")
        click.echo(f"{output} is up to date.")
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    click.echo(f"Wrote {output}")


def schema_text() -> str:
    """The scenario JSON Schema as committed text."""
    from bot.scenario import Scenario

    schema = Scenario.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "cs-trainer scenario"
    return json.dumps(schema, ensure_ascii=False, indent=2) + "\n"


@cli.command()
@click.argument("session_id", required=False)
@click.option("--trainee", default=None, help="Only this trainee's sessions.")
@click.option("--limit", default=20, show_default=True, help="How many sessions to list.")
@click.option("--lang", type=click.Choice(["zh", "en"]), default=None, help="Language.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.pass_context
def history(
    ctx: click.Context,
    session_id: str | None,
    trainee: str | None,
    limit: int,
    lang: str | None,
    as_json: bool,
) -> None:
    """List past sessions and scores, or show one SESSION_ID: transcript, grades, scorecard."""
    from rich.markup import escape
    from rich.table import Table

    from bot.terminal import grade_line, print_scorecard
    from graders.rubric import Scorecard

    store = _store(ctx)
    chosen: Lang = lang or _default_lang()  # type: ignore[assignment]
    console = _console()
    try:
        if session_id is None:
            rows = store.sessions(trainee, limit)
            if as_json:
                click.echo(
                    json.dumps([_row_summary(r) for r in rows], ensure_ascii=False, indent=2)
                )
                return
            if not rows:
                console.print("No sessions yet: start one with `trainer play`.")
                return
            table = Table(
                _whole("session", [r.id for r in rows]),
                "started",
                "trainee",
                _whole("scenario", [r.scenario_id for r in rows]),
                "level",
                "lang",
                "outcome",
                "score",
                "passed",
            )
            for r in rows:
                table.add_row(
                    r.id,
                    r.started_at[:16].replace("T", " "),
                    escape(r.trainee),
                    r.scenario_id,
                    r.difficulty,
                    r.lang,
                    r.outcome or r.status,
                    "—" if r.total is None else f"{r.total:.1f}",
                    "—" if r.passed is None else ("yes" if r.passed else "no"),
                )
            console.print(table)
            return
        row = store.session(session_id)
        if row is None:
            raise click.ClickException(
                f"No session '{session_id}' (or the prefix matches several). "
                "Run `trainer history` to list sessions."
            )
        turns = store.turns(row.id)
        grades = store.grades(row.id)
        if as_json:  # a transcript `trainer grade` regrades as it is (docs/transcripts.md)
            summary = _row_summary(row)
            summary["language"] = summary.pop("lang")
            if summary["outcome"] is None:  # still active: graded as it stands
                del summary["outcome"]
            exported = {
                **summary,
                "turns": [
                    {
                        "role": t.role,
                        "text": t.text,
                        "timestamp": t.created_at,
                        **(
                            {"grades": [g.to_dict() for g in grades[t.idx]]}
                            if t.idx in grades
                            else {}
                        ),
                    }
                    for t in turns
                ],
                "scorecard": row.scorecard,
            }
            click.echo(json.dumps(exported, ensure_ascii=False, indent=2))
            return
        console.print(
            f"[bold]{row.id}[/] {row.scenario_id} · {row.difficulty} · {row.lang} · "
            f"{row.mode} · {escape(row.trainee)} · {row.started_at[:16]}"
        )
        replies: dict[int, str] = {}
        number = 0
        for t in turns:
            if t.role == "system":
                continue
            console.print(f"[bold]{t.role}[/]: {escape(t.text)}")
            if t.role == "trainee":
                number += 1
                replies[number] = t.text
                for g in grades.get(t.idx, []):
                    console.print(f"    [dim]{escape(grade_line(g, chosen))}[/]")
        if row.scorecard:
            print_scorecard(console, Scorecard.from_dict(row.scorecard), chosen, replies)
        else:
            console.print("(session not finished)")
    finally:
        store.close()


def _row_summary(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "trainee": row.trainee,
        "scenario": row.scenario_id,
        "difficulty": row.difficulty,
        "lang": row.lang,
        "mode": row.mode,
        "rubric": row.rubric,
        "status": row.status,
        "outcome": row.outcome,
        "started_at": row.started_at,
        "total": row.total,
        "passed": row.passed,
    }


NO_TOKEN = """No Telegram bot token.

To get one: open Telegram, talk to @BotFather, send /newbot, and copy the token it gives.
Then start the bot with:

    export TELEGRAM_BOT_TOKEN=123456:ABC...
    trainer serve telegram

(or put token = "..." under [telegram] in trainer.toml). To practise without Telegram,
run `trainer play` in this terminal."""


@cli.group()
def serve() -> None:
    """Run a chat channel: the web app, or the Telegram bot."""


def _checked_redis_url(_ctx: click.Context, _param: click.Parameter, url: str | None) -> str | None:
    from bot.config import redis_url_problem

    problem = redis_url_problem(url) if url else None
    if problem:
        raise click.BadParameter(problem)
    return url


@serve.command("web")
@config_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8080, show_default=True, help="Port to listen on.")
@click.option(
    "--base-url",
    default=None,
    help="The public URL in front of it (a proxy's), for links; https makes cookies Secure.",
)
@click.option(
    "--telegram",
    "with_telegram",
    is_flag=True,
    help="Also take the Telegram bot's webhook on this port (token, webhook URL and secret "
    "from TELEGRAM_* or trainer.toml, as for `serve telegram`): one service for both.",
)
@click.option(
    "--redis",
    "redis_url",
    envvar="TRAINER_REDIS_URL",
    metavar="URL",
    callback=_checked_redis_url,
    help="Redis shared by several trainer processes on one database (redis://host:6379/0): "
    "one runs the drill clock, live updates reach every process. Without it this process "
    "assumes it is alone.",
)
@click.pass_context
def serve_web(
    ctx: click.Context,
    config_file: str | None,
    host: str,
    port: int,
    base_url: str | None,
    with_telegram: bool,
    redis_url: str | None,
) -> None:
    """Run the web app: trainees sign in with an invite link and practise in the browser.

    Prints the address and, while the database has no admin, a link that makes whoever
    opens it first the admin. Stop it with Ctrl-C or SIGTERM.
    """
    from bot.cluster import Cluster
    from bot.engine import Engine
    from bot.service import Training
    from bot.web.app import serve as run

    telegram = _webhook_config(config_file) if with_telegram else None
    assistants = _assistants(config_file)
    library, store = _library(ctx), _store(ctx)
    if redis_url and store.path is not None:
        click.echo(
            "Note: several processes on one SQLite file share one machine's disk; for "
            "several machines use PostgreSQL (--db postgresql://...).",
            err=True,
        )
    cluster = Cluster(redis_url, store.installation())
    engine = Engine(store, library, assistants, peers=cluster)
    svc = Training(store, library, engine, platform="web")
    alongside = None
    cannot_start: tuple[type[Exception], ...] = ()  # the Telegram bot beside it, if any
    if telegram is not None:
        from bot.telegram.app import StartError, TelegramApp, protect_logs

        cannot_start = (StartError,)

        protect_logs(telegram.token)
        bot = TelegramApp(telegram, store, library, service=svc.for_platform("telegram"))
        alongside = _TelegramWebhook(bot)
    root = (base_url or f"http://{host}:{port}").rstrip("/")
    admin_link = None
    if not store.has_admin():
        admin_link = f"{root}/join/{svc.create_invite('admin', None)}"
    try:
        asyncio.run(
            run(
                svc,
                host=host,
                port=port,
                base_url=base_url,
                admin_link=admin_link,
                alongside=alongside,
                cluster=cluster,
            )
        )
    except KeyboardInterrupt:
        click.echo("Stopped.")
    except OSError as exc:
        raise click.ClickException(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port"
        ) from None
    except cannot_start as exc:
        raise click.ClickException(f"--telegram: {exc}") from None
    finally:
        store.close()


def _webhook_config(config_file: str | None) -> TelegramConfig:
    """The Telegram settings for a webhook beside the web app, or a one-line error."""
    import logging

    from bot.config import ConfigError, config_path, telegram_config

    try:
        config = telegram_config(config_path(config_file), workers=0)
    except ConfigError as exc:
        if "no Telegram bot token" in str(exc):
            raise click.ClickException(NO_TOKEN) from None
        raise click.ClickException(str(exc)) from None
    if not config.webhook_url or not config.webhook_secret:
        raise click.ClickException(
            "--telegram takes the bot's webhook on the web app's port: set "
            "TELEGRAM_WEBHOOK_URL (the public URL that reaches this port) and "
            "TELEGRAM_WEBHOOK_SECRET (letters, digits, _ and -)."
        )
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return config


class _TelegramWebhook:
    """The Telegram bot served beside the web app: its webhook route on the same port."""

    def __init__(self, app: TelegramApp) -> None:
        self.app = app

    def routes(self) -> list[Any]:
        return self.app.webhook_routes()

    async def start(self) -> None:
        await self.app.start()
        try:
            await self.app.set_webhook()
        except BaseException:
            await self.app.stop(0.0)
            raise

    async def stop(self) -> None:
        await self.app.stop()
        await self.app.engine.assistants.aclose()


@serve.command("telegram")
@config_option
@click.option(
    "--webhook-url", default=None, help="Public HTTPS URL for webhook mode (default: long polling)."
)
@click.option(
    "--webhook-secret",
    default=None,
    help="Secret Telegram must send with each update. Prefer TELEGRAM_WEBHOOK_SECRET: a "
    "flag shows in every user's process list (ps).",
)
@click.option("--host", "listen_host", default=None, help="Webhook listen address (127.0.0.1).")
@click.option("--port", "listen_port", type=int, default=None, help="Webhook listen port (8080).")
@click.option(
    "--api-base",
    default=None,
    help="Another Bot API server (default: $TELEGRAM_API_BASE or api.telegram.org).",
)
@click.option(
    "--workers",
    type=int,
    default=None,
    help="Worker processes that answer updates while this one takes them in (default 0: "
    "this process answers). 1 keeps intake and answers on separate cores; more add "
    "throughput, up to one per core. Needs a database file or server.",
)
@click.option(
    "--redis",
    "redis_url",
    default=None,
    metavar="URL",
    help="Redis shared by every process serving this bot (redis://host:6379/0; default "
    "$TRAINER_REDIS_URL): one answers, the others stand by and take over within 11 s of "
    "its stop, and the send limits are counted across all of them.",
)
@click.pass_context
def serve_telegram(ctx: click.Context, /, config_file: str | None, **options: Any) -> None:
    """Run the Telegram bot (token from TELEGRAM_BOT_TOKEN or the config file).

    Stop it with Ctrl-C or SIGTERM: it stops taking updates and finishes the work in
    flight; anything unfinished is picked up at the next start, or by a standby
    process (--redis) at once.
    """
    import logging

    from bot.config import ConfigError, config_path, telegram_config

    try:  # settings first: a missing token is said before the bot's modules load
        config = telegram_config(config_path(config_file), **options)
    except ConfigError as exc:
        if "no Telegram bot token" in str(exc):
            raise click.ClickException(NO_TOKEN) from None
        raise click.ClickException(str(exc)) from None
    if config.webhook_url and not config.webhook_secret:
        raise click.ClickException(
            "Webhook mode needs a secret: set TELEGRAM_WEBHOOK_SECRET (letters, digits, _ "
            "and -) or pass --webhook-secret."
        )
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if options.get("webhook_secret"):
        logging.getLogger("trainer").warning(
            "--webhook-secret shows in the process list; set TELEGRAM_WEBHOOK_SECRET instead"
        )
    from bot.telegram.app import StartError, protect_logs
    from bot.telegram.app import serve as run
    from bot.telegram.workers import WorkerError

    protect_logs(config.token)
    assistants = _assistants(config_file)
    library, store = _library(ctx), _store(ctx)
    try:
        asyncio.run(run(config, store, library, assistants))
    except (WorkerError, StartError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()


@cli.command()
@click.option("--from", "source", required=True, metavar="FILE|URL", help="Copy from here.")
@click.option(
    "--to", "target", required=True, metavar="FILE|URL", help="Into this new, empty database."
)
def migrate(source: str, target: str) -> None:
    """Copy a team's whole history into another database, counts checked on both sides.

    For a move from the SQLite file to PostgreSQL, e.g. ``trainer migrate --from
    data/trainer.db --to postgresql://trainer@db-host/trainer``. Stop the trainer first;
    the source is only read, and the target must be empty. It is all one transaction:
    if anything fails, the target is left as empty as it was.
    """
    from bot.storage import Store, StoreError
    from bot.storage.copy import copy_history

    def opened(where: str, side: str) -> Store:
        try:
            return Store.open(where)
        except StoreError as exc:
            raise click.ClickException(f"--{side} {where}: {exc}") from None

    source_store = opened(source, "from")
    target_store = opened(target, "to")
    shown: dict[str, int] = {}

    def progress(table: str, done: int, total: int) -> None:
        step = max(1, total // 10)
        if done == total or done - shown.get(table, 0) >= step:
            shown[table] = done
            click.echo(f"  {table}: {done}/{total}", err=True)

    try:
        click.echo(f"Copying {source_store.url} -> {target_store.url}", err=True)
        copied = copy_history(source_store, target_store, progress)
    except StoreError as exc:
        raise click.ClickException(f"nothing was copied: {exc}") from None
    finally:
        source_store.close()
        target_store.close()
    rows = sum(c.target for c in copied)
    click.echo(f"Copied {rows} rows in {len(copied)} tables; every count matches:")
    for c in copied:
        if c.source:
            click.echo(f"  {c.table:<16} {c.source:>9} = {c.target}")


@cli.group()
def admin() -> None:
    """Teams and invite codes (for the person running the server)."""


@admin.command("team")
@click.argument("name")
@click.pass_context
def admin_team(ctx: click.Context, name: str) -> None:
    """Create a team called NAME."""
    service = _service(ctx)
    team = _service_call(lambda: service.create_team(name))
    click.echo(f"Created team '{team.name}'.")


@admin.command("teams")
@click.pass_context
def admin_teams(ctx: click.Context) -> None:
    """List teams with their mentors and trainees."""
    service = _service(ctx)
    for team in service.teams():
        mentors = ", ".join(u.name for u in service.store.members(team.id, "mentor")) or "—"
        trainees = len(service.store.members(team.id, "trainee"))
        click.echo(f"{team.name}: mentors {mentors}; {trainees} trainee(s)")


@admin.command("invite")
@click.option("--role", type=click.Choice(["admin", "mentor", "trainee"]), required=True)
@click.option("--team", "team_name", default=None, help="Team to join (mentor and trainee).")
@click.option("--uses", type=int, default=None, help="How many people may use it (admin: 1).")
@click.option("--bot", "bot_username", default=None, help="Bot username, to print a t.me link.")
@click.option(
    "--web", "web_url", default=None, help="The web app's address, to print its invite link."
)
@click.pass_context
def admin_invite(
    ctx: click.Context,
    role: str,
    team_name: str | None,
    uses: int | None,
    bot_username: str | None,
    web_url: str | None,
) -> None:
    """Create an invite code: an admin invite makes its user an admin."""
    service = _service(ctx)
    if role != "admin" and not team_name:
        raise click.ClickException("--team is needed for mentor and trainee invites.")
    team = _service_call(lambda: service.team_named(team_name)) if team_name else None
    count = uses if uses is not None else (1 if role == "admin" else 50)
    code = _service_call(lambda: service.create_invite(role, team, uses=count))
    click.echo(f"Invite code ({role}, {count} use(s)): {code}")
    link = (
        f"https://t.me/{bot_username.lstrip('@')}?start={code}"
        if bot_username
        else (f"https://t.me/<your_bot>?start={code}")
    )
    click.echo(f"Open {link} or send the bot: /start {code}")
    if web_url:
        click.echo(f"Web: {web_url.rstrip('/')}/join/{code}")


def _service(ctx: click.Context) -> Any:
    from bot.engine import Engine
    from bot.service import Training

    store, library = _store(ctx), _library(ctx)
    ctx.call_on_close(store.close)
    return Training(store, library, Engine(store, library))


def _service_call(call: Any) -> Any:
    from bot.service import ServiceError

    try:
        return call()
    except ServiceError as exc:
        raise click.ClickException(exc.message["en"]) from None


@cli.group()
def drill() -> None:
    """Festival drills: plan one from a preset, watch the board, read the report.

    A drill moves on (customers arrive, nudge, leave) while `trainer serve web` or
    `trainer serve telegram` runs on the same database.
    """


@drill.command("presets")
@click.pass_context
def drill_presets(ctx: click.Context) -> None:
    """List the drill presets (scenarios/drills/) and what one Telegram bot carries."""
    from bot.drill.plan import TELEGRAM_BOT_RATE, load

    for plan in _library(ctx).drills.values():
        surge = (
            f", x{plan.surge.factor:g} for the first {plan.surge.minutes:g} min"
            if plan.surge
            else ""
        )
        click.echo(
            f"{plan.id}: {plan.title.en} - {plan.minutes:g} min, {plan.concurrency} customers at "
            f"once, {plan.customers_per_hour:g}/h each{surge}; first response "
            f"{plan.first_response_s:g} s; one Telegram bot ({TELEGRAM_BOT_RATE:g} msg/s) carries "
            f"~{load(plan, 1).telegram_trainees} trainees"
        )


@drill.command("plan")
@click.argument("preset")
@click.option("--team", "team_names", multiple=True, required=True, help="A team (repeatable).")
@click.option(
    "--start", default="now", show_default=True, help="'now' or 'YYYY-MM-DD HH:MM' (local time)."
)
@click.option("--minutes", type=float, default=None, help="Override the preset's length.")
@click.option("--concurrency", type=int, default=None, help="Customers at once (1-5).")
@click.option("--seed", type=int, default=None, help="Same seed, same customers, same times.")
@click.pass_context
def drill_plan(
    ctx: click.Context,
    preset: str,
    team_names: tuple[str, ...],
    start: str,
    minutes: float | None,
    concurrency: int | None,
    seed: int | None,
) -> None:
    """Plan a drill of the trainees of the given teams from PRESET; they are told."""
    service = _service(ctx)
    starts = None if start == "now" else _local_time(start)
    teams = [_service_call(lambda name=name: service.team_named(name)) for name in team_names]
    drill, load, members = _service_call(
        lambda: service.plan_drill(
            None,
            preset,
            teams=teams,
            starts_at=starts,
            minutes=minutes,
            concurrency=concurrency,
            seed=seed,
        )
    )
    customers = len(service.store.drill_customers(drill.id))
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(drill.starts_at))
    click.echo(
        f"Drill #{drill.id} ({preset}) planned: {len(members)} trainee(s), {customers} "
        f"customers, starts {when}."
    )
    click.echo(
        f"At its busiest it sends ~{load.messages_per_s:.1f} messages/s "
        f"({load.per_trainee:.2f} per trainee)."
    )
    if not load.fits_telegram(len(members)):
        click.echo(
            f"Warning: this drill needs ~{load.messages_per_s:.0f} msg/s; one Telegram bot "
            f"carries 30 (~{load.telegram_trainees} trainees): run it in the web chat, or "
            "split it across bots."
        )


def _local_time(text: str) -> float:
    try:
        return time.mktime(time.strptime(text, "%Y-%m-%d %H:%M"))
    except ValueError:
        raise click.BadParameter(
            f"'{text}' is not 'now' or a time like 2026-11-11 00:00", param_hint="--start"
        ) from None


@drill.command("list")
@click.pass_context
def drill_list(ctx: click.Context) -> None:
    """Drills, newest first, with their state."""
    service = _service(ctx)
    for row in service.store.drills():
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(row.starts_at))
        trainees = len(service.store.drill_users(row.id))
        click.echo(f"#{row.id} {row.preset}: {row.status}, starts {when}, {trainees} trainee(s)")


@drill.command("report")
@click.argument("drill_id", type=int)
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the report as CSV to this file.",
)
@click.pass_context
def drill_report(ctx: click.Context, drill_id: int, csv_path: Path | None) -> None:
    """The standings of drill DRILL_ID (live while it runs, final once it ended)."""
    from bot.drill.report import standings, to_csv

    service = _service(ctx)
    row = service.store.drill(drill_id)
    if row is None:
        raise click.ClickException(f"No drill #{drill_id}; `trainer drill list` shows them.")
    if csv_path is not None:
        _check_output(csv_path)
    report = standings(service.store, row)
    click.echo(f"Drill #{row.id} {report.plan.title.en}: {row.status}")
    for rank, s in enumerate([*report.trainees, report.team], start=1):
        name = f"{rank}. {s.name}" if s.user_id is not None else "All"
        verdict = "" if s.passed is None else (" PASS" if s.passed else " FAIL")
        click.echo(
            f"{name}: score {_or_dash(s.score)}, 100-point assessment {_or_dash(s.assessment)}, "
            f"handled {s.handled}/{s.arrived}, abandoned "
            f"{s.abandoned}, first response {_or_dash(s.first_response_mean_s)} s (p90 "
            f"{_or_dash(s.first_response_p90_s)}), red lines {s.red_lines}{verdict}"
        )
        for reason in s.reasons:
            click.echo(f"   - {reason['en']}")
    if report.previous is not None:
        before = report.previous
        click.echo(
            f"Previous drill: score {_or_dash(before.score)}, first response "
            f"{_or_dash(before.first_response_mean_s)} s, abandoned {before.abandon_rate:.0%}"
        )
    if csv_path is not None:
        csv_path.write_text(to_csv(report), encoding="utf-8")
        click.echo(f"Wrote {csv_path}")


def _or_dash(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


@cli.group()
def llm() -> None:
    """LLM-played customer, judge and rewriter: check the model servers."""


@llm.command("check")
@config_option
@click.option(
    "--role",
    type=click.Choice(["customer", "judge", "rewriter"]),
    default=None,
    help="Check only this role (default: every role).",
)
@click.pass_context
def llm_check(ctx: click.Context, config_file: str | None, role: str | None) -> None:
    """Send tiny requests to each configured role's server and report what works.

    Prints the base URL, the model, whether a plain completion works (and how fast), and
    which structured-output modes work; the mode ``auto`` will use is saved in the
    database, so sessions start with it. Exit 0 if every configured role works, 1 if one
    does not (or --role names an unconfigured one), 2 for a configuration error.
    """
    from bot.config import ConfigError, config_path
    from bot.llm.config import ROLES, llm_settings, role_env

    try:
        settings = llm_settings(config_path(config_file))
    except ConfigError as exc:
        click.echo(f"Error: {exc}", err=True)
        raise SystemExit(2) from None
    failed = False
    groups: dict[tuple[Any, ...], list[tuple[str, Any]]] = {}
    for name in [role] if role else ROLES:
        found = settings.for_role(name)  # type: ignore[arg-type]
        if found is None:
            click.echo(
                f"{name}: not configured (uses its scripted/rule behaviour). To configure it, "
                f"set {role_env(name, 'model')} (or TRAINER_LLM_MODEL for every role), plus "
                f"{role_env(name, 'base_url')} / {role_env(name, 'api_key')} (or "
                "OPENAI_BASE_URL / OPENAI_API_KEY); or in the config file put model, base_url, "
                f"api_key under [llm.{name}] (or [llm] for every role)."
            )
            failed = failed or role is not None
            continue
        key = (found.base_url, found.model, found.api_key, found.structured)
        groups.setdefault(key, []).append((name, found))
    store = _store(ctx) if groups else None
    try:
        for members in groups.values():  # one probe, one verdict per server and model
            failed = not asyncio.run(_llm_check_endpoint(members, store)) or failed
    finally:
        if store is not None:
            store.close()
    raise SystemExit(1 if failed else 0)


JUDGE_TOKENS = 300
"""About how many tokens the judge writes per dimension (its answer's size)."""


async def _llm_check_endpoint(members: list[tuple[str, Any]], store: Store | None) -> bool:
    from bot.llm.client import MODES, LLMClient, slots_limit

    names = ", ".join(name for name, _ in members)
    settings = members[0][1]
    click.echo(
        f"{names}: {settings.base_url or 'default (https://api.openai.com/v1)'} "
        f"model {settings.model} (structured {settings.structured}; timeout "
        + ", ".join(f"{name} {s.timeout_s:g} s" for name, s in members)
        + ")"
    )
    client = LLMClient(settings)
    client.memory = store  # what auto will use is kept for the sessions
    try:
        result = await client.probe()
    finally:
        await client.aclose()
    if not result.ok:
        click.echo(f"  plain completion: FAILED: {result.errors.get('plain')}")
        return False
    speed = f", ~{result.tokens_per_s:.0f} tokens/s" if result.tokens_per_s else ""
    click.echo(
        f"  plain completion: ok in {result.latency_s:.2f} s{speed} (server model {result.model})"
    )
    listed = {True: "yes", False: "NO (check the name)", None: "the server lists no models"}
    click.echo(f"  model listed: {listed[result.listed]}")
    if result.context:
        click.echo(f"  context length: {result.context} tokens")
    for mode in MODES:
        state = "ok" if result.modes.get(mode) else f"no ({result.errors.get(mode)})"
        click.echo(f"  {mode}: {state}")
    used = settings.structured if settings.structured != "auto" else f"auto -> {result.auto}"
    kept = " (saved: sessions start with it)" if settings.structured == "auto" and store else ""
    click.echo(f"  structured answers use: {used}{kept}")
    how = {"reported": "as the server reports", "measured": "measured"}.get(result.slots_how)
    decodes = {
        None: "requests decoded at once: unknown",
        1: f"decodes one request at a time ({how})",
    }.get(result.slots, f"decodes {result.slots} requests at once ({how})")
    if result.slots_how == "measured" and (result.slots or 0) > 1:
        decodes = "decodes several requests at once (measured)"
    limit = settings.max_concurrency
    if limit is not None:
        click.echo(f"  {decodes}; sessions send at most {limit} at once (max_concurrency)")
    else:
        known = None if result.slots is None else (result.slots, result.slots_how)
        most = slots_limit(known)
        saved = " (saved)" if store and known is not None else ""
        click.echo(f"  {decodes}; sessions send at most {most} at once{saved}")
        if known is None or (known[1] == "measured" and most > 1):
            click.echo(
                "  a server that serves more at once (vLLM, a hosted API) can take a higher "
                "max_concurrency when a whole team practises"
            )
    judge = next((s for name, s in members if name == "judge"), None)
    if judge is not None and result.tokens_per_s:
        needed = JUDGE_TOKENS / result.tokens_per_s
        if needed > 0.8 * judge.timeout_s:
            click.echo(
                f"  too slow for the judge: this server gives ~{result.tokens_per_s:.0f} "
                f"tokens/s and the judge needs ~{JUDGE_TOKENS} tokens per dimension "
                f"(~{needed:.0f} s): raise timeout_s to {int(needed * 1.5) + 1} or use a "
                "faster model"
            )
    return True


def main() -> None:
    """Console entry point: an error the commands did not foresee is one line, not a traceback."""
    from bot.storage import StoreError

    try:
        # not in `cli`: tests call that, in one long process
        code = cli.main(obj={"tune_gc": True}, standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort as exc:  # Ctrl-C before a command could hold it back, or input ended
        if isinstance(exc.__context__, EOFError):
            _die("the input ended before the question was answered")
        from bot.launch import STOPPED

        click.echo(f"\n{STOPPED}", err=True)
        sys.exit(130)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        _die(f"{where}{exc.strerror or exc} — check the path and its permissions")
    except StoreError as exc:
        _die(
            f"the database could not be used ({exc}); if the file is read-only or on a full "
            "disk, make it writable, start the database server, or choose another with --db "
            "(nothing saved was lost)"
        )
    except RecursionError:
        _die("the input is nested too deeply to be read; check the file")
    sys.exit(code if type(code) is int else 0)  # a command's own return value is no status


def _die(message: str) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(1)
