"""The drill workspace's WebSocket: one trainee's customers pushed as they change."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from bot.engine import ReplyRejected
from bot.service import Actor, ServiceError
from bot.web.texts import t

if TYPE_CHECKING:
    from bot.web.app import WebApp

log = logging.getLogger(__name__)
REFRESH_S = 30.0
"""How often the workspace is sent when nothing changed in this process (another
process's changes); the page counts the waits up itself."""
GAP_S = 0.5
"""Changes within this time of a push go out together in the next one."""


class DeskLine:
    """One open workspace: reads the page's messages and pushes the desk on each change."""

    def __init__(
        self, app: WebApp, socket: web.WebSocketResponse, actor: Actor, drill_id: int, device: str
    ):
        self.app = app
        self.socket = socket
        self.actor = actor
        self.drill_id = drill_id
        self.device = device
        self.shown = ""
        """The customer the page shows (a label; empty: the longest waiting)."""
        self._sending = asyncio.Lock()

    async def run(self) -> None:
        """Serve the page until it goes away."""
        with self.app.svc.drills.watch(self.actor.id) as changed:
            pushing = asyncio.create_task(self._push(changed))
            try:
                with contextlib.suppress(ConnectionResetError):  # the page went away
                    await self._read()
            finally:
                pushing.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionResetError):
                    await pushing

    async def _send(self, payload: dict[str, Any]) -> None:
        async with self._sending:
            await self.socket.send_json(payload)

    async def _send_desk(self) -> None:
        values = await self.app.desk_values(self.actor, self.drill_id, self.shown)
        await self._send(self.app.desk_news(values))

    async def _push(self, changed: asyncio.Event) -> None:
        while not self.socket.closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), REFRESH_S)
            await asyncio.sleep(GAP_S)  # what else changes meanwhile comes along
            changed.clear()
            try:
                await self._send_desk()
            except ConnectionResetError:
                return
            except Exception:  # a bug: this push fails, the next change tries again
                log.exception("pushing drill %s to user %s failed", self.drill_id, self.actor.id)

    async def _read(self) -> None:
        lang = self.actor.lang
        async for message in self.socket:
            if message.type != WSMsgType.TEXT:
                continue
            if self.app.svc.store.device_user(self.device) != self.actor.id:  # signed out
                await self.socket.close(code=4401, message=b"signed out")
                break
            try:
                asked = json.loads(message.data)
                kind = asked.get("type")
            except (ValueError, TypeError, AttributeError):
                await self._send({"type": "error", "text": t("bad_message", lang)})
                continue
            try:
                if kind == "reply":  # the change it makes is pushed
                    self.shown = str(asked.get("label") or self.shown)
                    await self._reply(asked)
                else:
                    self.shown = str(asked.get("c") or self.shown)
                    await self._send_desk()
            except ConnectionResetError:
                return  # the page closed while it was being answered: nobody left to tell
            except Exception:  # a bug: this message fails, the connection and service go on
                log.exception("a drill workspace message in drill %s failed", self.drill_id)
                await self._send({"type": "error", "text": t("message_failed", lang)})

    async def _reply(self, asked: dict[str, Any]) -> None:
        """Answer one customer; the page is told it was taken (``done``) or why not."""
        ref = str(asked.get("ref") or "")
        try:
            await self.app.svc.drill_reply(
                self.actor,
                self.drill_id,
                str(asked.get("label", "")),
                str(asked.get("text", "")),
                ref="web:" + ref[:40] if ref else None,
            )
        except (ReplyRejected, ServiceError) as refused:
            await self._send(
                {"type": "rejected", "ref": ref, "text": refused.message[self.actor.lang]}
            )
            return
        await self.app.disk.wait()  # on the disk before the page is told
        await self._send({"type": "done", "ref": ref})
