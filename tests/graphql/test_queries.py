"""The GraphQL API over HTTP: nodes, keyset connections, the policy inside every query, and no N+1."""

import pytest
from sqlalchemy import text

from cellcommons.db import Database

LEIDEN, MAPLE = "leiden-scgt", "maple-ccrm"

DATASETS = """
query($first: Int, $after: String) {
  datasets(first: $first, after: $after) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges { cursor node { id accession institution { slug } latestVersion { accessRights status } } }
  }
}
"""

NESTED = """
query($first: Int!) {
  datasets(first: $first) {
    edges { node {
      accession
      institution { name country }
      latestVersion {
        title
        conditions { term parameter }
        distributions { fileName columns }
        batches(first: 10) { totalCount edges { node {
          lotNumber releaseStatus donorCount
          specification { version criteria { testType operator limit unit } }
          qcResults { testType analyte value unit passed }
        } } }
      }
    } }
  }
}
"""


async def _all_datasets(api, headers):
    result = await api.query(DATASETS, {"first": 100}, headers)
    assert "errors" not in result, result
    return result["data"]["datasets"]


async def test_anonymous_callers_see_nothing(api):
    result = await api.query(DATASETS, {"first": 10})
    assert result["data"]["datasets"]["totalCount"] == 0
    viewer = await api.query("{ viewer { signedIn roles } }")
    assert viewer["data"]["viewer"] == {"signedIn": False, "roles": []}


async def test_members_see_shared_datasets_and_only_their_own_non_public_ones(api):
    mine = await _all_datasets(api, api.token(LEIDEN))
    theirs = await _all_datasets(api, api.token(MAPLE))
    for connection, me in ((mine, LEIDEN), (theirs, MAPLE)):
        for edge in connection["edges"]:
            node = edge["node"]
            if node["institution"]["slug"] != me:
                assert node["latestVersion"]["accessRights"] != "non_public"
                assert node["latestVersion"]["status"] == "published"
    own_hidden = {
        e["node"]["accession"]
        for e in mine["edges"]
        if e["node"]["institution"]["slug"] == LEIDEN and e["node"]["latestVersion"]["accessRights"] == "non_public"
    }
    assert own_hidden, "the tiny consortium gives Leiden a non_public dataset"
    assert not own_hidden & {e["node"]["accession"] for e in theirs["edges"]}
    assert mine["totalCount"] == len(mine["edges"])


async def test_a_hidden_node_answers_exactly_like_a_missing_one(api):
    mine = await _all_datasets(api, api.token(LEIDEN))
    hidden = next(e["node"]["id"] for e in mine["edges"] if e["node"]["latestVersion"]["accessRights"] == "non_public")
    query = "query($id: ID!) { node(id: $id) { id ... on Dataset { accession } } }"
    assert (await api.query(query, {"id": hidden}, api.token(LEIDEN)))["data"]["node"]["id"] == hidden
    as_other = await api.query(query, {"id": hidden}, api.token(MAPLE))
    forged = hidden[:-4] + ("AAAA" if not hidden.endswith("AAAA") else "BBBB")
    as_missing = await api.query(query, {"id": forged}, api.token(MAPLE))
    assert as_other["data"] == as_missing["data"] == {"node": None}
    assert "errors" not in as_other and "errors" not in as_missing


async def test_global_ids_are_opaque_and_stable(api, seeded_settings):
    database = Database(seeded_settings)
    async with database.unit_of_work() as session:
        keys = {str(k) for k in (await session.scalars(text("SELECT id FROM dataset"))).all()}
    await database.dispose()
    first = await _all_datasets(api, api.token(LEIDEN))
    again = await _all_datasets(api, api.token(LEIDEN))
    ids = [e["node"]["id"] for e in first["edges"]]
    assert ids == [e["node"]["id"] for e in again["edges"]]
    assert all(e["node"]["id"].startswith("Dataset_") for e in first["edges"])
    assert not any(key in node_id or key.replace("-", "") in node_id for key in keys for node_id in ids)
    nodes = await api.query(
        "query($ids: [ID!]!) { nodes(ids: $ids) { id } }", {"ids": [*ids[:3], "Dataset_nonsense"]}, api.token(LEIDEN)
    )
    assert "errors" in nodes  # a malformed id is an input error, named


