"""The ASGI app serving every dev issuer: discovery, JWKS, authorization (code + PKCE S256) and token endpoints.

Only what the platform's OIDC login and token validation use is implemented, and it is strict where real
issuers are strict (PKCE S256 only, exact redirect URIs, one-time short-lived codes), so that a platform bug
shows up against the dev IdP rather than against a partner's Keycloak.
"""

from __future__ import annotations

import base64
import hmac
import re
from html import escape
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from authlib.oauth2.rfc7636 import create_s256_code_challenge
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from cellcommons.auth.dev_idp.users import DEMO_USERS, demo_user

if TYPE_CHECKING:
    from cellcommons.auth.dev_idp.provider import Client, DevIdentityProvider

# RFC 7636 §4.1 / §4.2: a verifier is 43-128 unreserved characters; an S256 challenge is 43 base64url characters.
_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")
_S256_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def build_app(idp: DevIdentityProvider) -> Any:
    def issuer_or_404(request: Request) -> str | None:
        slug = request.path_params["slug"]
        return slug if slug in idp.slugs else None

    async def discovery(request: Request) -> Response:
        slug = issuer_or_404(request)
        if slug is None:
            return JSONResponse({"error": "not_found"}, 404)
        return JSONResponse(
            {
                "issuer": idp.issuer(slug),
                "authorization_endpoint": idp.authorization_endpoint(slug),
                "token_endpoint": idp.token_endpoint(slug),
                "jwks_uri": idp.jwks_uri(slug),
                "response_types_supported": ["code"],
                "response_modes_supported": ["query"],
                "grant_types_supported": ["authorization_code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": [idp.algorithm(slug)],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["none", "client_secret_basic"],
                "scopes_supported": ["openid", "profile", "email"],
                "claims_supported": ["iss", "sub", "aud", "exp", "iat", "name", "email", "preferred_username"],
                # RFC 9207: the authorization response names the issuer, so a client can detect mix-ups.
                "authorization_response_iss_parameter_supported": True,
            }
        )

    async def jwks(request: Request) -> Response:
        slug = issuer_or_404(request)
        if slug is None:
            return JSONResponse({"error": "not_found"}, 404)
        if idp.is_jwks_down(slug):
            return JSONResponse({"error": "temporarily_unavailable"}, 503, headers={"Retry-After": "30"})
        return JSONResponse(idp.jwks(slug))

    async def authorize(request: Request) -> Response:
        slug = issuer_or_404(request)
        if slug is None:
            return _page(404, "Unknown issuer", "<p>There is no such issuer here.</p>")
        query = request.query_params
        client = idp.client(slug, query.get("client_id"))
        redirect_uri = query.get("redirect_uri") or ""
        # Until client and redirect URI are known good, errors are shown here: never redirect to an unknown URI.
        if client is None:
            return _page(400, "Sign-in refused", "<p>Unknown <code>client_id</code>.</p>")
        if not client.allows(redirect_uri):
            return _page(400, "Sign-in refused", "<p><code>redirect_uri</code> is not registered for this client.</p>")
        state = query.get("state")

        def refuse(error: str, description: str) -> Response:
            params = {"error": error, "error_description": description, "iss": idp.issuer(slug)}
            if state:
                params["state"] = state
            return RedirectResponse(_with_query(redirect_uri, params), 302)

        if query.get("response_type") != "code":
            return refuse("unsupported_response_type", "only response_type=code is supported")
        if not state:
            return refuse("invalid_request", "state is required")
        challenge = query.get("code_challenge")
        if not challenge:
            return refuse("invalid_request", "code_challenge is required (PKCE)")
        # A missing method means `plain` (RFC 7636 §4.3); only S256 is accepted.
        if query.get("code_challenge_method") != "S256":
            return refuse("invalid_request", "code_challenge_method must be S256")
        if not _S256_CHALLENGE.fullmatch(challenge):
            return refuse("invalid_request", "code_challenge is not an S256 challenge")

        username = query.get("login_hint")
        if username is None:
            return _login_page(slug, query.multi_items())
        try:
            demo_user(username)
        except KeyError:
            return _login_page(slug, query.multi_items(), unknown=username)
        code = idp.new_code(
            dict(
                slug=slug,
                client_id=client.client_id,
                redirect_uri=redirect_uri,
                code_challenge=challenge,
                username=username,
                scope=query.get("scope") or "openid",
                nonce=query.get("nonce"),
            )
        )
        return RedirectResponse(_with_query(redirect_uri, {"code": code, "state": state, "iss": idp.issuer(slug)}), 302)

    async def token(request: Request) -> Response:
        slug = issuer_or_404(request)
        if slug is None:
            return JSONResponse({"error": "not_found"}, 404)
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
            return _token_error("invalid_request", "the body must be application/x-www-form-urlencoded")
        pairs = parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
        form = dict(pairs)
        if len(form) != len(pairs):
            return _token_error("invalid_request", "a parameter is repeated")

        client, problem = _authenticate(idp, slug, request.headers.get("authorization"), form.get("client_id"))
        if client is None:
            return _token_error("invalid_client", problem, 401, {"WWW-Authenticate": 'Basic realm="dev-idp"'})
        if form.get("grant_type") != "authorization_code":
            return _token_error("unsupported_grant_type", "only grant_type=authorization_code is supported")
        missing = [p for p in ("code", "redirect_uri", "code_verifier") if not form.get(p)]
        if missing:
            return _token_error("invalid_request", f"missing {', '.join(missing)}")
        if not _VERIFIER.fullmatch(form["code_verifier"]):
            return _token_error("invalid_request", "code_verifier must be 43-128 unreserved characters")

        grant = idp.take_code(form["code"])
        if grant is None or grant.slug != slug:
            return _token_error("invalid_grant", "unknown or already used code")
        if grant.expires_at <= idp.clock():
            return _token_error("invalid_grant", "the code has expired")
        if grant.client_id != client.client_id:
            return _token_error("invalid_grant", "the code was issued to another client")
        if grant.redirect_uri != form["redirect_uri"]:
            return _token_error("invalid_grant", "redirect_uri differs from the authorization request")
        expected = create_s256_code_challenge(form["code_verifier"])
        if not hmac.compare_digest(expected, grant.code_challenge):
            return _token_error("invalid_grant", "code_verifier does not match the code_challenge")

        body: dict[str, Any] = {
            "access_token": idp.issue_access_token(slug, grant.username, client_id=client.client_id, scope=grant.scope),
            "token_type": "Bearer",
            "expires_in": idp.token_lifetime,
            "scope": grant.scope,
        }
        if "openid" in grant.scope.split():
            body["id_token"] = idp.issue_id_token(
                slug, grant.username, client.client_id, nonce=grant.nonce, auth_time=grant.auth_time
            )
        return JSONResponse(body, headers=_NO_STORE)

    routes = [
        Route("/realms/{slug}/.well-known/openid-configuration", discovery, methods=["GET"]),
        Route("/realms/{slug}/protocol/openid-connect/certs", jwks, methods=["GET"]),
        Route("/realms/{slug}/protocol/openid-connect/auth", authorize, methods=["GET"]),
        Route("/realms/{slug}/protocol/openid-connect/token", token, methods=["POST"]),
    ]
    app = Starlette(routes=routes)

    async def counting(scope: dict, receive: Any, send: Any) -> None:
        # Tests assert what went over the wire ("no JWKS fetch", "at most one refetch"): count every request.
        if scope["type"] == "http":
            idp.requests[scope["path"]] += 1
        await app(scope, receive, send)

    return counting


def _authenticate(
    idp: DevIdentityProvider, slug: str, authorization: str | None, form_client_id: str | None
) -> tuple[Client | None, str]:
    """client_secret_basic for confidential clients, `none` (client_id in the form) for public ones."""
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() != "basic":
            return None, "only Basic client authentication is supported"
        try:
            client_id, _, secret = base64.b64decode(credentials, validate=True).decode().partition(":")
        except ValueError:
            return None, "malformed Basic credentials"
        # RFC 6749 §2.3.1: both parts are form-urlencoded before base64.
        client_id, secret = unquote(client_id.replace("+", " ")), unquote(secret.replace("+", " "))
        client = idp.client(slug, client_id)
        if client is None or client.secret is None or not hmac.compare_digest(client.secret, secret):
            return None, "client authentication failed"
        if form_client_id not in (None, client_id):
            return None, "client_id differs from the authenticated client"
        return client, ""
    client = idp.client(slug, form_client_id)
    if client is None:
        return None, "unknown client_id"
    if client.secret is not None:
        return None, "this client must authenticate with client_secret_basic"
    return client, ""


def _token_error(error: str, description: str, status: int = 400, headers: dict | None = None) -> Response:
    return JSONResponse(
        {"error": error, "error_description": description}, status, headers={**_NO_STORE, **(headers or {})}
    )


def _with_query(uri: str, params: dict[str, str]) -> str:
    parts = urlsplit(uri)
    query = "&".join(q for q in (parts.query, urlencode(params)) if q)
    return urlunsplit(parts._replace(query=query))


def _page(status: int, title: str, body: str) -> HTMLResponse:
    html = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)} · Cell Commons dev identity provider</title>
