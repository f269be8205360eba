"""What another institution learns of a visible dataset's hidden versions (a newer draft, a non_public version):
nothing. Its mutations are refused alike with or without them. On the module's seeded database."""

from tests.graphql.test_mutations import LEIDEN, MAPLE, PUBLISH, SAVE_DATASET, dataset, variables

DELETE = """
mutation($id: ID!) {
  result: deleteRecord(id: $id) { __typename ... on NotFound { message field } ... on Forbidden { message } }
}
"""
VERSIONS = "query($id: ID!) { node(id: $id) { ... on Dataset { versions { id status } } } }"


async def published_dataset(api, title: str) -> str:
    """A restricted dataset of Leiden's with one published version; its global id."""
    leiden = api.token(LEIDEN, "sam")
    saved = await api.query(SAVE_DATASET, {"input": variables(dataset(title=title))}, leiden)
    dataset_id = saved["data"]["result"]["record"]["id"]
    published = await api.query(PUBLISH, {"dataset": dataset_id}, leiden)
    assert published["data"]["publishDataset"]["__typename"] == "DatasetPublished"
    return dataset_id


async def test_another_institution_is_refused_alike_whatever_versions_it_cannot_see(api):
    leiden = api.token(LEIDEN, "sam")
    plain = await published_dataset(api, "Published only")
    with_draft = await published_dataset(api, "With a newer draft")
    edit = {"input": variables(dataset(title="Unannounced draft")), "dataset": with_draft}
    assert (await api.query(SAVE_DATASET, edit, leiden))["data"]["result"]["__typename"] == "DatasetSaved"
    with_non_public = await published_dataset(api, "With a newer non_public version")
    edit = {"input": variables(dataset(access_rights="non_public")), "dataset": with_non_public}
    assert (await api.query(SAVE_DATASET, edit, leiden))["data"]["result"]["__typename"] == "DatasetSaved"
    assert (await api.query(PUBLISH, {"dataset": with_non_public}, leiden))["data"]["publishDataset"][
        "__typename"
    ] == "DatasetPublished"

    maple = api.token(MAPLE, "sam")

    async def answers(dataset_id: str) -> tuple[dict, dict]:
        save = {"input": variables(dataset(title="Taken over")), "dataset": dataset_id}
        saved = (await api.query(SAVE_DATASET, save, maple))["data"]["result"]
        published = (await api.query(PUBLISH, {"dataset": dataset_id}, maple))["data"]["publishDataset"]
        return saved, published

    refused = await answers(plain)
    assert refused == (
        {"__typename": "Forbidden", "code": "forbidden", "message": "you may not update this dataset version"},
        {"__typename": "Forbidden", "message": "you may not publish this dataset version"},
    )
    assert await answers(with_draft) == refused
    assert await answers(with_non_public) == refused

    # The hidden versions themselves read as missing, and the owner still edits and publishes the draft.
    versions = (await api.query(VERSIONS, {"id": with_draft}, leiden))["data"]["node"]["versions"]
    draft_id = next(v["id"] for v in versions if v["status"] == "draft")
    hidden = (await api.query(DELETE, {"id": draft_id}, maple))["data"]["result"]
    assert hidden["__typename"] == "NotFound" and hidden["field"] == "id"
    published = (await api.query(PUBLISH, {"dataset": with_draft}, leiden))["data"]["publishDataset"]
    assert published["version"]["title"] == "Unannounced draft"
