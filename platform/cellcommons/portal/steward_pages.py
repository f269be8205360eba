"""The steward's queue: submitted requests for the institution's datasets with the matcher's reasons, and the
decisions: approve (the agreement's terms, the export treatment of each column sensitivity tag), reject with a
reason, or send back with a question. Only stewards reach these pages; for anyone else they do not exist."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import FormData

from cellcommons.access import decisions, requests
from cellcommons.access.models import EndOfTerm, OnwardTransfer, TransferMechanism
from cellcommons.access.schemas import DEFAULT_EXPORT_POLICY, ColumnTreatment, TermsIn
from cellcommons.auth.principal import Role
from cellcommons.catalogue.enums import Sensitivity
from cellcommons.catalogue.service import parse
from cellcommons.errors import InvalidInput
from cellcommons.portal import loaders
from cellcommons.portal.access_pages import REQUEST
from cellcommons.portal.pages import CORRECTABLE, FormErrors, Pages, form_errors

TERMS = ("effective_on", "expires_on", "transfer_mechanism", "onward_transfer", "end_of_term", "publication_terms",
         "document_reference", "covers_later_versions")  # fmt: skip
POLICY = tuple(f"export_policy.{tag.value}" for tag in Sensitivity)
TREATMENT_WORDS = {
    ColumnTreatment.drop: "Drop the column",
    ColumnTreatment.generalise: "Generalise (coarser values)",
    ColumnTreatment.pseudonymise: "Pseudonymise (keyed per agreement)",
    ColumnTreatment.keep: "Keep as is",
}


@dataclass
class TermsForm:
    values: dict[str, str] = field(default_factory=dict)

    @classmethod
    def proposed(cls, view: loaders.RequestView) -> TermsForm:
        r = view.request
        values = {"expires_on": r.period_end.isoformat(), "onward_transfer": OnwardTransfer.prohibited.value,
                  "end_of_term": EndOfTerm.destroy.value}  # fmt: skip
        values |= {f"export_policy.{tag.value}": treatment.value for tag, treatment in DEFAULT_EXPORT_POLICY.items()}
        return cls(values)

    @classmethod
    def read(cls, form: FormData) -> TermsForm:
        return cls({name: str(form.get(name) or "").strip() for name in (*TERMS, *POLICY)})

    def terms(self) -> TermsIn:
        raw: dict = {name: self.values[name] for name in TERMS if self.values.get(name)}
        raw["covers_later_versions"] = bool(self.values.get("covers_later_versions"))
        raw["export_policy"] = {p.split(".", 1)[1]: self.values[p] for p in POLICY if self.values.get(p)}
        return parse(TermsIn, raw)


def options(enum) -> list[tuple[str, str]]:
    return [(member.value, member.value.replace("_", " ")) for member in enum]


def register(portal: FastAPI, pages: Pages) -> None:
    @portal.get("/steward", response_class=HTMLResponse)
    async def queue(request: Request) -> HTMLResponse:
        principal = pages.principal(request, Role.steward)
        async with pages.db() as db:
            views = await loaders.steward_queue(db, principal)
        return pages.render(request, "steward_queue.html", views=views, ref=lambda r: pages.link(REQUEST, r.id))

    async def show(request: Request, ref: str, *, status: int = 200, errors: FormErrors | None = None,
                   terms: TermsForm | None = None) -> HTMLResponse:  # fmt: skip
        principal = pages.principal(request, Role.steward)
        async with pages.db() as db:
            view = await loaders.request_view(db, principal, pages.key(ref, REQUEST, "access request"))
        awaiting = view.awaits(principal)
        if not awaiting and status == 200:
            return RedirectResponse(f"/requests/{ref}", status_code=303)
        return pages.render(
            request, "steward_request.html", status=status, view=view, ref=ref, errors=errors or FormErrors(),
            awaiting=awaiting,
            terms=terms or TermsForm.proposed(view), sensitivities=list(Sensitivity),
            treatments=[(t.value, TREATMENT_WORDS[t]) for t in ColumnTreatment],
            mechanisms=options(TransferMechanism), onward=options(OnwardTransfer), ends=options(EndOfTerm),
        )  # fmt: skip

    @portal.get("/steward/requests/{ref}", response_class=HTMLResponse)
    async def decide_page(request: Request, ref: str) -> HTMLResponse:
        return await show(request, ref)

    async def decide(request: Request, ref: str, work, controls, read, terms_of=None) -> Response:
        principal, data = await pages.form(request, Role.steward)
        key = pages.key(ref, REQUEST, "access request")
        terms = terms_of(data) if terms_of else None
        try:
            await pages.committed(work, principal, key, read(data, terms))
        except CORRECTABLE as exc:
            errors = form_errors(exc, controls, {"terms.": ""})
            return await show(request, ref, status=exc.status, errors=errors, terms=terms)
        return RedirectResponse("/steward", status_code=303)

    @portal.post("/steward/requests/{ref}/approve")
    async def approve(request: Request, ref: str) -> Response:
        return await decide(request, ref, decisions.approve, (*TERMS, *POLICY), lambda _, t: t.terms(), TermsForm.read)

    @portal.post("/steward/requests/{ref}/reject")
    async def reject(request: Request, ref: str) -> Response:
        return await decide(request, ref, decisions.reject, ["reason"], lambda d, _: _said(d, "reason"))

    @portal.post("/steward/requests/{ref}/clarify")
    async def clarify(request: Request, ref: str) -> Response:
        return await decide(request, ref, requests.ask_clarification, ["message"], lambda d, _: _said(d, "message"))


def _said(data: FormData, name: str) -> str:
    text = str(data.get(name) or "").strip()
    if not 1 <= len(text) <= 5_000:
        raise InvalidInput("write 1 to 5000 characters", field=name)
    return text
