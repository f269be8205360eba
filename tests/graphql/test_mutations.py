"""Owners' mutations and the change feed over HTTP, on the module's seeded database (committed, like a client's)."""

from pathlib import Path

import pytest
from sqlalchemy import select
from strawberry.utils.str_converters import to_camel_case
from tests.catalogue.factories import BM_MSC, BONE_MARROW, GRU, valid_batch, valid_collection, valid_donor, valid_spec
from tests.catalogue.test_changes import settled

from cellcommons.audit.models import AuditEvent
from cellcommons.catalogue import service
from cellcommons.catalogue.enums import Operator
from cellcommons.catalogue.models import Batch
from cellcommons.catalogue.schemas import DatasetIn, DataUseConditionIn
from cellcommons.db import Database
from cellcommons.graphql.ids import Identifiers
from cellcommons.graphql.results import graphql_path

LEIDEN, MAPLE = "leiden-scgt", "maple-ccrm"
OPERATIONS = Path(__file__).resolve().parents[2] / "graphql_schema" / "operations"
SUBMIT_BATCH = (OPERATIONS / "submit_batch_with_qc.graphql").read_text()
PUBLISH = (OPERATIONS / "publish_a_dataset_version.graphql").read_text()
FOLLOW = (OPERATIONS / "follow_the_change_feed.graphql").read_text()
OPERATOR_NAMES = {o.value: o.name for o in Operator}

SAVE = """
mutation($input: {kind}Input!, $key: String) {{
  result: save{kind}(input: $input, idempotencyKey: $key) {{
    __typename
    ... on {kind}Saved {{ created replayed warnings {{ field }} record {{ __typename }} }}
    ... on ValidationFailed {{ code message findings {{ code field message }} }}
    ... on NotFound {{ code message field }}
    ... on Forbidden {{ code message }}
    ... on Conflict {{ code message field }}
  }}
}}
"""
SAVE_DATASET = """
mutation($input: DatasetInput!, $dataset: ID, $key: String) {
  result: saveDataset(input: $input, dataset: $dataset, idempotencyKey: $key) {
    __typename
    ... on DatasetSaved { created replayed record { id accession latestVersion { version status title } } }
    ... on ValidationFailed { findings { field } }
    ... on NotFound { message field }
    ... on Forbidden { code message }
    ... on Conflict { message field }
  }
}
"""
DELETE = """
mutation($id: ID!) {
  result: deleteRecord(id: $id) {
    __typename
    ... on RecordDeleted { id }
    ... on NotFound { message field }
    ... on Forbidden { message }
    ... on Conflict { message }
  }
}
"""


def variables(model) -> dict:
    """A catalogue input as GraphQL variables: camelCase names, enums by name."""

    def convert(value):
        if isinstance(value, dict):
            return {to_camel_case(k): convert(v) for k, v in value.items()}
        if isinstance(value, list):
            return [convert(v) for v in value]
        return OPERATOR_NAMES.get(value, value) if isinstance(value, str) else value

    return convert(model.model_dump(mode="json"))


def dataset(**overrides) -> DatasetIn:
    content = {
        "title": "BM-MSC release panel",
        "description": "Flow cytometry of released BM-MSC lots.",
        "data_types": ["flow cytometry"],
        "cell_type": BM_MSC,
        "tissue": BONE_MARROW,
        "personal_data_level": "pseudonymised",
        "access_rights": "restricted",
        "conditions": [DataUseConditionIn(term=GRU)],
    }
    return DatasetIn(**{**content, **overrides})


@pytest.fixture(scope="module")
async def database(seeded_settings):
    database = Database(seeded_settings)
    yield database
    await database.dispose()


async def save(api, kind: str, model, user: str = "sam", slug: str = LEIDEN, key: str | None = None) -> dict:
    result = await api.query(SAVE.format(kind=kind), {"input": variables(model), "key": key}, api.token(slug, user))
    assert "errors" not in result, result
    return result["data"]["result"]


@pytest.fixture(scope="module")
async def submitted(api):
    """Leiden's submitter registers the specification, donor and collection the factories' batch names."""
    for kind, model in (("Specification", valid_spec()), ("Donor", valid_donor()), ("Collection", valid_collection())):
        assert (await save(api, kind, model))["__typename"] == f"{kind}Saved"


async def events(database, action: str) -> list[AuditEvent]:
    async with database.unit_of_work() as session:
        return list((await session.scalars(select(AuditEvent).where(AuditEvent.action == action))).all())


