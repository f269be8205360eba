"""The portal's forms over HTTP, in process, on a seeded database of this module's own (committed): what the
browser journey does not go through. Each visitor carries a signed session cookie as sign-in would set it (the
sign-in itself is exercised in tests/e2e), so every POST still needs the session's CSRF token."""

from __future__ import annotations

import hashlib
import html
import re
import time
import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from sqlalchemy import select
from tests.graphql.conftest import api, seeded_settings  # noqa: F401  (the in-process app on its own database)

from cellcommons.auth.dev_idp.users import orcid as demo_orcid
from cellcommons.auth.principal import Principal, Role
from cellcommons.catalogue.models import Institution
from cellcommons.db import Database
from cellcommons.portal.session import SESSION_COOKIE, PortalSession, Sessions

CSRF = "a-csrf-token-of-this-session"
CELLS = b"donor,marker,percent_positive\nD-1,CD73,98.1\n"
START = date.today()


@dataclass
class Visitor:
    client: httpx.AsyncClient
    cookie: str

    async def get(self, path: str) -> httpx.Response:
        return await self.client.get(path, headers={"Cookie": self.cookie})

    async def post(self, path: str, form: dict | None = None, csrf: str | None = CSRF) -> httpx.Response:
        data = dict(form or {}) | ({"csrf": csrf} if csrf is not None else {})
        return await self.client.post(path, data=data, headers={"Cookie": self.cookie})


@pytest.fixture(scope="module")
async def visit(api):  # noqa: F811
    """visit(slug, *roles) → a Visitor signed in as a member of that institution."""
    database = Database(api.settings)
    async with database.sessions() as session:
        institutions = {i.slug: i.id for i in await session.scalars(select(Institution))}
    await database.dispose()
    sessions = Sessions(api.settings.secret_key.get_secret_value(), secure=False)

    def visitor(slug: str, *roles: Role, subject: str = "person", orcid: str | None = None) -> Visitor:
        principal = Principal(
            institutions[slug], slug, f"{subject}-{slug}", frozenset({Role.reader, *roles}), orcid=orcid
        )
        session = PortalSession(principal=principal, csrf=CSRF, expires_at=time.time() + 3600)
        return Visitor(api.client, f"{SESSION_COOKIE}={sessions.dump(session)}")

    return visitor


def dataset_form(title: str, columns: str = "donor, string, quasi_identifier\nmarker, string, plain") -> dict:
    return {
        "title": title, "description": "Marker panels of bone-marrow MSC lots.", "data_types": "flow cytometry",
        "tissue": "UBERON:0002371", "cell_type": "CL:0002540", "personal_data_level": "pseudonymised",
        "access_rights": "restricted", "primary": "DUO:0000006", "distributions[0].file_name": "cells.csv",
        "distributions[0].media_type": "text/csv", "distributions[0].columns": columns,
    }  # fmt: skip


def request_form(accession: str, step: str = "submit", **changes) -> dict:
    return {
        "dataset": accession, "purpose": "DUO:0000006", "commercial_use": "no", "lay_summary": "Marker panels.",
        "period_start": START.isoformat(), "period_end": (START + timedelta(days=365)).isoformat(), "step": step,
        **changes,
    }  # fmt: skip


def error_at(html: str, control: str) -> str:
    """The error shown under a control, which the control names in aria-describedby."""
    assert re.search(rf'id="{re.escape(control)}"[^>]*aria-describedby="[^"]*{re.escape(control)}-error', html), control
    found = re.search(rf'id="{re.escape(control)}-error">(.*?)</p>', html, re.S)
    assert found, f"no error at {control}"
    return re.sub(r"<[^>]+>", "", found.group(1)).strip()


async def published_dataset(visit, title: str) -> str:
    """A Leiden dataset registered and published through the curation pages; its accession."""
    sam = visit("leiden-scgt", Role.submitter, subject="sam")
    saved = await sam.post("/curate/new", dataset_form(title))
    assert saved.status_code == 303, saved.text
    accession = saved.headers["location"].rsplit("/", 1)[-1]
    assert (await sam.post(f"/curate/{accession}/publish")).status_code == 303
    return accession


async def submitted_request(visit, accession: str, requester: Visitor) -> str:
    response = await requester.post("/requests/new", request_form(accession))
    assert response.status_code == 303, response.text
    return response.headers["location"]


