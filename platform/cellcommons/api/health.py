"""`GET /readyz`: 200 when the database and object storage answer, else 503 naming what is down; either way
with the state of each partner issuer's signing keys this process uses (informational)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from cellcommons.errors import Unavailable
from cellcommons.health import probe_client, readiness

router = APIRouter()


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    resources = request.app.state.resources
    state = request.app.state
    if not hasattr(state, "probe_client"):  # one probing client per process, with its own short timeouts
        state.probe_client = probe_client(resources.settings)
    result = await readiness(resources.settings, resources.database, state.probe_client)
    issuers = resources.validator.key_status()  # reported, never a reason to be unready
    if result.ready:
        return JSONResponse({"status": "ready", "checks": result.checks, "issuers": issuers})
    error = Unavailable(f"not ready: {', '.join(f'{name} ({result.checks[name]})' for name in result.down)}")
    body = {"error": {**error.as_dict(), "down": result.down}, "checks": result.checks, "issuers": issuers}
    return JSONResponse(body, status_code=error.status, headers={"Cache-Control": "no-store"})
