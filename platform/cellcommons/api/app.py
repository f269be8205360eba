"""The FastAPI application factory: one app per process, built from Settings, holding its resources."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from cross_web import HTTPException  # what Strawberry's router answers as an HTTP error
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIWebSocketRoute
from sqlalchemy.exc import DBAPIError
from strawberry.fastapi import GraphQLRouter
from strawberry.http.parse_content_type import parse_content_type
from strawberry.schema.exceptions import InvalidOperationTypeError
from strawberry.types.unset import UNSET

from cellcommons.api import drs, health, oauth
from cellcommons.auth.authenticate import Authenticator
from cellcommons.auth.issuers import IssuerRegistry
from cellcommons.auth.principal import Principal
from cellcommons.auth.validator import TokenValidator
from cellcommons.background import settle_heap
from cellcommons.db import Database, end_request
from cellcommons.errors import CellCommonsError, NotFound
from cellcommons.graphql.context import Context
from cellcommons.graphql.ids import Identifiers
from cellcommons.graphql.limits import BodySizeLimit, Limits, protection
from cellcommons.graphql.outages import OutageStatus
from cellcommons.graphql.schema import build_schema
from cellcommons.observability import Metrics, ObservabilityMiddleware
from cellcommons.observability import logs as observability_logs
from cellcommons.observability.metrics import CONTENT_TYPE_LATEST
from cellcommons.outages import OUTAGE_TYPES, unavailable_from
from cellcommons.portal.app import create_portal
from cellcommons.settings import Environment, Settings, load_settings


@dataclass
class Resources:
    settings: Settings
    database: Database
    http: httpx.AsyncClient
    authenticator: Authenticator
    validator: TokenValidator


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        database = Database(settings)
        async with httpx.AsyncClient(timeout=5) as http:
            registry = IssuerRegistry(database)
            validator = TokenValidator(registry.lookup, http)
            app.state.resources = Resources(
                settings=settings,
                database=database,
                http=http,
                authenticator=Authenticator(database, validator),
                validator=validator,
            )
            # What survives startup (modules, schema, engine) lives as long as the process: out of the collector's
            # reach, full collections no longer walk it (a third of a nested GraphQL page's CPU at bench scale).
            settle_heap()
            yield
        await database.dispose()

    app = FastAPI(title="Cell Commons", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.add_exception_handler(CellCommonsError, _render_error)
    app.include_router(graphql_router(settings), prefix="/graphql")
    app.add_middleware(BodySizeLimit, max_bytes=Limits().max_body_bytes, paths=("/graphql",))
    app.include_router(oauth.router)  # /oauth/token, /.well-known/jwks.json, authorization-server metadata
    app.include_router(drs.router)  # GA4GH DRS v1: /ga4gh/drs/v1/objects/{id}[/access/{access_id}]
    app.add_exception_handler(RequestValidationError, _render_request_validation)
    for outage in OUTAGE_TYPES:
        app.add_exception_handler(outage, _render_outage)
    app.include_router(health.router)  # /readyz
    # A registry per app, not prometheus_client's global one: apps built side by side (tests) stay independent.
    app.state.metrics = metrics = Metrics()
    # Added last, so outermost: it also times and logs what BodySizeLimit refuses.
    app.add_middleware(ObservabilityMiddleware, metrics=metrics)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/whoami")
    async def whoami(request: Request) -> dict:
        principal = await current_principal(request)
        if principal is None:
            return {"signed_in": False}
        return {
            "signed_in": True,
            "institution": principal.institution_slug,
            "subject": principal.subject,
            "roles": sorted(principal.roles),
            "client_id": principal.client_id,
            "orcid": principal.orcid,  # only one the institution's issuer vouches for
        }

    # Last: the portal's pages answer every path the API does not.
    app.mount("/", create_portal(settings, lambda: app.state.resources))
    return app


def graphql_router(settings: Settings) -> GraphQLRouter:
    ids = Identifiers(settings.secret_key.get_secret_value())
    production = settings.environment is Environment.production

    async def context(request: Request) -> AsyncIterator[Context]:
        resources: Resources = request.app.state.resources
        principal = await current_principal(request)
        session = resources.database.sessions()
        try:
            yield Context(
                principal=principal,
                session=session,
                settings=settings,
                ids=ids,
                client_host=request.client.host if request.client else None,
            )
        finally:
            await _close_after_response(session)

    # One schema per process: the per-principal budget lives in it.
    schema = build_schema([*protection(settings), OutageStatus])
    return GraphQLEndpoint(schema, context_getter=context, graphql_ide=None if production else "graphiql")


# Filters nest 6 levels of and/or/not (two JSON levels each); no input of the schema comes near this. Deeper
# variables reach the cost guard's and graphql-core's recursive walks, which may run out of stack ("internal").
MAX_JSON_DEPTH = 64
# Values (objects, arrays and scalars) in a request's JSON. Strawberry converts every input value into its input
# types before any limit or resolver can refuse the request: a filter of 25 000 `or` entries (75 000 values,
# 800 kB) took 7 s of a worker to be refused. The largest inputs of the schema (a dataset of a thousand columns,
# its linked lots) hold a few thousand.
MAX_JSON_VALUES = 10_000


class MalformedRequest(CellCommonsError):
    """A request to /graphql that is not a GraphQL request this endpoint can read."""

    code = "malformed_request"
    status = 400


class MethodNotAllowed(CellCommonsError):
    """A mutation sent with GET: mutations are POSTed (GraphQL over HTTP), so a link or prefetch changes nothing."""

    code = "method_not_allowed"
    status = 405


class UnsupportedMediaType(CellCommonsError):
    code = "unsupported_media_type"
    status = 415


class GraphQLEndpoint(GraphQLRouter):
    """Strawberry's router, refusing with a 400 the JSON its request parsing would fail on with a 500, and JSON
    nested deeper than any input of the schema. Its own refusals, which it answers as plain text, are raised as
    platform errors instead, so the app renders them as it renders every other error. No websocket route: the
    schema has no subscriptions, and the context getter takes a Request, so a websocket there failed with a
    TypeError instead of being refused."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.routes[:] = [route for route in self.routes if not isinstance(route, APIWebSocketRoute)]

    async def run(self, request: Request, context: Any = UNSET, root_value: Any = UNSET) -> Response:
        try:
            return await super().run(request, context, root_value)
        except HTTPException as exc:
            if isinstance(exc.__cause__, InvalidOperationTypeError):
                raise MethodNotAllowed(exc.reason) from None
            if exc.status_code == 404:  # a GET without a query where GraphiQL is off (production)
                raise NotFound(exc.reason) from None
            raise MalformedRequest(exc.reason) from None

    async def parse_http_body(self, request: Any) -> Any:
        # Strawberry answers 400 to a body it has no parser for; multipart uploads are off, so JSON is the only one.
        if request.method == "POST" and "application/json" not in parse_content_type(request.content_type or "")[0]:
            raise UnsupportedMediaType("the request body must be application/json")
        return await super().parse_http_body(request)

    def decode_json(self, data: str | bytes) -> object:
        try:
            value = json.loads(data)
        except RecursionError:  # ~1 000 nested arrays or objects fit in a body well under the size limit
            raise MalformedRequest("the JSON is nested too deeply") from None
        if problem := _too_large(value):
            raise MalformedRequest(problem)
        # Bytes are a POST body (query parameters and multipart parts arrive as text): Strawberry reads it as an
        # object, or a list for batching (which it refuses itself).
        if isinstance(data, bytes) and not isinstance(value, dict | list):
            raise MalformedRequest("the request body must be a JSON object")
        return value


