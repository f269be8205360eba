"""The `castor` connector against a local HTTP server that follows Castor EDC's documented API shapes:
`POST /oauth/token` (client credentials in the form → `access_token`, `expires_in`), bearer-token API calls
answering 401 once a token expired, HAL JSON participant pages (`_embedded.participants`, `_links.next.href`,
`page`, `page_count`, `total_items`; each participant with `participant_id`, `updated_on`, `archived`), and the
study export endpoints `export/structure` and `export/data` answering `;`-separated CSV."""

from __future__ import annotations

import csv
import io
import secrets
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select
from tests.sync.conftest import BM_MSC, BONE_MARROW
from tests.sync.partner_api import THROTTLED, Answer, PartnerServer, Request, recording_runtime, register

from cellcommons.catalogue.models import Batch
from cellcommons.sync.models import QuarantinedRecord, RunStatus, SyncRecord
from cellcommons.sync.pages import TOMBSTONE

STUDY = "1B2C3D4E-5F60-4A7B-8C9D-0E1F2A3B4C5D"
CLIENT_ID, CLIENT_SECRET = "C0FFEE00-1111-2222-3333-444455556666", "s3cr3t-castor-client"
VARIABLES = {"F1": "lot", "F2": "product", "F3": "storage_k", "F4": "status", "F5": "passage"}
MAPPING = {
    "columns": {"lot": "lot_number", "product": "product_name", "storage_k": "storage_temperature_c",
                "status": "release_status", "passage": "passage"},
    "constants": {"cell_type": BM_MSC, "tissue": BONE_MARROW},
    "enums": {"release_status": {"1": "quarantine", "2": "released"}},
    "units": {"storage_temperature_c": "K"},
}  # fmt: skip


def study_values(lot: str, **values: str) -> dict[str, str]:
    return {"lot": lot, "product": f"BM-MSC lot {lot}", "storage_k": "77.15", "status": "1", "passage": "3"} | values


def csv_text(header: list[str], rows: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out, delimiter=";").writerows([header, *rows])
    return out.getvalue()