async def follow(api, headers, after=None) -> tuple[list[dict], str | None]:
    nodes = []
    while True:
        page = await api.query(FOLLOW, {"after": after, "first": 50}, headers)
        assert "errors" not in page, page
        changes = page["data"]["changes"]
        nodes += [edge["node"] for edge in changes["edges"]]
        after = changes["pageInfo"]["endCursor"]
        if not changes["pageInfo"]["hasNextPage"]:
            return nodes, after


async def test_a_submitter_submits_a_batch_with_qc_and_it_is_audited_and_in_the_feed(api, submitted, database):
    headers = api.token(LEIDEN, "sam")
    _, cursor = await follow(api, headers)
    batch = variables(valid_batch(lot_number="API-BM-1"))
    result = await api.query(SUBMIT_BATCH, {"batch": batch}, headers)
    saved = result["data"]["saveBatch"]
    assert saved["__typename"] == "BatchSaved" and saved["created"] and not saved["replayed"]
    assert saved["record"]["lotNumber"] == "API-BM-1" and len(saved["record"]["qcResults"]) == len(batch["qcResults"])

    again = await api.query(SUBMIT_BATCH, {"batch": {**batch, "productName": "renamed"}}, headers)
    assert again["data"]["saveBatch"]["created"] is False

    audited = await events(database, "catalogue.batch.create")
    assert [e.target for e in audited if e.details["key"] == "API-BM-1"]
    assert audited[-1].actor.startswith("user:") and audited[-1].institution == LEIDEN
    await settled(database)  # the feed shows a commit once every older transaction of the cluster has ended
    changes, _ = await follow(api, headers, cursor)
    assert [(c["operation"], c["record"]["lotNumber"]) for c in changes] == [
        ("create", "API-BM-1"),
        ("update", "API-BM-1"),
    ]
    assert changes[0]["recordId"] == saved["record"]["id"]


async def test_a_rejected_batch_lists_every_finding_by_input_path_and_writes_nothing(api, submitted, database):
    bad = variables(valid_batch(lot_number="API-BAD-1"))
    bad["qcResults"][0] = {**bad["qcResults"][0], "unit": "mg"}  # viability is a percentage
    bad["donors"] = ["D-nobody-000"]
    bad["cellType"] = "not a curie"
    result = await api.query(SUBMIT_BATCH, {"batch": bad}, api.token(LEIDEN, "sam"))
    failed = result["data"]["saveBatch"]
    assert failed["__typename"] == "ValidationFailed"
    assert [f["field"] for f in failed["findings"]] == ["cellType"], "shape errors come first, all of them"

    bad["cellType"] = BM_MSC
    failed = (await api.query(SUBMIT_BATCH, {"batch": bad}, api.token(LEIDEN, "sam")))["data"]["saveBatch"]
    fields = {f["field"] for f in failed["findings"]}
    assert {"donors[0]", "qcResults[0].unit"} <= fields
    async with database.unit_of_work() as session:
        assert await session.scalar(select(Batch).where(Batch.lot_number == "API-BAD-1")) is None


async def test_a_reader_is_forbidden_and_the_refusal_is_audited(api, submitted, database):
    result = await save(api, "Batch", valid_batch(lot_number="API-READER-1"), user="alice")
    assert result == {"__typename": "Forbidden", "code": "forbidden", "message": result["message"]}
    refused = await events(database, "catalogue.batch.save")
    assert refused and refused[-1].outcome == "denied"


async def test_anonymous_callers_change_nothing_and_follow_nothing(api):
    result = await api.query(SAVE.format(kind="Donor"), {"input": variables(valid_donor(pseudonym="D-anon-0001"))})
    assert result["data"]["result"]["__typename"] == "Forbidden"
    feed = await api.query(FOLLOW, {})
    assert feed["data"]["changes"]["edges"] == []


