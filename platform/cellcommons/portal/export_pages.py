"""Parquet exports under an agreement: request one (a tabular file of the dataset, or its linked lots with their
QC results from the catalogue), watch it run, download the result. The `exports` service checks the
agreement, coverage and the column policy; a worker (`cellcommons worker`) writes the file.

The progress page works without JavaScript (a "Check again" link; the page says where the job is). It does not
refresh itself with `<meta http-equiv="refresh">`: a timed refresh the reader cannot stop fails WCAG 2.2.1
(axe-core's `meta-refresh`, critical). A small script instead asks the status endpoint every few seconds,
announces the progress in a live region and reloads the page once the job has finished.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from cellcommons.auth.principal import Principal
from cellcommons.catalogue.dataset_page import dataset_page
from cellcommons.errors import InvalidInput
from cellcommons.exports import service as exports
from cellcommons.exports.models import BadRows, ExportStatus
from cellcommons.exports.sources import is_tabular
from cellcommons.portal import loaders
from cellcommons.portal.file_pages import FILE
from cellcommons.portal.pages import CORRECTABLE, FormErrors, Pages, form_errors

EXPORT, AGREEMENT = "Export", "Agreement"
CATALOGUE = "catalogue"  # the source choice for the linked lots and their QC results
FINISHED = {ExportStatus.succeeded, ExportStatus.failed}


def register(portal: FastAPI, pages: Pages) -> None:
    async def form_page(request: Request, principal: Principal, agreement_ref: str, accession: str, *,
                        status: int = 200, errors: FormErrors | None = None, chosen: str = ""):  # fmt: skip
        key = pages.key(agreement_ref, AGREEMENT, "agreement")
        async with pages.db() as db:
            agreement = await loaders.agreement_view(db, principal, key)
            page = await dataset_page(db, principal, accession)
        tabular = [d for d in page.distributions if d.storage_key and is_tabular(d.media_type, d.file_name)]
        sources = [(pages.link(FILE, d.id), d) for d in tabular]
        return pages.render(
            request, "export_form.html", status=status, agreement=agreement, page=page, sources=sources,
            agreement_ref=agreement_ref, errors=errors or FormErrors(), catalogue=CATALOGUE,
            chosen=chosen or (sources[0][0] if sources else CATALOGUE),
        )  # fmt: skip

    @portal.get("/exports/new", response_class=HTMLResponse)
    async def new(request: Request, agreement: str = "", dataset: str = "") -> HTMLResponse:
        return await form_page(request, pages.principal(request), agreement, dataset)

    @portal.post("/exports/new")
    async def create(request: Request) -> Response:
        principal, data = await pages.form(request)
        agreement_ref, accession = str(data.get("agreement") or ""), str(data.get("dataset") or "")
        source = str(data.get("source") or "")
        try:
            async with pages.db() as db:
                page = await dataset_page(db, principal, accession)
            job = await pages.committed(
                exports.request_export, pages.settings, principal,
                agreement_id=pages.key(agreement_ref, AGREEMENT, "agreement"), dataset_version_id=page.version.id,
                distribution_id=None if source == CATALOGUE else pages.key(source, FILE, "file"),
                bad_rows=_bad_rows(data.get("bad_rows")),
            )  # fmt: skip
        except CORRECTABLE as exc:
            errors = form_errors(exc, ["source", "bad_rows"], {"distributionId": "source", "badRows": "bad_rows"})
            return await form_page(request, principal, agreement_ref, accession, status=exc.status, errors=errors,
                                   chosen=source)  # fmt: skip
        return RedirectResponse(f"/exports/{pages.link(EXPORT, job.id)}", status_code=303)

    @portal.get("/exports", response_class=HTMLResponse)
    async def listing(request: Request) -> HTMLResponse:
        principal = pages.principal(request)
        async with pages.db() as db:
            jobs = await exports.list_exports(db, principal)
        return pages.render(request, "exports.html", jobs=jobs, ref=lambda job: pages.link(EXPORT, job.id))

    async def job_of(request: Request, ref: str):
        principal = pages.principal(request)
        async with pages.db() as db:
            return await exports.get_export(db, principal, pages.key(ref, EXPORT, "export"))

    @portal.get("/exports/{ref}", response_class=HTMLResponse)
    async def progress(request: Request, ref: str) -> HTMLResponse:
        job = await job_of(request, ref)
        finished = job.status in FINISHED
        return pages.render(request, "export.html", job=job, ref=ref, finished=finished, words=progress_words(job))

    @portal.get("/exports/{ref}/status")
    async def status(request: Request, ref: str) -> JSONResponse:
        """For the progress page's script: where the job is, in numbers and in words."""
        job = await job_of(request, ref)
        return JSONResponse(
            {"status": job.status.value, "finished": job.status in FINISHED, "words": progress_words(job)},
            headers={"Cache-Control": "no-store"},
        )

    @portal.post("/exports/{ref}/download")
    async def download(request: Request, ref: str) -> Response:
        return await pages.presigned(request, ref, EXPORT, "export", exports.issue_export_download_url)


def progress_words(job) -> str:
    rows = f"{job.rows_written:,} row{'s' if job.rows_written != 1 else ''}"
    return {
        ExportStatus.queued: "Waiting for a worker to start it.",
        ExportStatus.running: f"Running: {rows} written so far.",
        ExportStatus.succeeded: f"Finished: {rows} written.",
        ExportStatus.failed: "Failed.",
    }[job.status]


def _bad_rows(value: object) -> BadRows:
    try:
        return BadRows(str(value or BadRows.fail.value))
    except ValueError:
        raise InvalidInput("choose fail or quarantine", field="bad_rows") from None
