"""Drills on the web: planned from the team page, the workspace, the board, the report.

Over real HTTP on 127.0.0.1 with aiohttp's client, and in Chromium (Playwright) for the
workspace's script: several customers at once, a reply sent without reloading.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import async_playwright

from bot.content import ScenarioLibrary
from bot.drill.runner import DrillRunner
from bot.engine import Engine
from bot.service import Training
from bot.storage import Store
from bot.web.app import WebApp
from tests.test_drill import GOOD, T0, Clock
from tests.test_web import XSS, Browser, mentor, signed_in
from tests.test_web_browser import CHROMIUM, DESKTOP, PHONE, fits, join

World = tuple[Training, Clock, TestServer]


def run(check: Callable[[World], Awaitable[None]], library: ScenarioLibrary, store: Store) -> None:
    async def main() -> None:
        svc = Training(store, library, Engine(store, library), platform="web")
        clock = Clock()
        svc.drills = DrillRunner(store, library, svc.engine, clock=clock)
        server = TestServer(WebApp(svc).app, host="127.0.0.1")
        await server.start_server()
        try:
            await check((svc, clock, server))
        finally:
            await server.close()
            store.close()

    asyncio.run(main())


def test_a_mentor_plans_a_drill_and_a_trainee_answers_customers_in_the_workspace(
    library: ScenarioLibrary, store: Store
) -> None:
    async def check(world: World) -> None:
        svc, clock, server = world
        alice = await signed_in(svc, Browser(server), "Alice", lang="en")
        bob = await signed_in(svc, Browser(server), "Bob", lang="en")
        team = svc.store.team_by_name("Alpha")
        boss = await mentor(svc, Browser(server), team, "Meg")
        outsider = await mentor(svc, Browser(server), svc.create_team("Beta"), "Max")
        try:
            await boss.get(f"/team/{team.id}")  # type: ignore[union-attr]
            form = {"csrf": boss.field("csrf"), "preset": "double11-peak", "concurrency": "2"}
            planned = await boss.post(f"/team/{team.id}/drill", form)  # type: ignore[union-attr]
            assert planned.status == 200 and planned.url.path == "/drills/1"
            assert "Leaderboard" in boss.page and "messages/s" in boss.page  # its load
            await svc.drills.tick()
            clock.now = T0 + 3
            await svc.drills.tick()
            await alice.get("/")
            assert "Drill #1" in alice.page and 'href="/drills/1/desk"' in alice.page
            desk = await alice.get("/drills/1/desk")
            assert desk.status == 200
            assert re.findall(r'href="\?c=(C\d)"', alice.page) == ["C1", "C2"]
            clock.now = T0 + 10
            await alice.post(
                "/drills/1/reply",
                {"csrf": alice.field("csrf"), "ref": "r1", "label": "C2", "text": XSS},
            )
            assert alice.page.count('class="msg trainee"') == 1  # back on the desk, at C2
            assert "&lt;script&gt;" in alice.page and "<script>alert" not in alice.page
            again = await alice.post(
                "/drills/1/reply",
                {"csrf": alice.field("csrf"), "ref": "r1", "label": "C2", "text": XSS},
            )
            assert again.status == 200 and alice.page.count('class="msg trainee"') == 1  # once
            team_members = svc.store.members(team.id, "trainee")  # type: ignore[union-attr]
            alice_id = next(u.id for u in team_members if u.name == "Alice")
            bob_id = next(u.id for u in team_members if u.name == "Bob")
            mine = {c.label: c for c in svc.store.drill_customers(1, user_id=alice_id)}
            row = mine["C2"]
            assert row.first_reply_at == T0 + 10
            async with alice.http.get(
                alice.url("/drills/1/desk.json?c=C2"), headers={"Accept": "application/json"}
            ) as answer:
                data = await answer.json()
            assert data["label"] == "C2" and data["running"] and "C1" in data["queue"]
            gone = await alice.post(
                "/drills/1/reply",
                {"csrf": alice.field("csrf"), "ref": "r2", "label": "C7", "text": GOOD},
            )
            assert gone.status == 400 and "No customer C7" in alice.page
            assert (await boss.get("/drills/1/desk")).status == 403  # a mentor has no desk
            assert (await outsider.get("/drills/1")).status == 404  # another team's drill
            board = await bob.get("/drills/1")
            assert board.status == 200 and "Alice" in bob.page
            rude = "加我微信私聊，给您转50元，麻烦给个五星好评。"  # a clause to train
            await alice.get("/drills/1/desk")
            await alice.post(
                "/drills/1/reply",
                {"csrf": alice.field("csrf"), "ref": "r3", "label": "C1", "text": rude},
            )
            clock.now = T0 + 31 * 60  # the drill is over
            await svc.drills.tick()
            await boss.get("/drills/1")
            assert "Drill report" in boss.page and "NOT PASSED" in boss.page
            assert "100-point assessment" in boss.page  # the company's rubric beside the score
            async with boss.http.get(boss.url("/drills/1/report.csv")) as csv:
                assert csv.status == 200 and (await csv.text()).startswith("trainee,arrived")
            assert 'src="/drills/1/chart.png"' in boss.page
            async with boss.http.get(boss.url("/drills/1/chart.png")) as chart:
                assert chart.content_type == "image/png"
                assert (await chart.read()).startswith(b"\x89PNG")
            assert "Follow-up plan" in boss.page
            await boss.post("/drills/1/follow-up", {"csrf": boss.field("csrf")})
            made = svc.store.assignments([team.id])  # type: ignore[union-attr]
            assert made and f"{len(made)} assignments made" in boss.page
            assert {a.user_id for a in made} <= {alice_id, bob_id}
        finally:
            for visitor in (alice, bob, boss, outsider):
                await visitor.http.close()

    run(check, library, store)


async def _until(socket: Any, wanted: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The next message the socket gets that ``wanted`` accepts (others are skipped)."""
    while True:
        message = await asyncio.wait_for(socket.receive_json(), 60)
        if wanted(message):
            return message  # type: ignore[no-any-return]


