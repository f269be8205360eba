"""Finding data over HTTP: filters (through relations), sorting with keyset cursors, full-text search, facets.

Expected answers are computed from unfiltered listings of the same seeded database, so each assertion checks the
SQL against an independent reading of the data.
"""

from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

LEIDEN, MAPLE = "leiden-scgt", "maple-ccrm"
OPERATIONS = Path(__file__).resolve().parents[2] / "graphql_schema" / "operations"

ALL_DATASETS = """
query($filter: DatasetFilter, $search: String) {
  datasets(first: 100, filter: $filter, search: $search) {
    totalCount
    nodes {
      accession
      institution { slug }
      latestVersion {
        title tissue cellType dataTypes accessRights conditions { term parameter }
        batches(first: 10) { nodes { lotNumber qcResults { testType timepoint value } } }
      }
    }
  }
}
"""
ALL_BATCHES = """
query($filter: BatchFilter, $search: String, $orderBy: BatchOrder, $first: Int, $last: Int,
      $after: String, $before: String) {
  batches(first: $first, last: $last, after: $after, before: $before, filter: $filter, search: $search,
          orderBy: $orderBy) {
    totalCount
    pageInfo { hasNextPage hasPreviousPage endCursor startCursor }
    edges { cursor rank highlight node { lotNumber productName tissue cellType passage releaseStatus
                                         institution { slug } } }
  }
}
"""


async def _ok(api, query, variables, slug=LEIDEN):
    result = await api.query(query, variables, api.token(slug))
    assert "errors" not in result, result
    return result["data"]


async def _datasets(api, slug=LEIDEN, **variables):
    return (await _ok(api, ALL_DATASETS, variables, slug))["datasets"]


async def _batches(api, slug=LEIDEN, first=100, **variables):
    return (await _ok(api, ALL_BATCHES, {"first": first, **variables}, slug))["batches"]


def _viability(batch) -> list[Decimal]:
    return [
        Decimal(q["value"])
        for q in batch["qcResults"]
        if q["testType"] == "viability" and q["timepoint"] == "post_thaw"
    ]


