"""The portal as a sub-application: pages call the same services as GraphQL, with the session's principal."""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import urlencode

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape

from cellcommons.catalogue import reading
from cellcommons.catalogue.dataset_page import dataset_page
from cellcommons.catalogue.models import Dataset
from cellcommons.catalogue.ontology import label
from cellcommons.errors import CellCommonsError, Forbidden, InvalidInput
from cellcommons.graphql.ids import Identifiers
from cellcommons.institutions.service import list_issuers
from cellcommons.portal import presenters, signin
from cellcommons.portal.session import (
    LOGIN_COOKIE,
    MAX_SESSION_SECONDS,
    SESSION_COOKIE,
    PortalSession,
    Sessions,
    csrf_ok,
)
from cellcommons.settings import Settings

PAGE_SIZE = 20


def create_portal(settings: Settings, resources: Callable[[], object]) -> FastAPI:
    portal = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    templates = Environment(loader=PackageLoader("cellcommons.portal", "templates"), autoescape=select_autoescape())
    templates.globals.update(label=label, condition_text=presenters.condition_text, file_size=presenters.file_size)
    sessions = Sessions(settings.secret_key.get_secret_value(), secure=settings.environment.value == "production")
    ids = Identifiers(settings.secret_key.get_secret_value())
    portal.mount("/static", StaticFiles(packages=[("cellcommons.portal", "static")]), name="static")

    def session_of(request: Request) -> PortalSession:
        return sessions.load(request.cookies.get(SESSION_COOKIE))

    def render(request: Request, name: str, status: int = 200, **context) -> HTMLResponse:
        session = session_of(request)
        html = templates.get_template(name).render(session=session, request=request, **context)
        response = HTMLResponse(html, status_code=status)
        # Keep the CSRF token of an anonymous visitor stable across the pages it sees.
        if request.cookies.get(SESSION_COOKIE) is None or (not session.signed_in and session.principal is None):
            response.set_cookie(SESSION_COOKIE, sessions.dump(session), **sessions.cookie_options(MAX_SESSION_SECONDS))
        return response

    def require_csrf(request: Request, token: str | None) -> PortalSession:
        session = session_of(request)
        if not csrf_ok(session, token):
            raise Forbidden("this form has expired; reload the page and try again", field="csrf")
        return session

    @portal.exception_handler(CellCommonsError)
    async def error_page(request: Request, exc: CellCommonsError) -> Response:
        if isinstance(exc, SignInRequired):
            return RedirectResponse("/sign-in?" + urlencode({"why": exc.message, "next": request.url.path}), 303)
        return render(request, "error.html", status=exc.status, error=exc)

    @portal.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> HTMLResponse:
        return render(request, "error.html", status=500, error=None)

    @portal.get("/", response_class=HTMLResponse)
    async def home(request: Request) -> HTMLResponse:
        return render(request, "home.html")

    @portal.get("/sign-in", response_class=HTMLResponse)
    async def sign_in_page(request: Request, why: str | None = None) -> HTMLResponse:
        async with resources().database.sessions() as db:
            issuers = await list_issuers(db)
        institutions = sorted({slug for slug, _ in issuers})
        return render(request, "sign_in.html", institutions=institutions, why=why)

    @portal.post("/sign-in")
    async def sign_in(request: Request, institution: str = Form(...), csrf: str = Form(None)) -> Response:
        require_csrf(request, csrf)
        async with resources().database.sessions() as db:
            issuers = {slug: issuer.issuer_url for slug, issuer in await list_issuers(db)}
        if institution not in issuers:
            raise InvalidInput("choose your institution from the list", field="institution")
        redirect_uri = str(request.url_for("callback"))
        login = await signin.start(resources().http, issuers[institution], redirect_uri)
        response = RedirectResponse(login.redirect_to, status_code=303)
        response.set_cookie(LOGIN_COOKIE, sessions.start_login(login.state), **sessions.cookie_options(600))
        return response

    @portal.get("/auth/callback", name="callback")
    async def callback(request: Request, code: str | None = None, state: str | None = None) -> Response:
        pending = sessions.finish_login(request.cookies.get(LOGIN_COOKIE))
        if pending is None or not code or not state:
            raise InvalidInput("the sign-in took too long or was not started here; sign in again", field="state")
        res = resources()
        principal, lifetime = await signin.finish(res.http, res.validator, pending, code, state)
        expires = time.time() + min(lifetime, MAX_SESSION_SECONDS)
        session = PortalSession(principal=principal, csrf=session_of(request).csrf, expires_at=expires)
        response = RedirectResponse("/search", status_code=303)
        response.set_cookie(SESSION_COOKIE, sessions.dump(session), **sessions.cookie_options(MAX_SESSION_SECONDS))
        response.delete_cookie(LOGIN_COOKIE, path="/")
        return response

    @portal.post("/sign-out")
    async def sign_out(request: Request, csrf: str = Form(None)) -> Response:
        require_csrf(request, csrf)
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @portal.get("/me", response_class=HTMLResponse)
    async def me(request: Request) -> HTMLResponse:
        return render(request, "me.html")

    @portal.get("/search", response_class=HTMLResponse)
    async def search(request: Request, after: str | None = None) -> HTMLResponse:
        principal = signed_in(session_of(request))
        async with resources().database.sessions() as db:
            query = reading.datasets_query(principal)
            cursor = ids.parse_cursor(after, "after") if after else None
            request_page = reading.PageRequest(first=PAGE_SIZE, after=cursor)
            page = await reading.keyset_page(db, query, Dataset, request_page)
            total = await reading.count(db, query)
            latest = await reading.versions_of(db, principal, [d.id for d in page.rows])
        rows = [(d, latest.get(d.id, [None])[-1]) for d in page.rows]
        next_link = None
        if page.has_next:
            last = page.rows[-1]
            next_link = "/search?" + urlencode({"after": ids.cursor(last.created_at, last.id)})
        return render(request, "search.html", rows=rows, total=total, next_link=next_link)

    @portal.get("/datasets/{accession}", response_class=HTMLResponse)
    async def dataset(request: Request, accession: str, version: int | None = None) -> HTMLResponse:
        principal = signed_in(session_of(request))
        async with resources().database.sessions() as db:
            page = await dataset_page(db, principal, accession, version)
        charts = [
            presenters.qc_chart(
                f"Release tests of lot {s.batch.lot_number}", presenters.chart_rows(s.results, s.criteria)
            )
            for s in page.batches
        ]
        mine = principal.institution_id == page.dataset.institution_id
        return render(request, "dataset.html", page=page, charts=charts, mine=mine)

    return portal


class SignInRequired(CellCommonsError):
    code = "sign_in_required"
    status = 401


def signed_in(session: PortalSession):
    if not session.signed_in:
        message = "your session has ended" if session.principal else "sign in to see the catalogue"
        raise SignInRequired(message, field="session")
    return session.principal