def test_the_workspace_socket_pushes_every_change_and_answers_each_reply_once(
    library: ScenarioLibrary, monkeypatch: pytest.MonkeyPatch, store: Store
) -> None:
    monkeypatch.setattr("bot.web.desk.REFRESH_S", 3600.0)  # only a change sends the desk

    async def check(world: World) -> None:
        svc, clock, server = world
        alice = await signed_in(svc, Browser(server), "Alice", lang="en")
        team = svc.store.team_by_name("Alpha")
        svc.plan_drill(None, "double11-peak", teams=[team], seed=5)  # type: ignore[list-item]
        await svc.drills.tick()
        origin = {"Origin": alice.url("/").rstrip("/")}
        socket = await alice.http.ws_connect(alice.url("/drills/1/desk/live"), headers=origin)
        try:
            await socket.send_json({"type": "show", "c": "C1"})
            desk = await _until(socket, lambda m: m["type"] == "desk")
            assert [c["label"] for c in desk["customers"]] == ["C1"] and desk["label"] == "C1"
            assert 'class="order"' not in desk["chat"]  # no order number given yet
            clock.now = T0 + 5  # two more customers arrive: pushed, nobody asked
            await svc.drills.tick()
            desk = await _until(socket, lambda m: len(m.get("customers", ())) == 3)
            assert desk["running"] and desk["label"] == "C1"
            reply = {"type": "reply", "label": "C2", "text": XSS, "ref": "r1"}
            await socket.send_json(reply)
            assert (await _until(socket, lambda m: m["type"] != "desk")) == {
                "type": "done",
                "ref": "r1",
            }
            desk = await _until(socket, lambda m: m["type"] == "desk" and m["label"] == "C2")
            assert "&lt;script&gt;" in desk["chat"] and "<script>alert" not in desk["chat"]
            assert 'class="mood"' in desk["chat"]  # how angry each line was written
            await socket.send_json({"type": "reply", "label": "C1", "text": GOOD, "ref": "r0"})
            desk = await _until(socket, lambda m: m["type"] == "desk" and m["label"] == "C1")
            assert 'class="order"' in desk["chat"]  # the order, once its number was given
            await socket.send_json(reply)  # sent again after a dropped connection
            assert (await _until(socket, lambda m: m["type"] != "desk"))["type"] == "done"
            await socket.send_str("{not json")
            assert (await _until(socket, lambda m: m["type"] != "desk"))["type"] == "error"
            gone = {"type": "reply", "label": "C9", "text": GOOD, "ref": "r2"}
            await socket.send_json(gone)
            refused = await _until(socket, lambda m: m["type"] != "desk")
            assert refused["type"] == "rejected" and "No customer C9" in refused["text"]
            rows = {c.label: c for c in svc.store.drill_customers(1)}
            turns = svc.store.turns(rows["C2"].session_id)  # type: ignore[arg-type]
            assert [t.text for t in turns if t.role == "trainee"] == [XSS]  # once
            clock.now = T0 + 31 * 60
            await svc.drills.tick()  # the end is pushed too: the page goes to the report
            await _until(socket, lambda m: m["type"] == "desk" and not m["running"])
        finally:
            await socket.close()
            await alice.http.close()

    run(check, library, store)