async def test_forms_need_the_sessions_csrf_token_and_pages_their_role(visit):
    reader = visit("lowlands-regmed")
    assert (await reader.post("/requests/new", request_form("CCD-X"), csrf="forged")).status_code == 403
    assert (await reader.post("/requests/new", request_form("CCD-X"), csrf=None)).status_code == 403
    for path in ("/steward", "/curate", "/curate/new"):  # a reader is no steward or submitter: no such page
        response = await reader.get(path)
        assert response.status_code == 404 and "<h1>Not found</h1>" in response.text, path
    anonymous = await reader.client.get("/requests")
    assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/sign-in")


async def test_a_bad_dataset_form_comes_back_with_errors_at_their_fields_and_warnings_show_where_they_apply(visit):
    sam = visit("leiden-scgt", Role.submitter, subject="sam")
    form = dataset_form("", columns="donor, string\nmarker, string, plain") | {"primary": ""}
    response = await sam.post("/curate/new", form)
    assert response.status_code == 422
    assert error_at(response.text, "title") == "Error: This is required"
    assert error_at(response.text, "distributions-0-columns") == "Error: Item 1, sensitivity: this is required"
    assert error_at(response.text, "conditions")  # no primary data-use term
    assert 'value="flow cytometry"' in response.text  # what was typed stays
    assert "Marker panels of bone-marrow" not in (await sam.get("/curate")).text

    # A warning does not block the save: it is kept with the version and shown where it applies.
    columns = "donor, string, quasi_identifier\nhospital_number, string, direct_identifier"
    saved = await sam.post("/curate/new", dataset_form("BM-MSC panel with a warning", columns=columns))
    assert saved.status_code == 303
    page = (await sam.get(saved.headers["location"])).text
    files = page[page.index('<section aria-labelledby="files">') :]
    files = files[: files.index("</section>")]
    assert "column &#39;hospital_number&#39; is a direct identifier" in files and "finding-warning" in files


async def test_the_request_shows_its_orcid_and_whether_the_sign_in_vouched_for_it(visit):
    accession = await published_dataset(visit, "BM-MSC panel for an ORCID")
    vouched, typed = "0000-0002-1825-0097", "0000-0002-1694-233X"
    carol = visit("lowlands-regmed", subject="carol", orcid=vouched)
    form = (await carol.get(f"/datasets/{accession}/request")).text
    assert f"sign-in vouches for {vouched}; left empty, the request uses it" in form
    page = await submitted_request(visit, accession, carol)  # the form leaves the ORCID empty
    assert f"{vouched} (vouched for by the requester&#39;s institution at sign-in)" in (await carol.get(page)).text
    stella = visit("leiden-scgt", Role.steward, subject="stella")
    ref = page.rsplit("/", 1)[-1]
    assert "vouched for by the requester&#39;s institution" in (await stella.get(f"/steward/requests/{ref}")).text
    dave = visit("lowlands-regmed", subject="dave")
    typed_page = (await dave.post("/requests/new", request_form(accession, orcid=typed))).headers["location"]
    assert f"{typed} (typed in by the requester)" in (await dave.get(typed_page)).text


async def test_a_question_sends_the_request_back_and_the_requester_resubmits_then_is_rejected(visit):
    accession = await published_dataset(visit, "BM-MSC panel for a clarification")
    alice = visit("lowlands-regmed", subject="alice")
    stella = visit("leiden-scgt", Role.steward, subject="stella")
    page = await submitted_request(visit, accession, alice)
    ref = page.rsplit("/", 1)[-1]
    assert "Marker panels." in (await stella.get("/steward")).text

    empty = await stella.post(f"/steward/requests/{ref}/clarify", {"message": "  "})
    assert empty.status_code == 422 and "1 to 5000 characters" in error_at(empty.text, "message")
    asked = await stella.post(f"/steward/requests/{ref}/clarify", {"message": "Which lots exactly?"})
    assert asked.status_code == 303
    assert "Which lots exactly?" in (await alice.get("/notifications")).text
    draft = (await alice.get(page)).text
    assert "Draft" in draft and f"/requests/{ref}/edit" in draft and "Which lots exactly?" in draft

    resubmitted = await alice.post(f"/requests/{ref}/edit", request_form(accession, lay_summary="Lots L1 and L2."))
    assert resubmitted.status_code == 303
    assert "Lots L1 and L2." in (await stella.get("/steward")).text
    rejected = await stella.post(f"/steward/requests/{ref}/reject", {"reason": "Out of scope for this cohort."})
    assert rejected.status_code == 303
    assert "Rejected" in (await alice.get(page)).text
    assert "rejected your access request: Out of scope" in (await alice.get("/notifications")).text
    again = await stella.post(f"/steward/requests/{ref}/reject", {"reason": "Twice."})  # decided already
    assert again.status_code == 409 and "A rejected request cannot be decided" in again.text
    assert "/reject" not in again.text  # no forms for a request that waits for no decision