def _too_large(value: object) -> str | None:
    """What is wrong with `value` if its arrays and objects nest more than MAX_JSON_DEPTH levels or it holds more
    than MAX_JSON_VALUES values (walked level by level: no recursion of its own)."""
    level, values = ([value] if isinstance(value, dict | list) else []), 1
    for _ in range(MAX_JSON_DEPTH):
        children = [child for item in level for child in (item.values() if isinstance(item, dict) else item)]
        values += len(children)
        if values > MAX_JSON_VALUES:
            return f"the JSON holds more than {MAX_JSON_VALUES} values"
        level = [child for child in children if isinstance(child, dict | list)]
        if not level:
            return None
    return f"the JSON nests more than {MAX_JSON_DEPTH} levels deep" if level else None


async def _close_after_response(session) -> None:
    """The answer has been sent by now: a database that went away meanwhile leaves nothing to roll back, and
    raising here could not reach the client anyway (the pool discards the dead connection)."""
    try:
        await end_request(session)
    except DBAPIError:
        await session.invalidate()


async def current_principal(request: Request) -> Principal | None:
    resources: Resources = request.app.state.resources
    return await resources.authenticator.principal(request.headers.get("authorization"))


async def _render_error(request: Request, exc: CellCommonsError) -> JSONResponse:
    return JSONResponse({"error": exc.as_dict()}, status_code=exc.status, headers=error_headers(exc))


def error_headers(exc: CellCommonsError) -> dict[str, str] | None:
    """The headers an error's answer carries whatever its body's shape: a 401 the RFC 6750 Bearer challenge."""
    if exc.status == 401:
        return {"WWW-Authenticate": f'Bearer error="invalid_token", error_description="{exc.message}"'}
    if isinstance(exc, MethodNotAllowed):
        return {"Allow": "POST"}
    return None


async def _render_outage(request: Request, exc: Exception) -> JSONResponse:
    """The database or object storage is down: 503 naming it, instead of a traceback and a 500."""
    outage = unavailable_from(exc)
    if outage is None:
        raise exc
    return await _render_error(request, outage)


def from_environment() -> FastAPI:
    """The app built from CELLCOMMONS_* variables: the factory `cellcommons serve --workers N` hands uvicorn,
    since each worker process builds its own app."""
    observability_logs.configure()  # JSON lines, after uvicorn has set up its own logging
    return create_app(load_settings())


async def _render_request_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = [
        {"field": ".".join(str(p) for p in e["loc"][1:]) or str(e["loc"][0]), "message": e["msg"]} for e in exc.errors()
    ]
    body = {"code": "invalid_input", "message": "the request is invalid", "problems": problems}
    return JSONResponse({"error": body}, status_code=422)
