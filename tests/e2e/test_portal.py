"""The portal in headless Chromium: sign in through the institution's issuer, search, open a dataset."""

import re

from tests.e2e.conftest import ARTIFACTS, axe_violations, sign_in

from cellcommons.portal import app as portal_app


def test_signing_in_searching_and_opening_a_dataset(page, served):
    page.goto(f"{served}/search")
    assert "/sign-in" in page.url  # the catalogue needs a signed-in member
    sign_in(page, served)
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
    sign_in(page, served, institution="maple-ccrm", user="Alice Reader")
    for accession in ("CCD-LEID-000000", "CCD-NOPE-424242"):  # Leiden's non-public one, and one that never existed
        response = page.goto(f"{served}/datasets/{accession}")
        assert response.status == 404
        assert page.get_by_role("heading", level=1).inner_text() == "Not found"
    page.screenshot(path=str(ARTIFACTS / "not-found.png"), full_page=True)


def test_signing_out_needs_the_forms_csrf_token(page, served):
    sign_in(page, served)
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
    sign_in(page, served)
    assert axe_violations(page) == []


# ---- the search page --------------------------------------------------------------------------------------------

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)


def _count(page) -> int:
    return int(re.match(r"(\d+) datasets? you may see", page.get_by_role("status").inner_text()).group(1))


def _facet(page, param) -> dict[str, int]:
    """value → count of one facet, as the page shows it."""
    boxes = page.locator(f"#facet-{param} input[type=checkbox]")
    counts = page.locator(f"#facet-{param} .count")
    return {
        boxes.nth(i).get_attribute("value"): int(counts.nth(i).get_attribute("data-count"))
        for i in range(boxes.count())
    }


def _accessions(page) -> list[str]:
    return [href.rsplit("/", 1)[-1] for href in page.locator("ol.results h2 a").evaluate_all("a => a.map(x => x.href)")]


def test_free_text_search_narrows_the_results_and_the_url_carries_it(page, served):
    sign_in(page, served)
    everything = _count(page)
    data_types = _facet(page, "data_type")
    word = next(w for w in ("proteomics", "imaging", "potency assay") if 0 < data_types.get(w, 0) < everything)
    box = page.get_by_label("Search titles, descriptions, keywords and accessions")
    box.fill(word)
    box.press("Enter")  # the keyboard submits the GET form
    page.wait_for_url(re.compile(r"[?&]q="))
    assert "q=" + word.replace(" ", "+") in page.url
    found = _count(page)
    # Every dataset of that data type names it in its description, and no other does.
    assert found == data_types[word] < everything
    assert f"match “{word}”" in page.get_by_role("status").inner_text()
    assert page.locator("ol.results > li").count() == min(found, 20)
    assert page.locator(".snippet mark").count() >= 1  # highlighted matches
    assert page.locator(".snippet script, .snippet :not(mark)").count() == 0  # only the markup the page made
    assert page.get_by_label("Sort by").input_value() == ""  # best match first
    assert "Best match" in page.get_by_label("Sort by").inner_text()
    page.get_by_label("Sort by").select_option("accession")
    page.get_by_role("button", name="Sort").click()
    page.wait_for_url(re.compile(r"sort=accession"))
    assert _accessions(page) == sorted(_accessions(page)) and _count(page) == found
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "search-text.png"), full_page=True)
    assert axe_violations(page) == []


