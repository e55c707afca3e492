"""Telegram adapter (aiogram 3).

aiogram builds the validators of all its Bot API types (about 300) when it is imported,
which costs each process about 100 MB; the bot meets a dozen of them. Imported through
this package, each type is built the first time it is used instead, resolving its names
from the same namespace aiogram gives them (:func:`_import_aiogram_types_lazily`).
"""

from __future__ import annotations

import sys
from typing import Any


def _import_aiogram_types_lazily() -> None:
    """Import ``aiogram.types`` with its eager ``model_rebuild`` loop turned into a note."""
    if "aiogram.types" in sys.modules:
        return
    from pydantic import BaseModel

    eager = BaseModel.__dict__["model_rebuild"]
    shared: dict[str, Any] = {}

    def noted(cls: type[BaseModel], /, **options: Any) -> bool | None:
        names = options.get("_types_namespace")
        if (
            names is not None
            and not options.get("force")
            and cls.__module__.startswith("aiogram.types.")
        ):
            if not shared:
                shared.update(names)
            cls.__pydantic_parent_namespace__ = shared  # read when first used
            return None
        # one frame deeper than pydantic expects: its caller's names are one further up
        options["_parent_namespace_depth"] = options.get("_parent_namespace_depth", 2) + 1
        result: bool | None = eager.__func__(cls, **options)
        return result

    BaseModel.model_rebuild = classmethod(noted)  # type: ignore[assignment,method-assign]
    try:
        import aiogram.types
    finally:
        BaseModel.model_rebuild = eager  # type: ignore[method-assign]
    import aiogram.methods

    if not shared:  # aiogram no longer rebuilds them at import: give them its names anyway
        shared.update({name: getattr(aiogram.types, name) for name in aiogram.types.__all__})
    for package in (aiogram.types, aiogram.methods):  # methods' fields name types too, and
        for name in package.__all__:  # Response[Message] takes the names of Response
            model = getattr(package, name)
            if isinstance(model, type) and issubclass(model, BaseModel):
                model.__pydantic_parent_namespace__ = shared


_import_aiogram_types_lazily()
