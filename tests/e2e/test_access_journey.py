"""The portal's access journey in headless Chromium, on the real PostgreSQL and S3 server: a submitter registers
a dataset, uploads its file from the browser (presigned PUT straight to object storage) and publishes it; a
researcher of another institution requests access and sees the matcher's verdict first; the owner's steward
approves with DUA terms; the researcher downloads the file (bytes checked) and its manifest, then requests a
Parquet export, follows it while the worker runs it, downloads it and reads it back with pyarrow. Focused tests:
a member of a third institution editing URLs meets the same 404 as for things that do not exist, and bad
input re-renders the form with each error next to its field."""

from __future__ import annotations

import asyncio
import hashlib
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow.parquet as pq
import pytest
from tests.e2e.conftest import ARTIFACTS, axe_violations, sign_in
from tests.storage.files import institution, member, published_file

from cellcommons.access import requests
from cellcommons.catalogue.models import Dataset, DatasetVersion
from cellcommons.db import Database
from cellcommons.exports.worker import ExportWorker
from cellcommons.graphql.ids import Identifiers
from cellcommons.storage.object_store import ObjectStore

CELLS = b"donor,marker,percent_positive\n" + b"D-0001,CD73,98.1\nD-0001,CD90,97.4\nD-0002,CD105,96.0\n" * 50
HMB_LABEL = re.compile(r"\(HMB\)")


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


@pytest.fixture
def person(browser, served):
    """A signed-in browser context per person: person(institution, user) → page."""
    contexts = []

    def open_as(institution_slug: str, user: str):
        context = browser.new_context()
        contexts.append(context)
        page = context.new_page()
        sign_in(page, served, institution_slug, user)
        return page

    yield open_as
    for context in contexts:
        context.close()


