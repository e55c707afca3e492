"""Prompt templates (jinja2, in ``prompts/``): one per role and language.

``StrictUndefined`` makes a missing variable an error rather than an empty string, and
each rendered prompt carries its template's name and hash, stored with what it produced.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

import jinja2

from bot.i18n import Lang
from bot.paths import content_dir


@dataclass(frozen=True)
class Prompt:
    """A rendered prompt and where it came from."""

    text: str
    template: str
    sha: str
    """First 12 hex digits of the SHA-256 of the template source."""


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(content_dir("prompts")),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # plain text for a model, not HTML
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


@cache
def _template(name: str) -> tuple[jinja2.Template, str]:
    """The compiled template and its source's hash (read once per process)."""
    env = _environment()
    source, _, _ = env.loader.get_source(env, name)  # type: ignore[union-attr]
    return env.get_template(name), hashlib.sha256(source.encode("utf-8")).hexdigest()[:12]


def render(role: str, lang: Lang, **values: Any) -> Prompt:
    """Render ``prompts/<role>.<lang>.j2`` with ``values``."""
    name = f"{role}.{lang}.j2"
    template, sha = _template(name)
    return Prompt(template.render(**values).strip() + "\n", name, sha)
