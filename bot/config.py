"""Settings from a TOML file and the environment (the environment wins).

The file is ``--config PATH``, else ``$TRAINER_CONFIG``, else ``trainer.toml`` in the
working directory if it exists. Unknown keys are errors, so a typo is never ignored.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the Telegram app imports the engine, which reads LLM settings from here
    from bot.telegram.app import TelegramConfig


class ConfigError(ValueError):
    """A configuration problem; the message names the file or variable and the fix."""


TELEGRAM_KEYS = {
    "token": ("TELEGRAM_BOT_TOKEN", str),
    "api_base": ("TELEGRAM_API_BASE", str),
    "webhook_url": ("TELEGRAM_WEBHOOK_URL", str),
    "webhook_secret": ("TELEGRAM_WEBHOOK_SECRET", str),
    "listen_host": ("TELEGRAM_LISTEN_HOST", str),
    "listen_port": ("TELEGRAM_LISTEN_PORT", int),
    "global_rate": ("TELEGRAM_GLOBAL_RATE", float),
    "chat_rate": ("TELEGRAM_CHAT_RATE", float),
    "grace_seconds": ("TELEGRAM_GRACE_SECONDS", float),
    "typing_after": ("TELEGRAM_TYPING_AFTER", float),
    "chart_processes": ("TELEGRAM_CHART_PROCESSES", int),
    "workers": ("TELEGRAM_WORKERS", int),
    "redis_url": ("TRAINER_REDIS_URL", str),
}


def _looks_like_token(token: str) -> bool:
    """Whether ``token`` has a bot token's shape (what aiogram checks before any call)."""
    bot_id, colon, secret = token.partition(":")
    return bool(colon and bot_id.isdigit() and secret) and not any(c.isspace() for c in token)


def redis_url_problem(url: str) -> str | None:
    """What is wrong with a Redis URL, or None if it looks like one."""
    if url.startswith(("redis://", "rediss://", "unix://")):
        return None
    return (  # the value is not repeated: it may hold a password
        "that is not a Redis URL: write redis://host:6379/0 (rediss:// for TLS, "
        "unix:///path/to/redis.sock for a socket)"
    )


def config_path(explicit: str | None = None) -> Path | None:
    """The config file to read, if any."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("TRAINER_CONFIG")
    if env:
        return Path(env)
    default = Path("trainer.toml")
    return default if default.exists() else None


def read_file(path: Path | None) -> dict[str, Any]:
    """The parsed TOML file (empty without one)."""
    if path is None:
        return {}
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: config file not found; fix --config or TRAINER_CONFIG"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def telegram_config(path: Path | None, **overrides: Any) -> TelegramConfig:
    """Telegram settings: file section ``[telegram]``, then environment, then ``overrides``."""
    section = read_file(path).get("telegram", {})
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: [telegram] must be a table")
    unknown = sorted(set(section) - set(TELEGRAM_KEYS))
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) in [telegram]: {', '.join(unknown)}; "
            f"known keys: {', '.join(TELEGRAM_KEYS)}"
        )
    values: dict[str, Any] = {}
    for key, (env, kind) in TELEGRAM_KEYS.items():
        raw = overrides.get(key)
        source = "command line"
        if raw is None and os.environ.get(env):
            raw, source = os.environ[env], env
        if raw is None and key in section:
            raw, source = section[key], f"{path} [telegram] {key}"
        if raw is None:
            continue
        try:
            values[key] = kind(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: {raw!r} is not a valid {kind.__name__}") from None
        if key == "workers" and values[key] < 0:
            raise ConfigError(f"{source}: workers must be 0 or more, not {raw!r}")
        if key == "api_base" and not values[key].startswith(("http://", "https://")):
            raise ConfigError(
                f"{source}: {raw!r} is not a Bot API address: write http://host:8081 "
                "(a self-hosted telegram-bot-api server) or https://..."
            )
        if key == "redis_url" and (problem := redis_url_problem(values[key])):
            raise ConfigError(f"{source}: {problem}")
        if key == "token" and values[key] and not _looks_like_token(values[key]):
            raise ConfigError(  # the value is a secret: never echoed
                f"{source}: that is not a bot token; @BotFather gives one like "
                "123456789:AAE... (digits, a colon, then letters, no spaces)"
            )
    for key in ("global_rate", "chat_rate"):
        if key in values and values[key] <= 0:
            values[key] = None  # 0 turns the limit off (for benchmarks and tests)
    if not values.get("token"):
        raise ConfigError("no Telegram bot token")
    from bot.telegram.app import TelegramConfig

    return TelegramConfig(**values)
