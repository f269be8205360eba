"""Curation for submitters: register a dataset with its files (distributions), upload each file from the browser
(SHA-256 computed in the page → presigned PUT straight to object storage → completion verifies the checksum),
see the validation findings where they apply, and publish the version. Writes go through the catalogue's
`submit_dataset`/`publish_dataset` and `storage.uploads`, judged by the policy and audited there.

Browser uploads go to object storage directly, so the S3 server must answer the CORS preflight of the portal's
origin: SeaweedFS does for every origin by default (`-s3.allowedOrigins`, default `*`); MinIO likewise
(`MINIO_API_CORS_ALLOW_ORIGIN`). A presigned URL is the credential, and CORS only decides whether a page may
read the answer, so production narrows it to the portal's origin in the server's configuration.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.datastructures import FormData

from cellcommons.access.policy import not_found
from cellcommons.auth.principal import Principal, Role
from cellcommons.catalogue import ontology, service
from cellcommons.catalogue.dataset_page import dataset_page
from cellcommons.catalogue.enums import AccessRights, PersonalDataLevel, Sensitivity
from cellcommons.catalogue.schemas import DatasetIn
from cellcommons.errors import CellCommonsError
from cellcommons.portal import loaders, presenters
from cellcommons.portal.access_pages import disease_choices
from cellcommons.portal.file_pages import FILE
from cellcommons.portal.pages import CORRECTABLE, FormErrors, Pages, form_errors
from cellcommons.storage import uploads

UPLOAD = "FileUpload"
FILE_SLOTS = 2  # file fieldsets on the form; more files: save, then edit again
MEDIA_TYPES = ("text/csv", "text/tab-separated-values", "application/vnd.apache.parquet", "application/json",
               "image/tiff", "application/octet-stream")  # fmt: skip
LISTS = ("data_types", "batches", "keywords", "standards", "clinical_trial_ids")
TEXTS = ("title", "description", "doi", "cell_type", "tissue", "donor_count", "personal_data_level",
         "access_rights", "licence")  # fmt: skip
FILE_PARTS = ("file_name", "media_type", "columns")
CONTROLS = (*TEXTS, *LISTS, "claims_isct", "conditions", "distributions",
            *(f"distributions[{i}].{part}" for i in range(FILE_SLOTS) for part in FILE_PARTS))  # fmt: skip


def _terms(prefix: str) -> list[tuple[str, str]]:
    return [(t.curie, t.label) for t in ontology.anatomy_terms().values() if t.curie.startswith(prefix)]


def _condition_choices(primary: bool) -> list[tuple[str, str, str]]:
    """DUO terms a form can state without a parameter (and DS, whose disease has its own select)."""
    return presenters.duo_choices(lambda t: t.is_primary == primary and (not t.parameter or t.shorthand == "DS"))


@dataclass
class DatasetForm:
    """The dataset form as filled in: text per field, lists as comma-separated text, files with their columns as
    lines of `name, type, sensitivity`."""

    values: dict[str, str] = field(default_factory=dict)
    primary: str = ""
    disease: str = ""
    modifiers: list[str] = field(default_factory=list)
    claims_isct: bool = False
    files: list[dict[str, str]] = field(default_factory=lambda: [{} for _ in range(FILE_SLOTS)])

    @classmethod
    def read(cls, form: FormData) -> DatasetForm:
        text = lambda name: str(form.get(name) or "").strip()  # noqa: E731
        files = [{part: text(f"distributions[{i}].{part}") for part in FILE_PARTS}
                 for i in range(FILE_SLOTS)]  # fmt: skip
        return cls(
            values={name: text(name) for name in (*TEXTS, *LISTS)}, primary=text("primary"),
            disease=text("disease"), modifiers=[str(v) for v in form.getlist("modifiers")],
            claims_isct=bool(form.get("claims_isct")), files=files,
        )  # fmt: skip

    @classmethod
    def of(cls, page) -> DatasetForm:
        """Prefilled from a dataset's latest version, for its next draft."""
        v = page.version
        values = {name: str(getattr(v, name) or "") for name in TEXTS if hasattr(v, name)}
        values |= {name: ", ".join(getattr(v, name) or []) for name in LISTS if hasattr(v, name)}
        values["personal_data_level"], values["access_rights"] = v.personal_data_level.value, v.access_rights.value
        values["doi"] = page.dataset.doi or ""
        values["batches"] = ", ".join(s.batch.lot_number for s in page.batches)
        primary = next((c for c in page.conditions if ontology.duo_term(c.term).is_primary), None)
        files = [
            {"file_name": d.file_name, "media_type": d.media_type,
             "columns": "\n".join(f"{c['name']}, {c['type']}, {c['sensitivity']}" for c in d.columns or [])}
            for d in page.distributions
        ]  # fmt: skip
        return cls(
            values=values, primary=primary.term if primary else "",
            disease=(primary.parameter or {}).get("disease", "") if primary else "",
            modifiers=[c.term for c in page.conditions if c is not primary], claims_isct=v.claims_isct,
            files=(files + [{} for _ in range(FILE_SLOTS)])[: max(FILE_SLOTS, len(files))],
        )  # fmt: skip

    def raw(self) -> dict:
        raw: dict = {name: self.values[name] for name in TEXTS if self.values.get(name)}
        raw |= {name: _split(self.values.get(name, "")) for name in LISTS}
        conditions = []
        if self.primary:
            conditions.append({"term": self.primary, **({"disease": self.disease} if self.disease else {})})
        conditions += [{"term": term} for term in self.modifiers]
        raw["conditions"], raw["claims_isct"] = conditions, self.claims_isct
        raw["distributions"] = [
            {"file_name": f["file_name"], "media_type": f.get("media_type") or "application/octet-stream",
             "columns": [_column(line) for line in f.get("columns", "").splitlines() if line.strip()]}
            for f in self.files if f.get("file_name")
        ]  # fmt: skip
        return raw


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _column(line: str) -> dict:
    """`name, type, sensitivity`; a short line leaves its missing parts out, so validation names them."""
    return dict(zip(("name", "type", "sensitivity"), (p.strip() for p in line.split(",", 2)), strict=False))


