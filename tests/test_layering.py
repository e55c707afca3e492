"""The engine's layers: graders depend on the scenario model, never on the loader or a channel."""

import subprocess
import sys


def _modules_loaded_by(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return set(out.stdout.split())


def test_graders_import_only_the_scenario_model_from_bot() -> None:
    loaded = _modules_loaded_by("import graders, graders.rubric, graders.session")
    from_bot = {m for m in loaded if m == "bot" or m.startswith("bot.")}
    assert from_bot == {"bot", "bot.i18n", "bot.scenario"}


def test_the_engine_imports_no_channel() -> None:
    loaded = _modules_loaded_by("import bot.engine, bot.service, bot.storage")
    channels = ("bot.telegram", "bot.terminal", "bot.web", "aiogram")
    assert not {m for m in loaded if m.startswith(channels)}


def test_a_channel_imports_no_other_channel() -> None:
    web = _modules_loaded_by("import bot.web.app")
    assert not {m for m in web if m.startswith(("bot.telegram", "bot.terminal", "aiogram"))}
    telegram = _modules_loaded_by("import bot.telegram.app")
    assert not {m for m in telegram if m.startswith(("bot.web", "bot.terminal"))}
