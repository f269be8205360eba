"""Keyset paging on any sort key (NULLs and ties included), typed cursors, and search documents in PostgreSQL."""

import gc
import tracemalloc
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from sqlalchemy import select, update

from cellcommons.access import visibility
from cellcommons.auth.principal import Principal, Role
from cellcommons.catalogue import reading, search
from cellcommons.catalogue.models import Batch, Institution
from cellcommons.demo.consortium import SCALES, Consortium
from cellcommons.demo.seed import seed_through_service
from cellcommons.errors import InvalidInput
from cellcommons.graphql.ids import Identifiers


@pytest.fixture
async def seeded(session):
    await seed_through_service(session, Consortium(SCALES["tiny"], seed=8), origin="test")
    institution = await session.scalar(select(Institution).where(Institution.slug == "leiden-scgt"))
    # Some passages unknown, so the sort key has NULLs as well as ties.
    lots = list(await session.scalars(select(Batch.lot_number).order_by(Batch.lot_number).limit(5)))
    await session.execute(update(Batch).where(Batch.lot_number.in_(lots)).values(passage=None))
    return Principal(institution.id, institution.slug, "alice", frozenset({Role.reader}))


async def _all_pages(session, principal, query: search.Query, size: int, backwards: bool = False) -> list:
    found = search.find_batches(principal, query)
    rows, cursor = [], None
    while True:
        request = (
            reading.PageRequest(last=size, before=cursor)
            if backwards
            else reading.PageRequest(first=size, after=cursor)
        )
        page = await reading.keyset_page(session, found.query, found.ordering, request)
        batches = [row[0] for row in page.rows]
        rows = batches + rows if backwards else rows + batches
        more = page.has_previous if backwards else page.has_next
        if not more:
            return rows
        cursor = page.cursors[0] if backwards else page.cursors[-1]


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("backwards", [False, True])
async def test_paging_a_nullable_key_visits_every_row_once_in_order(session, seeded, descending, backwards):
    query = search.Query(order="passage", descending=descending)
    rows = await _all_pages(session, seeded, query, size=3, backwards=backwards)
    everything = list(await session.scalars(select(Batch).where(visibility.visible_batches(seeded))))
    assert sorted(b.id for b in rows) == sorted(b.id for b in everything)
    known = sorted((b.passage, b.id) for b in everything if b.passage is not None)
    expected = (known[::-1] if descending else known) + sorted(
        ((None, b.id) for b in everything if b.passage is None), reverse=descending
    )
    assert [(b.passage, b.id) for b in rows] == expected  # NULLs last either way, ties broken by id


async def test_kept_statements_answer_each_request_and_each_caller_as_if_built_for_them(session, seeded):
    """Found statements are kept per distinct request and set of roles: an equal request of another institution's
    reader reuses them bound to its own institution; a request differing in one value gets statements of its own."""
    other = await session.scalar(select(Institution).where(Institution.slug == "lowlands-regmed"))
    readers = [seeded, Principal(other.id, other.slug, "bob", frozenset({Role.reader}))]
    requests = [
        search.Query(search=text, filter=search.Filter("filter", {"passage": search.Comparison("filter.p", gte=n)}))
        for text in ("MSC", "bone marrow")
        for n in (1, 4)
    ]
    answers = set()
    for principal in readers:
        for request in requests:
            kept = search.find_batches(principal, request)
            built = search._found_batches.__wrapped__(principal, search.Asked(request))  # for this caller alone
            ids = {row[0].id for row in await session.execute(kept.query)}
            assert ids == {row[0].id for row in await session.execute(built.query)}
            assert await reading.count(session, kept.count_query) == len(ids)
            answers.add(frozenset(ids))
    assert len(answers) > 1  # the requests do find different batches


async def test_a_cursor_of_another_ordering_is_refused(session, seeded):
    found = search.find_batches(seeded, search.Query(order="lot_number"))
    page = await reading.keyset_page(session, found.query, found.ordering, reading.PageRequest(first=2))
    other = search.find_batches(seeded, search.Query(order="passage"))
    with pytest.raises(InvalidInput) as refused:
        await reading.keyset_page(
            session, other.query, other.ordering, reading.PageRequest(first=2, after=page.cursors[-1])
        )
    assert refused.value.field == "after"