async def test_datasets_filtered_through_their_batches_qc_results(api):
    everything = await _datasets(api)
    values = sorted(
        v for d in everything["nodes"] for b in d["latestVersion"]["batches"]["nodes"] for v in _viability(b)
    )
    threshold = str(values[len(values) // 2])
    expected = {
        d["accession"]
        for d in everything["nodes"]
        if any(v >= Decimal(threshold) for b in d["latestVersion"]["batches"]["nodes"] for v in _viability(b))
    }
    assert expected and len(expected) < everything["totalCount"], "the seed gives both kinds"
    shortcut = await _datasets(api, filter={"batches": {"postThawViability": {"gte": threshold}}})
    spelled_out = await _datasets(
        api,
        filter={"batches": {"qcResults": {"testType": {"eq": "viability"}, "timepoint": {"eq": "post_thaw"},
                                          "value": {"gte": threshold}}}},
    )  # fmt: skip
    assert {d["accession"] for d in shortcut["nodes"]} == expected == {d["accession"] for d in spelled_out["nodes"]}
    assert shortcut["totalCount"] == len(expected)


async def test_and_or_not_combine_conditions(api):
    everything = (await _datasets(api))["nodes"]
    tissues = sorted({d["latestVersion"]["tissue"] for d in everything})
    assert len(tissues) >= 2
    either = await _datasets(api, filter={"or": [{"tissue": {"eq": tissues[0]}}, {"tissue": {"eq": tissues[1]}}]})
    listed = await _datasets(api, filter={"tissue": {"in": tissues[:2]}})
    neither = await _datasets(api, filter={"not": {"tissue": {"in": tissues[:2]}}})
    expected = {d["accession"] for d in everything if d["latestVersion"]["tissue"] in tissues[:2]}
    assert {d["accession"] for d in either["nodes"]} == expected == {d["accession"] for d in listed["nodes"]}
    assert {d["accession"] for d in neither["nodes"]} == {d["accession"] for d in everything} - expected
    own_and_public = await _datasets(
        api, filter={"and": [{"institution": {"eq": LEIDEN}}, {"accessRights": {"in": ["public", "restricted"]}}]}
    )
    assert {d["accession"] for d in own_and_public["nodes"]} == {
        d["accession"]
        for d in everything
        if d["institution"]["slug"] == LEIDEN and d["latestVersion"]["accessRights"] != "non_public"
    }


async def test_cell_type_with_descendants_follows_the_msc_subtypes(api):
    everything = (await _batches(api))["edges"]
    all_msc = await _batches(api, filter={"cellType": {"under": "CL:0000134"}})
    assert all_msc["totalCount"] == len(everything)
    cord = await _batches(api, filter={"cellType": {"under": "CL:0002569"}})  # umbilical cord MSC ⊃ Wharton's jelly
    expected = {e["node"]["lotNumber"] for e in everything if e["node"]["cellType"] in ("CL:0002569", "CL:0002568")}
    assert {e["node"]["lotNumber"] for e in cord["edges"]} == expected
    assert {e["node"]["cellType"] for e in cord["edges"]} == {"CL:0002569", "CL:0002568"}


async def test_disease_under_an_ancestor_finds_disease_specific_datasets(api):
    everything = (await _datasets(api))["nodes"]
    diseases = {
        c["parameter"]["disease"]
        for d in everything
        for c in d["latestVersion"]["conditions"]
        if c["term"] == "DUO:0000007"
    }
    if not diseases:
        pytest.skip("this seed gives no disease-specific dataset")
    found = await _datasets(api, filter={"disease": {"under": "MONDO:0000001"}})  # every disease is under the root
    conditions = [c for d in found["nodes"] for c in d["latestVersion"]["conditions"]]
    assert {c["parameter"]["disease"] for c in conditions if "disease" in c["parameter"]} == diseases


@pytest.mark.parametrize("descending", [False, True])
async def test_sorting_pages_with_cursors_in_both_directions(api, descending):
    everything = (await _batches(api))["edges"]
    lots = sorted((e["node"]["lotNumber"] for e in everything), reverse=descending)
    order = {"field": "LOT_NUMBER", "direction": "DESC" if descending else "ASC"}
    seen, after = [], None
    while True:
        page = await _batches(api, first=3, orderBy=order, after=after)
        seen += [(e["node"]["lotNumber"], e["cursor"]) for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert [lot for lot, _ in seen] == lots
    back = await _batches(api, first=None, last=4, orderBy=order, before=seen[6][1])
    assert [e["node"]["lotNumber"] for e in back["edges"]] == lots[2:6]
    assert back["pageInfo"]["hasPreviousPage"] and back["pageInfo"]["hasNextPage"]


async def test_a_nullable_sort_key_keeps_ties_and_pages_exactly(api):
    everything = (await _batches(api))["edges"]
    order = {"field": "PASSAGE", "direction": "DESC"}
    seen, after = [], None
    for _ in range(len(everything)):
        page = await _batches(api, first=4, orderBy=order, after=after)
        seen += [(e["node"]["passage"], e["node"]["lotNumber"]) for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert len(seen) == len(everything) == len(set(seen))
    assert [p for p, _ in seen] == sorted((e["node"]["passage"] for e in everything), reverse=True)


async def test_a_cursor_of_another_ordering_is_refused(api):
    page = await _batches(api, first=2, orderBy={"field": "LOT_NUMBER"})
    result = await api.query(
        ALL_BATCHES,
        {"first": 2, "after": page["pageInfo"]["endCursor"], "orderBy": {"field": "PASSAGE"}},
        api.token(LEIDEN),
    )
    assert result["errors"][0]["extensions"]["code"] == "invalid_input"
    assert result["errors"][0]["extensions"]["field"] == "after"
    # Asking only for the count reads no page, and still says the cursor is wrong.
    count_only = await api.query(
        "query($after: String) { batches(first: 2, after: $after, orderBy: {field: PASSAGE}) { totalCount } }",
        {"after": page["pageInfo"]["endCursor"]},
        api.token(LEIDEN),
    )
    assert count_only["errors"][0]["extensions"]["field"] == "after"


async def test_search_stems_english_ranks_and_highlights(api):
    found = await _batches(api, search="cells Leiden", orderBy={"field": "RELEVANCE"})
    assert found["totalCount"] == 0  # every word must match
    everything = (await _datasets(api))["nodes"]
    study = await _ok(
        api,
        "query($s: String!) { datasets(first: 100, search: $s, orderBy: {field: RELEVANCE}) "
        "{ totalCount edges { rank highlight node { accession latestVersion { title description } } } } }",
        {"s": "studies"},
    )
    edges = study["datasets"]["edges"]
    assert len(edges) == len(everything)  # every title says "study"; "studies" finds it through stemming
    ranks = [e["rank"] for e in edges]
    assert ranks == sorted(ranks, reverse=True) and all(r > 0 for r in ranks)
    flow = await _ok(
        api,
        'query { datasets(first: 100, search: "flow cytometry") { edges { highlight node { latestVersion '
        "{ title description dataTypes } } } } }",
        {},
    )
    for edge in flow["datasets"]["edges"]:
        version = edge["node"]["latestVersion"]
        assert "flow cytometry" in (version["title"] + version["description"]).lower() + " ".join(version["dataTypes"])
    assert any("<mark>" in e["highlight"] for e in flow["datasets"]["edges"])
    # Snippets are computed only when the edges show them, a fragment's selection included.
    through_fragment = await _ok(
        api,
        'query { datasets(first: 100, search: "flow cytometry") { edges { ...Snippet } } } '
        "fragment Snippet on DatasetHit { highlight }",
        {},
    )
    assert through_fragment["datasets"]["edges"] == [{"highlight": e["highlight"]} for e in flow["datasets"]["edges"]]


async def test_search_finds_lot_numbers_and_accessions_as_written(api):
    batch = (await _batches(api, slug=MAPLE, filter={"institution": {"eq": LEIDEN}}))["edges"][0]["node"]
    found = await _batches(api, slug=MAPLE, search=batch["lotNumber"])
    assert [e["node"]["lotNumber"] for e in found["edges"]] == [batch["lotNumber"]]
    dataset = (await _datasets(api))["nodes"][0]
    found = await _datasets(api, search=dataset["accession"])
    assert [d["accession"] for d in found["nodes"]] == [dataset["accession"]]


async def test_search_by_din_only_for_the_collections_own_institution(api, seeded_settings):
    from sqlalchemy import text

    from cellcommons.db import Database

    database = Database(seeded_settings)
    async with database.sessions() as session:
        din, lot = (
            await session.execute(
                text(
                    "SELECT c.din, b.lot_number FROM collection c JOIN batch_collection bc ON bc.collection_id = c.id "
                    "JOIN batch b ON b.id = bc.batch_id JOIN institution i ON i.id = b.institution_id "
                    "WHERE i.slug = :slug AND c.din IS NOT NULL LIMIT 1"
                ),
                {"slug": LEIDEN},
            )
        ).one()
    await database.dispose()
    mine = await _batches(api, slug=LEIDEN, search=din)
    assert [e["node"]["lotNumber"] for e in mine["edges"]] == [lot]
    theirs = await _batches(api, slug=MAPLE, search=din)
    assert theirs["totalCount"] == 0  # the DIN is donor data only Leiden may see


FACETS = """
query($filter: DatasetFilter) {
  datasets(first: 1, filter: $filter) {
    totalCount
    facets { institution { value label count } tissue { value label count } duoTerm { value count }
             dataType { value count } accessRights { value count } }
  }
}
"""


async def test_dataset_facets_count_exactly_and_ignore_their_own_filter(api):
    everything = (await _datasets(api))["nodes"]
    tissue = everything[0]["latestVersion"]["tissue"]
    data = await _ok(api, FACETS, {"filter": {"tissue": {"eq": tissue}}})
    facets = data["datasets"]["facets"]
    chosen = [d for d in everything if d["latestVersion"]["tissue"] == tissue]
    assert data["datasets"]["totalCount"] == len(chosen)
    # its own facet ignores the tissue filter: every tissue still shows, with its full count
    assert {f["value"]: f["count"] for f in facets["tissue"]} == Counter(
        d["latestVersion"]["tissue"] for d in everything
    )
    assert all(f["label"] for f in facets["tissue"])
    # the others count within the chosen tissue
    assert {f["value"]: f["count"] for f in facets["institution"]} == Counter(d["institution"]["slug"] for d in chosen)
    assert {f["value"]: f["count"] for f in facets["dataType"]} == Counter(
        t for d in chosen for t in d["latestVersion"]["dataTypes"]
    )
    assert {f["value"]: f["count"] for f in facets["duoTerm"]} == Counter(
        t for d in chosen for t in {c["term"] for c in d["latestVersion"]["conditions"]}
    )


async def test_facets_never_count_hidden_records(api):
    for slug in (LEIDEN, MAPLE):
        visible = (await _datasets(api, slug=slug))["nodes"]
        data = await _ok(api, FACETS, {}, slug)
        counts = {f["value"]: f["count"] for f in data["datasets"]["facets"]["accessRights"]}
        assert counts == Counter(d["latestVersion"]["accessRights"] for d in visible)
        assert sum(f["count"] for f in data["datasets"]["facets"]["institution"]) == len(visible)
    maple = await _ok(api, FACETS, {}, MAPLE)
    leiden_seen_by_maple = {f["value"]: f["count"] for f in maple["datasets"]["facets"]["institution"]}
    own = await _datasets(api, slug=LEIDEN, filter={"institution": {"eq": LEIDEN}})
    hidden = sum(1 for d in own["nodes"] if d["latestVersion"]["accessRights"] == "non_public")
    assert hidden and leiden_seen_by_maple[LEIDEN] == own["totalCount"] - hidden


async def test_batch_histograms_bucket_exactly(api, seeded_settings):
    operation = (OPERATIONS / "batch_facets.graphql").read_text()
    data = await _ok(api, operation, {"filter": {"passage": {"eq": 3}, "postThawViability": {"gte": "90"}}})
    facets = data["batches"]["facets"]
    everything = await _ok(
        api,
        "{ batches(first: 100) { nodes { passage releaseStatus qcResults { testType analyte timepoint value } } } }",
        {},
    )
    nodes = everything["batches"]["nodes"]
    with_passage_3 = [b for b in nodes if b["passage"] == 3]
    # viability ignores its own filter but keeps passage = 3
    expected = Counter(int(v // 5 * 5) for b in with_passage_3 for v in set(_viability(b)))
    assert {int(Decimal(b["from"])): b["count"] for b in facets["postThawViability"]} == expected
    assert all(Decimal(b["to"]) - Decimal(b["from"]) == 5 for b in facets["postThawViability"])
    # passage ignores passage = 3 but keeps viability ≥ 90
    good = [b for b in nodes if any(v >= 90 for v in _viability(b))]
    assert {int(Decimal(b["from"])): b["count"] for b in facets["passage"]} == Counter(b["passage"] for b in good)
    both = [b for b in good if b["passage"] == 3]
    assert data["batches"]["totalCount"] == len(both)
    assert sum(f["count"] for f in facets["releaseStatus"]) == len(both)


@pytest.mark.parametrize(
    ("variables", "field", "message"),
    [
        ({"filter": {"tissue": {"under": "UBERON:9999999"}}}, "filter.tissue.under", "not a shipped UBERON term"),
        ({"filter": {"or": [{"cellType": {"under": "CL:1"}}]}}, "filter.or[0].cellType.under", "not a shipped CL"),
        ({"filter": {"lotNumber": {"in": []}}}, "filter.lotNumber.in", "between 1 and 100"),
        ({"search": "   "}, "search", "1 to 200 characters"),
        ({"orderBy": {"field": "RELEVANCE"}}, "orderBy", "needs a search text"),
    ],
)
async def test_bad_filters_name_the_field_and_the_reason(api, variables, field, message):
    result = await api.query(ALL_BATCHES, {"first": 5, **variables}, api.token(LEIDEN))
    error = result["errors"][0]
    assert error["extensions"]["code"] == "invalid_input" and error["extensions"]["field"] == field
    assert message in error["message"]
    assert result["data"] is None


async def test_statements_per_page_do_not_grow_with_the_page_size(api):
    query = (OPERATIONS / "datasets_by_batch_quality.graphql").read_text()
    counts = []
    for first in (2, 10):
        before = api.statements["all"]
        await _ok(api, query, {"first": first, "viability": "70"})
        counts.append(api.statements["all"] - before)
    assert counts[0] == counts[1]


async def test_the_search_operations_run_on_seeded_data(api):
    search = (OPERATIONS / "search_datasets_with_facets.graphql").read_text()
    data = await _ok(api, search, {"search": "MSC", "first": 2})
    found = data["datasets"]
    assert found["totalCount"] >= 2 and len(found["edges"]) == 2
    assert sum(f["count"] for f in found["facets"]["institution"]) == found["totalCount"]
    following = await _ok(api, search, {"search": "MSC", "first": 100, "after": found["pageInfo"]["endCursor"]})
    assert len(following["datasets"]["edges"]) == found["totalCount"] - 2

    quality = (OPERATIONS / "datasets_by_batch_quality.graphql").read_text()
    data = await _ok(api, quality, {"viability": "80"})
    titles = [d["latestVersion"]["title"] for d in data["datasets"]["nodes"]]
    assert titles == sorted(titles) and titles


FACETS_ONLY = """{ batches(first: 1, filter: {releaseStatus: {eq: released}}) { %s
  facets { tissue { value count } releaseStatus { value count } institution { value count } } } }"""


async def test_facets_alone_read_no_page_and_count_as_with_one(api):
    headers = api.token(LEIDEN)
    with_page = await api.query(FACETS_ONLY % "nodes { lotNumber }", headers=headers)
    before = api.statements["all"]
    alone = await api.query(FACETS_ONLY % "", headers=headers)
    assert api.statements["all"] - before == 3  # one per facet, no page
    assert "errors" not in alone and with_page["data"]["batches"]["nodes"]
    assert alone["data"]["batches"]["facets"] == with_page["data"]["batches"]["facets"]
    assert sum(f["count"] for f in alone["data"]["batches"]["facets"]["tissue"]) > 0
