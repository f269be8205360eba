"""Found in review: a DateTime filter value without a UTC offset was accepted and read by PostgreSQL in the
session's time zone, so the same request meant different moments on different connections. It is refused as
invalid input naming the field, on the compiled datasets page and the usual execution alike."""

from __future__ import annotations

import pytest

LEIDEN = "leiden-scgt"
DATASETS = """query($filter: DatasetFilter) { datasets(first: 3, filter: $filter) { nodes { accession } } }"""
# `totalCount` is not compiled: the same request through the field-by-field execution.
DATASETS_COUNTED = """query($filter: DatasetFilter) { datasets(first: 3, filter: $filter) {
  totalCount nodes { accession } } }"""
EXECUTIONS = pytest.mark.parametrize("query", [DATASETS, DATASETS_COUNTED], ids=["compiled", "field by field"])


@EXECUTIONS
@pytest.mark.parametrize(
    ("filter", "field"),
    [
        ({"publishedAt": {"gt": "2026-01-01T00:00:00"}}, "filter.publishedAt.gt"),
        ({"publishedAt": {"lte": "2020-06-30T12:00:00.5"}}, "filter.publishedAt.lte"),
        ({"or": [{"publishedAt": {"gte": "2020-01-01T00:00:00"}}]}, "filter.or[0].publishedAt.gte"),
        ({"not": {"publishedAt": {"lt": "2030-01-01T00:00:00"}}}, "filter.not.publishedAt.lt"),
    ],
)
async def test_a_moment_without_a_utc_offset_is_invalid_input(api, query, filter, field):
    result = await api.query(query, {"filter": filter}, api.token(LEIDEN))
    assert result["data"] is None, result
    error = result["errors"][0]
    assert error["extensions"] == {"code": "invalid_input", "field": field}, error
    assert "UTC offset" in error["message"], error


@EXECUTIONS
async def test_moments_with_an_offset_still_filter(api, query):
    everything = await api.query(query, {"filter": {"publishedAt": {"gt": "1970-01-01T00:00:00Z"}}}, api.token(LEIDEN))
    assert "errors" not in everything and everything["data"]["datasets"]["nodes"], everything
    for moment in ("2000-01-01T01:00:00+01:00", "1999-12-31T19:30:00-05:30", "2000-01-01T00:00:00+00:00"):
        result = await api.query(query, {"filter": {"publishedAt": {"gt": moment}}}, api.token(LEIDEN))
        assert "errors" not in result, result
