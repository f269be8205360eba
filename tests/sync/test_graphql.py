"""Run history in GraphQL: the owning institution's stewards and institution admins only."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from tests.graphql.conftest import api, seeded_settings  # noqa: F401  (the in-process API and its database)
from tests.sync.conftest import SLUG, SyncEnv, batch_record, memory_connector

from cellcommons.catalogue.models import Institution
from cellcommons.db import Database
from cellcommons.sync.models import RunStatus

QUERY = """
query ($source: String!) {
  syncSources { name connector schedule consecutiveFailures }
  syncRuns(source: $source, first: 10) { totalCount nodes { status trigger read upserted quarantined deleted } }
}
"""


@pytest.fixture(scope="module")
async def synced(seeded_settings):  # noqa: F811
    database = Database(seeded_settings)
    async with database.unit_of_work() as session:
        institution_id = await session.scalar(select(Institution.id).where(Institution.slug == SLUG))
    env = SyncEnv(seeded_settings, database, institution_id)
    await env.add_source("leiden-lims")
    run = await env.runtime(memory_connector([batch_record("SYNC-1"), batch_record("SYNC-2", passage=-1)])).run(
        "leiden-lims"
    )
    assert run.status is RunStatus.partial
    await database.dispose()


@pytest.mark.parametrize("user", ["stella", "ian"])
async def test_stewards_and_admins_of_the_owner_see_the_run_history(api, synced, user):  # noqa: F811
    body = await api.query(QUERY, {"source": "leiden-lims"}, api.token(SLUG, user))
    assert "errors" not in body, body
    assert body["data"]["syncSources"] == [
        {"name": "leiden-lims", "connector": "memory", "schedule": "0 * * * *", "consecutiveFailures": 0}
    ]
    runs = body["data"]["syncRuns"]
    assert runs["totalCount"] == 1
    assert runs["nodes"] == [
        {"status": "partial", "trigger": "manual", "read": 2, "upserted": 1, "quarantined": 1, "deleted": 0}
    ]


@pytest.mark.parametrize(("slug", "user"), [(SLUG, "alice"), (SLUG, "sam"), ("maple-ccrm", "stella")])
async def test_everyone_else_finds_no_such_source(api, synced, slug, user):  # noqa: F811
    hidden = await api.query(QUERY, {"source": "leiden-lims"}, api.token(slug, user))
    missing = await api.query(QUERY, {"source": "no-such-source"}, api.token(slug, user))
    assert hidden["data"] is None and missing["data"] is None
    assert hidden["errors"][0]["extensions"]["code"] == "not_found"
    assert hidden["errors"][0]["message"] == missing["errors"][0]["message"].replace("no-such-source", "leiden-lims")