def test_choosing_a_facet_narrows_the_results_and_the_counts_add_up(page, served):
    sign_in(page, served)
    everything = _count(page)
    institutions = _facet(page, "institution")
    assert sum(institutions.values()) == everything  # each dataset has one custodian
    assert sum(_facet(page, "access").values()) == everything
    slug, expected = min(institutions.items(), key=lambda item: item[1])
    assert 0 < expected < everything
    page.locator(f"#facet-institution input[value='{slug}']").check()
    page.get_by_role("button", name="Apply filters").click()
    page.wait_for_url(re.compile(rf"institution={slug}"))
    assert _count(page) == expected
    assert sum(_facet(page, "tissue").values()) == expected  # one tissue source each
    assert sum(_facet(page, "access").values()) == expected
    # The chosen facet keeps showing its other values (each facet ignores its own choice) with the same counts.
    assert _facet(page, "institution") == institutions
    assert page.locator(f"#facet-institution input[value='{slug}']").is_checked()
    # The chosen value is also a link that removes it.
    page.get_by_role("list", name="Chosen filters").get_by_role("link").first.click()
    page.wait_for_url(re.compile(r"/search$"))
    assert _count(page) == everything
    assert axe_violations(page) == []


def test_a_shared_search_link_shows_the_same_results_in_another_browser(browser, page, served):
    sign_in(page, served)
    tissues = _facet(page, "tissue")
    tissue = max(tissues, key=tissues.get)
    page.locator(f"#facet-tissue input[value='{tissue}']").check()
    page.get_by_label("Sort by").select_option("newest")
    page.get_by_label("Search titles, descriptions, keywords and accessions").fill("MSC")
    page.get_by_role("button", name="Search", exact=True).click()
    page.wait_for_url(re.compile(r"q=MSC"))
    shared, results, status = page.url, _accessions(page), page.get_by_role("status").inner_text()
    assert results and "tissue=" in shared and "sort=newest" in shared
    hrefs = page.locator("a[href]").evaluate_all("a => a.map(x => x.getAttribute('href'))")
    assert not any(UUID.search(href) for href in [shared, *hrefs])  # no database ids in links
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "search-filtered.png"), full_page=True)

    other = browser.new_context()
    try:
        elsewhere = other.new_page()
        sign_in(elsewhere, served)
        elsewhere.goto(shared)
        assert _accessions(elsewhere) == results
        assert elsewhere.get_by_role("status").inner_text() == status
        assert elsewhere.locator(f"#facet-tissue input[value='{tissue}']").is_checked()
        assert elsewhere.get_by_label("Sort by").input_value() == "newest"
    finally:
        other.close()


def test_search_pages_with_opaque_cursors_and_refuses_forged_ones(page, served, monkeypatch):
    """Keyset paging through sealed cursors; the tiny seed has fewer datasets than a page, so pages are made small
    (the server runs in this process)."""
    monkeypatch.setattr(portal_app, "PAGE_SIZE", 3)
    sign_in(page, served)
    everything, seen = _count(page), _accessions(page)
    assert everything > 3 and len(seen) == 3
    first_page = list(seen)
    while (following := page.get_by_role("link", name="Next page")).count():
        href = following.get_attribute("href")
        assert "after=" in href and not UUID.search(href)
        following.click()
        seen += _accessions(page)
    assert len(seen) == len(set(seen)) == everything  # every dataset once
    while (previous := page.get_by_role("link", name="Previous page")).count():
        assert "before=" in previous.get_attribute("href")
        previous.click()
    assert _accessions(page) == first_page
    response = page.goto(f"{served}/search?after=bm90LWEtY3Vyc29y")
    assert response.status == 422 and "not a cursor" in page.locator("main").inner_text().lower()


def test_the_release_status_facet_counts_datasets_by_their_linked_lots(page, served):
    sign_in(page, served)
    everything = _count(page)
    released = _facet(page, "release")
    assert released.get("released", 0) > 0
    assert all(n <= everything for n in released.values())
    page.locator("#facet-release input[value='released']").check()
    page.get_by_role("button", name="Apply filters").click()
    page.wait_for_url(re.compile(r"release=released"))
    assert _count(page) == released["released"]
    for accession in _accessions(page)[:3]:
        page.goto(f"{served}/datasets/{accession}")
        assert "Release status: released" in page.locator("section[aria-labelledby=batches]").inner_text()
    response = page.goto(f"{served}/search?release=shipped")
    assert response.status == 422
    assert "Release status of linked lots: choose from quarantine, released" in page.get_by_role("main").inner_text()
