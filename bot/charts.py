"""A session scorecard drawn as a PNG: dimension bars and the trainee's score trend.

Uses matplotlib's object API with the Agg canvas only (no pyplot, no global rcParams), so
it is safe to call from any thread. Chinese text needs an installed CJK font; without one,
or when a font lacks a character, the English text is used so no glyph is ever missing.

A chart costs a few milliseconds, not the ~100 ms of a full matplotlib draw:

* The layout is fixed and computed by hand (no constrained layout). Dimension labels are
  wrapped and, where rows are tight, set smaller so each fits its row and the label column
  (:func:`_fit_labels`); the title shrinks or wraps to the image width.
* Everything that depends only on the texts (labels, headings, axes, grey tracks, pass
  line) is drawn once into a template whose pixels are kept (``copy_from_bbox``). A chart
  restores them and draws only its data: the bars, the trend line and its markers, and
  the trend's x ticks. The title is not in the template, only its size and line count
  (which move the panels): it is stamped like the data texts, so one template serves
  every scenario whose title fits the same lines and size. Templates are pooled
  (:class:`_Pool`, LRU-bounded, lock-guarded): a thread takes one out, draws on it alone
  and gives it back, so threads never share one.
* Texts that change between charts (the title, bar values, "unscored", the last total, x
  tick labels) come from a bounded cache of pre-rendered text images (:class:`_Stamps`),
  blended in with Agg's ``draw_image``.
* The PNG is written directly from the canvas's RGBA buffer (opaque: alpha is always 255),
  no row filter, deflated by ISA-L at level 1: ~0.2 ms and ~20-45 KB, where converting to
  RGB and zlib took ~2 ms, the most expensive step of a chart.
"""

from __future__ import annotations

import io
import math
import re
import struct
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt
from isal import isal_zlib
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties, findfont, fontManager, get_font
from matplotlib.lines import Line2D
from matplotlib.markers import TICKDOWN
from matplotlib.text import Text
from matplotlib.transforms import IdentityTransform, offset_copy

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
_PROBE_LINE = "Ag评"  # a title line's height: Latin ascender and descender, a CJK glyph

_UNSCORED: Bilingual = {"zh": "未评分", "en": "unscored"}
_DIMENSIONS: Bilingual = {"zh": "本次各项得分", "en": "This session"}
_TREND: Bilingual = {"zh": "历次总分", "en": "Session totals"}
_PASS: Bilingual = {"zh": "及格线", "en": "pass"}
_SESSION: Bilingual = {"zh": "场次", "en": "session"}

_GOOD, _FAIR, _POOR = "#2e7d32", "#ef8f00", "#c62828"
_TRACK, _INK, _MUTED, _LINE = "#eeeeee", "#222222", "#777777", "#1565c0"

# The layout, in pixels of the 600x300 image (x from the left, y from the bottom).
_W, _H, _DPI = 600, 300, 100
_PX = _DPI / 72  # pixels per point
_MARGIN = 8  # around the image
_TITLE_TOP = 6  # from the top of the image to the top of the title
_HEADING = 26  # from the bottom of the title to the top of the panels: the panel headings
_BOTTOM = 42  # below the panels: x tick labels and, on the trend, the "session" label
_BARS_RIGHT = 329  # right edge of the bars ("100%" sticks out past it) ...
_BARS_RIGHT_MAX = 365  # ... up to which it moves (the trend narrows) for long labels
_TREND_GAP = 54  # from the bars' right edge to the trend's axis: "100%", y tick labels
_TREND_RIGHT = _W - 14
_LABEL_GAP = 6  # between a dimension label and its bar
_MIN_BARS = 110  # the bars keep at least this width however long the labels
_LABEL_WRAPS = (130.0, 170.0)  # preferred label widths, before the widest that leaves _MIN_BARS
_LABEL_SIZES = (9.0, 8.5, 8.0, 7.5, 7.0, 6.5, 6.0)  # points, tried largest first
_TITLE_FITS = ((12.0, 1), (11.0, 1), (10.0, 1), (10.0, 2), (9.0, 2), (8.0, 3))  # size, lines
_TICK = 3.5  # x tick length and label pad of the trend, in points (matplotlib's defaults)
_MAX_TICKS = 7
_ELLIPSIS = "…"