async def test_paging_forwards_and_backwards_covers_every_batch_once(api):
    headers = api.token(MAPLE)
    query = """query($first: Int, $after: String, $last: Int, $before: String) {
      batches(first: $first, after: $after, last: $last, before: $before) {
        totalCount pageInfo { hasNextPage hasPreviousPage startCursor endCursor } edges { node { lotNumber } } } }"""
    seen, after = [], None
    while True:
        page = (await api.query(query, {"first": 3, "after": after}, headers))["data"]["batches"]
        seen += [e["node"]["lotNumber"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert len(seen) == len(set(seen)) == page["totalCount"] == 16
    backwards, before = [], None
    while True:
        page = (await api.query(query, {"last": 5, "before": before}, headers))["data"]["batches"]
        backwards = [e["node"]["lotNumber"] for e in page["edges"]] + backwards
        if not page["pageInfo"]["hasPreviousPage"]:
            break
        before = page["pageInfo"]["startCursor"]
    assert backwards == seen


async def test_pages_are_stable_under_inserts(api, seeded_settings):
    headers = api.token(LEIDEN)
    query = """query($after: String) { institutions(first: 2, after: $after) {
        pageInfo { endCursor } edges { node { slug } } } }"""
    first = (await api.query(query, {}, headers))["data"]["institutions"]
    database = Database(seeded_settings)
    async with database.unit_of_work() as session:
        await session.execute(
            text(
                "INSERT INTO institution (id, slug, name, country, sector, transfer_basis, origin_node, created_at,"
                " updated_at) VALUES (gen_random_uuid(), 'aaa-early', 'Inserted', 'NL', 'public', 'eea', 'local',"
                " '2000-01-01', now())"
            )
        )
    await database.dispose()
    second = (await api.query(query, {"after": first["pageInfo"]["endCursor"]}, headers))["data"]["institutions"]
    slugs = [e["node"]["slug"] for e in first["edges"] + second["edges"]]
    assert len(set(slugs)) == 4 and "aaa-early" not in slugs


@pytest.mark.parametrize(
    ("arguments", "code", "message"),
    [
        ("first: 101", "page_size_too_large", "a page holds at most 100"),
        ("", "connection_size_required", "first"),
        ("first: 2, last: 2", "invalid_input", "exactly one of first or last"),
        ('first: 2, after: "bm90LWEtY3Vyc29y"', "invalid_input", "not a cursor this API issued"),
    ],
)
async def test_bad_paging_arguments_are_errors_with_a_stable_code(api, arguments, code, message):
    query = f"{{ batches{f'({arguments})' if arguments else ''} {{ totalCount }} }}"
    result = await api.query(query, headers=api.token(LEIDEN))
    assert result.get("data") is None
    assert result["errors"][0]["extensions"]["code"] == code
    assert message in result["errors"][0]["message"]


async def test_the_statement_count_does_not_grow_with_the_page_size(api):
    headers = api.token(LEIDEN)
    await api.query("{ viewer { signedIn } }", headers=headers)  # the token's sign-in is audited once, not counted
    counts, sizes = {}, {}
    for first in (5, 100):
        api.statements.clear()
        result = await api.query(NESTED, {"first": first}, headers)
        assert "errors" not in result, result
        counts[first] = api.statements["all"]
        sizes[first] = len(result["data"]["datasets"]["edges"])
    assert sizes[5] == 5 and sizes[100] > 5
    # One statement per loader and level, whatever the page size.
    assert counts[100] == counts[5]


async def test_a_bad_token_is_refused_with_401(api):
    response = await api.client.post(
        "/graphql", json={"query": "{ viewer { signedIn } }"}, headers={"Authorization": "Bearer not-a-token"}
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_token"
    assert "Bearer" in response.headers["www-authenticate"]


BATCH_PAGES = "{ datasets(first: 20) { nodes { latestVersion { batches(first: 10) { edges { node { id %s } } } } } } }"
THROUGH_FRAGMENTS = BATCH_PAGES % "...Qc" + "fragment Qc on Batch { ... on Batch { qcResults { testType value } } }"
ONE_BATCH = "query($id: ID!) { node(id: $id) { ... on Batch { qcResults { testType value } } } }"


async def test_a_page_of_batches_reads_its_qc_results_as_each_batch_does_and_only_when_asked(api):
    headers = api.token(LEIDEN)
    await api.query("{ viewer { signedIn } }", headers=headers)  # the token's sign-in is audited once, not counted
    api.statements.clear()
    page = await api.query(THROUGH_FRAGMENTS, headers=headers)
    with_qc = api.statements["all"]
    assert "errors" not in page, page
    batches = [e["node"] for d in page["data"]["datasets"]["nodes"] for e in d["latestVersion"]["batches"]["edges"]]
    assert batches and any(b["qcResults"] for b in batches)
    for batch in batches[:5]:
        alone = await api.query(ONE_BATCH, {"id": batch["id"]}, headers)
        assert alone["data"]["node"]["qcResults"] == batch["qcResults"]
    api.statements.clear()
    assert "errors" not in await api.query(BATCH_PAGES % "", headers=headers)
    assert api.statements["all"] == with_qc - 1  # no QC results asked, none read


LATEST = "latestVersion { version title status accessRights }"
ONE_DATASET = "query($id: ID!) { node(id: $id) { ... on Dataset { " + LATEST + " } } }"
DATASET_PAGE = "{ datasets(first: 50) { edges { node { id " + LATEST + " } } } }"


async def test_a_page_of_datasets_shows_each_ones_latest_version_as_the_dataset_alone_does(api):
    """A page preloads its datasets' latest versions in one await; a dataset asked for alone loads its own."""
    headers = api.token(LEIDEN)
    page = await api.query(DATASET_PAGE, headers=headers)
    assert "errors" not in page, page
    datasets = [edge["node"] for edge in page["data"]["datasets"]["edges"]]
    assert datasets and all(d["latestVersion"] for d in datasets)
    for dataset in datasets:
        alone = await api.query(ONE_DATASET, {"id": dataset["id"]}, headers)
        assert alone["data"]["node"]["latestVersion"] == dataset["latestVersion"]


BATCHES = (
    "batches(first: 2) { totalCount pageInfo { hasNextPage hasPreviousPage } nodes { lotNumber qcResults { value } } }"
)
PAGE_OF_BATCHES = "{ datasets(first: 30) { edges { node { id latestVersion { " + BATCHES + " } } } } }"
DATASET_BATCHES = "query($id: ID!) { node(id: $id) { ... on Dataset { latestVersion { " + BATCHES + " } } } }"
TWO_PAGES = "{ datasets(first: 30) { nodes { latestVersion { a: batches(first: 1) { nodes { lotNumber } } "


async def test_a_page_of_datasets_shows_each_versions_batches_as_the_dataset_alone_does(api):
    """A page of datasets preloads its latest versions' pages of batches and their QC results (three statements
    in all); a dataset asked for alone pages its own; two different pages asked of the same place are each
    answered as asked."""
    headers = api.token(LEIDEN)
    await api.query("{ viewer { signedIn } }", headers=headers)
    before = api.statements["all"]
    page = await api.query(PAGE_OF_BATCHES, headers=headers)
    assert "errors" not in page, page
    assert api.statements["all"] - before == 3
    datasets = [edge["node"] for edge in page["data"]["datasets"]["edges"]]
    assert any(d["latestVersion"]["batches"]["nodes"] for d in datasets)
    for dataset in datasets[:10]:
        alone = await api.query(DATASET_BATCHES, {"id": dataset["id"]}, headers)
        assert alone["data"]["node"]["latestVersion"] == dataset["latestVersion"]
    two = await api.query(TWO_PAGES + "b: batches(first: 2) { nodes { lotNumber } } } } } }", headers=headers)
    for version in (n["latestVersion"] for n in two["data"]["datasets"]["nodes"]):
        assert version["a"]["nodes"] == version["b"]["nodes"][:1] and len(version["b"]["nodes"]) <= 2


async def test_a_bad_page_of_batches_is_reported_at_each_version(api):
    bad = '{ datasets(first: 3) { nodes { accession latestVersion { batches(first: 2, after: "not-a-cursor") { '
    result = await api.query(bad + "nodes { id } } } } } }", headers=api.token(LEIDEN))
    paths = [error["path"] for error in result["errors"]]
    assert paths and all(path[:2] == ["datasets", "nodes"] and path[-1] == "batches" for path in paths)
    assert all(node["accession"] for node in result["data"]["datasets"]["nodes"])
