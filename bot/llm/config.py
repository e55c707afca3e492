"""LLM settings per role: the ``[llm]`` section of the config file and the environment.

Shared keys sit under ``[llm]``; ``[llm.customer]``, ``[llm.judge]`` and ``[llm.rewriter]``
override them for one role. From the environment: ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY``
(as the openai SDK reads them), ``TRAINER_LLM_MODEL``, and per role
``TRAINER_LLM_<ROLE>_MODEL``, ``TRAINER_LLM_<ROLE>_BASE_URL``, ``TRAINER_LLM_<ROLE>_API_KEY``.
Precedence: per-role environment > per-role file > shared environment > shared file. A role
with no model is not configured: the caller falls back to its scripted or rule behaviour.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from bot.config import ConfigError, read_file

Role = Literal["customer", "judge", "rewriter"]
Structured = Literal["auto", "json_schema", "grammar", "json_object", "text"]

ROLES: tuple[Role, ...] = get_args(Role)
STRUCTURED: tuple[str, ...] = get_args(Structured)
KEYS = ("base_url", "api_key", "model", "timeout_s", "structured", "temperature", "max_concurrency")
SHARED_ENV = {
    "base_url": "OPENAI_BASE_URL",
    "api_key": "OPENAI_API_KEY",
    "model": "TRAINER_LLM_MODEL",
}
ROLE_ENV_KEYS = ("model", "base_url", "api_key")


def role_env(role: str, key: str) -> str:
    """The environment variable setting ``key`` for one role, e.g. TRAINER_LLM_JUDGE_MODEL."""
    return f"TRAINER_LLM_{role.upper()}_{key.upper()}"


@dataclass(frozen=True)
class RoleSettings:
    """Where and how one role talks to a model. The api key never shows in the repr."""

    base_url: str | None
    api_key: str | None = field(repr=False)
    model: str
    timeout_s: float = 20.0
    structured: Structured = "auto"
    temperature: float | None = None
    max_concurrency: int | None = None
    """Requests at once to this server (all roles on it); None: no limit. 1 for a
    llama.cpp server with one slot, which otherwise queues requests it then decodes for
    clients that gave up."""


@dataclass(frozen=True)
class LLMSettings:
    """Settings of the configured roles."""

    roles: dict[Role, RoleSettings] = field(default_factory=dict)

    def for_role(self, role: Role) -> RoleSettings | None:
        """The role's settings, or None when it is not configured (no model)."""
        return self.roles.get(role)


def _table(value: Any, path: Path | None, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: [{name}] must be a table")
    return value


def _check_keys(table: dict[str, Any], path: Path | None, name: str, known: list[str]) -> None:
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) in [{name}]: {', '.join(unknown)}; "
            f"known keys: {', '.join(known)}"
        )


def _value(key: str, raw: Any, source: str) -> Any:
    if key in ("base_url", "api_key", "model"):
        if not isinstance(raw, str):
            raise ConfigError(f"{source}: {key} must be a string")
        return raw.strip() or None
    if key == "structured":
        if raw not in STRUCTURED:
            raise ConfigError(
                f"{source}: structured = {raw!r} is not a mode; use one of {', '.join(STRUCTURED)}"
            )
        return raw
    if key == "max_concurrency":
        if isinstance(raw, bool) or not isinstance(raw, int | str) or not str(raw).isdigit():
            raise ConfigError(f"{source}: max_concurrency = {raw!r} is not a whole number")
        if int(raw) < 1:
            raise ConfigError(f"{source}: max_concurrency must be 1 or more")
        return int(raw)
    what = "a number of seconds" if key == "timeout_s" else "a number"
    try:
        if isinstance(raw, bool):
            raise TypeError
        number = float(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {key} = {raw!r} is not {what}") from None
    if key == "timeout_s" and not number > 0:
        raise ConfigError(f"{source}: timeout_s must be more than 0 seconds, e.g. timeout_s = 20")
    if key == "temperature" and not 0 <= number <= 2:
        raise ConfigError(f"{source}: temperature must be between 0 and 2, e.g. temperature = 0.7")
    return number


def llm_settings(path: Path | None) -> LLMSettings:
    """Settings for every role from ``path`` (may be None) and the environment."""
    section = _table(read_file(path).get("llm", {}), path, "llm")
    _check_keys(section, path, "llm", [*KEYS, *ROLES])
    roles: dict[Role, RoleSettings] = {}
    for role in ROLES:
        table = _table(section.get(role, {}), path, f"llm.{role}")
        _check_keys(table, path, f"llm.{role}", list(KEYS))
        values: dict[str, Any] = {}
        for key in KEYS:
            # lowest precedence first; later layers overwrite
            layers: list[tuple[Any, str]] = []
            if key in section:
                layers.append((section[key], f"{path} [llm] {key}"))
            if key in SHARED_ENV and os.environ.get(SHARED_ENV[key]):
                layers.append((os.environ[SHARED_ENV[key]], SHARED_ENV[key]))
            if key in table:
                layers.append((table[key], f"{path} [llm.{role}] {key}"))
            if key in ROLE_ENV_KEYS and os.environ.get(role_env(role, key)):
                layers.append((os.environ[role_env(role, key)], role_env(role, key)))
            for raw, source in layers:
                values[key] = _value(key, raw, source)
        if values.get("model"):
            roles[role] = RoleSettings(
                base_url=values.get("base_url"),
                api_key=values.get("api_key"),
                model=values["model"],
                timeout_s=values.get("timeout_s", 20.0),
                structured=values.get("structured", "auto"),
                temperature=values.get("temperature"),
                max_concurrency=values.get("max_concurrency"),
            )
    return LLMSettings(roles)