class Castor(PartnerServer):
    def __init__(self, page_size: int = 2, token_uses: int = 100):
        self.participants: dict[str, dict] = {}  # participant_id → {"values": ..., "archived": ..., "updated_on": ...}
        self.page_size, self.token_uses = page_size, token_uses
        self.tokens: dict[str, int] = {}  # token → API requests left
        self.edits = 0
        super().__init__()

    def add(self, participant: str, values: dict[str, str] | None, *, archived: bool = False) -> None:
        self.edits += 1  # Castor stamps every change
        stamp = f"2026-11-20 {9 + self.edits // 60:02}:{self.edits % 60:02}:00"
        self.participants[participant] = {"values": values, "archived": archived, "updated_on": stamp}

    def archive(self, participant: str) -> None:
        self.add(participant, self.participants[participant]["values"], archived=True)

    def answer(self, request: Request) -> Answer:
        if request.path == "/oauth/token":
            return self._token(request.form)
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if self.tokens.get(token, 0) <= 0:
            return Answer(401, {"type": "https://tools.ietf.org/html/rfc2616#section-10", "title": "Unauthorized",
                                "status": 401, "detail": "The access token provided has expired."})  # fmt: skip
        self.tokens[token] -= 1
        prefix = f"/api/study/{STUDY}/"
        if not request.path.startswith(prefix):
            return Answer(404, {"status": 404, "detail": "Study not found"})
        what = request.path.removeprefix(prefix)
        if what == "participant":
            return self._participants(int(request.query.get("page", 1)))
        if what == "export/structure":
            rows = [["Study", "S1", "Batch", field, name, "text"] for field, name in VARIABLES.items()]
            header = ["Form Type", "Form Collection ID", "Form Collection Name", "Field ID", "Field Variable Name",
                      "Field Type"]  # fmt: skip
            return Answer(200, csv_text(header, rows), {"Content-Type": "text/csv"})
        if what == "export/data":
            return Answer(200, self._export(), {"Content-Type": "text/csv"})
        return Answer(404, {"status": 404, "detail": "No route"})

    def _token(self, form: dict[str, str]) -> Answer:
        if (form.get("client_id"), form.get("client_secret")) != (CLIENT_ID, CLIENT_SECRET):
            return Answer(401, {"error": "invalid_client", "error_description": "Client authentication failed"})
        token = secrets.token_hex(16)
        self.tokens[token] = self.token_uses
        return Answer(200, {"access_token": token, "token_type": "Bearer", "expires_in": 18000, "scope": "read"})

    def _participants(self, page: int) -> Answer:
        ids = sorted(self.participants)
        count = max(1, -(-len(ids) // self.page_size))
        chosen = ids[(page - 1) * self.page_size : page * self.page_size]
        base = f"{self.url}/api/study/{STUDY}/participant"
        links = {"self": {"href": f"{base}?page={page}"}, "first": {"href": f"{base}?page=1"},
                 "last": {"href": f"{base}?page={count}"}}  # fmt: skip
        if page < count:
            links["next"] = {"href": f"{base}?page={page + 1}"}
        participants = [
            {"participant_id": p, "id": p, "archived": self.participants[p]["archived"],
             "updated_on": self.participants[p]["updated_on"], "_links": {"self": {"href": f"{base}/{p}"}}}
            for p in chosen
        ]  # fmt: skip
        return Answer(200, {"_embedded": {"participants": participants}, "_links": links, "page_count": count,
                            "page_size": self.page_size, "total_items": len(ids), "page": page},
                      {"Content-Type": "application/hal+json"})  # fmt: skip

    def _export(self) -> str:
        names = {name: field for field, name in VARIABLES.items()}
        rows = [
            [p, "Study", "", "", names[name], value, "2026-11-20 09:30:00", "U1"]
            for p, entry in sorted(self.participants.items())
            for name, value in (entry["values"] or {}).items()
        ]
        header = ["Participant ID", "Form Type", "Form Instance ID", "Form Instance Name", "Field ID", "Value",
                  "Date", "User ID"]  # fmt: skip
        return csv_text(header, rows)

    def pages_asked(self) -> list[int]:
        return [int(r.query.get("page", 1)) for r in self.requests if r.path.endswith("/participant")]


@pytest.fixture
def castor():
    server = Castor()
    yield server
    server.close()


async def add_source(env, castor, client_secret=CLIENT_SECRET) -> None:
    config = {"url": castor.url, "study_id": STUDY, "mapping": MAPPING}
    await register(env, "castor-lots", "castor", config, {"client_id": CLIENT_ID, "client_secret": client_secret})


def five(castor: Castor) -> None:
    for i in range(1, 5):
        castor.add(f"11000{i}", study_values(f"CA-{i}"))
    castor.add("110005", None)  # enrolled, nothing entered yet


async def test_participants_over_hal_pages_land_through_the_mapping(env, castor, sleeps):
    five(castor)
    await add_source(env, castor)
    run = await recording_runtime(env, sleeps).run("castor-lots")
    assert (run.status, run.read_count, run.upserted_count) == (RunStatus.ok, 4, 4)
    assert await env.lots() == ["CA-1", "CA-2", "CA-3", "CA-4"]
    assert float(await env.scalar(select(Batch.storage_temperature_c).where(Batch.lot_number == "CA-1"))) == -196.0
    assert castor.pages_asked() == [1, 2, 3]
    assert sum(r.path == "/oauth/token" for r in castor.requests) == 1


async def test_a_token_expiring_mid_run_is_renewed_and_the_run_goes_on(env, castor, sleeps):
    five(castor)
    castor.token_uses = 3  # structure, data, page 1; page 2 meets an expired token
    await add_source(env, castor)
    run = await recording_runtime(env, sleeps).run("castor-lots")
    assert run.status is RunStatus.ok and len(await env.lots()) == 4
    assert sum(r.path == "/oauth/token" for r in castor.requests) == 2
    assert castor.pages_asked() == [1, 2, 2, 3]  # page 2 once refused, once answered


async def test_a_429_is_retried_after_retry_after_and_resumes_at_the_page(env, castor, sleeps):
    five(castor)
    await add_source(env, castor)
    castor.fail_next("/oauth/token", THROTTLED)
    run = await recording_runtime(env, sleeps).run("castor-lots")
    assert run.status is RunStatus.ok and sleeps[0] >= 2
    castor.requests.clear()
    castor.add("110001", study_values("CA-1", passage="4"))
    original, throttled = castor.answer, []

    def throttle_page_two(request):
        if request.path.endswith("/participant") and request.query.get("page") == "2" and not throttled:
            throttled.append(request)
            return THROTTLED
        return original(request)

    castor.answer = throttle_page_two
    run = await recording_runtime(env, sleeps).run("castor-lots")
    assert (run.status, run.upserted_count) == (RunStatus.ok, 1)
    assert castor.pages_asked() == [1, 2, 2, 3]  # page 1 is not read again: it was committed
    assert len(sleeps) == 2 and sleeps[1] >= 2


async def test_archived_and_removed_participants_are_deleted(env, castor, sleeps):
    five(castor)
    await add_source(env, castor)
    sync = recording_runtime(env, sleeps)
    assert (await sync.run("castor-lots")).upserted_count == 4
    castor.archive("110002")
    del castor.participants["110003"]  # deleted at the source
    run = await sync.run("castor-lots")
    assert (run.status, run.read_count, run.deleted_count) == (RunStatus.ok, 3, 2)  # a tombstone, then absence
    assert await env.lots() == ["CA-1", "CA-4"]
    # CA-2 went as a tombstone (remembered as one); CA-3 because the pass did not see it (forgotten)
    ledger = await env.scalar(select(func.array_agg(SyncRecord.record_key)).where(SyncRecord.content_hash == TOMBSTONE))
    assert ledger == ["CA-2"]


async def test_a_malformed_page_fails_the_run_and_keeps_the_pages_before_it(env, castor, sleeps):
    five(castor)
    await add_source(env, castor)
    original = castor.answer

    def broken_page_two(request):
        if request.path.endswith("/participant") and request.query.get("page") == "2":
            return Answer(200, {"_links": {}, "page": 2}, {"Content-Type": "application/hal+json"})
        return original(request)

    castor.answer = broken_page_two
    run = await recording_runtime(env, sleeps).run("castor-lots")
    assert run.status is RunStatus.failed
    assert (
        run.error == f"SourceError: {castor.url}/api/study/{STUDY}/participant?page=2: not a HAL page of participants"
    )
    assert await env.lots() == ["CA-1", "CA-2"]  # page 1 committed; nothing deleted by an incomplete pass


async def test_wrong_client_credentials_are_named(env, castor, sleeps):
    five(castor)
    await add_source(env, castor, client_secret="wrong")
    run = await recording_runtime(env, sleeps).run("castor-lots")
    assert run.status is RunStatus.failed
    assert run.error == (
        f"SourceError: the token endpoint refused the client credentials ({castor.url}/oauth/token: HTTP 401: "
        "Client authentication failed)"
    )
    assert "wrong" not in run.error


async def test_replaying_a_run_that_began_mid_pass_reads_a_whole_pass_and_deletes_nothing_seen(env, castor, sleeps):
    five(castor)
    await add_source(env, castor)
    original, broken = castor.answer, []

    def break_page_two_once(request):
        if request.path.endswith("/participant") and request.query.get("page") == "2" and not broken:
            broken.append(request)
            return Answer(200, {"_links": {}, "page": 2}, {"Content-Type": "application/hal+json"})
        return original(request)

    castor.answer = break_page_two_once
    sync = recording_runtime(env, sleeps)
    assert (await sync.run("castor-lots")).status is RunStatus.failed
    resumed = await sync.run("castor-lots")  # resumes the pass at page 2 and completes it
    assert resumed.start_bookmarks == {"participants": {"page": 2, "total": 5}} and resumed.status is RunStatus.ok
    castor.requests.clear()
    # `cellcommons sync replay castor-lots <resumed>`: the pass it resumed is over, so a replay reads a new one
    replay = await sync.run("castor-lots", from_bookmarks=resumed.start_bookmarks)
    assert (replay.status, replay.deleted_count) == (RunStatus.ok, 0)
    assert castor.pages_asked() == [1, 2, 3]
    assert await env.lots() == ["CA-1", "CA-2", "CA-3", "CA-4"]
    del castor.participants["110001"]  # and a replay's complete pass still deletes what is gone
    replay = await sync.run("castor-lots", from_bookmarks=resumed.start_bookmarks)
    assert (replay.status, replay.deleted_count) == (RunStatus.ok, 1)
    assert await env.lots() == ["CA-2", "CA-3", "CA-4"]


async def test_an_unreadable_updated_on_quarantines_its_participant(env, castor, sleeps):
    five(castor)
    castor.participants["110003"]["updated_on"] = "20/11/2026 09:00"
    await add_source(env, castor)
    run = await recording_runtime(env, sleeps).run("castor-lots")
    assert (run.status, run.upserted_count, run.quarantined_count) == (RunStatus.partial, 3, 1)
    assert await env.lots() == ["CA-1", "CA-2", "CA-4"]
    held = await env.scalar(select(QuarantinedRecord))
    assert held.record_key == "CA-3" and held.errors == [{
        "code": "unreadable_timestamp", "severity": "error", "field": "updated_on",
        "message": "'20/11/2026 09:00' is not an ISO 8601 timestamp",
    }]  # fmt: skip


def _rewriting(castor: Castor, change) -> None:
    """Castor's participant pages, each passed through `change(request, body)` before it is served."""
    original = castor.answer

    def answer(request: Request) -> Answer:
        served = original(request)
        if request.path.endswith("/participant") and isinstance(served.body, dict):
            change(request, served.body)
        return served

    castor.answer = answer


async def test_a_next_link_leading_back_fails_the_run_naming_the_pages(env, castor, sleeps):
    five(castor)
    await add_source(env, castor)
    _rewriting(castor, lambda request, body: body["_links"].update(next={"href": body["_links"]["first"]["href"]}))
    run = await recording_runtime(env, sleeps).run("castor-lots")
    assert run.status is RunStatus.failed and "lead back from page 1 to page 1" in run.error
    assert castor.pages_asked() == [1, 1]


class Elsewhere(PartnerServer):
    def answer(self, request: Request) -> Answer:
        return Answer(200, {"_embedded": {"participants": []}, "_links": {}, "page": 2, "total_items": 5})


async def test_a_next_link_to_another_host_is_not_followed_with_the_token(env, castor, sleeps):
    five(castor)
    await add_source(env, castor)
    other = Elsewhere()
    try:
        _rewriting(castor, lambda request, body: body["_links"].update(next={"href": f"{other.url}/collect"}))
        run = await recording_runtime(env, sleeps).run("castor-lots")
        assert run.status is RunStatus.failed and "leads to another host" in run.error
        assert other.requests == []
    finally:
        other.close()


async def test_a_next_link_that_is_not_a_link_is_named(env, castor, sleeps):
    five(castor)
    await add_source(env, castor)
    _rewriting(castor, lambda request, body: body["_links"].update(next=f"{castor.url}/api/study/{STUDY}/participant"))
    run = await recording_runtime(env, sleeps).run("castor-lots")
    assert run.status is RunStatus.failed and "_links.next is not a link with an href" in run.error


async def test_a_participant_removed_mid_pass_leaves_the_others_and_goes_a_pass_later(env, castor, sleeps):
    """Page numbers shift when a participant goes mid-pass: the pass sees the count change and reads again from
    page 1, so no live participant goes unseen (and deleted)."""
    five(castor)  # two participants a page
    await add_source(env, castor)
    sync = recording_runtime(env, sleeps)
    assert (await sync.run("castor-lots")).upserted_count == 4

    def remove_after_page_one(request: Request, body: dict) -> None:
        if body.get("page") == 1 and "110001" in castor.participants:
            del castor.participants["110001"]

    _rewriting(castor, remove_after_page_one)
    run = await sync.run("castor-lots")
    assert run.status is RunStatus.ok and await env.lots() == ["CA-1", "CA-2", "CA-3", "CA-4"]
    assert castor.pages_asked()[-4:] == [1, 2, 1, 2]  # page 2 counted 4 participants, not 5: again from page 1
    again = await sync.run("castor-lots")
    assert (again.deleted_count, await env.lots()) == (1, ["CA-2", "CA-3", "CA-4"])


async def test_a_study_changing_on_every_page_fails_the_run_after_a_few_passes(env, castor, sleeps):
    five(castor)
    await add_source(env, castor)
    added = iter(range(200_000, 300_000))
    _rewriting(castor, lambda request, body: castor.add(str(next(added)), None))
    run = await recording_runtime(env, sleeps).run("castor-lots")
    assert run.status is RunStatus.failed and "kept changing during 4 passes" in run.error
    assert await env.lots() == ["CA-1", "CA-2"]  # what the first page brought stays; nothing is deleted


async def test_updated_on_as_castors_date_object_is_read_in_its_zone(env, castor, sleeps):
    five(castor)
    await add_source(env, castor)

    def date_objects(request: Request, body: dict) -> None:
        for participant in body["_embedded"]["participants"]:
            stamp = participant["updated_on"].replace("T", " ")
            participant["updated_on"] = {"date": f"{stamp}.000000", "timezone_type": 3, "timezone": "Europe/Amsterdam"}

    _rewriting(castor, date_objects)
    run = await recording_runtime(env, sleeps).run("castor-lots")
    assert (run.status, run.upserted_count) == (RunStatus.ok, 4)
    stamps = await env.scalar(select(func.array_agg(SyncRecord.source_updated_at)))
    amsterdam = ZoneInfo("Europe/Amsterdam")  # 09:01 there is 08:01 UTC, not 09:01 as a time without its zone
    expected = [datetime.fromisoformat(p["updated_on"]).replace(tzinfo=amsterdam) for p in castor.participants.values()]
    assert sorted(stamps) == sorted(expected[:4])  # 110005 has no values: no record