async def test_terms_that_break_the_rules_come_back_at_their_fields_then_approval_makes_the_agreement(visit):
    accession = await published_dataset(visit, "BM-MSC panel for terms")
    alice = visit("lowlands-regmed", subject="alice")
    stella = visit("leiden-scgt", Role.steward, subject="stella")
    ref = (await submitted_request(visit, accession, alice)).rsplit("/", 1)[-1]
    terms = {
        "expires_on": (START + timedelta(days=1)).isoformat(), "effective_on": (START + timedelta(days=2)).isoformat(),
        "onward_transfer": "prohibited", "end_of_term": "destroy", "export_policy.direct_identifier": "keep",
        "export_policy.quasi_identifier": "pseudonymise", "export_policy.sensitive": "drop",
        "export_policy.plain": "keep",
    }  # fmt: skip
    refused = await stella.post(f"/steward/requests/{ref}/approve", terms)
    assert refused.status_code == 422
    assert "never exported" in error_at(refused.text, "export_policy-direct_identifier")
    assert "expire after it takes effect" in error_at(refused.text, "expires_on")
    assert 'value="keep" selected' in refused.text  # the steward's choices stay
    approved = await stella.post(
        f"/steward/requests/{ref}/approve",
        terms | {"export_policy.direct_identifier": "drop", "expires_on": (START + timedelta(days=90)).isoformat(),
                 "effective_on": ""},
    )  # fmt: skip
    assert approved.status_code == 303
    agreements = (await alice.get("/agreements")).text
    assert accession in agreements and "direct identifier: drop" in agreements and "In force until" in agreements
    assert "expires soon" not in agreements

    # An export under it: queued for the worker; for another institution the job does not exist.
    start = re.search(r'href="(/exports/new\?agreement=[^"]+)"', agreements).group(1).replace("&amp;", "&")
    form = await alice.get(start)
    assert form.status_code == 200 and 'value="catalogue" checked' in form.text  # no uploaded file: the lots
    agreement_ref = re.search(r'name="agreement" value="([^"]+)"', form.text).group(1)
    queued = await alice.post("/exports/new", {"agreement": agreement_ref, "dataset": accession, "source": "catalogue"})
    assert queued.status_code == 303
    job = queued.headers["location"]
    assert (await alice.get(f"{job}/status")).json() == {
        "status": "queued",
        "finished": False,
        "words": "Waiting for a worker to start it.",
    }
    early = await alice.post(f"{job}/download")
    assert early.status_code == 409 and "only a succeeded export has a file" in early.text
    stranger = visit("stroma-bio", subject="eve")
    for path in (job, f"{job}/status", "/exports/Export_AAAAAAAAAAAAAAAAAAAAAA"):
        assert (await stranger.get(path)).status_code == 404, path
    refused = await stranger.post(
        "/exports/new", {"agreement": agreement_ref, "dataset": accession, "source": "catalogue"}
    )
    assert refused.status_code == 404 and "<h1>Not found</h1>" in refused.text


async def test_uploads_answer_the_pages_script_in_json_and_a_wrong_checksum_is_refused(visit, api):  # noqa: F811
    sam = visit("leiden-scgt", Role.submitter, subject="sam")
    saved = await sam.post("/curate/new", dataset_form("BM-MSC panel for uploads"))
    accession = saved.headers["location"].rsplit("/", 1)[-1]
    page = (await sam.get(f"/curate/{accession}")).text
    start = re.search(r'action="(/curate/files/[^"]+/uploads)"', page).group(1)

    bad = await sam.post(start, {"sha256": "not-a-checksum", "size_bytes": "3"})
    assert bad.status_code == 422 and bad.json()["field"] == "sha256"
    declared = {"sha256": hashlib.sha256(CELLS).hexdigest(), "size_bytes": str(len(CELLS))}
    ticket = (await sam.post(start, declared)).json()
    early = await sam.post(ticket["complete"])
    assert early.status_code == 409 and "nothing has been uploaded" in early.json()["message"]
    async with httpx.AsyncClient() as http:
        assert (await http.put(ticket["url"], content=CELLS[::-1])).status_code == 200  # not the declared bytes
    wrong = await sam.post(ticket["complete"])
    assert wrong.status_code == 422 and wrong.json()["code"] == "checksum_mismatch"
    again = await sam.post(ticket["complete"])  # the rejection was recorded
    assert again.status_code == 409 and "already rejected" in again.json()["message"]

    ticket = (await sam.post(start, declared)).json()
    async with httpx.AsyncClient() as http:
        assert (await http.put(ticket["url"], content=CELLS)).status_code == 200
    done = await sam.post(ticket["complete"])
    assert done.json() == {"sha256": declared["sha256"], "size_bytes": len(CELLS)}
    assert declared["sha256"] in (await sam.get(f"/curate/{accession}")).text

    assert (await sam.post(f"/curate/{accession}/publish")).status_code == 303
    manifest = await sam.post(f"/datasets/{accession}/manifest", {"version": "1", "format": "json"})
    assert manifest.headers["content-disposition"] == f'attachment; filename="{accession}-v1.json"'
    (entry,) = manifest.json()["files"]
    assert entry["sha256"] == declared["sha256"] and entry["size_bytes"] == len(CELLS)
    async with httpx.AsyncClient() as http:
        assert (await http.get(entry["url"])).content == CELLS


