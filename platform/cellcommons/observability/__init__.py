"""Operations: Prometheus metrics (metrics.py), JSON logs (logs.py), and the ASGI middleware joining them.

The middleware wraps every HTTP request: it picks a request id (echoed as X-Request-ID), makes this app's
`Metrics` and the request's `RequestInfo` current for the code below it, then observes the latency and writes
one access line. It is plain ASGI, not BaseHTTPMiddleware, so the endpoint runs in the same task and sees (and
can fill in) the same RequestInfo.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cellcommons.observability import logs
from cellcommons.observability.metrics import Metrics

__all__ = ["Metrics", "ObservabilityMiddleware"]


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        info = logs.RequestInfo(request_id=logs.request_id(incoming), method=scope["method"])
        status = 500  # what the client gets if the app raises before starting a response
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, (b"x-request-id", info.request_id.encode())]}
            await send(message)

        token = logs.bind(info)
        try:
            with self.metrics.activated():
                await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            info.path = path_template(scope)
            operation = info.operation or info.path
            method = self.metrics.method_label(info.method)
            self.metrics.request_seconds.labels(method=method, operation=operation, status=str(status)).observe(seconds)
            logs.access(info, status, seconds)
            logs.unbind(token)


def path_template(scope: Scope) -> str:
    """The matched route's template (`/ga4gh/drs/v1/objects/{object_id}`), never the raw path: raw paths carry
    ids (unbounded label values) and sometimes things worth keeping out of logs. Routing fills `scope` in place."""
    mount = scope.get("root_path", "")[len(scope.get("app_root_path", "")) :]
    route = scope.get("route")
    if route is not None:
        # FastAPI keeps an included router's routes as declared, without the prefix given to include_router
        # (`/graphql`'s route is ""), and puts the full template on the route context it matched.
        matched = getattr(scope.get("fastapi", {}).get("effective_route_context"), "path_format", None)
        return mount + (matched or getattr(route, "path_format", getattr(route, "path", "")))
    if mount:
        return mount + "/{path}"  # a mounted app without routes of its own (static files)
    return "unmatched"
