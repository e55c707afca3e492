from graders.text import analyze, clean, normalize


def test_traditional_and_full_width_fold_to_simplified_half_width() -> None:
    norm = normalize("商品破損，ＯＫ？")
    assert norm.text == "商品破损,ok?"


def test_quotes_come_from_the_original_characters() -> None:
    a = analyze("非常抱歉，商品破損給您帶來不便")
    hit = a.get("signals.apology")[0]
    assert a.quote(hit) == "非常抱歉"
    assert analyze("ＯＫ，抱歉").quote(analyze("ＯＫ，抱歉").get("signals.apology")[0]) == "抱歉"


def test_chinese_phrases_match_only_on_word_boundaries() -> None:
    assert not analyze("请保持评价保持客观").get("resolutions.price_difference")
    assert analyze("我为您申请价保").get("resolutions.price_difference")


def test_english_phrases_match_whole_words_only() -> None:
    assert not analyze("I can't do that").get("signals.ownership")
    assert analyze("I can do that").get("signals.ownership")


def test_negation_cancels_a_promise_in_chinese_and_english() -> None:
    assert analyze("我无法保证明天送到").get("signals.promise")[0].negated
    assert analyze("我不能保证").get("signals.promise")[0].negated
    assert not analyze("我保证明天送到").get("signals.promise")[0].negated
    assert analyze("I can't guarantee it").get("signals.promise")[0].negated
    assert not analyze("I guarantee it").get("signals.promise")[0].negated


def test_negation_does_not_cross_clauses() -> None:
    assert not analyze("没问题，我保证明天送到").get("signals.promise")[0].negated


def test_a_negation_inside_a_condition_leaves_the_main_clause_alone() -> None:
    chase = analyze("If it's not there by then I'll chase it myself.").get("signals.action")
    assert chase and not chase[0].negated
    assert analyze("I can't promise I'll chase it today.").get("signals.ownership")[0].negated


def test_control_characters_are_removed_but_text_kept() -> None:
    assert clean("抱歉\x00\x1b[31m您好\u200b") == "抱歉[31m您好"


def test_emoji_and_mixed_language_do_not_break_analysis() -> None:
    a = analyze("非常抱歉😭 sorry for the delay，我马上为您处理🙏")
    assert a.get("signals.apology") and a.get("signals.ownership")


def test_a_remedy_named_by_a_pattern_is_refused_when_the_lexicon_loads() -> None:
    from importlib import resources

    import pytest
    import yaml
    from pydantic import ValidationError

    from graders.lexicon import _Lexicon

    text = resources.files("graders").joinpath("data/lexicon.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    data["resolutions"]["exchange"]["zh"].insert(0, "re:换(?:成|到)")
    with pytest.raises(ValidationError, match=r"resolutions\.exchange\.zh: the first phrase"):
        _Lexicon.model_validate(data)
