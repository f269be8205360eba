"""Signing out ends the session on the server: a copy of its cookie (another browser, a proxy's log) replayed
afterwards signs nobody in. The sign-in is the real one, through the dev issuer over HTTP."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import httpx
from sqlalchemy import select
from tests.graphql.conftest import api, seeded_settings  # noqa: F401  (the in-process app on its own database)
from tests.portal.test_pages import PORTAL, signed_in_over_http

from cellcommons.auth.principal import Principal, Role
from cellcommons.db import Database
from cellcommons.demo.stack import free_port
from cellcommons.portal.app import create_portal
from cellcommons.portal.models import EndedSession
from cellcommons.portal.session import SESSION_COOKIE, PortalSession, Sessions
from cellcommons.settings import Environment, Settings


async def signed_in(api, user: str = "alice") -> tuple[str, str]:  # noqa: F811
    """A session of `user` at leiden-scgt: (its Cookie header, its CSRF token)."""
    _, answer = await signed_in_over_http(api, "leiden-scgt", user)
    cookie = answer.cookies[SESSION_COOKIE]
    return f"{SESSION_COOKIE}={cookie}", Sessions(api.settings.secret_key.get_secret_value(), False).load(cookie).csrf


async def test_a_copy_of_the_cookie_replayed_after_sign_out_signs_nobody_in(api):  # noqa: F811
    client = api.client
    copy, csrf = await signed_in(api)
    elsewhere, _ = await signed_in(api)  # the same person in another browser
    assert (await client.get(f"{PORTAL}/search", headers={"Cookie": copy})).status_code == 200

    out = await client.post(f"{PORTAL}/sign-out", data={"csrf": csrf}, headers={"Cookie": copy})
    assert out.status_code == 303 and f'{SESSION_COOKIE}=""' in out.headers["set-cookie"]

    replayed = await client.get(f"{PORTAL}/search", headers={"Cookie": copy})
    assert replayed.status_code == 303 and "why=ended" in replayed.headers["location"]
    assert "You are not signed in" in (await client.get(f"{PORTAL}/me", headers={"Cookie": copy})).text
    name, value = copy.split("=", 1)
    for disguised in (f'{name}="{value}"', f"cc_login=x; {copy}; {copy}"):  # quoted, repeated: the same cookie
        page = await client.get(f"{PORTAL}/me", headers={"Cookie": disguised})
        assert "You are not signed in" in page.text, disguised
    form = await client.post(f"{PORTAL}/requests/new", data={"csrf": csrf}, headers={"Cookie": copy})
    assert form.status_code == 303 and "why=ended" in form.headers["location"]
    again = await client.post(f"{PORTAL}/sign-out", data={"csrf": csrf}, headers={"Cookie": copy})
    assert again.status_code == 303  # signing out of an ended session is no error
    # Only that session ended: the person's other one goes on.
    assert (await client.get(f"{PORTAL}/search", headers={"Cookie": elsewhere})).status_code == 200


async def test_the_check_is_one_lookup_for_a_signed_in_session_and_none_otherwise(api):  # noqa: F811
    copy, _ = await signed_in(api)

    async def statements(path: str, headers: dict) -> int:
        before = api.statements["all"]
        assert (await api.client.get(f"{PORTAL}{path}", headers=headers)).status_code == 200
        return api.statements["all"] - before

    assert await statements("/me", {"Cookie": copy}) == 1  # the page itself reads nothing
    assert await statements("/static/portal.css", {"Cookie": copy}) == 0
    assert await statements("/me", {}) == 0


async def test_ended_sessions_are_forgotten_once_their_cookies_would_have_stopped_working(api):  # noqa: F811
    database = Database(api.settings)
    try:
        async with database.unit_of_work() as db:
            db.add(EndedSession(session_id="long-over", expires_at=datetime.now(UTC) - timedelta(seconds=1)))
        copy, csrf = await signed_in(api)
        await api.client.post(f"{PORTAL}/sign-out", data={"csrf": csrf}, headers={"Cookie": copy})
        async with database.sessions() as db:
            kept = set(await db.scalars(select(EndedSession.session_id)))
    finally:
        await database.dispose()
    session_id = Sessions(api.settings.secret_key.get_secret_value(), False).load(copy.split("=", 1)[1]).session_id
    assert session_id in kept and "long-over" not in kept


async def test_a_signed_in_page_while_the_database_is_down_is_the_try_again_page():
    """The sign-out check needs the database: when it cannot answer, the outage page (503), not an unexpected
    error, and not the page as if the session were fine."""
    settings = Settings(
        _env_file=None, environment=Environment.test, database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/gone"
    )
    alice = Principal(uuid.uuid4(), "leiden-scgt", "alice", frozenset({Role.reader}))
    session = PortalSession(principal=alice, csrf="c", expires_at=time.time() + 600)
    cookie = Sessions(settings.secret_key.get_secret_value(), False).dump(session)
    database = Database(settings)
    try:
        portal = create_portal(settings, lambda: SimpleNamespace(database=database))
        transport = httpx.ASGITransport(app=portal, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            page = await client.get("/me", headers={"Cookie": f"{SESSION_COOKIE}={cookie}"})
    finally:
        await database.dispose()
    assert page.status_code == 503 and "The database is unavailable" in page.text
