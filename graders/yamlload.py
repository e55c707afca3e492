"""YAML as the trainer reads it: safe loading, with libyaml's parser where PyYAML has it.

libyaml parses about ten times faster than PyYAML's pure-Python parser; the lexicon and
the scenario library are read at every start of the program.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    SafeLoader = yaml.SafeLoader
else:
    SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load(text: str) -> Any:
    """The data of one YAML document (plain types only)."""
    return yaml.load(text, Loader=SafeLoader)
