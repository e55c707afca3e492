"""Reports a QA lead opens in a browser: the calibration report as one HTML file.

The page is rendered from ``prompts/calibration.html.j2`` (jinja2, StrictUndefined,
autoescaped) with its charts inlined as PNG data, so it can be mailed or archived as is.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from functools import cache

import jinja2
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bot.calibration import ACCURACY_LABELS, EMPATHY_LEVELS, Check, Report
from bot.paths import content_dir


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(content_dir("prompts")),
        undefined=jinja2.StrictUndefined,
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _png(figure: Figure) -> str:
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)  # type: ignore[no-untyped-call]
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def confusion_chart(
    matrix: Sequence[Sequence[int]], labels: Sequence[str], title: str, axis: tuple[str, str]
) -> str:
    """A confusion matrix as a heat map with the counts written in; PNG data URI.

    Chart texts are ASCII (the page around them is bilingual), so no CJK font is needed.
    """
    figure = Figure(figsize=(3.6, 3.2), dpi=110)
    axes = figure.add_axes((0.24, 0.2, 0.7, 0.66))
    peak = max((max(row) for row in matrix), default=0) or 1
    axes.imshow(matrix, cmap="Blues", vmin=0, vmax=peak)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            colour = "white" if count > peak * 0.6 else "#222222"
            axes.text(j, i, str(count), ha="center", va="center", color=colour, fontsize=9)
    axes.set_xticks(range(len(labels)), labels=list(labels), fontsize=8)
    axes.set_yticks(range(len(labels)), labels=list(labels), fontsize=8)
    axes.set_xlabel(axis[1], fontsize=8)
    axes.set_ylabel(axis[0], fontsize=8)
    axes.set_title(title, fontsize=9)
    return _png(figure)


def clause_chart(report: Report) -> str:
    """Recall and precision per clause as paired horizontal bars; PNG data URI."""
    rows = sorted(report.clauses.values(), key=lambda c: c.clause, reverse=True)
    height = 0.3 * len(rows) + 0.9  # inches: a row per clause, room for title and ticks
    figure = Figure(figsize=(6.4, height), dpi=110)
    axes = figure.add_axes((0.34, 0.45 / height, 0.62, (height - 0.85) / height))
    for index, c in enumerate(rows):
        for offset, value, colour in ((0.18, c.recall, "#2b6cb0"), (-0.18, c.precision, "#dd6b20")):
            if value is not None:
                axes.barh(index + offset, value, height=0.34, color=colour)
    axes.set_yticks(range(len(rows)), labels=[c.clause for c in rows], fontsize=7)
    axes.set_xlim(0, 1)
    axes.axvline(0.9, color="#888888", linewidth=0.8, linestyle="--")
    axes.tick_params(axis="x", labelsize=7)
    axes.set_title("recall (blue) and precision (orange) per clause", fontsize=9)
    return _png(figure)


def calibration_html(report: Report, checks: Sequence[Check] = (), worst: int = 20) -> str:
    """The whole calibration report as a self-contained HTML page."""
    empathy = confusion_chart(
        report.empathy_matrix,
        [str(level) for level in EMPATHY_LEVELS],
        "Empathy",
        ("label", "graders"),
    )
    accuracy = confusion_chart(
        [[report.accuracy_matrix[a][b] for b in ACCURACY_LABELS] for a in ACCURACY_LABELS],
        list(ACCURACY_LABELS),
        "Accuracy",
        ("label", "graders"),
    )
    data = report.to_dict(worst)
    template = _environment().get_template("calibration.html.j2")
    return template.render(
        report=data,
        headline=data["headline"],
        checks=[{"text": str(c), "ok": c.ok} for c in checks],
        empathy_chart=empathy,
        accuracy_chart=accuracy,
        clause_chart=clause_chart(report) if report.clauses else None,
    )