def test_register_upload_publish_request_approve_and_download(person, served, tmp_path):
    # Leiden's submitter registers a dataset with one file, uploads it from the browser and publishes it.
    sam = person("leiden-scgt", "Sam Submitter")
    sam.get_by_role("link", name="Curation").click()
    sam.get_by_role("link", name="Register a dataset").click()
    sam.get_by_label("Title").fill("BM-MSC marker panel for the portal journey")
    sam.get_by_label("Description").fill("Flow cytometry of bone-marrow MSC lots against the ISCT markers.")
    sam.get_by_label("Data types").fill("flow cytometry")
    sam.get_by_label("Tissue source (UBERON)").select_option("UBERON:0002371")
    sam.get_by_label("Cell type (CL)").select_option("CL:0002540")
    sam.get_by_label("Personal data").select_option("pseudonymised")
    sam.get_by_label("Access", exact=True).select_option("restricted")
    sam.locator("#conditions").get_by_label(HMB_LABEL).check()
    sam.get_by_label("File name").first.fill("cells.csv")
    sam.get_by_label("Media type").first.select_option("text/csv")
    sam.get_by_label("Columns").first.fill(
        "donor, string, quasi_identifier\nmarker, string, plain\npercent_positive, double, plain"
    )
    assert axe_violations(sam) == []
    sam.get_by_role("button", name="Save the draft").click()
    sam.wait_for_url(re.compile(r"/curate/CCD-"))
    accession = sam.url.rsplit("/", 1)[-1]
    upload = tmp_path / "cells.csv"
    upload.write_bytes(CELLS)
    sam.get_by_label("File for cells.csv").set_input_files(str(upload))
    sam.get_by_role("button", name="Upload").click()
    sha256 = hashlib.sha256(CELLS).hexdigest()
    row = sam.locator("tr[data-file='cells.csv']")
    row.locator(".hash", has_text=sha256).wait_for()  # verified by the platform, shown after the reload
    _shot(sam, "curate-uploaded")
    assert axe_violations(sam) == []
    sam.get_by_role("button", name="Publish version 1").click()
    sam.wait_for_url(f"{served}/datasets/{accession}")

    # Lowlands' researcher asks for it; the matcher's verdict comes before the submit button.
    alice = person("lowlands-regmed", "Alice Reader")
    alice.goto(f"{served}/datasets/{accession}")
    assert alice.get_by_role("button", name="Download cells.csv").count() == 0
    alice.get_by_role("link", name="Request access").click()
    assert alice.get_by_role("button", name="Submit the request").count() == 0
    alice.locator("#purpose_terms").get_by_label(HMB_LABEL).check()
    alice.locator("#commercial_use").get_by_label(re.compile("^No")).check()
    alice.get_by_label("Lay summary").fill("Compare marker panels across bone-marrow MSC lots.")
    alice.get_by_label("Ethics approval reference").fill("METC-2026-114")
    alice.get_by_role("button", name="Check against the conditions").click()
    verdict = alice.locator(".verdict").first
    assert verdict.inner_text().startswith("Compatible")
    _shot(alice, "request-verdict")
    assert axe_violations(alice) == []
    alice.get_by_role("button", name="Submit the request").click()
    alice.wait_for_url(re.compile(r"/requests/AccessRequest_"))
    assert "Submitted" in alice.locator("main .meta").first.inner_text()
    assert "submitted by user:" in alice.locator("ol.history").inner_text()
    assert axe_violations(alice) == []
    alice.get_by_role("link", name="My requests").click()
    assert alice.locator("tbody tr").count() == 1
    assert axe_violations(alice) == []

    # Leiden's steward decides, with the export treatment of each column tag.
    stella = person("leiden-scgt", "Stella Steward")
    stella.get_by_role("link", name="Requests to decide").click()
    assert axe_violations(stella) == []
    stella.get_by_role("link", name=re.compile("Compare marker panels")).click()
    assert stella.locator(".verdict").first.inner_text().startswith("Compatible")
    stella.get_by_label("Quasi identifier columns").select_option("pseudonymise")
    stella.get_by_label("Sensitive columns").select_option("drop")
    stella.get_by_label("Signed agreement (document reference)").fill("DUA-LEID-2026-07")
    _shot(stella, "steward-decide")
    assert axe_violations(stella) == []
    stella.get_by_role("button", name="Approve").click()
    stella.wait_for_url(f"{served}/steward")
    assert "Nothing to decide" in stella.locator("main").inner_text()

    # The researcher is told, holds the agreement, and downloads the file and the manifest.
    alice.get_by_role("link", name="Notifications").click()
    assert "leiden-scgt approved your access request" in alice.locator("ol.notifications").inner_text()
    assert axe_violations(alice) == []
    alice.get_by_role("link", name="My agreements").click()
    agreement = alice.locator("article.agreement").first
    assert "In force until" in agreement.inner_text() and accession in agreement.inner_text()
    assert "quasi identifier: pseudonymise" in agreement.inner_text()
    assert axe_violations(alice) == []
    _shot(alice, "agreements")
    alice.goto(f"{served}/datasets/{accession}")
    with alice.expect_download() as download:
        alice.get_by_role("button", name="Download cells.csv").click()
    assert download.value.suggested_filename == "cells.csv"
    assert open(download.value.path(), "rb").read() == CELLS
    alice.get_by_role("button", name="Manifest of all files").click()
    assert sha256 in alice.locator("table.manifest").inner_text()
    assert axe_violations(alice) == []
    _shot(alice, "manifest")

    # And a Parquet export under the agreement: requested, followed while the worker runs it, read back.
    alice.get_by_role("link", name="My agreements").click()
    alice.get_by_role("link", name=f"Export {accession} as Parquet").click()
    assert alice.locator("#source").get_by_label("cells.csv").is_checked()
    assert axe_violations(alice) == []
    alice.get_by_role("button", name="Request the export").click()
    alice.wait_for_url(re.compile(r"/exports/Export_"))
    assert alice.get_by_role("status").inner_text() == "Waiting for a worker to start it."
    assert axe_violations(alice) == []
    assert _run_export_worker(served.settings) == "succeeded"
    download_button = alice.get_by_role("button", name="Download the Parquet file")
    download_button.wait_for()  # the page's script saw the job finish and reloaded it
    assert alice.get_by_role("status").inner_text() == "Finished: 150 rows written."
    _shot(alice, "export-finished")
    with alice.expect_download() as download:
        download_button.click()
    table = pq.read_table(download.value.path())
    assert table.column_names == ["donor", "marker", "percent_positive"]
    assert table.num_rows == 150
    donors = set(table.column("donor").to_pylist())
    assert len(donors) == 2 and not donors & {"D-0001", "D-0002"}  # pseudonyms keyed to this agreement
    assert table.column("percent_positive").to_pylist()[:3] == [98.1, 97.4, 96.0]
    terms = {k.decode(): v.decode() for k, v in table.schema.metadata.items()}
    assert terms["cellcommons.recipient"] == "lowlands-regmed" and terms["cellcommons.dataset_id"] == accession
    assert terms["cellcommons.source_sha256"] == sha256


def _run_export_worker(settings) -> str:
    """What `cellcommons worker` does for one queued job, in a thread of its own (Playwright's sync API keeps an
    event loop running in the test's thread)."""

    async def run() -> str:
        database = Database(settings)
        try:
            job = await ExportWorker(database, ObjectStore.shared(settings), settings).run_next()
            return " ".join(str(x) for x in (job.status.value, job.error_code, job.error_message) if x)
        finally:
            await database.dispose()

    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, run()).result()


# ---- a third institution editing URLs, and bad input --------------------------------------------------------


@dataclass(frozen=True)
class Arranged:
    accession: str
    file_ref: str
    request_ref: str


