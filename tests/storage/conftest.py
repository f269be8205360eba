"""Leiden and Maple with a draft Leiden dataset of two files, in the rolled-back session; per-test buckets go."""

from __future__ import annotations

import pytest
from tests.storage.files import draft_dataset, institution, remove_buckets

from cellcommons.storage import ObjectStore


@pytest.fixture
async def leiden(session):
    return await institution(session, "leiden-scgt")


@pytest.fixture
async def maple(session):
    return await institution(session, "maple-ccrm")


@pytest.fixture
async def draft(session, leiden):
    return await draft_dataset(session, leiden, ["flow.csv", "counts.csv"])


@pytest.fixture(autouse=True)
def remove_institution_buckets(object_store: ObjectStore, settings):
    """Institution buckets are named by id, new in every rolled-back test: remove them with their objects."""
    yield
    remove_buckets(object_store, settings.bucket("inst-"))
