"""The scorecard chart: a small, deterministic PNG in either language, with no warnings."""

from __future__ import annotations

import logging
import struct
import warnings

import pytest

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