<style>body{{font:1rem/1.5 system-ui,sans-serif;max-width:36rem;margin:2rem auto;padding:0 1rem}}
button{{font:inherit;padding:.5rem 1rem;margin:.25rem 0;min-width:100%;text-align:left;cursor:pointer}}
button:focus-visible{{outline:3px solid #1a5fb4;outline-offset:2px}}</style></head>
<body><main><h1>{escape(title)}</h1>{body}</main></body></html>"""
    return HTMLResponse(html, status, headers={"Cache-Control": "no-store"})


def _login_page(slug: str, params: list[tuple[str, str]], unknown: str | None = None) -> HTMLResponse:
    """One button per demo user; each resubmits the authorization request with `login_hint` (plain GET, no JS)."""
    hidden = "".join(
        f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">' for k, v in params if k != "login_hint"
    )
    buttons = "".join(
        f'<li><button type="submit" name="login_hint" value="{escape(u.username)}">'
        f"{escape(u.name)} <small>({escape(', '.join(u.roles) or 'no platform role')})</small></button></li>"
        for u in DEMO_USERS
    )
    alert = f'<p role="alert">There is no demo user “{escape(unknown)}”.</p>' if unknown else ""
    body = (
        f"<p>Development sign-in for <strong>{escape(slug)}</strong>. Choose who you are:</p>{alert}"
        f'<form method="get" aria-label="Demo users">{hidden}'
        f'<ul style="list-style:none;padding:0">{buttons}</ul></form>'
        "<p><small>Demo and test only: no passwords, never enabled in production.</small></p>"
    )
    return _page(400 if unknown else 200, "Sign in", body)
