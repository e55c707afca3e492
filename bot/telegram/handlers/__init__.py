"""One aiogram router per feature.

Handlers only translate: updates into service and engine calls, results into messages.
Routers are built fresh for each bot instance.
"""

from __future__ import annotations

from aiogram import Router

from bot.telegram.handlers import admin, common, fallback, mentor, practice, results


def build_routers() -> list[Router]:
    """All routers, in matching order.

    The catch-all chat reply (practice) comes after every command; the fallback, which
    answers button presses no other handler took, comes last of all.
    """
    return [
        common.router(),
        admin.router(),
        mentor.router(),
        results.router(),
        practice.router(),
        fallback.router(),
    ]
