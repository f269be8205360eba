"""What every portal page needs: the session's principal, CSRF-checked forms, rendering, the database and the
object store, opaque ids in URLs, and form errors tied to the controls they concern."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData

from cellcommons.auth.principal import Principal, Role
from cellcommons.db import committed
from cellcommons.errors import CellCommonsError, Conflict, Forbidden, InvalidInput, NotFound, ValidationFailed
from cellcommons.graphql.ids import Identifiers
from cellcommons.portal.session import MAX_SESSION_SECONDS, SESSION_COOKIE, PortalSession, Sessions, csrf_ok
from cellcommons.settings import Settings
from cellcommons.storage.object_store import ObjectStore

# What a form answers on its own page, at the fields: input to correct (422), or a state that changed under the
# person (409). Anything else (403, 404, 503) is the error page.
CORRECTABLE = (InvalidInput, ValidationFailed, Conflict)


# Why the sign-in page was sent to: its URL names the reason, never the words, so that no link can make the
# platform's own page say what its author wants ("your account is locked, call …").
SIGN_IN_REASONS = {"ended": "your session has ended", "required": "sign in to see the catalogue"}


class SignInRequired(CellCommonsError):
    code = "sign_in_required"
    status = 401

    def __init__(self, reason: str):
        super().__init__(SIGN_IN_REASONS[reason], field="session")
        self.reason = reason


def signed_in(session: PortalSession) -> Principal:
    if not session.signed_in:
        raise SignInRequired("ended" if session.principal else "required")
    return session.principal


@dataclass
class Pages:
    """Shared by the route modules; one per portal."""

    settings: Settings
    resources: Callable[[], Any]
    templates: Environment
    sessions: Sessions
    ids: Identifiers

    def session(self, request: Request) -> PortalSession:
        return self.sessions.load(request.cookies.get(SESSION_COOKIE))

    def principal(self, request: Request, role: Role | None = None) -> Principal:
        """The signed-in principal; with `role`, one who holds it (others get the page as if it did not exist)."""
        principal = signed_in(self.session(request))
        if role is not None and not principal.has(role):
            raise NotFound("there is no such page for you", field="path")
        return principal

    def render(self, request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        session = self.session(request)
        html = self.templates.get_template(name).render(session=session, request=request, **context)
        response = HTMLResponse(html, status_code=status)
        # An anonymous visitor (new, or whose session ended) keeps one CSRF token across the pages it sees.
        if session.principal is None:
            cookie = self.sessions.dump(session)
            response.set_cookie(SESSION_COOKIE, cookie, **self.sessions.cookie_options(MAX_SESSION_SECONDS))
        return response

    def require_csrf(self, request: Request, token: str | None) -> PortalSession:
        session = self.session(request)
        if not csrf_ok(session, token):
            raise Forbidden("this form has expired; reload the page and try again", field="csrf")
        return session

    async def form(self, request: Request, role: Role | None = None) -> tuple[Principal, FormData]:
        """A POSTed form from a signed-in principal (holding `role`, if given), its CSRF token checked."""
        principal = self.principal(request, role)
        form = await request.form()
        token = form.get("csrf")
        self.require_csrf(request, token if isinstance(token, str) else None)
        return principal, form

    def db(self) -> AsyncSession:
        """A session for reading; writes go through `committed`."""
        return self.resources().database.sessions()

    async def committed(self, work: Callable[..., Awaitable[Any]], *args: Any, keep_on: tuple = (), **kw: Any) -> Any:
        """`work` in a transaction of its own (`db.committed`)."""
        async with self.db() as session:
            return await committed(session, work, *args, keep_on=keep_on, **kw)

    async def presigned(self, request: Request, ref: str, type_name: str, what: str, issue: Callable) -> Response:
        """A download button: `issue` (a service that audits and signs) gives a fresh URL, the browser goes there."""
        principal, _ = await self.form(request)
        key = self.key(ref, type_name, what)
        issued = await self.committed(issue, self.store(), self.settings, principal, key)
        # 303: the browser GETs it straight from object storage; a URL is a credential, so it is never cached.
        return RedirectResponse(issued.url, status_code=303, headers={"Cache-Control": "no-store"})

    def store(self) -> ObjectStore:
        return ObjectStore.shared(self.settings)

    def link(self, type_name: str, key: uuid.UUID) -> str:
        return self.ids.global_id(type_name, key)

    def key(self, value: str, type_name: str, what: str) -> uuid.UUID:
        """The row id behind an opaque id in a URL; anything else is the page of something that does not exist."""
        try:
            parsed, key = self.ids.parse_global_id(value)
        except CellCommonsError:
            parsed, key = None, None
        if parsed != type_name:
            raise NotFound(f"no {what} here", field="path")
        return key


# ---- form errors next to their controls -------------------------------------------------------------------------

_SEGMENT = re.compile(r"[^A-Za-z0-9_]+")


def control_id(path: str) -> str:
    """`distributions[0].file_name` → `distributions-0-file_name`: an HTML id for the control of a field path."""
    return _SEGMENT.sub("-", path).strip("-")


@dataclass
class FormErrors:
    """Messages by control id, and those that belong to no control (shown in the summary only)."""

    by_control: dict[str, list[str]] = field(default_factory=dict)
    general: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.by_control or self.general)

    def of(self, control: str) -> list[str]:
        return self.by_control.get(control, [])

    def summary(self) -> list[tuple[str | None, str]]:
        """(control id to link to, message) for the summary at the top of the form."""
        return [(c, m) for c, ms in self.by_control.items() for m in ms] + [(None, m) for m in self.general]


def form_errors(exc: CellCommonsError, controls: Iterable[str], rename: dict[str, str] | None = None) -> FormErrors:
    """The error's findings attached to the form's controls (field paths): a finding on `columns[2].type` belongs
    to the control `columns` when there is no finer one. `rename` maps prefixes of the service's field names to
    the form's (`{"terms.": ""}`)."""
    controls = sorted(controls, key=len, reverse=True)
    findings = exc.findings if isinstance(exc, ValidationFailed) else [exc]
    errors = FormErrors()
    for finding in findings:
        path = finding.field or ""
        for prefix, replacement in (rename or {}).items():
            if path.startswith(prefix):
                path = replacement + path[len(prefix) :]
        owner = next((c for c in controls if path == c or path.startswith((c + ".", c + "["))), None)
        message = _readable(finding, path, owner or "")
        if owner is None:
            errors.general.append(message)
        else:
            errors.by_control.setdefault(control_id(owner), []).append(message)
    return errors


_PART = re.compile(r"\[(\d+)\]|([A-Za-z_]+)")


def _readable(finding: Any, path: str, owner: str) -> str:
    """The message without the field name the services put first; a part inside the control is named
    ("Item 2, sensitivity: this is required")."""
    message = "this is required" if getattr(finding, "code", None) == "missing" else finding.message
    for name in {finding.field, path} - {None, ""}:
        if message.startswith(name + ": "):
            message = message[len(name) + 2 :]
    inside = path[len(owner) :] if owner and path.startswith(owner) else ""
    words = [f"item {int(index) + 1}" if index else name.replace("_", " ") for index, name in _PART.findall(inside)]
    if words:
        message = f"{', '.join(words)}: {message}"
    return message[:1].upper() + message[1:]
