"""Where content (scenarios, prompts) and data (the SQLite store) live."""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent
_SOURCE_ROOT = _PACKAGE_DIR.parent


def content_dir(name: str) -> Path:
    """Return the directory of a content folder (``scenarios`` or ``prompts``).

    A source checkout (editable install) uses the folder at the project root; a wheel
    install uses the copy bundled under ``bot/_content``.
    """
    source = _SOURCE_ROOT / name
    if source.is_dir():
        return source
    return _PACKAGE_DIR / "_content" / name


def scenarios_dir() -> Path:
    """Directory holding scenario YAML files; ``TRAINER_SCENARIOS`` overrides it."""
    override = os.environ.get("TRAINER_SCENARIOS")
    return Path(override) if override else content_dir("scenarios")


def data_dir() -> Path:
    """Directory for the SQLite store: ``TRAINER_DATA_DIR``, else ``<project>/data``.

    Outside a source checkout the default is ``~/.local/share/cs-trainer``.
    """
    override = os.environ.get("TRAINER_DATA_DIR")
    if override:
        return Path(override)
    if (_SOURCE_ROOT / "pyproject.toml").is_file():
        return _SOURCE_ROOT / "data"
    return Path.home() / ".local" / "share" / "cs-trainer"


def default_db_path() -> Path:
    """Default SQLite file: ``TRAINER_DB`` if set, else ``trainer.db`` in :func:`data_dir`."""
    override = os.environ.get("TRAINER_DB")
    return Path(override) if override else data_dir() / "trainer.db"
