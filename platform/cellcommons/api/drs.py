"""GA4GH Data Repository Service (DRS) v1, read only: dataset files as DRS objects, under the platform's policy.

A DRS object is a distribution with a verified file; its id is the distribution's GraphQL global id, so the same
opaque id works in both APIs. Whoever may see the distribution's metadata gets the object (size, SHA-256, name,
type); `access_methods` are listed only for principals who may download, and `…/access/{access_id}` issues an
audited presigned URL exactly like the GraphQL `downloadUrl`. A hidden object answers 404 like a missing one.
Errors use the DRS shape `{"msg", "status_code"}`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from cellcommons import __version__
from cellcommons.auth.principal import Principal
from cellcommons.errors import CellCommonsError, Conflict, NotFound
from cellcommons.graphql.ids import Identifiers
from cellcommons.storage import downloads, repository
from cellcommons.storage.object_store import ObjectStore

ACCESS_ID = "presigned"  # the one access method: a presigned HTTPS GET on object storage
DISTRIBUTION = "Distribution"


Work = Callable[[AsyncSession, Principal | None], Awaitable[dict]]


async def _answer(request: Request, work: Work) -> dict | JSONResponse:
    """Run `work` for the caller in one transaction; domain errors in the DRS shape."""
    from cellcommons.api.app import current_principal, error_headers  # the app module includes this router

    try:
        principal = await current_principal(request)
        async with request.app.state.resources.database.unit_of_work() as session:
            return await work(session, principal)
    except CellCommonsError as exc:
        # The platform's headers (a 401 carries the RFC 6750 Bearer challenge), DRS's body; DRS knows 400 for a
        # malformed request where the platform says 422.
        status = 400 if exc.status == 422 else exc.status
        return JSONResponse({"msg": exc.message, "status_code": status}, status_code=status, headers=error_headers(exc))


router = APIRouter(prefix="/ga4gh/drs/v1", tags=["GA4GH DRS"])


def _distribution_key(request: Request, object_id: str):
    ids = Identifiers(request.app.state.resources.settings.secret_key.get_secret_value())
    type_name, key = ids.parse_global_id(object_id, "object_id")
    if type_name != DISTRIBUTION:
        raise _no_object()
    return key


def _no_object() -> NotFound:
    return NotFound("no DRS object with this id", field="object_id")


@router.get("/service-info")
async def service_info(request: Request) -> dict:
    host = urlsplit(request.app.state.resources.settings.issuer_url).netloc
    return {
        "id": f"{'.'.join(reversed(host.split(':')[0].split('.')))}.cellcommons.drs",
        "name": "Cell Commons DRS",
        "type": {"group": "org.ga4gh", "artifact": "drs", "version": "1.4.0"},
        "organization": {"name": "Cell Commons", "url": request.app.state.resources.settings.issuer_url},
        "version": __version__,
    }


@router.get("/objects/{object_id}")
async def get_object(request: Request, object_id: str):
    async def work(session: AsyncSession, principal: Principal | None) -> dict:
        key = _distribution_key(request, object_id)
        view = await downloads.visible_file(session, principal, key)
        if view is None or view.distribution.storage_key is None:
            raise _no_object()  # a file not uploaded yet has no checksum, so it is no DRS object yet
        return _drs_object(request, object_id, view)

    return await _answer(request, work)


@router.get("/objects/{object_id}/access/{access_id}")
async def get_access_url(request: Request, object_id: str, access_id: str):
    async def work(session: AsyncSession, principal: Principal | None) -> dict:
        key = _distribution_key(request, object_id)
        if access_id != ACCESS_ID:
            raise NotFound("no such access method for this object", field="access_id")
        settings = request.app.state.resources.settings
        store = ObjectStore.shared(settings)
        try:
            link = await downloads.issue_download_url(session, store, settings, principal, key)
        except (NotFound, Conflict):  # not downloadable, or no content yet (Conflict): as `get_object` says
            raise _no_object() from None
        return {"url": link.url}

    return await _answer(request, work)


def _drs_object(request: Request, object_id: str, view: repository.FileView) -> dict:
    distribution, version = view.distribution, view.version
    host = urlsplit(request.app.state.resources.settings.issuer_url).netloc
    body = {
        "id": object_id,
        "name": distribution.file_name,
        "self_uri": f"drs://{host}/{object_id}",
        "size": distribution.size_bytes,
        "created_time": (version.published_at or version.created_at).isoformat(),
        "mime_type": distribution.media_type,
        "version": str(version.version),
        "checksums": [{"type": "sha-256", "checksum": distribution.sha256}],
    }
    if view.downloadable:
        body["access_methods"] = [{"type": "https", "access_id": ACCESS_ID}]
    return body
