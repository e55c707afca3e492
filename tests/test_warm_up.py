"""``graders.warm_up``: a server's first reply compiles and loads nothing.

Each case runs in a fresh interpreter (this one has long compiled everything) and counts
what grading a first reply in each language builds: pattern matchers (the lexicons', a
scenario's rules) and clause models.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

FIRST_REPLY = """
import asyncio, json, sys
import graders
from graders import learned, text
from bot.content import ScenarioLibrary
from bot.engine import Engine
from bot.storage import Store

built = {"matchers": 0, "clause models": 0}
for cls, key in ((text.Matcher, "matchers"), (learned.ClauseModel, "clause models")):
    def counting(self, *args, _init=cls.__init__, _key=key, **kwargs):
        built[_key] += 1
        _init(self, *args, **kwargs)
    cls.__init__ = counting
library = ScenarioLibrary.load()
if sys.argv[1] == "warm":
    graders.warm_up(library.scenarios.values())
    built = dict.fromkeys(built, 0)

async def first_replies():
    store = Store.open(None)
    engine = Engine(store, library)
    for lang, reply in (("zh", "您好，非常抱歉，麻烦发一下订单号。"), ("en", "Sorry, the order number?")):
        session, _ = await engine.start(trainee="t", scenario="damaged-kettle", lang=lang)
        await session.reply(reply)
    store.close()

asyncio.run(first_replies())
print(json.dumps(built))
"""


def _built_by_first_replies(mode: str) -> dict[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", FIRST_REPLY, mode],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(done.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def test_after_warm_up_the_first_replies_build_nothing() -> None:
    assert _built_by_first_replies("warm") == {"matchers": 0, "clause models": 0}


def test_without_warm_up_the_first_reply_builds_the_matcher_and_the_model() -> None:
    built = _built_by_first_replies("cold")
    assert built["matchers"] >= 1
    assert built["clause models"] == 1