def register(portal: FastAPI, pages: Pages) -> None:
    def show_form(request: Request, form: DatasetForm, action: str, *, status: int = 200,
                  errors: FormErrors | None = None, accession: str | None = None) -> HTMLResponse:  # fmt: skip
        return pages.render(
            request, "curate_form.html", status=status, form=form, action=action, errors=errors or FormErrors(),
            accession=accession, tissues=_terms("UBERON:"), cell_types=_terms("CL:"),
            primaries=_condition_choices(True), modifiers=_condition_choices(False),
            diseases=disease_choices(), media_types=[(m, m) for m in MEDIA_TYPES],
            levels=[(x.value, x.value) for x in PersonalDataLevel], slots=range(FILE_SLOTS),
            rights=[(x.value, x.value.replace("_", " ")) for x in AccessRights], sensitivities=list(Sensitivity),
        )  # fmt: skip

    async def save(request: Request, dataset_id: uuid.UUID | None, action: str, accession: str | None) -> Response:
        principal, data = await pages.form(request, Role.submitter)
        form = DatasetForm.read(data)
        try:
            saved = await pages.committed(_submit, principal, pages.settings.node_id, form.raw(), dataset_id)
        except CORRECTABLE as exc:
            errors = form_errors(exc, CONTROLS)
            return show_form(request, form, action, status=exc.status, errors=errors, accession=accession)
        return RedirectResponse(f"/curate/{saved.record.accession}", status_code=303)

    @portal.get("/curate", response_class=HTMLResponse)
    async def curate(request: Request) -> HTMLResponse:
        principal = pages.principal(request, Role.submitter)
        async with pages.db() as db:
            rows = await loaders.own_datasets(db, principal)
        return pages.render(request, "curate.html", rows=rows)

    @portal.get("/curate/new", response_class=HTMLResponse)
    async def new(request: Request) -> HTMLResponse:
        pages.principal(request, Role.submitter)
        return show_form(request, DatasetForm(values={"access_rights": "restricted"}), "/curate/new")

    @portal.post("/curate/new")
    async def create(request: Request) -> Response:
        return await save(request, None, "/curate/new", None)

    async def own_page(principal: Principal, accession: str):
        """The dataset if it is the principal's institution's (others' datasets are not curated here)."""
        async with pages.db() as db:
            page = await dataset_page(db, principal, accession)
        if page.dataset.institution_id != principal.institution_id:
            raise not_found("dataset", accession)  # the same page as a missing one
        return page

    @portal.get("/curate/{accession}", response_class=HTMLResponse)
    async def draft(request: Request, accession: str) -> HTMLResponse:
        page = await own_page(pages.principal(request, Role.submitter), accession)
        return pages.render(
            request, "curate_dataset.html", page=page, findings=_findings_by_section(page.version.findings or []),
            file_ref=lambda d: pages.link(FILE, d.id),
        )  # fmt: skip

    @portal.get("/curate/{accession}/edit", response_class=HTMLResponse)
    async def edit(request: Request, accession: str) -> HTMLResponse:
        page = await own_page(pages.principal(request, Role.submitter), accession)
        return show_form(request, DatasetForm.of(page), f"/curate/{accession}/edit", accession=accession)

    @portal.post("/curate/{accession}/edit")
    async def update(request: Request, accession: str) -> Response:
        page = await own_page(pages.principal(request, Role.submitter), accession)
        return await save(request, page.dataset.id, f"/curate/{accession}/edit", accession)

    @portal.post("/curate/{accession}/publish")
    async def publish(request: Request, accession: str) -> Response:
        principal, _ = await pages.form(request, Role.submitter)
        page = await own_page(principal, accession)
        await pages.committed(_publish, principal, pages.settings.node_id, page.dataset.id)
        return RedirectResponse(f"/datasets/{accession}", status_code=303)

    # ---- uploads: JSON for the page's script ----------------------------------------------------------------

    @portal.post("/curate/files/{ref}/uploads")
    async def start_upload(request: Request, ref: str) -> Response:
        try:
            principal, data = await pages.form(request, Role.submitter)
            size = str(data.get("size_bytes") or "")
            ticket = await pages.committed(
                uploads.request_upload, pages.store(), pages.settings, principal, pages.key(ref, FILE, "file"),
                sha256=str(data.get("sha256") or ""), size_bytes=int(size) if size.isdigit() else -1,
            )  # fmt: skip
        except CellCommonsError as exc:
            return JSONResponse(exc.as_dict(), status_code=exc.status)
        complete = f"/curate/uploads/{pages.link(UPLOAD, ticket.upload_id)}/complete"
        return JSONResponse({"url": ticket.url, "method": ticket.method, "complete": complete})

    @portal.post("/curate/uploads/{ref}/complete")
    async def complete_upload(request: Request, ref: str) -> Response:
        try:
            principal, _ = await pages.form(request, Role.submitter)
            distribution = await pages.committed(
                uploads.complete_upload, pages.store(), pages.settings, principal, pages.key(ref, UPLOAD, "upload"),
                keep_on=(uploads.UploadRejected,),
            )  # fmt: skip
        except CellCommonsError as exc:
            return JSONResponse(exc.as_dict(), status_code=exc.status)
        return JSONResponse({"sha256": distribution.sha256, "size_bytes": distribution.size_bytes})


async def _submit(session, principal: Principal, node_id: str, raw: dict, dataset_id: uuid.UUID | None):
    editor = await service.editor(session, principal, node_id)
    return await service.submit_dataset(session, editor, service.parse(DatasetIn, raw), dataset_id)


async def _publish(session, principal: Principal, node_id: str, dataset_id: uuid.UUID):
    editor = await service.editor(session, principal, node_id)
    return await service.publish_dataset(session, editor, dataset_id)


SECTIONS = {"distributions": "files", "conditions": "conditions", "batches": "batches"}


def _findings_by_section(findings: list[dict]) -> dict[str, list[dict]]:
    """The version's stored warnings, grouped by the part of the page they concern ("about" for the rest)."""
    grouped: dict[str, list[dict]] = {}
    for finding in findings:
        head = (finding.get("field") or "").split(".")[0].split("[")[0]
        grouped.setdefault(SECTIONS.get(head, "about"), []).append(finding)
    return grouped
