"""The platform's OAuth 2 authorization server for machine clients: thin FastAPI glue over institutions.clients.

- `POST /oauth/token`: the client-credentials grant (RFC 6749 §4.4) with client_secret_basic or private_key_jwt;
  RFC 9068 JWT access tokens; errors as RFC 6749 §5.2.
- `GET /.well-known/jwks.json`: the signing key and the retired keys whose tokens may still be valid.
- `GET /.well-known/oauth-authorization-server`: RFC 8414 metadata.

Included by the app factory; its lifespan registers the platform as an issuer (from settings) and makes sure a
signing key exists before the first request.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from urllib.parse import parse_qsl

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from cellcommons.auth import platform_keys
from cellcommons.institutions import clients
from cellcommons.institutions.clients import TokenRequestRefused

log = logging.getLogger(__name__)

MAX_FORM_BYTES = 16_384
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@asynccontextmanager
async def _lifespan(app: FastAPI):
    resources = app.state.resources
    try:
        async with resources.database.unit_of_work() as session:
            await platform_keys.ensure_platform_issuer(session, resources.settings)
    except (SQLAlchemyError, OSError) as exc:  # the API still starts; the first token request retries
        log.warning("could not register the platform issuer at start: %s", exc)
    yield


router = APIRouter(lifespan=_lifespan)


def _error_response(error, extra_headers: dict[str, str] | None = None) -> JSONResponse:
    status, body, headers = error()
    return JSONResponse(body, status_code=status, headers={**dict(headers), **_NO_STORE, **(extra_headers or {})})


async def _form(request: Request) -> dict[str, str] | TokenRequestRefused:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        return clients.invalid_request("the body must be application/x-www-form-urlencoded")
    body = await _body(request)
    if body is None:
        return clients.invalid_request("the request body is too large")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body))
    except (UnicodeDecodeError, ValueError):
        return clients.invalid_request("the body is not a valid form")
    form = dict(pairs)
    if len(form) != len(pairs):
        return clients.invalid_request("a parameter is repeated")
    return form


async def _body(request: Request) -> bytes | None:
    """The body, or None as soon as it is known to be over MAX_FORM_BYTES: read no further, since the endpoint
    answers anyone and `request.body()` would hold a body of any size in memory first."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    return bytes(body)


@router.post("/oauth/token", include_in_schema=False)
async def token(request: Request) -> JSONResponse:
    resources = request.app.state.resources
    form = await _form(request)
    async with resources.database.unit_of_work() as session:
        try:
            if isinstance(form, TokenRequestRefused):
                raise form
            if request.query_params:
                raise clients.invalid_request("parameters belong in the body, not the URL")
            body = await clients.grant_client_credentials(
                session, resources.settings, authorization=request.headers.get("authorization"), form=form
            )
        except TokenRequestRefused as refused:
            # Committed with the refusal: its audit event and, for an assertion, the jti it used up.
            await clients.audit_refusal(session, refused)
            return _error_response(refused.error)
    return JSONResponse(body, headers=_NO_STORE)


@router.get("/.well-known/jwks.json", include_in_schema=False)
async def jwks(request: Request) -> JSONResponse:
    async with request.app.state.resources.database.unit_of_work() as session:
        keys = await platform_keys.published_jwks(session)
    return JSONResponse(keys, headers={"Cache-Control": "public, max-age=60"})


@router.get("/.well-known/oauth-authorization-server", include_in_schema=False)
async def metadata(request: Request) -> JSONResponse:
    settings = request.app.state.resources.settings
    return JSONResponse(
        {
            "issuer": settings.issuer_url,
            "token_endpoint": settings.token_endpoint,
            "jwks_uri": f"{settings.issuer_url}/.well-known/jwks.json",
            "grant_types_supported": [clients.GRANT_TYPE],
            "response_types_supported": [],  # no authorization endpoint: machine clients only
            "token_endpoint_auth_methods_supported": list(clients.AUTH_METHODS),
            "token_endpoint_auth_signing_alg_values_supported": sorted(
                {alg for algs in clients.ASSERTION_ALGORITHMS.values() for alg in algs}
            ),
            "scopes_supported": sorted(role.value for role in clients.CLIENT_ROLES),
        },
        headers={"Cache-Control": "public, max-age=300"},
    )