def test_the_workspace_in_chromium_shows_every_customer_and_sends_without_reloading(
    library: ScenarioLibrary, store: Store
) -> None:
    async def check(world: World) -> None:
        svc, clock, server = world
        team = svc.create_team("Alpha")
        invite = str(server.make_url(f"/join/{svc.create_invite('trainee', team)}"))
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=["--no-sandbox"]
            )
            try:
                page = await browser.new_page(viewport=DESKTOP, locale="zh-CN")
                await join(page, invite, "王小明")
                svc.plan_drill(None, "double11-peak", teams=[team], seed=5)
                await svc.drills.tick()
                clock.now = T0 + 5
                await svc.drills.tick()
                await page.route("**/desk.json*", lambda route: route.abort())
                await page.route("**/reply", lambda route: route.abort())  # the socket only
                await page.goto(str(server.make_url("/drills/1/desk")))
                assert await page.locator(".queue li").count() == 3
                marker = await page.evaluate("window.kept = 1")
                assert marker == 1
                await page.fill("textarea[name=text]", GOOD)
                await page.press("textarea[name=text]", "Enter")
                await page.locator(".chat .msg.trainee").wait_for()
                await page.locator(".chat .msg.customer").nth(1).wait_for()  # answered
                assert await page.locator("textarea[name=text]").input_value() == ""
                plan = svc.library.drills["double11-peak"]
                c3 = svc.store.drill_customers(1)[2]
                clock.now = c3.due_at + plan.nudge_times(c3.difficulty)[0]  # C3 nudges
                await svc.drills.tick()
                nudged = page.locator(".queue li").nth(2).locator(".unread", has_text="2")
                await nudged.wait_for()  # pushed: its opening and the nudge are unread
                assert await page.evaluate("window.kept") == 1  # the page never reloaded
                await fits(page, "drill-desk-desktop")
                await page.set_viewport_size(PHONE)
                await fits(page, "drill-desk-phone")
                await page.goto(str(server.make_url("/drills/1")))
                await page.locator("text=王小明").first.wait_for()
                await fits(page, "drill-board-phone")
                clock.now = T0 + 31 * 60
                await svc.drills.tick()
                await page.set_viewport_size(DESKTOP)
                await page.goto(str(server.make_url("/drills/1")))
                await page.locator("text=演练报告").wait_for()
                loaded = await page.locator("img.chart").evaluate("img => img.decode()")
                assert loaded is None  # the chart image decoded
                await fits(page, "drill-report-desktop")
            finally:
                await browser.close()

    run(check, library, store)


def test_a_workspace_closing_while_its_reply_is_answered_ends_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Under load a page may close between sending a reply and hearing back: the socket
    raises on the answer, and that is the page leaving, not a failed message to log."""
    from contextlib import contextmanager
    from types import SimpleNamespace

    from aiohttp import WSMessage, WSMsgType
    from aiohttp.client_exceptions import ClientConnectionResetError

    from bot.service import Invalid
    from bot.web.desk import DeskLine

    class ClosingSocket:
        closed = False

        def __aiter__(self) -> Any:
            async def messages() -> Any:
                text = '{"type": "reply", "label": "C3", "text": "hi", "ref": "r1"}'
                yield WSMessage(WSMsgType.TEXT, text, None)

            return messages()

        async def send_json(self, payload: dict[str, Any]) -> None:
            raise ClientConnectionResetError("Cannot write to closing transport")

    async def gone(*args: Any, **kwargs: Any) -> None:
        raise Invalid("gone", {"zh": "客户C3已离开。", "en": "Customer C3 has gone."})

    @contextmanager
    def watch(user: int) -> Any:
        yield asyncio.Event()

    svc = SimpleNamespace(
        store=SimpleNamespace(device_user=lambda device: 7),
        drill_reply=gone,
        drills=SimpleNamespace(watch=watch),
    )
    actor = SimpleNamespace(id=7, lang="en")
    line = DeskLine(SimpleNamespace(svc=svc), ClosingSocket(), actor, 1, "d")  # type: ignore[arg-type]
    asyncio.run(asyncio.wait_for(line.run(), 60))
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
