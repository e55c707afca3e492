"""The web app in a real browser: Debian's Chromium driven by Playwright (no download).

``python3 dev.py test`` installs the ``chromium`` package (and a CJK font) when missing.
Screenshots at phone and desktop size are checked for layout breakage (anything wider than
the window, a squashed control, overlapping messages) and kept in ``docs/screenshots/`` when
``TRAINER_SCREENSHOTS=1``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, Page, WebSocketRoute, async_playwright

from bot.content import ScenarioLibrary
from bot.engine import Engine
from bot.service import Training
from bot.storage import Store
from bot.web.app import WebApp

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path(os.environ.get("TRAINER_CHROMIUM", "/usr/bin/chromium"))
SHOTS = ROOT / "docs" / "screenshots"
PHONE = {"width": 375, "height": 812}
DESKTOP = {"width": 1280, "height": 800}
GOOD = (
    "王女士您好，水壶到手就是裂的，真的很抱歉。麻烦您拍一下壶身裂缝和外箱的照片，我马上为您处理。"
)


def run(
    check: Callable[[Browser, str, Training], Awaitable[None]],
    library: ScenarioLibrary,
    store: Store,
) -> None:
    """Serve the web app on ``store`` and hand ``check`` a Chromium and a trainee invite."""
    assert CHROMIUM.exists(), (
        f"{CHROMIUM} not found: `python3 dev.py test` installs Debian's chromium package "
        "(or set TRAINER_CHROMIUM)"
    )

    async def main() -> None:
        svc = Training(store, library, Engine(store, library), platform="web")
        server = TestServer(WebApp(svc).app, host="127.0.0.1")
        await server.start_server()
        code = svc.create_invite("trainee", svc.create_team("Alpha"))
        try:
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(
                    executable_path=str(CHROMIUM), args=["--no-sandbox"]
                )
                try:
                    await check(browser, str(server.make_url(f"/join/{code}")), svc)
                finally:
                    await browser.close()
        finally:
            await server.close()

    asyncio.run(main())


async def join(page: Page, invite: str, name: str) -> None:
    """Open an invite link and sign in under ``name``."""
    await page.goto(invite)
    await page.fill("input[name=name]", name)
    await page.click("form button[type=submit]")


LAYOUT = """() => {
  const width = document.documentElement.clientWidth;
  const shown = (el) => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== "hidden";
  const problems = [];
  for (const el of document.querySelectorAll("main *")) {
    if (!shown(el)) continue;
    const box = el.getBoundingClientRect();
    if (box.right > width + 1 || box.left < -1) problems.push(`${el.tagName}.${el.className} sticks out`);
  }
  for (const el of document.querySelectorAll("button, textarea, input, select, a")) {
    if (!shown(el)) continue;
    const box = el.getBoundingClientRect();
    if (box.width < 8 || box.height < 8) problems.push(`${el.tagName} ${el.textContent.trim().slice(0, 20)} is ${box.width}x${box.height}`);
  }
  const bubbles = Array.from(document.querySelectorAll(".msg")).map((el) => el.getBoundingClientRect());
  bubbles.forEach((a, i) => bubbles.slice(i + 1).forEach((b) => {
    if (a.bottom > b.top + 1 && b.bottom > a.top + 1) problems.push("two messages overlap");
  }));
  return problems;
}"""
"""Layout breakage a screenshot would show: something sticking out of the window, a
control squashed to nothing, chat messages drawn over each other."""


async def fits(page: Page, name: str) -> None:
    """Nothing on the page is wider than the window or broken; keep the screenshot if asked."""
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"], f"{name}: {width}px wide"  # type: ignore[index]
    assert await page.evaluate(LAYOUT) == [], name
    if os.environ.get("TRAINER_SCREENSHOTS") == "1":
        SHOTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_a_trainee_practises_a_coach_session_in_chromium_on_a_phone(
    library: ScenarioLibrary, store: Store
) -> None:
    async def check(browser: Browser, invite: str, svc: Training) -> None:
        page = await browser.new_page(viewport=PHONE, locale="zh-CN")
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: dialogs.append(dialog.message))
        errors: list[str] = []  # a script or style the CSP blocked would show here
        page.on("console", lambda message: message.type == "error" and errors.append(message.text))
        await join(page, invite, "王小明")
        await page.click(".choices li:first-child button")  # the first scenario
        await page.fill("textarea[name=text]", GOOD)
        await page.click(".compose button")
        await page.wait_for_selector(".msg.trainee .chip")
        chips = await page.locator(".msg.trainee .chip summary").all_inner_texts()
        assert [c.split()[0] for c in chips[:3]] == ["共情", "准确", "合规"]
        await page.locator(".msg.trainee .chip").first.click()  # opens to its reason
        assert await page.locator(".msg.trainee .chip[open] p").count() >= 1
        assert await page.locator(".msg.customer").count() == 2  # answered
        await fits(page, "practice-phone")
        await page.set_viewport_size(DESKTOP)
        await fits(page, "practice-desktop")
        await page.set_viewport_size(PHONE)
        await page.fill("textarea[name=text]", "<script>alert(1)</script>")
        await page.press("textarea[name=text]", "Enter")  # Enter sends
        await page.wait_for_selector("text=<script>alert(1)</script>")  # shown as text
        await page.click(".end button")
        await page.wait_for_selector(".scorecard")
        assert "成绩单" in await page.inner_text(".scorecard")
        await fits(page, "scorecard-phone")
        assert dialogs == []  # nothing typed ran as script
        assert errors == []

    run(check, library, store)


def test_an_exam_session_in_english_shows_the_grades_only_at_the_end(
    library: ScenarioLibrary, store: Store
) -> None:
    async def check(browser: Browser, invite: str, svc: Training) -> None:
        page = await browser.new_page(viewport=DESKTOP, locale="en-US")
        await join(page, invite, "Alice")
        first = page.locator(".choices li").first
        await first.locator("select[name=mode]").select_option("exam")
        await first.locator("button").click()
        await page.wait_for_selector("text=Exam mode")
        await page.fill("textarea[name=text]", "Not our problem, contact the courier yourself.")
        await page.press("textarea[name=text]", "Enter")
        await page.locator(".msg.customer").nth(1).wait_for()
        assert await page.locator(".chip").count() == 0  # exam: nothing before the end
        await page.click(".end button")
        await page.wait_for_selector(".scorecard")
        assert "NOT PASSED" in await page.inner_text(".scorecard")
        assert await page.locator(".msg.trainee .chip").count() >= 3  # now shown
        await fits(page, "scorecard-desktop")

    run(check, library, store)


def test_a_mentor_reads_the_team_dashboard_on_a_phone_and_a_desktop(
    library: ScenarioLibrary, store: Store
) -> None:
    async def check(browser: Browser, invite: str, svc: Training) -> None:
        trainee = await browser.new_page(viewport=PHONE, locale="zh-CN")
        await join(trainee, invite, "王小明")
        await trainee.click(".choices li:first-child button")
        await trainee.fill("textarea[name=text]", GOOD)
        await trainee.press("textarea[name=text]", "Enter")
        await trainee.wait_for_selector(".msg.trainee .chip")
        await trainee.click(".end button")
        await trainee.wait_for_selector(".scorecard")
        team = svc.store.team_by_name("Alpha")
        assert team is not None
        mentor = await browser.new_page(viewport=DESKTOP, locale="zh-CN")
        code = svc.create_invite("mentor", team)
        await join(mentor, invite.replace(invite.rsplit("/", 1)[1], code), "李老师")
        await mentor.click(f"a[href='/team/{team.id}']")
        await mentor.wait_for_selector("text=王小明")
        await fits(mentor, "team-desktop")
        await mentor.set_viewport_size(PHONE)
        await fits(mentor, "team-phone")
        await mentor.click(".history a")  # the trainee's transcript
        await mentor.wait_for_selector(".scorecard")

    run(check, library, store)


def test_a_websocket_dropped_mid_reply_reconnects_and_the_reply_is_answered_once(
    library: ScenarioLibrary, store: Store
) -> None:
    async def check(browser: Browser, invite: str, svc: Training) -> None:
        page = await browser.new_page(viewport=DESKTOP, locale="en-US")
        dropped: list[str] = []
        connections: list[WebSocketRoute] = []
        sent: list[str] = []

        async def route(socket: WebSocketRoute) -> None:
            connections.append(socket)
            server = socket.connect_to_server()
            if dropped:
                return  # later connections pass through untouched

            async def from_page(message: str | bytes) -> None:
                sent.append(str(message))
                server.send(message)
                if '"reply"' in str(message):  # the reply reached the server; the page loses it
                    dropped.append(str(message))
                    await socket.close()

            socket.on_message(from_page)

        await page.route_web_socket("**/live", route)
        await join(page, invite, "Alice")
        await page.click(".choices li:first-child button")
        deadline = time.monotonic() + 60
        while not sent:  # the socket is open (its first message, a sync, went out): a reply
            assert time.monotonic() < deadline, "the page never opened its socket"
            await asyncio.sleep(0.05)  # typed before that is posted as a form instead
        await page.fill("textarea[name=text]", "Hello Ms Wang, I am so sorry about the kettle.")
        await page.press("textarea[name=text]", "Enter")
        await page.locator(".msg.customer").nth(1).wait_for()
        assert len(dropped) == 1  # the first connection was cut after the reply went out
        assert len(connections) == 2  # and the page opened another
        assert await page.locator(".msg.trainee").count() == 1
        assert await page.locator(".offline").is_hidden()  # reconnected
        session_id = page.url.rsplit("/", 1)[1]
        roles = [turn.role for turn in svc.store.turns(session_id)]
        assert roles == ["customer", "trainee", "customer"]  # graded and answered once
        await page.reload()  # closing the tab and coming back: the same chat
        assert await page.locator(".msg").count() == 3
        await page.fill("textarea[name=text]", "Could you send me a photo of the crack?")
        await page.press("textarea[name=text]", "Enter")
        await page.locator(".msg.customer").nth(2).wait_for()
        assert await page.locator(".msg.trainee").count() == 2

    run(check, library, store)


def test_a_mentor_assigns_rules_on_a_dispute_and_exports_while_a_trainee_is_kept_out(
    library: ScenarioLibrary, store: Store
) -> None:
    async def check(browser: Browser, invite: str, svc: Training) -> None:
        trainee = await browser.new_page(viewport=PHONE, locale="en-US")
        await join(trainee, invite, "Alice")
        team = svc.store.team_by_name("Alpha")
        assert team is not None
        mentor = await browser.new_page(viewport=DESKTOP, locale="en-US")
        await join(
            mentor,
            invite.replace(invite.rsplit("/", 1)[1], svc.create_invite("mentor", team)),
            "Meg",
        )
        await mentor.click(f"a[href='/team/{team.id}']")
        await mentor.check("input[name=scenario][value=damaged-kettle]")
        await mentor.fill("input[name=due]", "2099-01-31")
        await mentor.click(".assign button")
        await mentor.wait_for_selector(".done")
        await trainee.goto(trainee.url)  # the trainee's next page tells her
        assert "New assignment" in await trainee.inner_text(".notices")
        await trainee.click(".choices li:first-child button")  # the assignment comes first
        await trainee.fill("textarea[name=text]", "Contact the courier yourself.")
        await trainee.press("textarea[name=text]", "Enter")
        await trainee.locator(".msg.customer").nth(1).wait_for()
        await trainee.click(".end button")
        await trainee.wait_for_selector(".scorecard")
        session_path = trainee.url.split("://", 1)[1].split("/", 1)[1]
        await trainee.click(".dispute summary")
        await trainee.fill(".dispute textarea", "I did not say that.")
        await trainee.click(".dispute button")
        await trainee.wait_for_selector(".ledger .tag")
        base = invite.split("/join/")[0]
        for path in ("/review", f"/team/{team.id}", f"/team/{team.id}/sessions.csv"):
            answer = await trainee.goto(base + path)
            assert answer is not None and answer.status == 403, path
        await mentor.goto(base + "/review")
        await mentor.wait_for_selector(".dispute-item")
        await fits(mentor, "review-desktop")
        item = mentor.locator(".dispute-item").first
        await item.locator("select[name=verdict]").select_option("rejected")
        await item.locator("input[name=reason]").fill("The quote is yours.")
        await item.locator("button").click()
        await mentor.wait_for_selector(".dispute-item", state="detached")
        (dispute,) = svc.store.disputes([session_path.rsplit("/", 1)[1]])
        assert dispute.status == "rejected"
        await mentor.goto(f"{base}/team/{team.id}")
        async with mentor.expect_download() as download:
            await mentor.click(f"a[href='/team/{team.id}/sessions.csv']")
        saved = await (await download.value).path()
        assert "Alice" in Path(saved).read_text(encoding="utf-8-sig")
        other = await browser.new_page(viewport=PHONE, locale="en-US")
        await join(other, invite, "Bob")  # another trainee
        answer = await other.goto(f"{base}/{session_path}")
        assert answer is not None and answer.status in (403, 404)
        assert "Contact the courier" not in await other.content()

    run(check, library, store)


def test_a_form_posted_from_another_site_changes_nothing(
    library: ScenarioLibrary, store: Store
) -> None:
    async def check(browser: Browser, invite: str, svc: Training) -> None:
        page = await browser.new_page(viewport=DESKTOP, locale="en-US")
        await join(page, invite, "Alice")
        ours = page.url.rstrip("/")
        evil = web.Application()
        attack = (
            f'<form method="post" action="{ours}/practice">'
            '<input name="scenario" value="damaged-kettle"></form>'
            "<script>document.forms[0].submit()</script>"
        )

        async def lure(_: web.Request) -> web.Response:
            return web.Response(text=attack, content_type="text/html")

        evil.router.add_get("/", lure)
        server = TestServer(evil, host="localhost")  # another site than 127.0.0.1
        await server.start_server()
        try:
            async with page.expect_response(f"{ours}/practice") as posted:
                await page.goto(str(server.make_url("/")))
            assert (await posted.value).status in (401, 403)  # no cookie, or no form token
        finally:
            await server.close()
        user = svc.store.find_users("1")[0]
        assert svc.store.active_session(user.trainee) is None  # nothing started

    run(check, library, store)
