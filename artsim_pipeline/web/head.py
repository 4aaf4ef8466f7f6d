"""HEAD answered wherever GET is (issue 32 #9): a plain ASGI middleware, for every route and page.

FastAPI's routes answer only the methods they declare, so ``HEAD /healthz`` was a 405 while ``GET`` was a
200. :class:`HeadAsGet` runs a HEAD request as the GET it stands for and sends its status and headers
(``Content-Length``, ``ETag``, ``Cache-Control`` included) without the body.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

Message = dict[str, Any]
Send = Callable[[Message], Awaitable[None]]


class HeadAsGet:
    """ASGI middleware: ``HEAD`` is answered as ``GET`` with the body left out."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Send) -> None:
        if scope.get("type") != "http" or scope.get("method") != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return  # the body's parts are dropped; the last message ends the response
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)