@pytest.mark.parametrize(
    "values",
    [
        (datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),),
        (date(2025, 7, 1),),
        (Decimal("99.125000"),),
        (0.1 + 0.2,),  # a float that prints shorter than it is
        ("BM-LEID-0000001",),
        (None,),
        (3,),
    ],
)
def test_cursors_keep_each_sort_value_exactly(values):
    ids = Identifiers("x" * 40)
    cursor = reading.Cursor("key:asc", values, uuid.uuid4())
    parsed = ids.parse_cursor(ids.cursor(cursor), "after")
    assert parsed == cursor and [type(v) for v in parsed.values] == [type(v) for v in values]


def test_a_tampered_cursor_is_refused():
    ids = Identifiers("x" * 40)
    sealed = ids.cursor(reading.Cursor("created_at", (date(2025, 1, 1),), uuid.uuid4()))
    with pytest.raises(InvalidInput):
        ids.parse_cursor(sealed[:-2] + ("AA" if not sealed.endswith("AA") else "BB"), "after")


async def test_the_search_document_is_kept_by_postgresql(session, seeded):
    """The generated column follows every write: a renamed product is found by its new name at once."""
    lot = await session.scalar(select(Batch.lot_number).limit(1))
    await session.execute(update(Batch).where(Batch.lot_number == lot).values(product_name="Chondrogenic pellets"))
    found = search.find_batches(seeded, search.Query(search="pellet"))
    rows = (await session.execute(found.query)).all()
    assert [row[0].lot_number for row in rows] == [lot]
    assert "<mark>pellets</mark>" in rows[0][1] and rows[0][2] > 0


TRIALS = {0: ["NCT01", "NCT02"], 1: ["NCT02"], 2: ["NCT03", "NCT02", "NCT01"]}


@pytest.mark.parametrize(
    "operator, values, lots",
    [("any_of", ["NCT01", "NCT09"], {0, 2}), ("any_of", ["NCT02"], {0, 1, 2}), ("all_of", ["NCT01", "NCT02"], {0, 2}),
     ("all_of", ["NCT03"], {2}), ("all_of", ["NCT09"], set())],
)  # fmt: skip
async def test_a_tag_filter_holds_any_or_all_of_its_values(session, seeded, operator, values, lots):
    """Found in review: the array columns had the generic type, without `overlap`/`contains` (internal errors)."""
    visible = list(await session.scalars(select(Batch.lot_number).where(visibility.visible_batches(seeded))
                                         .order_by(Batch.lot_number).limit(3)))  # fmt: skip
    for i, lot in enumerate(visible):
        await session.execute(update(Batch).where(Batch.lot_number == lot).values(clinical_trial_ids=TRIALS[i]))
    trials = search.Comparison("filter.clinicalTrialIds", **{operator: values})
    found = search.find_batches(seeded, search.Query(filter=search.Filter("filter", {"clinical_trial_ids": trials})))
    assert {row[0].lot_number for row in await session.execute(found.query)} == {visible[i] for i in lots}


def _long_request(name: str, tag: int) -> search.Query:
    value = search.Comparison(f"filter.{name}", eq=f"{tag} " + "x" * 200_000)  # a body may hold a megabyte
    return search.Query(filter=search.Filter("filter", {name: value}))


def test_statements_of_a_long_request_are_built_each_time_not_kept():
    """Found in review: the statements of every distinct request were kept (256 of them per collection), a
    megabyte-long filter with each, about twice its size pinned per entry: a quarter of a gigabyte and more per
    worker from one client varying one character. Short requests are still kept."""
    principal = Principal(uuid.uuid4(), "leiden-scgt", "alice", frozenset({Role.reader}))
    for find, name in ((search.find_datasets, "title"), (search.find_batches, "product_name")):
        short = search.Query(search="MSC")
        assert find(principal, short).ordering is find(principal, short).ordering
        find(principal, _long_request(name, -1))  # whatever the first build caches once (compiled templates, imports)
        tracemalloc.start()
        try:
            for tag in range(4):
                assert (
                    find(principal, _long_request(name, tag)).ordering
                    is not find(principal, _long_request(name, tag)).ordering
                )
            gc.collect()
            kept, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert kept < 200_000, kept  # less than one of the requests