async def test_a_csrf_token_or_sign_in_state_of_any_characters_is_refused_as_such_never_a_500(visit, api):  # noqa: F811
    reader = visit("lowlands-regmed")
    for token in ("é" * 8, CSRF + "é"):  # constant-time comparison of str refuses non-ASCII: not a crash
        refused = await reader.post("/requests/new", request_form("CCD-X"), csrf=token)
        assert refused.status_code == 403 and "This form has expired" in refused.text
    sessions = Sessions(api.settings.secret_key.get_secret_value(), secure=False)
    login = sessions.start_login({"issuer": "http://127.0.0.1:1", "state": "s", "verifier": "v", "redirect_uri": "/"})
    answer = await api.client.get("/auth/callback?code=c&state=%C3%A9", headers={"Cookie": f"cc_login={login}"})
    assert answer.status_code == 422 and "does not belong to this browser" in answer.text


async def test_a_sign_in_the_issuer_refused_or_the_person_cancelled_says_so(api):  # noqa: F811
    sessions = Sessions(api.settings.secret_key.get_secret_value(), secure=False)
    login = sessions.start_login({"issuer": "http://127.0.0.1:1", "state": "s", "verifier": "v", "redirect_uri": "/"})
    cancelled = await api.client.get(
        "/auth/callback?error=access_denied&state=s", headers={"Cookie": f"cc_login={login}"}
    )
    assert cancelled.status_code == 422 and "Your institution did not sign you in" in cancelled.text


async def test_the_sign_in_page_says_why_in_its_own_words_only(api):  # noqa: F811
    sent = await api.client.get("/requests")
    assert sent.status_code == 303 and "why=required" in sent.headers["location"]
    assert "Sign in to see the catalogue." in (await api.client.get(sent.headers["location"])).text
    sessions = Sessions(api.settings.secret_key.get_secret_value(), secure=False)
    alice = Principal(uuid.uuid4(), "lowlands-regmed", "alice", frozenset({Role.reader}))
    over = sessions.dump(PortalSession(principal=alice, csrf=CSRF, expires_at=time.time() - 1))
    ended = await api.client.get("/requests", headers={"Cookie": f"{SESSION_COOKIE}={over}"})
    assert ended.status_code == 303 and "why=ended" in ended.headers["location"]
    page = await api.client.get(ended.headers["location"], headers={"Cookie": f"{SESSION_COOKIE}={over}"})
    assert "Your session has ended." in page.text and ">Sign in</a>" in page.text and "Sign out" not in page.text
    crafted = await api.client.get("/sign-in", params={"why": "your account is locked; call +31 20 555 0100"})
    assert crafted.status_code == 200
    assert "account is locked" not in crafted.text and 'class="notice"' not in crafted.text


PORTAL = "http://127.0.0.1:8000"  # a loopback origin the dev issuer accepts as the portal's redirect URI


async def signed_in_over_http(api, slug: str, user: str, path: str = "/sign-in") -> tuple[str, httpx.Response]:  # noqa: F811
    """The sign-in as a browser runs it: the anonymous session's form, the issuer, the callback. (The anonymous
    session cookie, the callback's answer.)"""
    client = api.client
    client.cookies.clear()  # every sign-in starts as a new visitor; cookies travel in headers, as elsewhere here
    page = await client.get(f"{PORTAL}{path}")
    anonymous = page.cookies[SESSION_COOKIE]
    hidden = {
        name: html.unescape(value)
        for name, value in re.findall(r'type="hidden" name="([^"]+)" value="([^"]*)"', page.text)
    }
    cookie = f"{SESSION_COOKIE}={anonymous}"
    started = await client.post(f"{PORTAL}/sign-in", data={**hidden, "institution": slug}, headers={"Cookie": cookie})
    assert started.status_code == 303, started.text
    async with httpx.AsyncClient() as http:
        issued = await http.get(f"{started.headers['location']}&login_hint={user}")
    assert issued.status_code == 302, issued.text
    cookie += f"; cc_login={started.cookies['cc_login']}"
    answer = await client.get(issued.headers["location"], headers={"Cookie": cookie})
    client.cookies.clear()
    return anonymous, answer


