"""A session scorecard drawn as a PNG: dimension bars and the trainee's score trend.

Uses matplotlib's object API with the Agg canvas only (no pyplot, no global rcParams), so
it is safe to call from any thread. Chinese text needs an installed CJK font; without one,
or when a font lacks a character, the English text is used so no glyph is ever missing.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties, findfont, fontManager, get_font
from matplotlib.ticker import MaxNLocator

from bot.i18n import Lang
from graders._base import Bilingual

CJK_FONT_FAMILIES: tuple[str, ...] = (
    "Noto Sans CJK SC",
    "Noto Sans SC",
    "Source Han Sans SC",
    "Source Han Sans CN",
    "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei",
    "SimHei",
    "Microsoft YaHei",
    "PingFang SC",
    "Heiti SC",
    "AR PL UMing",
    "AR PL UKai",
    "Noto Sans CJK",
    "Source Han Sans",
    "Noto Serif CJK SC",
)
"""Font families tried, in order, for Chinese text (prefix match, case-insensitive)."""

DEFAULT_PASS_MARK = 80.0
"""Pass mark drawn on the trend panel unless the caller gives another."""

_BASE_FAMILY = "DejaVu Sans"  # ships with matplotlib, so it is always there
_PROBE = "评分未得总历次及格线场"  # characters a usable CJK font must have

_UNSCORED: Bilingual = {"zh": "未评分", "en": "unscored"}
_DIMENSIONS: Bilingual = {"zh": "本次各项得分", "en": "This session"}
_TREND: Bilingual = {"zh": "历次总分", "en": "Session totals"}
_PASS: Bilingual = {"zh": "及格线", "en": "pass"}
_SESSION: Bilingual = {"zh": "场次", "en": "session"}

_GOOD, _FAIR, _POOR = "#2e7d32", "#ef8f00", "#c62828"
_TRACK, _INK, _MUTED = "#eeeeee", "#222222", "#777777"


@dataclass(frozen=True, slots=True)
class _Font:
    """A font family and the code points it can draw."""

    family: str
    codepoints: frozenset[int]


@lru_cache(maxsize=1)
def _base_font() -> _Font:
    path = findfont(FontProperties(family=[_BASE_FAMILY]), fallback_to_default=True)
    return _Font(_BASE_FAMILY, frozenset(get_font(path).get_charmap()))


@lru_cache(maxsize=1)
def _cjk_font() -> _Font | None:
    installed = sorted({entry.name for entry in fontManager.ttflist})
    for wanted in CJK_FONT_FAMILIES:
        for name in installed:
            if not name.lower().startswith(wanted.lower()):
                continue
            path = findfont(FontProperties(family=[name]), fallback_to_default=False)
            codepoints = frozenset(get_font(path).get_charmap())
            if all(ord(c) in codepoints for c in _PROBE):
                return _Font(name, codepoints)
    return None


def has_cjk_font() -> bool:
    """Whether an installed font can draw Chinese labels."""
    return _cjk_font() is not None


class _Text:
    """Picks each label's language and font so that every glyph exists."""

    def __init__(self, lang: Lang) -> None:
        base = _base_font()
        cjk = _cjk_font() if lang == "zh" else None
        self._cjk = cjk
        self._base = base.codepoints
        self._all = base.codepoints | cjk.codepoints if cjk else base.codepoints
        families = [cjk.family, base.family] if cjk else [base.family]
        self.families = families
        self.font = FontProperties(family=families, size=9)
        self.small = FontProperties(family=families, size=8)
        self.title = FontProperties(family=families, size=12)

    def __call__(self, text: Bilingual) -> str:
        """Return ``text`` in the chart language, or in English where that cannot be drawn."""
        if self._cjk is not None:
            zh = text.get("zh") or ""
            if zh and all(_drawable(c, self._all) for c in zh):
                return zh
        en = text.get("en") or text.get("zh") or ""
        return "".join(c if _drawable(c, self._base) else _fallback(c) for c in en)


def _drawable(char: str, codepoints: frozenset[int]) -> bool:
    return char == "\n" or ord(char) in codepoints


def _fallback(char: str) -> str:
    return " " if char.isspace() else "?"


def _wrap(label: str) -> str:
    """Break a long axis label over lines (CJK text has no spaces, so wrap it tighter)."""
    wide = any(ord(c) >= 0x2E80 for c in label)
    return textwrap.fill(label, width=8 if wide else 16) if label else label


def _colour(fraction: float) -> str:
    if fraction >= 0.8:
        return _GOOD
    return _FAIR if fraction >= 0.6 else _POOR


