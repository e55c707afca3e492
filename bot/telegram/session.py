"""The bot's HTTP session: aiogram's aiohttp session, sending JSON unless a file goes along.

The Bot API takes ``application/json`` for every method without an upload. aiogram's own
session sends form data, building a ``FormData`` (with a multipart writer it then throws
away) and JSON-encoding each complex field on its own, which under load cost about a third
of every send. Uploads (``sendPhoto``, ``sendDocument``) still go as aiogram's multipart form.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.exceptions import ClientDecodeError, TelegramAPIError, TelegramNetworkError
from aiogram.methods import TelegramMethod
from aiogram.methods.base import TelegramType
from aiohttp import ClientError, ClientTimeout

if TYPE_CHECKING:
    from aiogram import Bot

_JSON = {"Content-Type": "application/json"}

API_FAILURES = (TelegramAPIError, TelegramNetworkError, ClientDecodeError)
"""How a Bot API call fails on the server's side: an error answer, no answer, or an answer
that is no Bot API answer at all (a server without the method may send ``{"message": …}``)."""


def accepted(exc: ClientDecodeError) -> bool:
    """Whether an answer that could not be read still says the server took the request."""
    return isinstance(exc.data, dict) and exc.data.get("ok") is True


class JsonSession(AiohttpSession):
    """:class:`AiohttpSession` with a JSON body for every request that uploads no file."""

    def json_payload(self, bot: Bot, method: TelegramMethod[Any]) -> dict[str, Any] | None:
        """The request's fields as JSON values, or None when a file is attached.

        The same fields aiogram's form would carry: defaults resolved, ``None`` and empty
        strings left out, nested objects without their unset fields.
        """
        files: dict[str, Any] = {}
        payload: dict[str, Any] = {}
        for key, value in method.model_dump(warnings=False).items():
            prepared = self.prepare_value(value, bot=bot, files=files, _dumps_json=False)
            if prepared is not None and prepared != "":
                payload[key] = prepared
        return None if files else payload

    async def make_request(
        self,
        bot: Bot,
        method: TelegramMethod[TelegramType],
        timeout: int | None = None,
    ) -> TelegramType:
        """Send one Bot API request; as aiogram's, but JSON when nothing is uploaded."""
        payload = self.json_payload(bot, method)
        if payload is None:
            return await super().make_request(bot, method, timeout)
        session = await self.create_session()
        url = self.api.api_url(token=bot.token, method=method.__api_method__)
        try:
            async with session.post(
                url,
                data=self.json_dumps(payload).encode(),
                headers=_JSON,
                timeout=ClientTimeout(total=self.timeout if timeout is None else timeout),
            ) as resp:
                raw_result = await resp.text()
        except TimeoutError as e:
            raise TelegramNetworkError(method=method, message="Request timeout error") from e
        except ClientError as e:
            raise TelegramNetworkError(method=method, message=f"{type(e).__name__}: {e}") from e
        response = self.check_response(
            bot=bot, method=method, status_code=resp.status, content=raw_result
        )
        return cast(TelegramType, response.result)
