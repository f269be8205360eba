"""Downloads from the portal: each button asks for a fresh presigned URL (audited) and the browser is sent to
object storage with it, so the bytes never pass through the platform; the manifest lists every file of a
version with a URL, size and SHA-256. Anyone the policy does not allow gets the page of a file that does not
exist."""

from __future__ import annotations

import json

from fastapi import FastAPI, Request
from fastapi.responses import Response

from cellcommons.catalogue.dataset_page import dataset_page
from cellcommons.errors import InvalidInput
from cellcommons.portal.pages import Pages
from cellcommons.storage import downloads

FILE = "Distribution"


def register(portal: FastAPI, pages: Pages) -> None:
    @portal.post("/files/{ref}/download")
    async def download(request: Request, ref: str) -> Response:
        return await pages.presigned(request, ref, FILE, "file", downloads.issue_download_url)

    @portal.post("/datasets/{accession}/manifest")
    async def manifest(request: Request, accession: str) -> Response:
        principal, data = await pages.form(request)
        version = _version_number(data.get("version"))
        async with pages.db() as db:
            page = await dataset_page(db, principal, accession, version)
        found = await pages.committed(
            downloads.download_manifest, pages.store(), pages.settings, principal, page.version.id
        )
        headers = {"Cache-Control": "no-store"}
        if data.get("format") == "json":
            body = {
                "dataset": accession, "version": page.version.version, "expires_at": found.expires_at.isoformat(),
                "files": [{"file_name": f.distribution.file_name, "size_bytes": f.distribution.size_bytes,
                           "sha256": f.distribution.sha256, "url": f.url} for f in found.files],
            }  # fmt: skip
            headers["Content-Disposition"] = f'attachment; filename="{accession}-v{page.version.version}.json"'
            return Response(json.dumps(body, indent=2), media_type="application/json", headers=headers)
        response = pages.render(request, "manifest.html", page=page, manifest=found)
        response.headers.update(headers)
        return response


def _version_number(value: object) -> int | None:
    if value in (None, ""):
        return None
    if not str(value).isdigit():
        raise InvalidInput("a version is a whole number", field="version")
    return int(str(value))
