"""The portal in headless Chromium: sign in through the institution's issuer, search, open a dataset."""

import re

from tests.e2e.conftest import ARTIFACTS, axe_violations


def _sign_in(page, served, institution="leiden-scgt", user="Stella Steward"):
    page.goto(f"{served}/sign-in")
    page.get_by_label(institution).check()
    page.get_by_role("button", name="Continue to sign in").click()
    # The dev identity provider's page: one button per demo user.
    page.get_by_role("button", name=re.compile(user)).click()
    page.wait_for_url(f"{served}/search")


def test_signing_in_searching_and_opening_a_dataset(page, served):
    page.goto(f"{served}/search")
    assert "/sign-in" in page.url  # the catalogue needs a signed-in member
    _sign_in(page, served)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "search.png"), full_page=True)
    status = page.get_by_role("status").inner_text()
    assert re.match(r"\d+ datasets? you may see", status)
    page.get_by_role("link", name="your roles").click()
    assert "steward" in page.locator("dl.facts").inner_text()
    page.screenshot(path=str(ARTIFACTS / "me.png"), full_page=True)

    page.goto(f"{served}/search")
    page.locator("ol.results h2 a").first.click()
    page.wait_for_selector("h2#conditions")
    page.screenshot(path=str(ARTIFACTS / "dataset.png"), full_page=True)
    assert page.locator("#conditions + ul li").count() >= 1
    chart = page.locator("svg.qc-chart").first
    assert chart.get_attribute("role") == "img"
    assert "Release tests of lot" in chart.locator("title").first.text_content()
    assert page.locator("svg.qc-chart circle").count() >= 4  # viability and markers, each a dot
    assert axe_violations(page) == []


def test_hidden_and_missing_datasets_are_the_same_404_page(page, served):
    _sign_in(page, served, institution="maple-ccrm", user="Alice Reader")
    for accession in ("CCD-LEID-000000", "CCD-NOPE-424242"):  # Leiden's non-public one, and one that never existed
        response = page.goto(f"{served}/datasets/{accession}")
        assert response.status == 404
        assert page.get_by_role("heading", level=1).inner_text() == "Not found"
    page.screenshot(path=str(ARTIFACTS / "not-found.png"), full_page=True)


def test_signing_out_needs_the_forms_csrf_token(page, served):
    _sign_in(page, served)
    forged = page.request.post(f"{served}/sign-out", form={"csrf": "forged"})
    assert forged.status == 403
    page.goto(f"{served}/search")
    assert page.url.endswith("/search")  # still signed in
    page.get_by_role("button", name="Sign out").click()
    page.goto(f"{served}/search")
    assert "/sign-in" in page.url


def test_the_main_pages_have_no_serious_accessibility_violations(page, served):
    for path in ("/", "/sign-in"):
        page.goto(f"{served}{path}")
        assert axe_violations(page) == [], path
    _sign_in(page, served)
    assert axe_violations(page) == []