async def test_a_dataset_is_created_once_per_key_published_and_edited_into_a_new_version(api, submitted):
    headers = api.token(LEIDEN, "sam")
    content = {"input": variables(dataset()), "key": "create-dataset-0001"}
    first = (await api.query(SAVE_DATASET, content, headers))["data"]["result"]
    retry = (await api.query(SAVE_DATASET, content, headers))["data"]["result"]
    assert first["created"] and retry["replayed"] and retry["record"]["id"] == first["record"]["id"]
    other = {"input": variables(dataset(title="Another")), "key": "create-dataset-0001"}
    reused = (await api.query(SAVE_DATASET, other, headers))["data"]["result"]
    assert reused == {"__typename": "Conflict", "field": "idempotencyKey", "message": reused["message"]}

    dataset_id = first["record"]["id"]
    published = (await api.query(PUBLISH, {"dataset": dataset_id}, headers))["data"]["publishDataset"]
    assert published["__typename"] == "DatasetPublished"
    assert published["version"]["version"] == 1 and published["version"]["status"] == "published"
    twice = (await api.query(PUBLISH, {"dataset": dataset_id}, headers))["data"]["publishDataset"]
    assert twice["__typename"] == "Conflict"

    edit = {"input": variables(dataset(title="Second edition")), "dataset": dataset_id}
    edited = (await api.query(SAVE_DATASET, edit, headers))["data"]["result"]
    assert edited["record"]["latestVersion"] == {"version": 2, "status": "draft", "title": "Second edition"}


async def test_other_institutions_may_not_edit_and_hidden_datasets_read_as_missing(api, submitted):
    leiden = api.token(LEIDEN, "sam")
    created = await api.query(SAVE_DATASET, {"input": variables(dataset(access_rights="non_public"))}, leiden)
    hidden_id = created["data"]["result"]["record"]["id"]
    shared = (await api.query(SAVE_DATASET, {"input": variables(dataset())}, leiden))["data"]["result"]["record"]
    await api.query(PUBLISH, {"dataset": shared["id"]}, leiden)

    maple = api.token(MAPLE, "sam")
    forbidden = (await api.query(PUBLISH, {"dataset": shared["id"]}, maple))["data"]["publishDataset"]
    assert forbidden["__typename"] == "Forbidden"
    hidden = (await api.query(PUBLISH, {"dataset": hidden_id}, maple))["data"]["publishDataset"]
    missing_id = hidden_id[:-4] + ("AAAA" if not hidden_id.endswith("AAAA") else "BBBB")
    missing = (await api.query(PUBLISH, {"dataset": missing_id}, maple))["data"]["publishDataset"]
    assert hidden["__typename"] == missing["__typename"] == "NotFound"
    assert hidden["message"].replace(hidden_id, "ID") == missing["message"].replace(missing_id, "ID")


async def test_harvested_copies_are_read_only(api, submitted, database):
    async with database.unit_of_work() as session:
        leiden = await service.repository.institution_by_slug(session, LEIDEN)
        copy = await service.save_batch(session, leiden, valid_batch(lot_number="PEER-COPY-1"), origin="peer-node")
    result = await save(api, "Batch", valid_batch(lot_number="PEER-COPY-1"))
    assert result["__typename"] == "Forbidden"
    copy_id = Identifiers(api.settings.secret_key.get_secret_value()).global_id("Batch", copy.id)
    assert (await api.query(DELETE, {"id": copy_id}, api.token(LEIDEN, "sam")))["data"]["result"]["__typename"] == (
        "Forbidden"
    )


async def test_deleting_a_batch_leaves_a_tombstone_in_the_feed(api, submitted):
    headers = api.token(LEIDEN, "sam")
    saved = await api.query(SUBMIT_BATCH, {"batch": variables(valid_batch(lot_number="API-GONE-1"))}, headers)
    batch_id = saved["data"]["saveBatch"]["record"]["id"]
    _, cursor = await follow(api, headers)
    deleted = (await api.query(DELETE, {"id": batch_id}, headers))["data"]["result"]
    assert deleted == {"__typename": "RecordDeleted", "id": batch_id}
    changes, _ = await follow(api, headers, cursor)
    assert [(c["operation"], c["recordId"], c["record"]) for c in changes] == [("delete", batch_id, None)]
    again = (await api.query(DELETE, {"id": batch_id}, headers))["data"]["result"]
    assert again["__typename"] == "NotFound" and again["field"] == "id"


async def test_a_bad_cursor_is_an_error_naming_the_argument(api):
    result = await api.query(FOLLOW, {"after": "nonsense"}, api.token(LEIDEN))
    assert result["errors"][0]["extensions"]["code"] == "invalid_input"
    assert result["errors"][0]["extensions"]["field"] == "after"


def test_finding_paths_use_the_graphql_input_names():
    assert graphql_path("qc_results[2].unit") == "qcResults[2].unit"
    assert graphql_path("distributions[0].columns[3].sensitivity") == "distributions[0].columns[3].sensitivity"
    assert graphql_path("concentration_1e6_per_ml") == "concentration1e6PerMl"