@pytest.fixture(scope="module")
def arranged(served) -> Arranged:
    """Committed through the services: Leiden's restricted dataset with an uploaded file, and a draft request
    for it by a Lowlands researcher."""

    async def arrange() -> Arranged:
        settings = served.settings
        database = Database(settings)
        file = await published_file(database, ObjectStore.shared(settings), settings, "leiden-scgt", "restricted",
                                    CELLS)  # fmt: skip
        async with database.unit_of_work() as session:
            version = await session.get_one(DatasetVersion, file.version_id)
            dataset = await session.get_one(Dataset, version.dataset_id)
            lowlands = member(await institution(session, "lowlands-regmed"))
            raw = {"datasets": [dataset.id], "purpose_terms": ["DUO:0000042"], "commercial_use": False,
                   "lay_summary": "Panels.", "period_start": "2026-12-01", "period_end": "2027-12-01"}  # fmt: skip
            draft = await requests.create_request(session, lowlands, requests.parse_request(raw),
                                                  node_id=settings.node_id)  # fmt: skip
        await database.dispose()
        ids = Identifiers(settings.secret_key.get_secret_value())
        return Arranged(
            dataset.accession, ids.global_id("Distribution", file.distribution_id),
            ids.global_id("AccessRequest", draft.id),
        )  # fmt: skip

    with ThreadPoolExecutor(1) as thread:  # Playwright's sync API keeps an event loop running in this one
        return thread.submit(asyncio.run, arrange()).result()


def _csrf(page) -> str:
    return page.locator("input[name=csrf]").first.get_attribute("value")


def test_another_institution_editing_urls_meets_the_page_of_a_missing_thing(person, served, arranged):
    never = Arranged("CCD-NOPE-424242", "Distribution_AAAAAAAAAAAAAAAAAAAAAA", "AccessRequest_AAAAAAAAAAAAAAAAAAAAAA")
    owner = person("leiden-scgt", "Stella Steward")
    owner.goto(f"{served}/datasets/{arranged.accession}")
    with owner.expect_download() as download:  # the owner's steward may: the URL below is a real one
        owner.get_by_role("button", name="Download cells.csv").click()
    assert open(download.value.path(), "rb").read() == CELLS

    stranger = person("stroma-bio", "Stella Steward")  # a steward and reader of Stroma: no agreement
    stranger.goto(f"{served}/datasets/{arranged.accession}")
    assert stranger.get_by_role("button", name="Download cells.csv").count() == 0
    token = _csrf(stranger)
    answers = []
    for target in (arranged, never):
        for path, form in (
            (f"/files/{target.file_ref}/download", {"csrf": token}),
            (f"/datasets/{target.accession}/manifest", {"csrf": token, "version": "1"}),
        ):
            response = stranger.request.post(f"{served}{path}", form=form, max_redirects=0)
            answers.append((response.status, "<h1>Not found</h1>" in response.text()))
        for path in (f"/requests/{target.request_ref}", f"/steward/requests/{target.request_ref}"):
            response = stranger.goto(f"{served}{path}")
            answers.append((response.status, stranger.get_by_role("heading", level=1).inner_text() == "Not found"))
    assert answers == [(404, True)] * 8
    submitter = person("stroma-bio", "Sam Submitter")
    for accession in (arranged.accession, never.accession):
        assert submitter.goto(f"{served}/curate/{accession}").status == 404
    _shot(stranger, "url-editing-not-found")


def test_bad_input_re_renders_the_request_form_with_each_error_at_its_field(person, served, arranged):
    alice = person("lowlands-regmed", "Alice Reader")
    alice.goto(f"{served}/datasets/{arranged.accession}/request")
    alice.get_by_label("Lay summary").fill("")
    with alice.expect_response(re.compile(r"/requests/new$")) as answer:
        alice.get_by_role("button", name="Check against the conditions").click()
    assert answer.value.status == 422
    summary = alice.get_by_role("alert")
    assert "There is a problem" in summary.inner_text()
    for field in ("lay_summary", "commercial_use", "purpose_terms"):
        control = alice.locator(f"#{field}")
        assert f"{field}-error" in control.get_attribute("aria-describedby")
        assert alice.locator(f"#{field}-error").inner_text() == "Error: This is required"
        assert summary.locator(f"a[href='#{field}']").count() == 1
    assert alice.locator("#lay_summary").get_attribute("aria-invalid") == "true"
    assert axe_violations(alice) == []

    # Past the shape, the domain's rules: a disease-specific purpose names its disease; periods run forwards.
    alice.locator("#purpose_terms").get_by_label(re.compile(r"\(DS\)")).check()
    alice.locator("#commercial_use").get_by_label(re.compile("^No")).check()
    alice.get_by_label("Lay summary").fill("Graft-versus-host disease outcomes.")
    alice.get_by_label("From").fill("2027-06-01")
    alice.get_by_label("Until").fill("2027-01-01")
    with alice.expect_response(re.compile(r"/requests/new$")) as answer:
        alice.get_by_role("button", name="Check against the conditions").click()
    assert answer.value.status == 422
    assert "names its MONDO disease" in alice.locator("#disease-error").inner_text()
    assert "must end after it starts" in alice.locator("#period_end-error").inner_text()
    assert alice.get_by_label("Lay summary").input_value() == "Graft-versus-host disease outcomes."  # kept
    _shot(alice, "request-errors")
    assert axe_violations(alice) == []