def _number(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def _draw_dimensions(
    ax: Axes, dimensions: Sequence[tuple[Bilingual, float | None, float]], text: _Text
) -> None:
    rows = list(reversed(dimensions))  # first dimension on top
    positions = list(range(len(rows)))
    ax.set_xlim(0, 100)
    ax.set_ylim(-0.6, max(len(rows), 1) - 0.4)
    ax.barh(positions, [100] * len(rows), height=0.6, color=_TRACK, zorder=1)
    for y, (_, score, max_score) in zip(positions, rows, strict=True):
        if score is None or max_score <= 0 or not math.isfinite(score):
            ax.barh(y, 100, height=0.6, fill=False, hatch="///", edgecolor=_MUTED, zorder=2)
            label = text(_UNSCORED)
            ax.text(
                50,
                y,
                label,
                ha="center",
                va="center",
                color=_INK,
                fontproperties=text.font,
                parse_math=False,
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 1},
                zorder=3,
            )
            continue
        fraction = min(max(score / max_score, 0.0), 1.0)
        ax.barh(y, fraction * 100, height=0.6, color=_colour(fraction), zorder=2)
        shown = f"{_number(score)}/{_number(max_score)}"
        inside = fraction > 0.75
        ax.text(
            fraction * 100 + (-1.5 if inside else 1.5),
            y,
            shown,
            ha="right" if inside else "left",
            va="center",
            color="white" if inside else _INK,
            fontproperties=text.font,
            parse_math=False,
            zorder=3,
        )
    ax.set_yticks(
        positions,
        [_wrap(text(label)) for label, _, _ in rows],
        fontproperties=text.font,
        parse_math=False,
    )
    ax.tick_params(axis="y", length=0)
    ax.tick_params(axis="x", labelsize=8)
    ax.set_xticks([0, 50, 100], ["0%", "50%", "100%"], fontproperties=text.small)
    ax.set_title(text(_DIMENSIONS), fontproperties=text.font, loc="left", parse_math=False)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)


def _draw_trend(ax: Axes, trend: Sequence[float], pass_mark: float, text: _Text) -> None:
    values = [float(v) for v in trend]
    xs = list(range(1, len(values) + 1))
    finite = [v for v in values if math.isfinite(v)]
    ax.set_ylim(min([0.0, *finite]), max([100.0, pass_mark, *finite]) + 5)
    ax.set_xlim(0.5, max(len(values), 1) + 0.5)
    ax.axhline(pass_mark, color=_MUTED, linestyle="--", linewidth=1, zorder=1)
    ax.text(
        0.01,
        pass_mark + 1,
        f"{text(_PASS)} {_number(pass_mark)}",
        color=_MUTED,
        transform=ax.get_yaxis_transform(),
        fontproperties=text.small,
        va="bottom",
        parse_math=False,
    )
    if values:
        ax.plot(
            xs,
            values,
            color="#1565c0",
            linewidth=1.5,
            marker="o",
            markersize=3 if len(values) > 12 else 5,
            zorder=2,
        )
        last = values[-1]
        if math.isfinite(last):
            ax.scatter(
                [xs[-1]], [last], s=40, zorder=3, color=_GOOD if last >= pass_mark else _POOR
            )
            ax.annotate(
                _number(last),
                (xs[-1], last),
                xytext=(0, 6),
                textcoords="offset points",
                ha="center",
                fontproperties=text.small,
                color=_INK,
            )
    ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True, min_n_ticks=1))
    ax.tick_params(labelsize=8, labelfontfamily=text.families)
    ax.set_xlabel(text(_SESSION), fontproperties=text.small, parse_math=False)
    ax.set_title(text(_TREND), fontproperties=text.font, loc="left", parse_math=False)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def scorecard_chart(
    dimensions: Sequence[tuple[Bilingual, float | None, float]],
    trend: Sequence[float],
    *,
    title: Bilingual,
    lang: Lang,
    pass_mark: float = DEFAULT_PASS_MARK,
) -> bytes:
    """Draw one session's dimension scores and the trainee's total-score trend as a PNG.

    ``dimensions`` holds (label, score or None when unscored, max score); ``trend`` the
    trainee's session totals (0-100), oldest first, ending with this session.
    """
    text = _Text(lang)
    fig = Figure(figsize=(6, 3), dpi=100, layout="constrained")
    canvas = FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2, width_ratios=(1.1, 1))
    _draw_dimensions(left, dimensions, text)
    _draw_trend(right, trend, pass_mark, text)
    fig.suptitle(text(title), fontproperties=text.title, parse_math=False)
    out = io.BytesIO()
    # One draw (layout included); savefig would lay out in an extra pass. Untyped upstream.
    canvas.print_png(out, metadata={"Software": None})  # type: ignore[no-untyped-call]
    return out.getvalue()
