"""aiogram's Bot API types, built when first used (bot/telegram/__init__.py): the same types."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

from pydantic import BaseModel
from pydantic.json_schema import PydanticJsonSchemaWarning

import bot.telegram  # noqa: F401  (first: aiogram is imported through it)


def _schema_of(name: str) -> str:
    import aiogram.methods
    import aiogram.types

    model = (
        getattr(aiogram.methods, name.removeprefix("methods."))
        if name.startswith("methods.")
        else getattr(aiogram.types, name)
    )
    with warnings.catch_warnings():  # defaults such as Default('parse_mode') are left out
        warnings.simplefilter("ignore", PydanticJsonSchemaWarning)
        return json.dumps(model.model_json_schema(), sort_keys=True)


def test_the_types_start_unbuilt_and_each_builds_when_used() -> None:
    import aiogram.methods
    import aiogram.types

    models = [
        getattr(package, name)
        for package in (aiogram.types, aiogram.methods)
        for name in package.__all__
        if isinstance(getattr(package, name), type)
        and issubclass(getattr(package, name), BaseModel)
    ]
    assert len(models) > 400
    fresh = subprocess.run(  # a new process: what importing the bot builds
        [sys.executable, "-c",
         "import bot.telegram.app, aiogram.types as t, pydantic; "
         "print(sum(isinstance(m, type) and issubclass(m, pydantic.BaseModel) "
         "and not m.__pydantic_complete__ for m in map(t.__dict__.get, t.__all__)))"],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    assert int(fresh.stdout) > 200  # left unbuilt until used: the memory saved
    for model in models:
        model.model_rebuild(raise_errors=True)  # resolves its names, or raises
        assert model.__pydantic_complete__, model


def test_built_late_they_are_the_types_aiogram_builds_at_import() -> None:
    names = ["Update", "Message", "CallbackQuery", "ChatMemberUpdated", "methods.SendMessage",
             "methods.SetMyCommands", "methods.AnswerCallbackQuery", "methods.SendPhoto"]  # fmt: skip
    eager = subprocess.run(
        [sys.executable, "-c",
         "import json, sys, warnings, aiogram.types, aiogram.methods; "
         "warnings.simplefilter('ignore'); "
         "of = lambda n: getattr(aiogram.methods, n[8:]) if n.startswith('methods.') "
         "else getattr(aiogram.types, n); "
         "print(json.dumps([json.dumps(of(n).model_json_schema(), sort_keys=True) "
         "for n in sys.argv[1:]]))", *names],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    assert json.loads(eager.stdout) == [_schema_of(name) for name in names]


def test_a_fresh_bot_process_reads_a_bot_api_answer_into_a_late_built_type() -> None:
    """As the bot's first sendMessage does: Response[Message] with nothing built before."""
    probe = (
        "import bot.telegram.app; from aiogram.methods import Response; "
        "from aiogram.types import Message; "
        "r = Response[Message].model_validate({'ok': True, 'result': {'message_id': 1, "
        "'date': 0, 'chat': {'id': 5, 'type': 'private'}, 'text': 'hi'}}); "
        "print(r.result.chat.id, r.result.text)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["5", "hi"]