_MAX_TEMPLATES = 24
"""Idle templates kept (all keys together): about 3.5 MB each (figure and two RGBA buffers)."""

_MAX_STAMPS = 4096
"""Pre-rendered text images kept: a few hundred bytes each."""

_PNG_LEVEL = 1  # ISA-L deflate level (0-3); the image is mostly flat, level 1 is ~20 KB


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

    def __call__(self, text: Bilingual) -> str:
        """Return ``text`` in the chart language, or in English where that cannot be drawn."""
        if self._cjk is not None:
            zh = text.get("zh") or ""
            if zh and all(_drawable(c, self._all) for c in zh):
                return zh
        en = text.get("en") or text.get("zh") or ""
        return "".join(c if _drawable(c, self._base) else _fallback(c) for c in en)


@lru_cache(maxsize=8)
def _text_for(lang: Lang, cjk: _Font | None) -> _Text:
    """A shared, read-only :class:`_Text` (``cjk`` keys the cache: the font it will use)."""
    return _Text(lang)


@lru_cache(maxsize=4096)
def _said(text: _Text, zh: str, en: str) -> str:
    """``text({"zh": zh, "en": en})``, remembered (the same labels come back every chart)."""
    return text({"zh": zh, "en": en})


def _drawable(char: str, codepoints: frozenset[int]) -> bool:
    return char == "\n" or ord(char) in codepoints


def _fallback(char: str) -> str:
    return " " if char.isspace() else "?"


_WIDE = "\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef"
_TOKEN = re.compile(rf"\s*(?:[{_WIDE}]|[^\s{_WIDE}]+)")
"""A word, or one CJK character (CJK text has no spaces), with the spaces before it."""


def _wrap(label: str, fits: Callable[[str], bool]) -> list[str]:
    """Break ``label`` into lines that each ``fit``; explicit newlines are kept."""
    lines: list[str] = []
    for paragraph in label.split("\n"):
        if fits(paragraph):
            lines.append(paragraph)
            continue
        line = ""
        for token in _TOKEN.findall(paragraph):
            if line and fits(line + token):
                line += token
                continue
            if line:
                lines.append(line)
            line = token.lstrip()
            while len(line) > 1 and not fits(line):  # a word longer than a line: break it
                cut = len(line) - 1
                while cut > 1 and not fits(line[:cut]):
                    cut -= 1
                lines.append(line[:cut])
                line = line[cut:]
        lines.append(line)
    return lines


def _elide(lines: list[str], count: int, fits: Callable[[str], bool]) -> list[str]:
    """The first ``count`` lines, the last ending in an ellipsis if any text was cut."""
    if len(lines) <= count:
        return lines
    last = lines[count - 1]
    while last and not fits(last + _ELLIPSIS):
        last = last[:-1]
    return [*lines[: count - 1], last + _ELLIPSIS]


def _colour(fraction: float) -> str:
    if fraction >= 0.8:
        return _GOOD
    return _FAIR if fraction >= 0.6 else _POOR


