"""The scorecard chart: a small, deterministic PNG in either language, with no warnings."""

from __future__ import annotations

import io
import itertools
import logging
import struct
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from bot import charts
from bot.charts import has_cjk_font, scorecard_chart

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TITLE = {"zh": "第 3 次练习：退款纠纷", "en": "Session 3: refund dispute"}
DIMENSIONS = [
    ({"zh": "共情", "en": "Empathy"}, 17.0, 20.0),
    ({"zh": "政策", "en": "Policy"}, None, 40.0),
    ({"zh": "准确", "en": "Accuracy"}, 30.5, 40.0),
]


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def render(lang: str = "en", **kwargs: object) -> bytes:
    params: dict[str, object] = {"dimensions": DIMENSIONS, "trend": [62, 75, 84]}
    params.update(kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return scorecard_chart(title=TITLE, lang=lang, **params)  # type: ignore[arg-type]


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_both_languages_give_a_small_png(lang: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="matplotlib"):
        data = render(lang)
    assert png_size(data) == (600, 300)
    assert 8_000 < len(data) < 80_000
    with Image.open(io.BytesIO(data)) as image:  # a valid PNG that any decoder reads
        image.load()
        assert image.mode == "RGBA"
        assert image.getchannel("A").getextrema() == (255, 255)  # opaque everywhere
    assert not caplog.records  # e.g. "findfont: ..." would mean a font fell back


@pytest.mark.parametrize("points", [1, 2, 30])
def test_trends_of_any_length_render(points: int) -> None:
    trend = [40 + (i * 7) % 60 for i in range(points)]
    assert png_size(render(trend=trend)) == (600, 300)


def test_an_unscored_dimension_differs_from_a_scored_one() -> None:
    scored = [(label, 10.0 if score is None else score, top) for label, score, top in DIMENSIONS]
    assert render() != render(dimensions=scored)


def test_output_is_deterministic() -> None:
    assert render("zh") == render("zh")
    assert render("en", trend=[80]) == render("en", trend=[80])


def test_without_a_cjk_font_chinese_falls_back_to_english(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(charts, "_cjk_font", lambda: None)
    assert not has_cjk_font()
    assert render("zh") == render("en")


@pytest.mark.skipif(not has_cjk_font(), reason="no CJK font installed")
def test_with_a_cjk_font_chinese_is_drawn() -> None:
    assert render("zh") != render("en")


def test_labels_fall_back_per_label_where_glyphs_are_missing() -> None:
    base = charts._base_font()
    partial = charts._Font(base.family, base.codepoints | {ord(c) for c in "共情"})
    text = charts._Text("en")
    text._cjk = partial  # pretend a CJK font that only has 共 and 情
    text._all = partial.codepoints
    assert text({"zh": "共情", "en": "Empathy"}) == "共情"
    assert text({"zh": "政策", "en": "Policy"}) == "Policy"
    # English text is drawn with the base font; what it cannot draw becomes "?".
    plain = charts._Text("en")
    assert plain({"zh": "语气", "en": "Tone 语气"}) == "Tone ??"
    assert plain({"zh": "x", "en": "two\nlines"}) == "two\nlines"


def test_odd_text_renders_without_warnings() -> None:
    odd = [
        ({"zh": "语气", "en": "Refund $5 and $10, 100% of it (语气)"}, 3.0, 10.0),
        ({"zh": "x", "en": "A very long dimension label that has to be wrapped"}, 12.0, 10.0),
        ({"zh": "y", "en": "Negative"}, -2.0, 10.0),
        ({"zh": "z", "en": "Zero max"}, 1.0, 0.0),
    ]
    title = {"zh": "标题", "en": "Title with $math$ and \\n"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for lang in ("zh", "en"):
            data = scorecard_chart(odd, [120, -5, 80], title=title, lang=lang)  # type: ignore[arg-type]
            assert png_size(data) == (600, 300)
        assert png_size(scorecard_chart(odd, [], title=title, lang="en")) == (600, 300)


def test_a_custom_pass_mark_changes_the_chart() -> None:
    assert render(pass_mark=60) != render()


# --- The fast path: templates, text images, threads ------------------------------------------

LONG_DIMENSIONS = [
    ({"zh": f"维度{i}", "en": f"Problem solving: coordination and escalation, part {i}"}, i, 10.0)
    for i in range(16)
]
LONG_TITLE = {
    "zh": "标题",
    "en": "An extremely long scenario title that goes on about the refund dispute and the "
    "blender that arrived broken in two pieces, and then some more",
}
CASES: list[dict[str, object]] = [
    {},
    {"lang": "zh"},
    {"trend": [72]},
    {"trend": [40 + (i * 7) % 60 for i in range(25)]},
    {"trend": []},
    {"trend": [120, -5, 80]},
    {"dimensions": DIMENSIONS * 2},
    {"dimensions": LONG_DIMENSIONS, "title": LONG_TITLE},
    {"pass_mark": 60},
]


def pixels(data: bytes) -> np.ndarray:  # type: ignore[type-arg]
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (600, 300)
        return np.asarray(image.convert("RGB"))


def render_case(case: dict[str, object], cached: bool = True) -> bytes:
    params: dict[str, object] = {
        "dimensions": DIMENSIONS,
        "trend": [62, 75, 84],
        "title": TITLE,
        "lang": "en",
        "pass_mark": charts.DEFAULT_PASS_MARK,
    }
    params.update(case)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        if cached:
            return scorecard_chart(
                params.pop("dimensions"),  # type: ignore[arg-type]
                params.pop("trend"),  # type: ignore[arg-type]
                **params,  # type: ignore[arg-type]
            )
        return charts._chart(**params, cached=False)  # type: ignore[arg-type]


@pytest.mark.parametrize("case", CASES, ids=range(len(CASES)))
def test_cached_and_uncached_charts_are_the_same_image(case: dict[str, object]) -> None:
    charts._clear_caches()
    first = render_case(case)  # builds the template
    render_case({**case, "trend": [10, 20], "dimensions": DIMENSIONS[:1] * 3})  # reuses it
    again = render_case(case)  # the template after another chart was drawn on it
    fresh = render_case(case, cached=False)
    assert np.array_equal(pixels(first), pixels(again))
    assert np.array_equal(pixels(first), pixels(fresh))
    assert first == again == fresh


def test_different_data_gives_different_images() -> None:
    images = [render_case(case) for case in CASES if case.get("lang") != "zh"]  # zh may be en
    images += [
        render_case({"trend": [62, 75, 85]}),
        render_case({"dimensions": [(DIMENSIONS[0][0], 16.0, 20.0), *DIMENSIONS[1:]]}),
        render_case({"title": {"zh": "标题", "en": "Another title"}}),
    ]
    assert len({bytes(png) for png in images}) == len(images)


def test_the_caches_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    charts._clear_caches()
    monkeypatch.setattr(charts._TEMPLATES, "maxsize", 3)
    monkeypatch.setattr(charts._STAMPS, "maxsize", 5)
    for i in range(6):
        render_case({"pass_mark": 50 + i, "trend": [50 + i, 60.5 + i]})
        assert len(charts._TEMPLATES) <= 3
        assert len(charts._STAMPS) <= 5
    # The most recently used templates are the ones kept.
    keep = charts._TEMPLATES._idle
    assert [key.pass_mark for key in keep] == [53, 54, 55]


def test_titles_of_the_same_height_share_one_template() -> None:
    charts._clear_caches()
    images = {
        render_case({"title": {"zh": "标题", "en": f"Scenario {i}: a refund dispute"}})
        for i in range(30)
    }
    assert len(images) == 30  # each title is drawn ...
    assert len(charts._TEMPLATES) == 1  # ... on the one template of its layout
    for title in ("水壶裂了", "预售定金不退", "赠品没收到", "发票抬头错了"):  # other glyphs
        render_case({"title": {"zh": title, "en": "x"}, "lang": "zh"})
    assert len(charts._TEMPLATES) == 2  # one for Chinese
    render_case({"title": LONG_TITLE})  # wraps: the panels move down
    assert len(charts._TEMPLATES) == 3


def test_charts_for_the_same_texts_reuse_one_template() -> None:
    charts._clear_caches()
    for i in range(5):
        render_case({"trend": [50.0 + i] * (i + 1)})
    assert len(charts._TEMPLATES) == 1


def test_long_labels_and_titles_stay_inside_the_image() -> None:
    data = render_case({"dimensions": LONG_DIMENSIONS, "title": LONG_TITLE})
    assert len(data) < 60_000
    rgb = pixels(data)
    for edge in (rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]):
        assert (edge == 255).all()  # nothing runs off the edge
    for dimensions, title in [
        (LONG_DIMENSIONS, LONG_TITLE),
        (LONG_DIMENSIONS[:3], TITLE),
        ([({"zh": "x", "en": "A very long dimension label that has to be wrapped"}, 1, 2)], TITLE),
        ([({"zh": "x", "en": "Supercalifragilisticexpialidocious" * 3}, 1, 2)] * 4, TITLE),
    ]:
        static, fitted = charts._static(dimensions, [60.0], title, "en", 80.0)  # type: ignore[arg-type]
        template = charts._build(static)
        renderer = template.canvas.get_renderer()
        labels = [t.get_window_extent(renderer) for t in template.left.texts]
        assert len(labels) == len(dimensions)
        bars = template.left.get_window_extent(renderer)
        image = template.canvas.figure.bbox
        for box in labels:
            assert box.x0 >= 0 and box.x1 <= bars.x0  # left of the bars, inside the image
        tops = sorted((box.y0, box.y1) for box in labels)
        for (_, below_top), (above_bottom, _) in itertools.pairwise(tops):
            assert below_top <= above_bottom + 0.5  # labels do not overlap
        for text in template.canvas.figure.texts:  # headings, "session"
            box = text.get_window_extent(renderer)
            assert box.x0 >= 0 and box.y0 >= 0
            assert box.x1 <= image.x1 and box.y1 <= image.y1
        # The title is stamped at the top centre: inside the image, above the headings.
        label = charts._Label(fitted.text, static.families, fitted.size, "black", "center", "top")
        stamp = charts._render_stamp(label)
        rows, columns = stamp.image.shape[:2]
        left_edge, bottom = 300 + stamp.dx, 300 - 6 + stamp.dy
        assert left_edge >= 0 and left_edge + columns <= image.x1
        assert bottom + rows <= image.y1
        headings = [t.get_window_extent(renderer) for t in template.canvas.figure.texts[:2]]
        assert bottom > max(box.y1 for box in headings)


def test_wrapping_breaks_words_and_cjk_text_and_keeps_newlines() -> None:
    def fits(line: str) -> bool:
        return len(line) <= 10

    assert charts._wrap("short", fits) == ["short"]
    assert charts._wrap("one two three four", fits) == ["one two", "three four"]
    assert charts._wrap("abcdefghijklmnopqrstuvwxyz", fits) == [
        "abcdefghij",
        "klmnopqrst",
        "uvwxyz",
    ]
    assert charts._wrap("沟通技巧语言表达倾听理解情绪管理", fits) == [
        "沟通技巧语言表达倾听",
        "理解情绪管理",
    ]
    assert charts._wrap("two\nlines", fits) == ["two", "lines"]
    assert charts._elide(["one two", "three four"], 1, fits) == ["one two…"]


@pytest.mark.parametrize(
    ("sessions", "ticks"),
    [
        (1, [1]),
        (3, [1, 2, 3]),
        (7, [1, 2, 3, 4, 5, 6, 7]),
        (12, [2, 4, 6, 8, 10, 12]),
        (25, [5, 10, 15, 20, 25]),
        (60, [10, 20, 30, 40, 50, 60]),
        (200, [50, 100, 150, 200]),
    ],
)
def test_trend_ticks_label_session_numbers(sessions: int, ticks: list[int]) -> None:
    assert charts._x_ticks(sessions) == ticks


def test_concurrent_calls_from_threads_give_correct_images() -> None:
    jobs = [
        {**case, "trend": [50.0 + (i * 13) % 50 for i in range(1 + n % 20)]}
        for n, case in enumerate(CASES * 4)
    ]
    expected = [render_case(job) for job in jobs]  # one at a time (cached = uncached: above)
    charts._clear_caches()  # the threads build the templates and text images at once
    with ThreadPoolExecutor(max_workers=6) as pool:
        got = list(pool.map(render_case, jobs))
    assert got == expected
