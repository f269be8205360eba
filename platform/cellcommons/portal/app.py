"""The portal as a sub-application: pages call the same services as GraphQL, with the session's principal."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

from fastapi import FastAPI, Form, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape
from starlette.exceptions import HTTPException as StarletteHTTPException

from cellcommons.catalogue import reading, search
from cellcommons.catalogue.dataset_page import dataset_page
from cellcommons.catalogue.enums import AccessRights, ReleaseStatus
from cellcommons.catalogue.ontology import label
from cellcommons.errors import CellCommonsError, InvalidInput, NotFound
from cellcommons.graphql.ids import Identifiers
from cellcommons.graphql.limits.body import BodySizeLimit
from cellcommons.graphql.limits.config import Limits
from cellcommons.institutions.service import list_issuers
from cellcommons.outages import OUTAGE_TYPES, unavailable_from
from cellcommons.portal import (
    access_pages,
    curation_pages,
    export_pages,
    file_pages,
    presenters,
    signin,
    steward_pages,
)
from cellcommons.portal.pages import SIGN_IN_REASONS, Pages, SignInRequired, signed_in
from cellcommons.portal.repository import end_session, has_ended
from cellcommons.portal.session import (
    LOGIN_COOKIE,
    MAX_SESSION_SECONDS,
    SESSION_COOKIE,
    EndedSessions,
    PortalSession,
    Sessions,
    new_csrf_token,
)
from cellcommons.settings import Settings
from cellcommons.storage import downloads

PAGE_SIZE = 20


def create_portal(settings: Settings, resources: Callable[[], object]) -> FastAPI:
    portal = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    templates = Environment(loader=PackageLoader("cellcommons.portal", "templates"), autoescape=select_autoescape())
    templates.filters["sentence"] = lambda text: text[:1].upper() + text[1:]  # unlike `capitalize`, keeps "EEA"
    templates.globals.update(
        label=label,
        condition_text=presenters.condition_text,
        file_size=presenters.file_size,
        when=presenters.when,
        status_words=presenters.status_words,
    )
    sessions = Sessions(settings.secret_key.get_secret_value(), secure=settings.environment.value == "production")
    ids = Identifiers(settings.secret_key.get_secret_value())
    pages = Pages(settings, resources, templates, sessions, ids)
    portal.mount("/static", StaticFiles(packages=[("cellcommons.portal", "static")]), name="static")
    # Forms are small (file bytes go straight to object storage): a body over the API's limit is refused before
    # it is read, where a form would be parsed whole into memory first, even on the anonymous sign-in POST.
    portal.add_middleware(BodySizeLimit, max_bytes=Limits().max_body_bytes)
    session_of, render, require_csrf = pages.session, pages.render, pages.require_csrf

    @portal.exception_handler(CellCommonsError)
    async def error_page(request: Request, exc: CellCommonsError) -> Response:
        if isinstance(exc, SignInRequired):
            back = {"next": return_path(request)} if request.method == "GET" else {}  # a form is not replayed
            return RedirectResponse("/sign-in?" + urlencode({"why": exc.reason, **back}), 303)
        return render(request, "error.html", status=exc.status, error=exc)

    @portal.exception_handler(RequestValidationError)
    async def unreadable_request(request: Request, exc: RequestValidationError) -> Response:
        """A query parameter or form field the route could not read: the error page naming it, not JSON."""
        first = exc.errors()[0]
        name = str(first["loc"][-1])
        reason = "is required" if first["type"] == "missing" else "is not valid here"
        return await error_page(request, InvalidInput(f"{name.replace('_', ' ')} {reason}", field=name))

    @portal.exception_handler(StarletteHTTPException)
    async def framework_error(request: Request, exc: StarletteHTTPException) -> Response:
        """No such route (or static file), or a method it does not take: the portal's own pages, a 404 the same
        as that of a missing record."""
        if exc.status_code == 404:
            return await error_page(request, NotFound("there is no such page", field="path"))
        error = CellCommonsError(str(exc.detail).lower())
        error.status = exc.status_code
        response = render(request, "error.html", status=exc.status_code, error=error)
        response.headers.update(exc.headers or {})
        return response

    async def outage_page(request: Request, exc: Exception) -> Response:
        """The database or object storage is down: the person is told to try again shortly (503), as the API
        says it; anything else of those types is a bug, and the generic page."""
        outage = unavailable_from(exc)
        return await error_page(request, outage) if outage else render(request, "error.html", status=500, error=None)

    for outage_type in OUTAGE_TYPES:
        portal.add_exception_handler(outage_type, outage_page)

    async def session_ended(session_id: str) -> bool:
        async with resources().database.sessions() as db:
            return await has_ended(db, session_id)

    portal.add_middleware(EndedSessions, sessions=sessions, ended=session_ended, unavailable=error_page)

    @portal.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> HTMLResponse:
        return render(request, "error.html", status=500, error=None)

    @portal.get("/", response_class=HTMLResponse)
    async def home(request: Request) -> HTMLResponse:
        return render(request, "home.html")

    @portal.get("/sign-in", response_class=HTMLResponse)
    async def sign_in_page(request: Request, why: str | None = None, next: str | None = None) -> HTMLResponse:
        async with resources().database.sessions() as db:
            issuers = await list_issuers(db)
        institutions = sorted({slug for slug, _ in issuers})
        return render(
            request, "sign_in.html", institutions=institutions, why=SIGN_IN_REASONS.get(why or ""),
            next=local_path(next),
        )  # fmt: skip

    @portal.post("/sign-in")
    async def sign_in(
        request: Request, institution: str = Form(...), csrf: str = Form(None), next: str = Form(None)
    ) -> Response:
        require_csrf(request, csrf)
        async with resources().database.sessions() as db:
            issuers = {slug: issuer.issuer_url for slug, issuer in await list_issuers(db)}
        if institution not in issuers:
            raise InvalidInput("choose your institution from the list", field="institution")
        redirect_uri = str(request.url_for("callback"))
        login = await signin.start(resources().http, issuers[institution], redirect_uri)
        response = RedirectResponse(login.redirect_to, status_code=303)
        pending = {**login.state, "next": local_path(next)}
        response.set_cookie(LOGIN_COOKIE, sessions.start_login(pending), **sessions.cookie_options(600))
        return response

    @portal.get("/auth/callback", name="callback")
    async def callback(
        request: Request, code: str | None = None, state: str | None = None, error: str | None = None
    ) -> Response:
        pending = sessions.finish_login(request.cookies.get(LOGIN_COOKIE))
        if error and pending is not None:  # the person cancelled, or the issuer refused (RFC 6749 §4.1.2.1)
            raise InvalidInput("your institution did not sign you in; sign in again", field="code")
        if pending is None or not code or not state:
            raise InvalidInput("the sign-in took too long or was not started here; sign in again", field="state")
        res = resources()
        principal, lifetime = await signin.finish(res.http, res.validator, pending, code, state)
        expires = time.time() + min(lifetime, MAX_SESSION_SECONDS)
        # A new token with the new principal: one the anonymous visitor's page held (or a sibling host planted
        # in its cookie) must not carry over into the signed-in session.
        session = PortalSession(principal=principal, csrf=new_csrf_token(), expires_at=expires)
        response = RedirectResponse(local_path(pending.get("next")) or "/search", status_code=303)
        response.set_cookie(SESSION_COOKIE, sessions.dump(session), **sessions.cookie_options(MAX_SESSION_SECONDS))
        response.delete_cookie(LOGIN_COOKIE, path="/")
        return response

    @portal.post("/sign-out")
    async def sign_out(request: Request, csrf: str = Form(None)) -> Response:
        session = require_csrf(request, csrf)
        if session.signed_in:  # ended on the server too: a copy of the cookie must not outlive the sign-out
            await pages.committed(end_session, session)
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @portal.get("/me", response_class=HTMLResponse)
    async def me(request: Request) -> HTMLResponse:
        return render(request, "me.html")

    @portal.get("/search", response_class=HTMLResponse)
    async def search_page(request: Request) -> HTMLResponse:
        principal = signed_in(session_of(request))
        form = SearchForm.read(request)
        after = ids.parse_cursor(form.after, "after") if form.after else None
        before = ids.parse_cursor(form.before, "before") if form.before and not after else None
        if before is not None:
            paging = reading.PageRequest(last=PAGE_SIZE, before=before)
        else:
            paging = reading.PageRequest(first=PAGE_SIZE, after=after)
        query = form.query()
        found = search.find_datasets(principal, query)
        async with resources().database.sessions() as db:
            page = await reading.keyset_page(db, found.query, found.ordering, paging)
            total = await reading.count(db, found.count_query)
            facets = []
            for facet in FACETS:  # each one's counts leave out its own choice, so the other values stay in view
                counts = search.dataset_facet(principal, query, facet.field)
                facets.append((facet, await search.facet_counts(db, counts, facet.labelled)))
            latest = await reading.versions_of(db, principal, [dataset.id for dataset, _, _ in page.rows])
        hits = [
            (dataset, latest.get(dataset.id, [None])[-1], highlighted(headline) if form.q else None)
            for dataset, headline, _ in page.rows
        ]
        next_link = form.link(after=ids.cursor(page.cursors[-1])) if page.has_next and page.cursors else None
        previous_link = form.link(before=ids.cursor(page.cursors[0])) if page.has_previous and page.cursors else None
        return render(
            request,
            "search.html",
            form=form,
            hits=hits,
            total=total,
            facets=[form.facet_view(facet, counts) for facet, counts in facets],
            sorts=form.sort_choices(),
            next_link=next_link,
            previous_link=previous_link,
        )

    @portal.get("/datasets/{accession}", response_class=HTMLResponse)
    async def dataset(request: Request, accession: str, version: int | None = None) -> HTMLResponse:
        principal = signed_in(session_of(request))
        async with resources().database.sessions() as db:
            page = await dataset_page(db, principal, accession, version)
            downloadable = await downloads.downloadable_files(db, principal, [d.id for d in page.distributions])
        charts = [
            presenters.qc_chart(
                f"Release tests of lot {s.batch.lot_number}", presenters.chart_rows(s.results, s.criteria), i
            )
            for i, s in enumerate(page.batches)
        ]
        mine = principal.institution_id == page.dataset.institution_id
        return render(
            request, "dataset.html", page=page, charts=charts, mine=mine, downloadable=downloadable,
            file_ref=lambda d: pages.link(file_pages.FILE, d.id),
        )  # fmt: skip

    for module in (access_pages, steward_pages, file_pages, curation_pages, export_pages):
        module.register(portal, pages)
    return portal


# ---- where sign-in returns to ------------------------------------------------------------------------------

MAX_RETURN_PATH = 2_000


def return_path(request: Request) -> str:
    """The page that asked for a sign-in, with its query (a search, an export's agreement and dataset)."""
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def local_path(value: str | None) -> str | None:
    """`value` if it is a path on this site, else None: `next` comes from a URL anyone can write, and sending a
    person who just signed in on to another site (`//evil.example`, `/\\evil.example`, `https://…`) is how
    phishing borrows the platform's name."""
    if not value or len(value) > MAX_RETURN_PATH or not value.startswith("/") or value.startswith("//"):
        return None
    if "\\" in value or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return None  # browsers read a backslash as a slash and drop tabs and newlines: not a path we can vouch for
    parts = urlsplit(value)
    return value if not parts.scheme and not parts.netloc else None


# ---- the search page: what the URL asks for, and how facets and sorts are shown ------------------------------


@dataclass(frozen=True)
class Facet:
    """A facet of the dataset search: its URL parameter, the search's field name, and how values are shown."""

    param: str
    field: str
    legend: str
    labelled: bool = False  # the service labels the values itself (institutions by name)
    tags: bool = False  # an array field: a dataset matches when it holds any chosen value
    allowed: tuple[str, ...] = ()  # a closed vocabulary: anything else is refused, naming the parameter


FACETS = (
    Facet("institution", "institution", "Institution", labelled=True),
    Facet("tissue", "tissue", "Tissue source"),
    Facet("cell_type", "cell_type", "Cell type"),
    Facet("duo_term", "duo_term", "Data-use conditions (DUO)"),
    Facet("data_type", "data_types", "Data type", tags=True),
    Facet("access", "access_rights", "Access", allowed=tuple(AccessRights)),
    Facet("release", "batch_release_status", "Release status of linked lots", allowed=tuple(ReleaseStatus)),
)
ACCESS_WORDS = {
    AccessRights.public.value: "Public",
    AccessRights.restricted.value: "Restricted: request access",
    AccessRights.non_public.value: "Your institution only",
}
# URL value → (the search's order, descending, what the select shows). "" is the default: the best match first
# with a search text, else titles A–Z.
SORTS = {
    "title": ("title", False, "Title A–Z"),
    "newest": ("created_at", True, "Newest in the catalogue"),
    "oldest": ("created_at", False, "Oldest in the catalogue"),
    "published": ("published_at", True, "Most recently published"),
    "donors": ("donor_count", True, "Most donors"),
    "accession": ("accession", False, "Accession"),
}
MARK = re.compile(r"(</?mark>)")


def highlighted(snippet: str | None) -> Markup | None:
    """The search's snippet, escaped, except the <mark> pairs the search put around matches (kept balanced)."""
    if snippet is None:
        return None
    out, open_mark = [], False
    for part in MARK.split(snippet):
        if part == "<mark>":
            out.append("" if open_mark else "<mark>")
            open_mark = True
        elif part == "</mark>":
            out.append("</mark>" if open_mark else "")
            open_mark = False
        else:
            out.append(str(escape(part)))
    return Markup("".join(out) + ("</mark>" if open_mark else ""))


@dataclass(frozen=True)
class FacetValue:
    value: str
    label: str
    count: int
    chosen: bool
    control_id: str
    toggle_link: str


@dataclass(frozen=True)
class FacetView:
    facet: Facet
    values: list[FacetValue]


@dataclass(frozen=True)
class SearchForm:
    """The search as its URL carries it: text, chosen facet values, sort and a page cursor (sealed, opaque)."""

    q: str | None = None
    sort: str = ""
    chosen: dict[str, tuple[str, ...]] = field(default_factory=dict)
    after: str | None = None
    before: str | None = None

    @classmethod
    def read(cls, request: Request) -> SearchForm:
        params = request.query_params
        q = (params.get("q") or "").strip() or None
        if q is not None and len(q) > search.MAX_SEARCH:
            raise InvalidInput(f"a search text has at most {search.MAX_SEARCH} characters", field="q")
        sort = params.get("sort") or ""
        if sort and sort not in SORTS and sort != "relevance":
            raise InvalidInput("choose a sort order from the list", field="sort")
        chosen = {}
        for facet in FACETS:
            values = tuple(dict.fromkeys(v for v in params.getlist(facet.param) if v))
            if len(values) > search.MAX_VALUES:
                raise InvalidInput(f"choose at most {search.MAX_VALUES} values", field=facet.param)
            if facet.allowed and any(v not in facet.allowed for v in values):
                raise InvalidInput(f"{facet.legend}: choose from {', '.join(facet.allowed)}", field=facet.param)
            if values:
                chosen[facet.param] = values
        if sort == "relevance" or (sort == "title" and q is None):
            sort = ""  # the default order says the same
        return cls(q, sort, chosen, params.get("after") or None, params.get("before") or None)

    def query(self) -> search.Query:
        fields = {}
        for facet in FACETS:
            values = list(self.chosen.get(facet.param, ()))
            if values:
                where = f"filter.{facet.param}"
                fields[facet.field] = (
                    search.Comparison(where, any_of=values) if facet.tags else search.Comparison(where, in_=values)
                )
        if self.sort:
            order, descending, _ = SORTS[self.sort]
        else:
            order, descending = ("relevance", None) if self.q else ("title", False)
        return search.Query(search.Filter("filter", fields) if fields else None, self.q, order, descending)

    def params(self, chosen: dict[str, tuple[str, ...]] | None = None, **extra: str) -> list[tuple[str, str]]:
        pairs = [("q", self.q)] if self.q else []
        chosen = self.chosen if chosen is None else chosen
        for facet in FACETS:
            pairs += [(facet.param, value) for value in chosen.get(facet.param, ())]
        if self.sort:
            pairs.append(("sort", self.sort))
        return pairs + list(extra.items())

    def link(self, chosen: dict[str, tuple[str, ...]] | None = None, **extra: str) -> str:
        """This search (a new page of it, or with other facet values); never a database id in it."""
        pairs = self.params(chosen, **extra)
        return "/search?" + urlencode(pairs) if pairs else "/search"

    def toggled(self, param: str, value: str) -> str:
        values = self.chosen.get(param, ())
        values = tuple(v for v in values if v != value) if value in values else (*values, value)
        return self.link({**self.chosen, param: values})

    @property
    def filtered(self) -> bool:
        return bool(self.chosen)

    def cleared(self) -> str:
        return self.link({})

    def facet_view(self, facet: Facet, counts: list[search.FacetCount]) -> FacetView:
        chosen = self.chosen.get(facet.param, ())
        shown = [(c.value, c.label, c.count) for c in counts if c.value != "None"]
        # A chosen value no dataset carries (an old shared link) stays visible, so it can be unchosen.
        shown += [(value, None, 0) for value in chosen if value not in {v for v, _, _ in shown}]
        values = [
            FacetValue(
                value,
                self._words(facet, value, name),
                count,
                value in chosen,
                f"{facet.param}-{i}",
                self.toggled(facet.param, value),
            )
            for i, (value, name, count) in enumerate(shown)
        ]
        return FacetView(facet, values)

    @staticmethod
    def _words(facet: Facet, value: str, name: str | None) -> str:
        if facet.param == "duo_term":
            words = presenters.condition_text(value, {})
            return value if words == value else f"{words} ({value})"
        if facet.param == "access":
            return ACCESS_WORDS.get(value, value)
        if facet.param == "release":
            return value.replace("_", " ").capitalize()
        return name or value

    def chips(self, facets: list[FacetView]) -> list[tuple[str, str, str]]:
        """(facet legend, value words, link without it) for each chosen value."""
        return [
            (view.facet.legend, value.label, value.toggle_link)
            for view in facets
            for value in view.values
            if value.chosen
        ]

    def sort_choices(self) -> list[tuple[str, str, bool]]:
        """(value, words, selected) for the sort select; "" is the best match with a text, titles A–Z without."""
        choices = [("", "Best match" if self.q else "Title A–Z")]
        choices += [(key, words) for key, (_, _, words) in SORTS.items() if key != "title" or self.q]
        return [(key, words, key == self.sort) for key, words in choices]