def _number(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def _x_ticks(sessions: int) -> list[int]:
    """Session numbers to label on a trend of ``sessions`` points: 1, 2, 5, 10, 20, ... apart."""
    step = 1
    while sessions // step > _MAX_TICKS:
        step = step * 5 // 2 if str(step)[0] == "2" else step * 2  # 1 2 5 10 20 50 100 ...
    return list(range(step, sessions + 1, step))


# --- The template: everything that depends on the texts only --------------------------------


@dataclass(frozen=True, slots=True)
class _Static:
    """What a template depends on (its cache key): the resolved texts and the y range."""

    families: tuple[str, ...]
    title_height: float  # px; the title itself is stamped (:class:`_Title`)
    labels: tuple[str, ...]  # first dimension first
    heading_dims: str
    heading_trend: str
    pass_label: str
    session: str
    unscored: str
    pass_mark: float
    ylim: tuple[float, float]


@dataclass(frozen=True, slots=True)
class _Title:
    """A title fitted to the image width: its lines, size in points and height in pixels."""

    text: str
    size: float
    height: float


@dataclass(eq=False, slots=True)
class _Template:
    """A drawn figure without its data, and the artists that draw the data on it."""

    canvas: FigureCanvasAgg
    left: Axes
    right: Axes
    background: Any  # the figure's pixels without the data (an Agg BufferRegion)
    bars: PolyCollection
    unscored: PolyCollection
    line: Line2D
    last: Line2D
    ticks: Line2D
    value_size: float  # points, for the texts on the bars


class _Measure:
    """Text extents in pixels, as matplotlib will lay them out on this figure."""

    def __init__(self, fig: Figure, renderer: RendererAgg) -> None:
        self._text = Text(0, 0, "", parse_math=False)
        self._text.set_figure(fig)
        self._renderer = renderer
        self._cache: dict[tuple[str, float], tuple[float, float]] = {}

    def __call__(self, text: str, prop: FontProperties) -> tuple[float, float]:
        key = (text, prop.get_size_in_points())
        size = self._cache.get(key)
        if size is None:
            self._text.set_text(text)
            self._text.set_fontproperties(prop)
            box = self._text.get_window_extent(self._renderer)
            size = self._cache[key] = (box.width, box.height)
        return size


def _fits(measure: _Measure, prop: FontProperties, width: float) -> Callable[[str], bool]:
    """Whether a line of text in ``prop`` is at most ``width`` pixels wide."""

    def fits(line: str) -> bool:
        return measure(line, prop)[0] <= width

    return fits


def _fit_labels(
    labels: Sequence[str], families: list[str], measure: _Measure, widest: float, row: float
) -> tuple[float, list[str]]:
    """A font size and line breaks with which every label fits its row.

    A label must be at most ``widest`` px wide and ``row`` px high. Preferred: a large size
    (8-9 pt) wrapped narrow (the bars keep their room), then a large size as wide as
    needed, then smaller sizes. The last resort is the smallest size with the lines that do
    not fit replaced by an ellipsis.
    """
    narrow = [min(w, widest) for w in _LABEL_WRAPS]
    large, small = _LABEL_SIZES[:3], _LABEL_SIZES[3:]
    tries = [
        *((size, width) for size in large for width in narrow),
        *((size, widest) for size in large),
        *((size, width) for size in small for width in (*narrow, widest)),
    ]
    for size, width in tries:
        prop = FontProperties(family=families, size=size)
        most = _lines_in(row, prop, measure)
        fits = _fits(measure, prop, width)
        wrapped: list[str] = []
        for label in labels:  # measuring is slow (~0.5 ms): stop at the first misfit
            lines = _wrap(label, fits)
            if len(lines) > most:
                break
            wrapped.append("\n".join(lines))
        else:
            if all(measure(text, prop)[1] <= row for text in wrapped):
                return size, wrapped
    prop = FontProperties(family=families, size=_LABEL_SIZES[-1])
    count = max(1, _lines_in(row, prop, measure))
    fits = _fits(measure, prop, widest)
    return _LABEL_SIZES[-1], ["\n".join(_elide(_wrap(lb, fits), count, fits)) for lb in labels]


def _lines_in(height: float, prop: FontProperties, measure: _Measure) -> int:
    """How many lines of text in ``prop`` fit ``height`` pixels (about: Latin metrics)."""
    line = measure("Ag", prop)[1]
    lead = max(measure("Ag\nAg", prop)[1] - line, 1.0)
    return 0 if height < line else 1 + int((height - line) // lead)


def _fit_title(title: str, families: list[str], measure: _Measure) -> tuple[float, str]:
    """The largest title size (and line breaks) that fits the image width."""
    width = _W - 2 * _MARGIN
    for size, count in _TITLE_FITS:
        prop = FontProperties(family=families, size=size)
        lines = _wrap(title, _fits(measure, prop, width))
        if len(lines) <= count:
            return size, "\n".join(lines)
    size, count = _TITLE_FITS[-1]
    fits = _fits(measure, FontProperties(family=families, size=size), width)
    return size, "\n".join(_elide(_wrap(title, fits), count, fits))


_measuring = threading.local()


@lru_cache(maxsize=1024)
def _title(title: str, families: tuple[str, ...]) -> _Title:
    """``title`` fitted to the image, measured on this thread's own figure."""
    measure: _Measure | None = getattr(_measuring, "measure", None)
    if measure is None:
        fig = Figure(figsize=(_W / _DPI, _H / _DPI), dpi=_DPI)
        renderer = FigureCanvasAgg(fig).get_renderer()  # type: ignore[no-untyped-call]
        measure = _measuring.measure = _Measure(fig, renderer)
    size, text = _fit_title(title, list(families), measure)
    # The height of as many lines of tall and deep glyphs, not of this title's own: titles
    # of one size and line count then share a template (their measured heights differ by
    # fractions of a pixel, one template each).
    probe = "\n".join([_PROBE_LINE if len(families) > 1 else "Ag"] * (text.count("\n") + 1))
    height = measure(probe, FontProperties(family=list(families), size=size))[1] if text else 0.0
    return _Title(text, size, height)


def _build(static: _Static) -> _Template:
    """Draw the parts of a chart that depend on ``static`` only, and keep their pixels."""
    families = list(static.families)

    def font(size: float) -> FontProperties:
        return FontProperties(family=families, size=size)

    fig = Figure(figsize=(_W / _DPI, _H / _DPI), dpi=_DPI)
    canvas = FigureCanvasAgg(fig)
    renderer = canvas.get_renderer()  # type: ignore[no-untyped-call]
    measure = _Measure(fig, renderer)

    top = _H - (_TITLE_TOP + static.title_height + _HEADING)  # of both panels
    height = top - _BOTTOM

    # Left: one grey track per dimension, its label left of it (first dimension on top).
    rows = len(static.labels)
    label_size, labels = 9.0, list(static.labels)
    label_width = 0.0
    if rows:
        widest = _BARS_RIGHT_MAX - _MIN_BARS - _LABEL_GAP - _MARGIN
        label_size, labels = _fit_labels(
            static.labels, families, measure, widest, height / rows - 1
        )
        label_width = max(measure(label, font(label_size))[0] for label in labels)
    bars_left = _MARGIN + math.ceil(label_width) + _LABEL_GAP
    bars_right = max(_BARS_RIGHT, bars_left + _MIN_BARS)
    trend_left = bars_right + _TREND_GAP
    left = fig.add_axes((bars_left / _W, _BOTTOM / _H, (bars_right - bars_left) / _W, height / _H))
    positions = list(range(rows))
    left.set_xlim(0, 100)
    left.set_ylim(-0.6, max(rows, 1) - 0.4)
    left.barh(positions, [100] * rows, height=0.6, color=_TRACK, zorder=1)
    left.set_yticks([])
    beside = offset_copy(left.get_yaxis_transform(), fig=fig, x=-_LABEL_GAP, units="dots")
    for y, label in zip(positions, labels[::-1], strict=True):
        left.text(
            0,
            y,
            label,
            ha="right",
            va="center",
            multialignment="right",
            transform=beside,
            fontproperties=font(label_size),
            parse_math=False,
        )
    left.set_xticks([0, 50, 100], ["0%", "50%", "100%"], fontproperties=font(8))
    for side in ("top", "right", "left"):
        left.spines[side].set_visible(False)
    fig.text(
        bars_left / _W,
        (top + 6) / _H,
        static.heading_dims,
        va="bottom",
        fontproperties=font(9),
        parse_math=False,
    )

    # Right: the y axis, the pass line and the labels; the x ticks are data (they move).
    right = fig.add_axes(
        (trend_left / _W, _BOTTOM / _H, (_TREND_RIGHT - trend_left) / _W, height / _H)
    )
    right.set_xlim(0.5, 1.5)
    right.set_ylim(*static.ylim)
    right.set_xticks([])
    right.tick_params(axis="y", labelsize=8, labelfontfamily=families)
    right.axhline(static.pass_mark, color=_MUTED, linestyle="--", linewidth=1, zorder=1)
    right.text(
        0.01,
        static.pass_mark + 1,
        static.pass_label,
        color=_MUTED,
        transform=right.get_yaxis_transform(),
        fontproperties=font(8),
        va="bottom",
        parse_math=False,
    )
    for side in ("top", "right"):
        right.spines[side].set_visible(False)
    fig.text(
        trend_left / _W,
        (top + 6) / _H,
        static.heading_trend,
        va="bottom",
        fontproperties=font(9),
        parse_math=False,
    )
    fig.text(
        (trend_left + _TREND_RIGHT) / 2 / _W,
        (_BOTTOM - 2 * _TICK * _PX - measure("0", font(8))[1] - 4) / _H,
        static.session,
        ha="center",
        va="top",
        fontproperties=font(8),
        parse_math=False,
    )

    # The data artists: animated, so the template's own draw leaves them out.
    bars = PolyCollection([], edgecolors="none", linewidths=0, zorder=2, animated=True)
    left.add_collection(bars, autolim=False)
    unscored = PolyCollection(
        [], facecolors="none", edgecolors=_MUTED, linewidths=1, hatch="///", animated=True
    )
    left.add_collection(unscored, autolim=False)
    (line,) = right.plot([], [], color=_LINE, linewidth=1.5, marker="o", animated=True)
    (last,) = right.plot(
        [],
        [],
        linestyle="",
        marker="o",
        markersize=math.sqrt(40),
        markeredgewidth=1.5,
        clip_on=False,  # whole even at the right edge
    )
    last.set_animated(True)
    (ticks,) = right.plot(
        [],
        [],
        linestyle="",
        marker=TICKDOWN,
        markersize=_TICK,
        markeredgewidth=0.8,
        color="black",
        transform=right.get_xaxis_transform(),
        clip_on=False,
    )
    ticks.set_animated(True)

    canvas.draw()  # type: ignore[no-untyped-call]
    background = canvas.copy_from_bbox(fig.bbox)  # type: ignore[no-untyped-call]
    return _Template(canvas, left, right, background, bars, unscored, line, last, ticks, label_size)


class _Pool:
    """Idle templates by key, least recently used dropped first; safe across threads.

    A caller takes a template out (or builds one), draws on it alone, and gives it back.
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._lock = threading.Lock()
        self._idle: OrderedDict[_Static, list[_Template]] = OrderedDict()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def take(self, key: _Static) -> _Template | None:
        with self._lock:
            idle = self._idle.get(key)
            if not idle:
                return None
            self._count -= 1
            template = idle.pop()
            if not idle:
                del self._idle[key]
            return template

    def give(self, key: _Static, template: _Template) -> None:
        with self._lock:
            self._idle.setdefault(key, []).append(template)
            self._idle.move_to_end(key)
            self._count += 1
            while self._count > self.maxsize:
                oldest, idle = next(iter(self._idle.items()))
                idle.pop(0)
                self._count -= 1
                if not idle:
                    del self._idle[oldest]

    def clear(self) -> None:
        with self._lock:
            self._idle.clear()
            self._count = 0


# --- Text images -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Stamp:
    """A rendered text: straight-alpha RGBA rows, bottom first (as ``draw_image`` takes them)."""

    image: npt.NDArray[np.uint8]
    dx: int  # from the anchor pixel to the image's left edge
    dy: int  # from the anchor pixel to the image's bottom edge (y up)


@dataclass(frozen=True, slots=True)
class _Label:
    """A text to stamp: what matplotlib's ``Text`` would be given."""

    text: str
    families: tuple[str, ...]
    size: float
    colour: str
    ha: str
    va: str
    boxed: bool = False  # on a white box


_SCRATCH_W, _SCRATCH_H = 800, 160
_ANCHOR = (_SCRATCH_W // 2, _SCRATCH_H // 2)
_scratch = threading.local()


def _render_stamp(label: _Label) -> _Stamp:
    """Draw ``label`` anchored at a known pixel on a transparent canvas, and crop it."""
    renderer: RendererAgg | None = getattr(_scratch, "renderer", None)
    if renderer is None:
        fig = Figure(figsize=(_SCRATCH_W / _DPI, _SCRATCH_H / _DPI), dpi=_DPI)
        renderer = FigureCanvasAgg(fig).get_renderer()  # type: ignore[no-untyped-call]
        _scratch.fig, _scratch.renderer = fig, renderer
    renderer.clear()
    text = Text(
        *_ANCHOR,
        label.text,
        color=label.colour,
        ha=label.ha,
        va=label.va,
        fontproperties=FontProperties(family=list(label.families), size=label.size),
        parse_math=False,
        bbox={"facecolor": "white", "edgecolor": "none", "pad": 1} if label.boxed else None,
    )
    text.set_figure(_scratch.fig)
    text.set_transform(IdentityTransform())
    text.draw(renderer)
    pixels = np.asarray(renderer.buffer_rgba())
    alpha = pixels[:, :, 3]
    rows = np.flatnonzero(alpha.any(axis=1))
    cols = np.flatnonzero(alpha.any(axis=0))
    if not rows.size:
        return _Stamp(np.zeros((0, 0, 4), np.uint8), 0, 0)
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    left, right = int(cols[0]), int(cols[-1]) + 1
    image = np.ascontiguousarray(pixels[top:bottom, left:right][::-1])
    return _Stamp(image, left - _ANCHOR[0], (_SCRATCH_H - bottom) - _ANCHOR[1])


class _Stamps:
    """Rendered texts by label, least recently used dropped first; safe across threads."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._lock = threading.Lock()
        self._items: OrderedDict[_Label, _Stamp] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, label: _Label) -> _Stamp:
        with self._lock:
            stamp = self._items.get(label)
            if stamp is not None:
                self._items.move_to_end(label)
                return stamp
        stamp = _render_stamp(label)  # outside the lock: another thread may do the same
        with self._lock:
            self._items[label] = stamp
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)
        return stamp

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


_TEMPLATES = _Pool(_MAX_TEMPLATES)
_STAMPS = _Stamps(_MAX_STAMPS)


def _clear_caches() -> None:
    """Forget every template, fitted title and text image (tests and benchmarks)."""
    _TEMPLATES.clear()
    _STAMPS.clear()
    _title.cache_clear()


# --- A chart -----------------------------------------------------------------------------------


def _rect(width: float, y: float) -> list[tuple[float, float]]:
    return [(0.0, y - 0.3), (width, y - 0.3), (width, y + 0.3), (0.0, y + 0.3)]


def _paint(
    template: _Template,
    static: _Static,
    title: _Title,
    dimensions: Sequence[tuple[Bilingual, float | None, float]],
    values: list[float],
    stamps: _Stamps,
) -> bytes:
    """Draw the data on a template and return the PNG."""
    families = static.families
    size = template.value_size
    texts: list[tuple[_Label, tuple[float, float]]] = []  # with anchors in pixels
    if title.text:
        label = _Label(title.text, families, title.size, "black", "center", "top")
        texts.append((label, (_W / 2, _H - _TITLE_TOP)))

    # Left: a bar and a value per dimension.
    left = template.left
    to_left = left.transData.transform
    rows = len(dimensions)
    bars: list[list[tuple[float, float]]] = []
    colours: list[str] = []
    unscored: list[list[tuple[float, float]]] = []
    for i, (_, score, max_score) in enumerate(dimensions):
        y = rows - 1 - i
        if score is None or not max_score > 0 or not math.isfinite(score * max_score):
            unscored.append(_rect(100.0, y))
            label = _Label(static.unscored, families, size, _INK, "center", "center", True)
            texts.append((label, tuple(to_left((50.0, y)))))
            continue
        fraction = min(max(score / max_score, 0.0), 1.0)
        if fraction > 0:
            bars.append(_rect(fraction * 100, y))
            colours.append(_colour(fraction))
        inside = fraction > 0.75
        label = _Label(
            f"{_number(score)}/{_number(max_score)}",
            families,
            size,
            "white" if inside else _INK,
            "right" if inside else "left",
            "center",
        )
        texts.append((label, tuple(to_left((fraction * 100 + (-1.5 if inside else 1.5), y)))))
    template.canvas.restore_region(template.background)  # type: ignore[no-untyped-call]
    if bars:
        template.bars.set_verts(bars)
        template.bars.set_facecolor(colours)
        left.draw_artist(template.bars)
    if unscored:
        template.unscored.set_verts(unscored)
        left.draw_artist(template.unscored)

    # Right: the trend line, the last point in pass/fail colour, the x ticks.
    right = template.right
    sessions = len(values)
    right.set_xlim(0.5, max(sessions, 1) + 0.5)
    to_right = right.transData.transform
    if values:
        xs = list(range(1, sessions + 1))
        template.line.set_data(xs, values)
        template.line.set_markersize(3 if sessions > 12 else 5)
        right.draw_artist(template.line)
        last = values[-1]
        if math.isfinite(last):
            template.last.set_data([sessions], [last])
            template.last.set_color(_GOOD if last >= static.pass_mark else _POOR)
            right.draw_artist(template.last)
            px, py = to_right((sessions, last))
            label = _Label(_number(last), families, 8, _INK, "center", "baseline")
            texts.append((label, (px, py + 6 * _PX)))
    ticks = _x_ticks(max(sessions, 1))
    template.ticks.set_data(ticks, [0] * len(ticks))
    right.draw_artist(template.ticks)
    tick_y = right.bbox.y0 - 2 * _TICK * _PX
    for tick in ticks:
        label = _Label(str(tick), families, 8, "black", "center", "top")
        texts.append((label, (to_right((tick, 0))[0], tick_y)))

    # The texts, blended in where matplotlib would have drawn them.
    renderer = template.canvas.get_renderer()  # type: ignore[no-untyped-call]
    gc = renderer.new_gc()
    for label, (ax, ay) in texts:
        stamp = stamps.get(label)
        if stamp.image.size and math.isfinite(ax + ay):
            renderer.draw_image(gc, round(ax) + stamp.dx, round(ay) + stamp.dy, stamp.image)
    gc.restore()

    pixels = np.asarray(template.canvas.buffer_rgba())  # type: ignore[no-untyped-call]
    return _png(pixels)


def _png(rgba: npt.NDArray[np.uint8]) -> bytes:
    """An RGBA PNG of the canvas buffer: no row filter, fast deflate (it is mostly flat)."""
    height, width = rgba.shape[:2]
    rows = np.empty((height, 1 + width * 4), np.uint8)  # each row: filter byte 0, then RGBA
    rows[:, 0] = 0
    rows[:, 1:] = rgba.reshape(height, width * 4)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            chunk(b"IHDR", header),
            chunk(b"IDAT", isal_zlib.compress(rows.data, _PNG_LEVEL)),
            chunk(b"IEND", b""),
        )
    )


def _static(
    dimensions: Sequence[tuple[Bilingual, float | None, float]],
    values: list[float],
    title: Bilingual,
    lang: Lang,
    pass_mark: float,
) -> tuple[_Static, _Title]:
    text = _text_for(lang, _cjk_font() if lang == "zh" else None)

    def say(label: Bilingual) -> str:
        return _said(text, label.get("zh", ""), label.get("en", ""))

    families = tuple(text.families)
    fitted = _title(say(title), families)
    finite = [v for v in values if math.isfinite(v)]
    static = _Static(
        families=families,
        title_height=fitted.height,
        labels=tuple(say(label) for label, _, _ in dimensions),
        heading_dims=say(_DIMENSIONS),
        heading_trend=say(_TREND),
        pass_label=f"{say(_PASS)} {_number(pass_mark)}",
        session=say(_SESSION),
        unscored=say(_UNSCORED),
        pass_mark=float(pass_mark),
        ylim=(min([0.0, *finite]), max([100.0, pass_mark, *finite]) + 5),
    )
    return static, fitted


def _chart(
    dimensions: Sequence[tuple[Bilingual, float | None, float]],
    trend: Sequence[float],
    title: Bilingual,
    lang: Lang,
    pass_mark: float,
    *,
    cached: bool,
) -> bytes:
    """The chart; ``cached=False`` draws a fresh template and fresh texts (tests compare)."""
    values = [float(v) for v in trend]
    static, fitted = _static(dimensions, values, title, lang, pass_mark)
    if not cached:
        stamps = _Stamps(_MAX_STAMPS)
        return _paint(_build(static), static, fitted, dimensions, values, stamps)
    template = _TEMPLATES.take(static) or _build(static)
    png = _paint(template, static, fitted, dimensions, values, _STAMPS)
    _TEMPLATES.give(static, template)  # not on an exception: the template may be half-drawn
    return png


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
    trainee's session totals (0-100), oldest first, ending with this session. The image is
    600x300 RGBA, opaque. Thread-safe; the layout for a given set of texts is drawn once and reused.
    """
    return _chart(dimensions, trend, title, lang, pass_mark, cached=True)


def drill_chart(
    rows: Sequence[tuple[str, float | None, float | None]],
    *,
    title: str,
    lang: Lang,
    pass_mark: float,
    first_response_s: float,
) -> bytes:
    """A drill's standings as a PNG: each trainee's score and mean first response.

    ``rows`` holds (name, score or None, first response in seconds or None), best first.
    Drawn once per report view, so plainly: one figure, two bar panels, the pass mark and
    the first-response standard as lines.
    """
    cjk = _cjk_font()
    family = [cjk.family, _BASE_FAMILY] if cjk is not None else [_BASE_FAMILY]
    height = 1.2 + 0.32 * max(1, len(rows))
    figure = Figure(figsize=(8, height), dpi=100, facecolor="white")
    FigureCanvasAgg(figure)
    scores, firsts = figure.subplots(1, 2, sharey=True)
    names = [name for name, _, _ in rows][::-1]
    places = list(range(len(names)))
    panels = (
        (scores, [r[1] for r in rows][::-1], pass_mark, "#2a6", ("平均分", "Score")),
        (
            firsts,
            [r[2] for r in rows][::-1],
            first_response_s,
            "#36c",
            ("首次响应（秒）", "First response (s)"),
        ),
    )
    for axes, values, line, colour, label in panels:
        axes.barh(places, [v or 0 for v in values], color=colour, height=0.6)
        axes.axvline(line, color="#d33", linewidth=1, linestyle="--")
        axes.set_title(label[0] if lang == "zh" else label[1], family=family, fontsize=10)
        for spine in ("top", "right"):
            axes.spines[spine].set_visible(False)
    scores.set_xlim(0, 100)
    scores.set_yticks(places, names, family=family, fontsize=9)
    figure.suptitle(title, family=family, fontsize=12)
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()