async def test_signing_in_gives_the_session_a_csrf_token_of_its_own(api):  # noqa: F811
    anonymous, answer = await signed_in_over_http(api, "leiden-scgt", "alice")
    assert answer.status_code == 303 and answer.headers["location"] == "/search"
    sessions = Sessions(api.settings.secret_key.get_secret_value(), secure=False)
    before, after = sessions.load(anonymous), sessions.load(answer.cookies[SESSION_COOKIE])
    assert after.signed_in and after.principal.institution_slug == "leiden-scgt"
    # A token known before sign-in (set by a script on a sibling host, read from a shared page) is worth nothing.
    assert after.csrf != before.csrf


async def test_the_session_keeps_the_orcid_the_sign_in_vouched_for(api):  # noqa: F811
    _, answer = await signed_in_over_http(api, "leiden-scgt", "alice")
    session = Sessions(api.settings.secret_key.get_secret_value(), secure=False).load(answer.cookies[SESSION_COOKIE])
    assert session.signed_in and session.principal.orcid == demo_orcid("leiden-scgt", "alice") is not None


async def test_sign_in_returns_to_the_page_that_asked_for_it_and_only_to_a_page_of_this_site(api):  # noqa: F811
    asked = await api.client.get(f"{PORTAL}/search?q=marrow&sort=newest")
    assert asked.status_code == 303
    sign_in_page = asked.headers["location"]
    assert parse_qs(urlsplit(sign_in_page).query)["next"] == ["/search?q=marrow&sort=newest"]
    _, answer = await signed_in_over_http(api, "leiden-scgt", "alice", sign_in_page)
    assert answer.status_code == 303 and answer.headers["location"] == "/search?q=marrow&sort=newest"

    for elsewhere in ("//evil.example/x", "/\\evil.example", "https://evil.example/", "/\tevil", "search"):
        page = await api.client.get(f"{PORTAL}/sign-in", params={"next": elsewhere})
        assert 'name="next"' not in page.text, elsewhere
        _, answer = await signed_in_over_http(api, "leiden-scgt", "alice", f"/sign-in?{urlencode({'next': elsewhere})}")
        assert answer.headers["location"] == "/search", elsewhere

    # A form's POST is not replayed after sign-in: the sign-in page is asked without a return path.
    posted = await api.client.post(f"{PORTAL}/requests/new", data={"csrf": "x"})
    assert posted.status_code == 303 and "next=" not in posted.headers["location"]


async def test_what_the_framework_refuses_is_the_portals_own_error_page(visit, api):  # noqa: F811
    reader = visit("lowlands-regmed")
    missing = await reader.get("/datasets/CCD-NO-SUCH")
    for path in ("/no/such/page", "/static/no-such.css"):
        unknown = await reader.get(path)  # the same page as a missing (or hidden) record
        assert (unknown.status_code, unknown.text) == (missing.status_code, missing.text), path
    unreadable = await reader.get("/datasets/CCD-NO-SUCH?version=latest")
    assert unreadable.status_code == 422 and unreadable.headers["content-type"].startswith("text/html")
    assert "Version is not valid here." in unreadable.text
    no_institution = await reader.post("/sign-in", {})
    assert no_institution.status_code == 422 and "Institution is required." in no_institution.text
    wrong_method = await api.client.put("/search")
    assert wrong_method.status_code == 405 and "<h1>That did not work</h1>" in wrong_method.text
    assert wrong_method.headers["allow"] == "GET"


async def test_a_form_body_over_the_limit_is_refused_before_it_is_read(visit, api):  # noqa: F811
    # Each field under Starlette's 1 MB part size, so only the body's size can refuse it.
    fields = {f"padding{i}": "x" * 900_000 for i in range(3)}
    anonymous = await api.client.post("/sign-in", data={"institution": "x", **fields})
    assert anonymous.status_code == 413
    reader = visit("lowlands-regmed")
    huge = await reader.post("/requests/new", request_form("CCD-X") | fields)
    assert huge.status_code == 413
    fits = await reader.post("/requests/new", request_form("CCD-X", lay_summary="x" * 20_000))
    assert fits.status_code == 404  # read and answered: there is no such dataset
