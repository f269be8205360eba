"""What the portal says about records: conditions in plain words, sizes, and the QC chart's content."""

from decimal import Decimal
from types import SimpleNamespace as Row
from xml.etree import ElementTree

from cellcommons.catalogue.enums import Operator, TestType, Timepoint
from cellcommons.portal.presenters import chart_rows, condition_text, file_size, qc_chart


def test_conditions_read_as_plain_words_with_their_parameters():
    assert condition_text("DUO:0000042", {}) == "Any research use."
    ds = condition_text("DUO:0000007", {"disease": "MONDO:0005147"})
    assert ds.startswith("Research on a specific disease only.") and "type 1 diabetes" in ds
    assert condition_text("DUO:0000022", {"regions": ["EEA", "CA"]}).endswith("(EEA, CA)")
    assert condition_text("DUO:9999999", {}) == "DUO:9999999"


def test_file_sizes_are_human():
    assert file_size(None) == "not yet uploaded"
    assert file_size(512) == "512 bytes"
    assert file_size(2_500_000) == "2.5 MB"


def test_the_chart_shows_each_percentage_against_its_limit_with_the_verdict_in_words():
    def result(test_type, analyte, value, passed, unit="%", timepoint=None):
        return Row(
            test_type=test_type, analyte=analyte, timepoint=timepoint, unit=unit, value=Decimal(value), passed=passed
        )

    results = [
        result(TestType.viability, None, "68.5", False, timepoint=Timepoint.post_thaw),
        result(TestType.identity_marker, "CD73", "97.200000", True),
        result(TestType.endotoxin, None, "0.2", True, unit="{EU}/mL"),
    ]
    criteria = [
        Row(test_type=TestType.viability, analyte=None, operator=Operator.ge, limit_value=Decimal("70")),
        Row(test_type=TestType.identity_marker, analyte="cd73", operator=Operator.ge, limit_value=Decimal("80")),
    ]
    rows = chart_rows(results, criteria)
    assert [(r.label, r.limit) for r in rows] == [("viability (post-thaw)", Decimal("70")), ("CD73", Decimal("80"))]
    svg = qc_chart("Release tests of lot BM-1", rows, 0)
    tree = ElementTree.fromstring(svg)
    texts = [t.text for t in tree.iter("{http://www.w3.org/2000/svg}text")]
    assert "68.5 % fail" in texts and "97.2 % pass" in texts
    assert tree.get("role") == "img" and tree.find("{http://www.w3.org/2000/svg}title").text.endswith("BM-1")


def test_each_chart_on_a_page_is_labelled_by_its_own_title():
    # Built one after another from short-lived row lists, as the dataset page does: an id taken from the
    # list's address repeated, and the second lot's chart was read out with the first lot's title.
    svgs = [qc_chart(f"Release tests of lot BM-{i}", [], i) for i in range(3)]
    labels = []
    for i, svg in enumerate(svgs):
        tree = ElementTree.fromstring(svg)
        title = tree.find("{http://www.w3.org/2000/svg}title")
        assert tree.get("aria-labelledby") == title.get("id") and title.text.endswith(f"BM-{i}")
        labels.append(title.get("id"))
    assert len(set(labels)) == 3
