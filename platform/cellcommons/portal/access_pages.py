"""Requesting access: the form (purpose in DUO terms by name, disease by name from the shipped MONDO subset), the
matcher's verdict before submitting, "My requests" with their history, "My agreements" with expiry, and the
notifications the access service records. Every change is a CSRF-checked POST through `access.requests`."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import FormData

from cellcommons.access import requests
from cellcommons.access.matcher import PURPOSE_EXTRA, PURPOSE_PRIMARY
from cellcommons.auth.principal import Principal
from cellcommons.catalogue import ontology
from cellcommons.catalogue.dataset_page import dataset_page
from cellcommons.errors import InvalidInput
from cellcommons.portal import loaders, presenters
from cellcommons.portal.pages import CORRECTABLE, FormErrors, Pages, form_errors

REQUEST = "AccessRequest"
CONTROLS = ("datasets", "purpose_terms", "disease", "methods_development", "commercial_use", "lay_summary",
            "ethics_reference", "project", "period_start", "period_end", "orcid")  # fmt: skip


def purpose_choices() -> list[tuple[str, str, str]]:
    return presenters.duo_choices(lambda t: t.shorthand in PURPOSE_PRIMARY)


def extra_choices() -> list[tuple[str, str, str]]:
    return presenters.duo_choices(lambda t: t.shorthand in PURPOSE_EXTRA)


def disease_choices() -> list[tuple[str, str]]:
    return sorted(((c.curie, c.label) for c in ontology.mondo_classes().values()), key=lambda c: c[1].lower())


@dataclass
class RequestForm:
    """The request form as the person filled it in (strings, for re-showing), and what the service parses."""

    datasets: list[str] = field(default_factory=list)  # accessions
    purpose: str = ""
    extras: list[str] = field(default_factory=list)
    disease: str = ""
    methods_development: bool = False
    commercial_use: str = ""  # "yes" | "no" | "" (not answered)
    lay_summary: str = ""
    ethics_reference: str = ""
    project: str = ""
    period_start: str = ""
    period_end: str = ""
    orcid: str = ""

    @classmethod
    def read(cls, form: FormData) -> RequestForm:
        text = lambda name: str(form.get(name) or "").strip()  # noqa: E731
        return cls(
            datasets=[str(v) for v in form.getlist("dataset") if v][:50],
            purpose=text("purpose"), extras=[str(v) for v in form.getlist("extras")], disease=text("disease"),
            methods_development=bool(form.get("methods_development")), commercial_use=text("commercial_use"),
            lay_summary=text("lay_summary"), ethics_reference=text("ethics_reference"), project=text("project"),
            period_start=text("period_start"), period_end=text("period_end"), orcid=text("orcid"),
        )  # fmt: skip

    @classmethod
    def of(cls, row, accessions: list[str]) -> RequestForm:
        primary = [t for t in row.purpose_terms if ontology.duo_term(t).shorthand in PURPOSE_PRIMARY]
        return cls(
            datasets=accessions, purpose=primary[0] if primary else "",
            extras=[t for t in row.purpose_terms if t not in primary], disease=row.disease or "",
            methods_development=row.methods_development, commercial_use="yes" if row.commercial_use else "no",
            lay_summary=row.lay_summary, ethics_reference=row.ethics_reference or "", project=row.project or "",
            period_start=row.period_start.isoformat(), period_end=row.period_end.isoformat(), orcid=row.orcid or "",
        )  # fmt: skip

    def raw(self, dataset_ids: list[uuid.UUID]) -> dict:
        """What `requests.parse_request` validates; unanswered questions are left out, so they read as missing."""
        raw = {
            "datasets": dataset_ids,
            "disease": self.disease or None, "methods_development": self.methods_development,
            "ethics_reference": self.ethics_reference or None,
            "project": self.project or None, "orcid": self.orcid or None,
        }  # fmt: skip
        if terms := [t for t in [self.purpose, *self.extras] if t]:
            raw["purpose_terms"] = terms
        if self.commercial_use in ("yes", "no"):
            raw["commercial_use"] = self.commercial_use == "yes"
        for name in ("lay_summary", "period_start", "period_end"):
            if getattr(self, name):
                raw[name] = getattr(self, name)
        return raw


def register(portal: FastAPI, pages: Pages) -> None:
    async def datasets_named(principal: Principal, accessions: list[str]) -> list:
        """The dataset pages (what is requested, with its conditions); hidden ones are NotFound like missing."""
        if not accessions:
            raise InvalidInput("name at least one dataset", field="datasets")
        async with pages.db() as db:
            return [await dataset_page(db, principal, accession) for accession in accessions]

    def show_form(request: Request, form: RequestForm, datasets: list, action: str, *, status: int = 200,
                  errors: FormErrors | None = None, verdicts: list | None = None) -> HTMLResponse:  # fmt: skip
        return pages.render(
            request, "request_form.html", status=status, form=form, datasets=datasets, action=action,
            errors=errors or FormErrors(), verdicts=verdicts, purposes=purpose_choices(), extras=extra_choices(),
            diseases=disease_choices(), mondo_release=ontology.mondo_release(),
        )  # fmt: skip

    async def handle(request: Request, request_id: uuid.UUID | None, action: str) -> Response:
        """Check (the matcher's verdict, nothing saved) or submit (saved, judged again, custodians told)."""
        principal, data = await pages.form(request)
        form = RequestForm.read(data)
        datasets = await datasets_named(principal, form.datasets)
        try:
            parsed = requests.parse_request(form.raw([page.dataset.id for page in datasets]))
            if data.get("step") != "submit":
                async with pages.db() as db:
                    verdicts = await requests.preview(db, principal, parsed, node_id=pages.settings.node_id)
                return show_form(request, form, datasets, action, verdicts=[v for _, _, v in verdicts])
            saved = await pages.committed(_save_and_submit, principal, request_id, parsed, pages.settings.node_id)
        except CORRECTABLE as exc:
            return show_form(request, form, datasets, action, status=exc.status, errors=form_errors(exc, CONTROLS))
        return RedirectResponse(f"/requests/{pages.link(REQUEST, saved.id)}", status_code=303)

    @portal.get("/datasets/{accession}/request", response_class=HTMLResponse)
    async def new_request(request: Request, accession: str) -> HTMLResponse:
        principal = pages.principal(request)
        datasets = await datasets_named(principal, [accession])
        start, end = loaders.default_period()
        form = RequestForm(datasets=[accession], period_start=start.isoformat(), period_end=end.isoformat())
        return show_form(request, form, datasets, "/requests/new")

    @portal.post("/requests/new")
    async def create(request: Request) -> Response:
        return await handle(request, None, "/requests/new")

    @portal.get("/requests/{ref}/edit", response_class=HTMLResponse)
    async def edit(request: Request, ref: str) -> HTMLResponse:
        principal = pages.principal(request)
        async with pages.db() as db:
            view = await loaders.request_view(db, principal, pages.key(ref, REQUEST, "access request"))
        accessions = [p.dataset.accession for p in view.parts if p.dataset]
        form = RequestForm.of(view.request, accessions)
        return show_form(request, form, await datasets_named(principal, accessions), f"/requests/{ref}/edit")

    @portal.post("/requests/{ref}/edit")
    async def update(request: Request, ref: str) -> Response:
        return await handle(request, pages.key(ref, REQUEST, "access request"), f"/requests/{ref}/edit")

    @portal.get("/requests", response_class=HTMLResponse)
    async def my_requests(request: Request) -> HTMLResponse:
        principal = pages.principal(request)
        async with pages.db() as db:
            views = await loaders.my_requests(db, principal)
        return pages.render(request, "requests.html", views=views, ref=lambda r: pages.link(REQUEST, r.id))

    @portal.get("/requests/{ref}", response_class=HTMLResponse)
    async def one_request(request: Request, ref: str) -> HTMLResponse:
        return await show_request(request, ref)

    async def show_request(request: Request, ref: str, status: int = 200, errors: FormErrors | None = None):
        principal = pages.principal(request)
        async with pages.db() as db:
            view = await loaders.request_view(db, principal, pages.key(ref, REQUEST, "access request"))
        mine = view.request.requester_actor == principal.actor
        return pages.render(request, "request.html", status=status, view=view, ref=ref, mine=mine,
                            errors=errors or FormErrors())  # fmt: skip

    @portal.post("/requests/{ref}/withdraw")
    async def withdraw(request: Request, ref: str) -> Response:
        principal, data = await pages.form(request)
        key = pages.key(ref, REQUEST, "access request")
        reason = str(data.get("reason") or "").strip()
        try:
            if not reason:
                raise InvalidInput("say why you withdraw the request", field="reason")
            await pages.committed(requests.withdraw, principal, key, reason)
        except CORRECTABLE as exc:
            return await show_request(request, ref, exc.status, form_errors(exc, ["reason"]))
        return RedirectResponse(f"/requests/{ref}", status_code=303)

    @portal.get("/agreements", response_class=HTMLResponse)
    async def my_agreements(request: Request) -> HTMLResponse:
        principal = pages.principal(request)
        async with pages.db() as db:
            views = await loaders.my_agreements(db, principal)
        return pages.render(request, "agreements.html", views=views, warn_days=30,
                            ref=lambda a: pages.link("Agreement", a.id))  # fmt: skip

    @portal.get("/notifications", response_class=HTMLResponse)
    async def notifications(request: Request) -> HTMLResponse:
        principal = pages.principal(request)
        async with pages.db() as db:
            rows = await loaders.my_notifications(db, principal)
        links = {r.id: f"/requests/{pages.link(REQUEST, r.request_id)}" for r in rows if r.request_id}
        return pages.render(request, "notifications.html", rows=rows, links=links)


async def _save_and_submit(session, principal: Principal, request_id: uuid.UUID | None, parsed, node_id: str):
    if request_id is None:
        saved = await requests.create_request(session, principal, parsed, node_id=node_id)
    else:
        saved = await requests.update_request(session, principal, request_id, parsed, node_id=node_id)
    return await requests.submit(session, principal, saved.id, node_id=node_id)
