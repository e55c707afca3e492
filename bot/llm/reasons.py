"""Why a model-backed part fell back, in words for trainees (the codes stay in the data)."""

from __future__ import annotations

from graders._base import Bilingual

_REASONS: dict[str, Bilingual] = {
    "timeout": {"zh": "模型回复超时", "en": "the model took too long"},
    "budget": {"zh": "模型回复超时", "en": "the model took too long"},
    "rate_limited": {"zh": "模型服务繁忙", "en": "the model server is busy"},
    "circuit_open": {
        "zh": "模型服务连续失败，暂时改用脚本台词和规则评分",
        "en": "the model server failed repeatedly; scripted lines and rule grades for now",
    },
    "truncated": {"zh": "模型的回复被截断", "en": "the model's answer was cut off"},
    "invalid_answer": {
        "zh": "模型两次给出的评分都不符合要求",
        "en": "the model's answer was invalid twice",
    },
}
_CHECKS = ("canary", "prompt_leak", "invented_number", "wrong_language", "too_long", "empty")
_REJECTED: Bilingual = {
    "zh": "模型的回复没有通过检查",
    "en": "the model's answer did not pass the checks",
}
_UNAVAILABLE: Bilingual = {"zh": "模型服务暂时不可用", "en": "the model server is unavailable"}


def describe(reason: str) -> Bilingual:
    """A short phrase for a fallback reason code (``timeout``, ``server_error``, ...)."""
    found = _REASONS.get(reason)
    if found is not None:
        return found
    return _REJECTED if reason in _CHECKS else _UNAVAILABLE
