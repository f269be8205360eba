"""An ASGI middleware refusing request bodies over a size, before the app reads them whole."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _TooLarge(Exception):
    pass


class BodySizeLimit:
    """413 with a JSON error when the body is over `max_bytes`: at once when Content-Length says so, else as
    soon as the streamed body passes the limit. `paths` (prefixes) limits it to some routes; None is all."""

    def __init__(self, app: ASGIApp, max_bytes: int, paths: tuple[str, ...] | None = None):
        self.app = app
        self.max_bytes = max_bytes
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._applies(scope["path"]):
            await self.app(scope, receive, send)
            return
        if self._declared_length(scope) > self.max_bytes:
            await self._refuse(send)
            return
        received = 0
        started = refused = False

        async def counted_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                if not started and not refused:
                    refused = True
                    await self._refuse(send)
                raise _TooLarge  # stops the app reading; whatever it answers to that is dropped below
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # e.g. Starlette's ServerErrorMiddleware answering 500 to _TooLarge
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except _TooLarge:
            if not refused:
                raise

    def _applies(self, path: str) -> bool:
        return self.paths is None or path.startswith(self.paths)

    @staticmethod
    def _declared_length(scope: Scope) -> int:
        for name, value in scope["headers"]:
            if name == b"content-length":
                return int(value) if value.isdigit() else 0
        return 0

    async def _refuse(self, send: Send) -> None:
        # Shaped like a GraphQL response, since /graphql is what this guards.
        error = {
            "message": f"the request body is over {self.max_bytes} bytes",
            "extensions": {"code": "request_too_large", "limit": self.max_bytes},
        }
        body = json.dumps({"errors": [error]}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
